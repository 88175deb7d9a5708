//! The BERT importer: what llama.cpp's `convert_hf_to_gguf.py` writes for `BertModel`, with
//! the same tensor names, metadata keys, WordPiece vocabulary spelling and tensor types
//! (1-D tensors, position and token-type embeddings stay f32), so the result gives the same
//! vectors as a GGUF made by that script (checked by `tests/obtain.rs`, byte for byte).

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use serde_json::Value as Json;

use super::{
    add_weight, config_u32, invalid, io_err, read_json, read_pooling, read_safetensors,
    ImportError, ImportType, Imported,
};
use crate::gguf::{GgufWriter, Value};

pub(super) fn gguf(
    dir: &Path,
    config: &Json,
    ty: ImportType,
    name: &str,
) -> Result<Imported, ImportError> {
    let config_path = dir.join("config.json");
    let cfg_u32 = |key: &str| config_u32(config, &config_path, key);
    let n_layer = cfg_u32("num_hidden_layers")?;
    let n_ctx = cfg_u32("max_position_embeddings")?;
    let n_embd = cfg_u32("hidden_size")?;
    let n_ff = cfg_u32("intermediate_size")?;
    let n_head = cfg_u32("num_attention_heads")?;
    let n_token_types = cfg_u32("type_vocab_size").unwrap_or(2);
    let eps = config["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32;

    let (pooling, pooling_id) = read_pooling(dir)?;

    let lowercase = {
        let tc = dir.join("tokenizer_config.json");
        if tc.exists() {
            read_json(&tc)?["do_lower_case"].as_bool().unwrap_or(true)
        } else {
            true
        }
    };

    let (tokens, specials) = read_vocab(dir)?;
    let find = |t: &str| -> Result<u32, ImportError> {
        tokens
            .iter()
            .position(|x| x == t)
            .map(|i| i as u32)
            .ok_or_else(|| invalid(&dir.join("vocab.txt"), format!("no {t} token")))
    };
    let (cls, sep, unk, pad, mask) = (
        find("[CLS]")?,
        find("[SEP]")?,
        find("[UNK]")?,
        find("[PAD]")?,
        find("[MASK]")?,
    );

    let mut w = GgufWriter::new();
    let s = |v: &str| Value::String(v.to_string());
    w.add("general.architecture", s("bert"));
    w.add("general.type", s("model"));
    w.add("general.name", s(name));
    w.add("bert.block_count", Value::U32(n_layer));
    w.add("bert.context_length", Value::U32(n_ctx));
    w.add("bert.embedding_length", Value::U32(n_embd));
    w.add("bert.feed_forward_length", Value::U32(n_ff));
    w.add("bert.attention.head_count", Value::U32(n_head));
    w.add("bert.attention.layer_norm_epsilon", Value::F32(eps));
    w.add("general.file_type", Value::U32(ty.file_type()));
    w.add("bert.attention.causal", Value::Bool(false));
    w.add("bert.pooling_type", Value::U32(pooling_id));
    w.add("general.quantization_version", Value::U32(2));
    w.add("tokenizer.ggml.token_type_count", Value::U32(n_token_types));
    w.add("tokenizer.ggml.model", s("bert"));
    w.add("tokenizer.ggml.pre", s("jina-v2-en"));
    // llama.cpp's WordPiece tokenizer expects word-initial pieces marked with U+2581 and
    // continuation pieces without their "##"; control tokens stay as they are.
    let mut gguf_tokens = Vec::with_capacity(tokens.len());
    let mut types = Vec::with_capacity(tokens.len());
    for t in &tokens {
        if specials.contains(t) {
            gguf_tokens.push(Value::String(t.clone()));
            types.push(Value::I32(3));
        } else {
            let spelled = match t.strip_prefix("##") {
                Some(rest) => rest.to_string(),
                None => format!("\u{2581}{t}"),
            };
            gguf_tokens.push(Value::String(spelled));
            types.push(Value::I32(1));
        }
    }
    let vocab = gguf_tokens.len();
    w.add("tokenizer.ggml.tokens", Value::Array(gguf_tokens));
    w.add("tokenizer.ggml.token_type", Value::Array(types));
    w.add("tokenizer.ggml.bos_token_id", Value::U32(cls));
    w.add("tokenizer.ggml.eos_token_id", Value::U32(sep));
    w.add("tokenizer.ggml.unknown_token_id", Value::U32(unk));
    w.add("tokenizer.ggml.seperator_token_id", Value::U32(sep));
    w.add("tokenizer.ggml.padding_token_id", Value::U32(pad));
    w.add("tokenizer.ggml.mask_token_id", Value::U32(mask));
    w.add("tokenizer.ggml.add_bos_token", Value::Bool(true));
    w.add("tokenizer.ggml.add_eos_token", Value::Bool(true));
    w.add("tokenizer.ggml.add_sep_token", Value::Bool(false));
    w.add(
        "tokenizer.ggml.normalizer.lowercase",
        Value::Bool(lowercase),
    );

    let st_path = dir.join("model.safetensors");
    let tensors = read_safetensors(&st_path)?;
    let mut names = Vec::new();
    for (hf_name, tensor) in &tensors {
        let Some(gguf_name) = map_tensor_name(hf_name, n_layer) else {
            continue;
        };
        let gguf_name = gguf_name.map_err(|what| invalid(&st_path, what))?;
        let keep_f32 = gguf_name == "position_embd.weight" || gguf_name == "token_types.weight";
        add_weight(&mut w, &mut names, gguf_name, tensor, ty, keep_f32);
    }
    let expected = 5 + 16 * n_layer as usize;
    if names.len() != expected {
        return Err(invalid(
            &st_path,
            format!(
                "found {} BERT tensors, expected {expected} for {n_layer} layers",
                names.len()
            ),
        ));
    }
    Ok(Imported {
        writer: w,
        tensors: names,
        vocab,
        pooling,
    })
}

/// vocab.txt (one token a line, line number = id) and the set of special tokens
/// (tokenizer.json's `added_tokens` with `special: true`, or BERT's five when it is absent).
fn read_vocab(dir: &Path) -> Result<(Vec<String>, HashSet<String>), ImportError> {
    let vocab_path = dir.join("vocab.txt");
    let text = fs::read_to_string(&vocab_path).map_err(io_err(&vocab_path))?;
    let tokens: Vec<String> = text.lines().map(str::to_string).collect();
    if tokens.is_empty() {
        return Err(invalid(&vocab_path, "empty vocabulary"));
    }
    let tok_json = dir.join("tokenizer.json");
    let specials: HashSet<String> = if tok_json.exists() {
        read_json(&tok_json)?["added_tokens"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["special"].as_bool() == Some(true))
            .filter_map(|t| t["content"].as_str().map(str::to_string))
            .collect()
    } else {
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
            .into_iter()
            .map(str::to_string)
            .collect()
    };
    Ok((tokens, specials))
}

/// GGUF name for a Hugging Face BERT tensor; `None` for tensors llama.cpp does not use.
fn map_tensor_name(hf: &str, n_layer: u32) -> Option<Result<String, String>> {
    let name = hf.strip_prefix("bert.").unwrap_or(hf);
    if name == "embeddings.position_ids" || name.starts_with("pooler.") {
        return None;
    }
    let fixed = match name {
        "embeddings.word_embeddings.weight" => Some("token_embd.weight"),
        "embeddings.position_embeddings.weight" => Some("position_embd.weight"),
        "embeddings.token_type_embeddings.weight" => Some("token_types.weight"),
        "embeddings.LayerNorm.weight" => Some("token_embd_norm.weight"),
        "embeddings.LayerNorm.bias" => Some("token_embd_norm.bias"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(Ok(f.to_string()));
    }
    let unknown = || Some(Err(format!("unexpected tensor {hf}")));
    let Some(rest) = name.strip_prefix("encoder.layer.") else {
        return unknown();
    };
    let Some((layer, part)) = rest.split_once('.') else {
        return unknown();
    };
    let Ok(layer) = layer.parse::<u32>() else {
        return unknown();
    };
    if layer >= n_layer {
        return Some(Err(format!(
            "tensor {hf} is beyond the {n_layer} layers in config.json"
        )));
    }
    let (stem, suffix) = part.rsplit_once('.')?;
    let gguf = match stem {
        "attention.self.query" => "attn_q",
        "attention.self.key" => "attn_k",
        "attention.self.value" => "attn_v",
        "attention.output.dense" => "attn_output",
        "attention.output.LayerNorm" => "attn_output_norm",
        "intermediate.dense" => "ffn_up",
        "output.dense" => "ffn_down",
        "output.LayerNorm" => "layer_output_norm",
        _ => return unknown(),
    };
    if suffix != "weight" && suffix != "bias" {
        return unknown();
    }
    Some(Ok(format!("blk.{layer}.{gguf}.{suffix}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names_follow_llama_cpp_bert_loader() {
        let m = |s: &str| map_tensor_name(s, 6).map(|r| r.unwrap());
        assert_eq!(
            m("embeddings.word_embeddings.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(
            m("encoder.layer.3.attention.self.query.bias").as_deref(),
            Some("blk.3.attn_q.bias")
        );
        assert_eq!(
            m("bert.encoder.layer.5.output.LayerNorm.weight").as_deref(),
            Some("blk.5.layer_output_norm.weight")
        );
        assert_eq!(
            m("encoder.layer.0.intermediate.dense.weight").as_deref(),
            Some("blk.0.ffn_up.weight")
        );
        assert!(m("pooler.dense.weight").is_none());
        assert!(m("embeddings.position_ids").is_none());
        assert!(map_tensor_name("encoder.layer.6.output.dense.weight", 6)
            .unwrap()
            .is_err());
        assert!(map_tensor_name("decoder.x.weight", 6).unwrap().is_err());
    }
}
