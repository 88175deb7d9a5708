//! A tiny random-weight EmbeddingGemma (Gemma3 with bidirectional attention, mean pooling, two
//! Dense projections, named prompts), written as a sentence-transformers folder with a
//! SentencePiece `tokenizer.model` and imported through [`crate::import`]: it exercises the
//! Gemma importer and llama.cpp's `gemma-embedding` graph in tests without the 1.1 GB model.
//! Deterministic (fixed seed); its vectors mean nothing.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::import::sentencepiece::{write_pieces, Piece, PieceType};
use crate::import::{import_model, ImportType};
use crate::tiny_bert::write_random_safetensors;

/// Sizes: 6 layers (llama.cpp's default pattern: 5 sliding-window, 1 full; fewer abort it, see
/// `presets::check_attention_layers`), hidden 32, 2 heads of 16 with 1 KV head, FFN 64, Dense
/// 32 → 64 → 32.
const LAYERS: usize = 6;
const HIDDEN: usize = 32;
const HEADS: usize = 2;
const KV_HEADS: usize = 1;
const HEAD_DIM: usize = 16;
const FF: usize = 64;
const DENSE: usize = 64;
const POSITIONS: usize = 256;

/// The prompts written to `config_sentence_transformers.json` (EmbeddingGemma's own two).
pub const QUERY_PROMPT: &str = "task: search result | query: ";
pub const DOCUMENT_PROMPT: &str = "title: none | text: ";

fn pieces() -> Vec<Piece> {
    let piece = |text: &str, score: f32, kind| Piece {
        text: text.into(),
        score,
        kind,
    };
    let mut v = vec![
        piece("<pad>", 0.0, PieceType::Control),
        piece("<eos>", 0.0, PieceType::Control),
        piece("<bos>", 0.0, PieceType::Control),
        piece("<unk>", 0.0, PieceType::Unknown),
        piece("\u{2581}", -2.0, PieceType::Normal),
    ];
    for c in ('a'..='z').chain('0'..='9') {
        v.push(piece(&c.to_string(), -5.0, PieceType::Normal));
        v.push(piece(&format!("\u{2581}{c}"), -4.0, PieceType::Normal));
    }
    for p in [
        ".", ",", "!", "?", "'", "-", "(", ")", ":", ";", "|", "\"", "/",
    ] {
        v.push(piece(p, -5.0, PieceType::Normal));
    }
    let words = "the of and to in is was for on that with as by at it from this are or an \
        which have not one all there has more when will can than into other some two new only \
        text line embedding model batch token file run item data test hello quick brown fox \
        jumps lazy dog task search result query title none";
    for (i, w) in words.split_whitespace().enumerate() {
        v.push(piece(
            &format!("\u{2581}{w}"),
            -1.0 - i as f32 * 0.01,
            PieceType::Normal,
        ));
    }
    v
}

fn tensor_shapes(n_vocab: usize, layers: usize) -> Vec<(String, Vec<usize>)> {
    let mut t: Vec<(String, Vec<usize>)> =
        vec![("embed_tokens.weight".into(), vec![n_vocab, HIDDEN])];
    for l in 0..layers {
        let p = format!("layers.{l}.");
        for (name, shape) in [
            ("input_layernorm", vec![HIDDEN]),
            ("self_attn.q_proj", vec![HEADS * HEAD_DIM, HIDDEN]),
            ("self_attn.k_proj", vec![KV_HEADS * HEAD_DIM, HIDDEN]),
            ("self_attn.v_proj", vec![KV_HEADS * HEAD_DIM, HIDDEN]),
            ("self_attn.o_proj", vec![HIDDEN, HEADS * HEAD_DIM]),
            ("self_attn.q_norm", vec![HEAD_DIM]),
            ("self_attn.k_norm", vec![HEAD_DIM]),
            ("post_attention_layernorm", vec![HIDDEN]),
            ("pre_feedforward_layernorm", vec![HIDDEN]),
            ("post_feedforward_layernorm", vec![HIDDEN]),
            ("mlp.gate_proj", vec![FF, HIDDEN]),
            ("mlp.up_proj", vec![FF, HIDDEN]),
            ("mlp.down_proj", vec![HIDDEN, FF]),
        ] {
            t.push((format!("{p}{name}.weight"), shape));
        }
    }
    t.push(("norm.weight".into(), vec![HIDDEN]));
    t
}

/// Writes the folder into `dir` and imports it to `dir/FILE` with weights of type `ty`.
///
/// # Errors
/// I/O errors, or the importer's.
pub fn write(dir: &Path, ty: ImportType, file: &str) -> Result<PathBuf> {
    write_with_layers(dir, ty, file, LAYERS)
}

/// [`write`] with `layers` layers (fewer than 6 make a GGUF llama.cpp would abort on).
///
/// # Errors
/// I/O errors, or the importer's.
pub fn write_with_layers(dir: &Path, ty: ImportType, file: &str, layers: usize) -> Result<PathBuf> {
    fs::create_dir_all(dir.join("1_Pooling")).map_err(|e| Error::io(dir, e))?;
    let pieces = pieces();
    let n_vocab = pieces.len();
    let w = |p: &str, s: String| {
        let path = dir.join(p);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        fs::write(&path, s).map_err(|e| Error::io(&path, e))
    };
    let config = serde_json::json!({
        "model_type": "gemma3_text",
        "architectures": ["Gemma3TextModel"],
        "num_hidden_layers": layers,
        "hidden_size": HIDDEN,
        "intermediate_size": FF,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "head_dim": HEAD_DIM,
        "max_position_embeddings": POSITIONS,
        "sliding_window": 8,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1_000_000.0,
        "rope_local_base_freq": 10_000.0,
        "use_bidirectional_attention": true,
        "vocab_size": n_vocab,
    });
    w("config.json", config.to_string())?;
    w(
        "tokenizer_config.json",
        serde_json::json!({
            "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>", "pad_token": "<pad>",
            "add_bos_token": true, "add_eos_token": true,
        })
        .to_string(),
    )?;
    w(
        "modules.json",
        serde_json::json!([
            {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
            {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
            {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"},
            {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"},
            {"idx": 4, "name": "4", "path": "4_Normalize", "type": "sentence_transformers.models.Normalize"}
        ])
        .to_string(),
    )?;
    w(
        "1_Pooling/config.json",
        r#"{"word_embedding_dimension": 32, "pooling_mode_mean_tokens": true}"#.into(),
    )?;
    w(
        "config_sentence_transformers.json",
        serde_json::json!({
            "prompts": {"query": QUERY_PROMPT, "document": DOCUMENT_PROMPT},
            "default_prompt_name": null,
        })
        .to_string(),
    )?;
    let identity = "torch.nn.modules.linear.Identity";
    for (folder, i, o, seed) in [
        ("2_Dense", HIDDEN, DENSE, 0x51ED_2701_u64),
        ("3_Dense", DENSE, HIDDEN, 0x51ED_2703_u64),
    ] {
        w(
            &format!("{folder}/config.json"),
            serde_json::json!({"in_features": i, "out_features": o, "bias": false,
                "activation_function": identity})
            .to_string(),
        )?;
        write_random_safetensors(
            &dir.join(folder).join("model.safetensors"),
            &[("linear.weight".into(), vec![o, i])],
            seed,
            |_| false,
        )?;
    }
    let sp = dir.join("tokenizer.model");
    fs::write(&sp, write_pieces(&pieces)).map_err(|e| Error::io(&sp, e))?;
    write_random_safetensors(
        &dir.join("model.safetensors"),
        &tensor_shapes(n_vocab, layers),
        0x6E3A_0001_D00D_F00D,
        |_| false,
    )?;
    let out = dir.join(file);
    import_model(dir, &out, ty, "tiny-random-embeddinggemma")?;
    Ok(out)
}
