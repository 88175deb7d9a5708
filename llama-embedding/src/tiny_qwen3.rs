//! A tiny random-weight Qwen3 embedding model (causal, last-token pooling, a byte-level BPE
//! vocabulary with `<|endoftext|>`), written straight to GGUF from a fixed seed: it tests the
//! causal path and the EOS that Qwen3-Embedding needs without the 1.2 GB model. With
//! `eos_in_gguf: false` it is a GGUF as converted before llama.cpp PR #14314: the tokenizer does
//! not append `<|endoftext|>`, and llama-embed must append it. Its vectors mean nothing.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::gguf::{GgufWriter, Value, GGML_TYPE_F32};
use crate::tiny_bert::Rng;

const LAYERS: usize = 2;
const HIDDEN: usize = 32;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 8;
const FF: usize = 64;
const ARCH: &str = "qwen3";

/// The end-of-text token Qwen3-Embedding pools on.
pub const EOS_TEXT: &str = "<|endoftext|>";

/// GPT-2's byte → unicode map (bytes as printable characters).
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut extra = 0;
    (0u32..256)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("latin-1")
            } else {
                extra += 1;
                char::from_u32(255 + extra).expect("bmp")
            }
        })
        .collect()
}

/// Tokens (the 256 bytes, a few merged pieces, then the specials), types and merges.
fn vocab() -> (Vec<String>, Vec<i32>, Vec<String>) {
    let mut tokens: Vec<String> = byte_chars().iter().map(char::to_string).collect();
    let merges: Vec<String> = ["Ġ t", "h e", "Ġt he", "Ġ a", "i n", "o n", "e r"]
        .iter()
        .map(|m| (*m).to_string())
        .collect();
    for m in &merges {
        tokens.push(m.replace(' ', ""));
    }
    let mut types = vec![1; tokens.len()];
    for s in [EOS_TEXT, "<|im_start|>", "<|im_end|>"] {
        tokens.push(s.into());
        types.push(3);
    }
    (tokens, types, merges)
}

/// Tensors in ggml order (innermost first), with whether they are norms (1 + noise).
fn tensors(n_vocab: usize) -> Vec<(String, Vec<u64>, bool)> {
    let d = |v: &[usize]| v.iter().map(|&x| x as u64).collect::<Vec<u64>>();
    let mut t = vec![
        (
            "token_embd.weight".to_string(),
            d(&[HIDDEN, n_vocab]),
            false,
        ),
        ("output_norm.weight".to_string(), d(&[HIDDEN]), true),
    ];
    for l in 0..LAYERS {
        for (name, shape, norm) in [
            ("attn_norm", d(&[HIDDEN]), true),
            ("attn_q", d(&[HIDDEN, HEADS * HEAD_DIM]), false),
            ("attn_k", d(&[HIDDEN, KV_HEADS * HEAD_DIM]), false),
            ("attn_v", d(&[HIDDEN, KV_HEADS * HEAD_DIM]), false),
            ("attn_output", d(&[HEADS * HEAD_DIM, HIDDEN]), false),
            ("attn_q_norm", d(&[HEAD_DIM]), true),
            ("attn_k_norm", d(&[HEAD_DIM]), true),
            ("ffn_norm", d(&[HIDDEN]), true),
            ("ffn_gate", d(&[HIDDEN, FF]), false),
            ("ffn_up", d(&[HIDDEN, FF]), false),
            ("ffn_down", d(&[FF, HIDDEN]), false),
        ] {
            t.push((format!("blk.{l}.{name}.weight"), shape, norm));
        }
    }
    t
}

/// Writes the GGUF to `dir/FILE`; with `eos_in_gguf` its tokenizer appends `<|endoftext|>`
/// (`tokenizer.ggml.add_eos_token`), without it it does not (an old conversion).
///
/// # Errors
/// I/O errors.
pub fn write(dir: &Path, file: &str, eos_in_gguf: bool) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let (tokens, types, merges) = vocab();
    let n_vocab = tokens.len();
    let eos = tokens.iter().position(|t| t == EOS_TEXT).expect("eos") as u32;
    let mut w = GgufWriter::new();
    let k = |s: &str| format!("{ARCH}.{s}");
    w.add("general.architecture", Value::String(ARCH.into()));
    w.add(
        "general.name",
        Value::String("tiny-random-qwen3-embedding".into()),
    );
    w.add(k("block_count"), Value::U32(LAYERS as u32));
    w.add(k("context_length"), Value::U32(512));
    w.add(k("embedding_length"), Value::U32(HIDDEN as u32));
    w.add(k("feed_forward_length"), Value::U32(FF as u32));
    w.add(k("attention.head_count"), Value::U32(HEADS as u32));
    w.add(k("attention.head_count_kv"), Value::U32(KV_HEADS as u32));
    w.add(k("attention.key_length"), Value::U32(HEAD_DIM as u32));
    w.add(k("attention.value_length"), Value::U32(HEAD_DIM as u32));
    w.add(k("attention.layer_norm_rms_epsilon"), Value::F32(1e-6));
    w.add(k("rope.freq_base"), Value::F32(1_000_000.0));
    w.add(k("pooling_type"), Value::U32(3));
    w.add("tokenizer.ggml.model", Value::String("gpt2".into()));
    w.add("tokenizer.ggml.pre", Value::String("qwen2".into()));
    w.add(
        "tokenizer.ggml.tokens",
        Value::Array(tokens.into_iter().map(Value::String).collect()),
    );
    w.add(
        "tokenizer.ggml.token_type",
        Value::Array(types.into_iter().map(Value::I32).collect()),
    );
    w.add(
        "tokenizer.ggml.merges",
        Value::Array(merges.into_iter().map(Value::String).collect()),
    );
    w.add("tokenizer.ggml.eos_token_id", Value::U32(eos));
    w.add("tokenizer.ggml.padding_token_id", Value::U32(eos));
    w.add("tokenizer.ggml.add_bos_token", Value::Bool(false));
    if eos_in_gguf {
        w.add("tokenizer.ggml.add_eos_token", Value::Bool(true));
    }
    let mut rng = Rng(0x0715_E3E0_5EED_0003);
    for (name, dims, norm) in tensors(n_vocab) {
        let n: u64 = dims.iter().product();
        let mut data = Vec::with_capacity(n as usize * 4);
        for _ in 0..n {
            let v = if norm { 1.0 + rng.next() } else { rng.next() };
            data.extend_from_slice(&v.to_le_bytes());
        }
        w.add_tensor(name, dims, GGML_TYPE_F32, data);
    }
    let out = dir.join(file);
    w.write(&out).map_err(|e| Error::io(&out, e))?;
    Ok(out)
}
