//! The EmbeddingGemma importer: a sentence-transformers `Gemma3TextModel` folder (Transformer,
//! mean Pooling, two Dense projections, Normalize) to the GGUF that llama.cpp's
//! `gemma-embedding` loader reads. It follows llama.cpp's converter (`EmbeddingGemma` in
//! `conversion/gemma.py` with `--sentence-transformers-dense-modules`, and
//! `_create_vocab_sentencepiece`): the same keys, tensor names, norm shift and vocabulary.
//! The facts are in `specification/models.md`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::Value as Json;

use super::sentencepiece::{read_pieces, PieceType};
use super::{
    add_weight, config_u32, invalid, io_err, read_json, read_pooling, read_safetensors,
    ImportError, ImportType, Imported, StTensor,
};
use crate::gguf::{GgufWriter, Value};

const ARCH: &str = "gemma-embedding";

/// One sentence-transformers Dense module (`2_Dense` or `3_Dense`).
struct Dense {
    name: &'static str,
    in_features: u32,
    out_features: u32,
    weight: StTensor,
}

pub(super) fn gguf(
    dir: &Path,
    config: &Json,
    ty: ImportType,
    name: &str,
) -> Result<Imported, ImportError> {
    let config_path = dir.join("config.json");
    let n_embd = config_u32(config, &config_path, "hidden_size")?;
    let n_layer = config_u32(config, &config_path, "num_hidden_layers")?;
    let dense = read_dense_modules(dir, n_embd)?;
    let (pooling, pooling_id) = read_pooling(dir)?;

    let mut w = GgufWriter::new();
    add_hparams(&mut w, config, &config_path, ty, name)?;
    w.add(format!("{ARCH}.pooling_type"), Value::U32(pooling_id));
    for d in &dense {
        w.add(
            format!("{ARCH}.{}_feat_in", d.name),
            Value::U32(d.in_features),
        );
        w.add(
            format!("{ARCH}.{}_feat_out", d.name),
            Value::U32(d.out_features),
        );
    }
    add_prompts(&mut w, dir)?;
    let vocab = add_vocab(&mut w, dir, config, &config_path)?;

    let st_path = dir.join("model.safetensors");
    let tensors = read_safetensors(&st_path)?;
    let mut names = Vec::new();
    for (hf_name, mut tensor) in tensors {
        let gguf_name = map_tensor_name(&hf_name, n_layer).map_err(|e| invalid(&st_path, e))?;
        if gguf_name == "token_embd.weight" {
            cut_rows(&mut tensor, vocab).map_err(|e| invalid(&st_path, e))?;
        }
        // Gemma3's RMSNorm computes x * (1 + w); llama.cpp's computes x * w.
        if hf_name.ends_with("norm.weight") {
            tensor.values.iter_mut().for_each(|v| *v += 1.0);
        }
        add_weight(&mut w, &mut names, gguf_name, &tensor, ty, false);
    }
    let expected = 2 + 13 * n_layer as usize;
    if names.len() != expected {
        return Err(invalid(
            &st_path,
            format!(
                "found {} Gemma3 tensors, expected {expected} for {n_layer} layers",
                names.len()
            ),
        ));
    }
    for d in &dense {
        add_weight(
            &mut w,
            &mut names,
            format!("{}.weight", d.name),
            &d.weight,
            ty,
            false,
        );
    }
    Ok(Imported {
        writer: w,
        tensors: names,
        vocab,
        pooling,
    })
}

/// The hyperparameters the `gemma-embedding` loader reads, from `config.json`.
fn add_hparams(
    w: &mut GgufWriter,
    config: &Json,
    path: &Path,
    ty: ImportType,
    name: &str,
) -> Result<(), ImportError> {
    let u = |key: &str| config_u32(config, path, key);
    let f = |key: &str, default: f64| config[key].as_f64().unwrap_or(default) as f32;
    if config["use_bidirectional_attention"].as_bool() == Some(false) {
        return Err(invalid(
            path,
            "use_bidirectional_attention is false: this is a causal Gemma3, not EmbeddingGemma",
        ));
    }
    // The file's own sliding window (transformers rewrites it in memory; the converter reads
    // the file for the same reason).
    let sliding_window = u("sliding_window")?;
    let head_dim = config_u32(config, path, "head_dim").unwrap_or(256);
    let k = |s: &str| format!("{ARCH}.{s}");
    w.add("general.architecture", Value::String(ARCH.into()));
    w.add("general.type", Value::String("model".into()));
    w.add("general.name", Value::String(name.into()));
    w.add(k("block_count"), Value::U32(u("num_hidden_layers")?));
    w.add(
        k("context_length"),
        Value::U32(u("max_position_embeddings")?),
    );
    w.add(k("embedding_length"), Value::U32(u("hidden_size")?));
    w.add(
        k("feed_forward_length"),
        Value::U32(u("intermediate_size")?),
    );
    w.add(
        k("attention.head_count"),
        Value::U32(u("num_attention_heads")?),
    );
    w.add(
        k("attention.head_count_kv"),
        Value::U32(u("num_key_value_heads")?),
    );
    w.add(k("attention.key_length"), Value::U32(head_dim));
    w.add(k("attention.value_length"), Value::U32(head_dim));
    w.add(
        k("attention.layer_norm_rms_epsilon"),
        Value::F32(f("rms_norm_eps", 1e-6)),
    );
    w.add(k("rope.freq_base"), Value::F32(f("rope_theta", 1e6)));
    w.add(
        k("rope.freq_base_swa"),
        Value::F32(f("rope_local_base_freq", 1e4)),
    );
    w.add(k("attention.sliding_window"), Value::U32(sliding_window));
    w.add("general.file_type", Value::U32(ty.file_type()));
    w.add("general.quantization_version", Value::U32(2));
    Ok(())
}

/// The Dense modules `modules.json` lists. Both must be there: without them llama.cpp returns
/// the 768-d vector from before the projections, which is not the model's output
/// (llama.cpp#18677).
fn read_dense_modules(dir: &Path, n_embd: u32) -> Result<Vec<Dense>, ImportError> {
    let modules_path = dir.join("modules.json");
    let modules = read_json(&modules_path)?;
    let paths: Vec<&str> = modules
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["type"].as_str().is_some_and(|t| t.ends_with("Dense")))
        .filter_map(|m| m["path"].as_str())
        .collect();
    if paths != ["2_Dense", "3_Dense"] {
        return Err(invalid(
            &modules_path,
            format!(
                "EmbeddingGemma needs its two Dense modules 2_Dense and 3_Dense, found {paths:?}: \
                 without them the vectors are not the model's (llama.cpp#18677)"
            ),
        ));
    }
    let mut out = Vec::new();
    for (path, name) in paths.into_iter().zip(["dense_2", "dense_3"]) {
        let conf_path = dir.join(path).join("config.json");
        let conf = read_json(&conf_path)?;
        let in_features = config_u32(&conf, &conf_path, "in_features")?;
        let out_features = config_u32(&conf, &conf_path, "out_features")?;
        let activation = conf["activation_function"].as_str().unwrap_or_default();
        if conf["bias"].as_bool() != Some(false) || !activation.ends_with("Identity") {
            return Err(invalid(
                &conf_path,
                "llama.cpp's gemma-embedding runs a Dense module without bias or activation only",
            ));
        }
        let st_path = dir.join(path).join("model.safetensors");
        let weight = read_safetensors(&st_path)?
            .remove("linear.weight")
            .ok_or_else(|| invalid(&st_path, "no linear.weight"))?;
        if weight.shape != [u64::from(out_features), u64::from(in_features)] {
            return Err(invalid(
                &st_path,
                format!(
                    "linear.weight has shape {:?}, config.json says {out_features} x {in_features}",
                    weight.shape
                ),
            ));
        }
        out.push(Dense {
            name,
            in_features,
            out_features,
            weight,
        });
    }
    // llama.cpp's loader asserts these (GGML_ASSERT); a wrong GGUF must never reach it.
    let (first, second) = (&out[0], &out[1]);
    if first.in_features != n_embd
        || second.out_features != n_embd
        || first.out_features != second.in_features
    {
        return Err(invalid(
            &modules_path,
            format!(
                "the Dense modules ({} -> {} -> {} -> {}) do not chain from and back to the \
                 hidden size {n_embd}",
                first.in_features, first.out_features, second.in_features, second.out_features
            ),
        ));
    }
    Ok(out)
}

/// The named prompts of `config_sentence_transformers.json`, as
/// `sentence_transformers.prompts.NAME` (llama.cpp's converter stores none; the presets read
/// these, else their built-in table).
fn add_prompts(w: &mut GgufWriter, dir: &Path) -> Result<(), ImportError> {
    let path = dir.join("config_sentence_transformers.json");
    if !path.exists() {
        return Ok(());
    }
    let conf = read_json(&path)?;
    let prompts: BTreeMap<&str, &str> = conf["prompts"]
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.as_str(), v.as_str()?)))
        .collect();
    for (name, text) in prompts {
        w.add(
            format!("sentence_transformers.prompts.{name}"),
            Value::String(text.into()),
        );
    }
    if let Some(default) = conf["default_prompt_name"].as_str() {
        w.add(
            "sentence_transformers.default_prompt_name",
            Value::String(default.into()),
        );
    }
    Ok(())
}

/// llama.cpp's token types (`SentencePieceTokenTypes`).
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// The SentencePiece vocabulary as the converter writes it; returns its size.
fn add_vocab(
    w: &mut GgufWriter,
    dir: &Path,
    config: &Json,
    config_path: &Path,
) -> Result<usize, ImportError> {
    let sp_path = dir.join("tokenizer.model");
    let bytes = fs::read(&sp_path).map_err(io_err(&sp_path))?;
    let pieces = read_pieces(&bytes).map_err(|e| invalid(&sp_path, e))?;
    let size = config["vocab_size"]
        .as_u64()
        .map_or(pieces.len(), |v| v as usize);
    if size == 0 {
        return Err(invalid(config_path, "vocab_size is 0"));
    }
    let mut tokens: Vec<String> = (0..size).map(|i| format!("[PAD{i}]")).collect();
    let mut scores = vec![-10000f32; size];
    let mut types = vec![UNUSED; size];
    for (id, p) in pieces.iter().enumerate().take(size) {
        tokens[id] = p.text.clone();
        scores[id] = p.score;
        // The converter asks IsUnknown, IsControl, IsUnused, IsByte; all else (user-defined
        // pieces too) is normal.
        types[id] = match p.kind {
            PieceType::Unknown => 2,
            PieceType::Control => CONTROL,
            PieceType::Unused => UNUSED,
            PieceType::Byte => 6,
            PieceType::Normal | PieceType::UserDefined => NORMAL,
        };
    }
    let tc_path = dir.join("tokenizer_config.json");
    let tc = if tc_path.exists() {
        read_json(&tc_path)?
    } else {
        Json::Null
    };
    apply_added_tokens(&tc, &mut tokens, &mut scores, &mut types);
    let id_of = |key: &str| -> Option<u32> {
        let content = tc[key].as_str().or_else(|| tc[key]["content"].as_str())?;
        tokens.iter().position(|t| t == content).map(|i| i as u32)
    };
    let specials = [
        ("bos", id_of("bos_token")),
        ("eos", id_of("eos_token")),
        ("unknown", id_of("unk_token")),
        ("padding", id_of("pad_token")),
    ];
    w.add("tokenizer.ggml.model", Value::String("llama".into()));
    w.add("tokenizer.ggml.pre", Value::String("default".into()));
    w.add(
        "tokenizer.ggml.tokens",
        Value::Array(tokens.into_iter().map(Value::String).collect()),
    );
    w.add(
        "tokenizer.ggml.scores",
        Value::Array(scores.into_iter().map(Value::F32).collect()),
    );
    w.add(
        "tokenizer.ggml.token_type",
        Value::Array(types.into_iter().map(Value::I32).collect()),
    );
    for (name, id) in specials {
        if let Some(id) = id {
            w.add(format!("tokenizer.ggml.{name}_token_id"), Value::U32(id));
        }
    }
    for typ in ["bos", "eos"] {
        if let Some(b) = tc[format!("add_{typ}_token")].as_bool() {
            w.add(format!("tokenizer.ggml.add_{typ}_token"), Value::Bool(b));
        }
    }
    w.add("tokenizer.ggml.add_space_prefix", Value::Bool(false));
    Ok(size)
}

/// `tokenizer_config.json`'s `added_tokens_decoder`, as the converter applies it: special (or
/// special-looking) tokens become control tokens, the rest user-defined with `▁` read as a
/// space; all get score -1000. Ids beyond the vocabulary are ignored (`<image_soft_token>`).
fn apply_added_tokens(tc: &Json, tokens: &mut [String], scores: &mut [f32], types: &mut [i32]) {
    let Some(added) = tc["added_tokens_decoder"].as_object() else {
        return;
    };
    for (id, data) in added {
        let (Ok(id), Some(content)) = (id.parse::<usize>(), data["content"].as_str()) else {
            continue;
        };
        if id >= tokens.len() {
            continue;
        }
        if data["special"].as_bool() == Some(true) || looks_special(content) {
            types[id] = CONTROL;
            tokens[id] = content.to_string();
        } else {
            types[id] = USER_DEFINED;
            tokens[id] = content.replace('\u{2581}', " ");
        }
        scores[id] = -1000.0;
    }
}

/// The converter's `does_token_look_special`.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<｜") && t.ends_with("｜>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// Keeps the first `rows` rows of the token embeddings (the converter drops rows beyond the
/// vocabulary).
fn cut_rows(t: &mut StTensor, rows: usize) -> Result<(), String> {
    let [n, width] = t.shape[..] else {
        return Err(format!("embed_tokens has shape {:?}", t.shape));
    };
    if (n as usize) < rows {
        return Err(format!(
            "embed_tokens has {n} rows for a vocabulary of {rows}"
        ));
    }
    t.values.truncate(rows * width as usize);
    t.shape = vec![rows as u64, width];
    Ok(())
}

/// GGUF name for a Gemma3 tensor.
fn map_tensor_name(hf: &str, n_layer: u32) -> Result<String, String> {
    let name = hf.strip_prefix("model.").unwrap_or(hf);
    match name {
        "embed_tokens.weight" => return Ok("token_embd.weight".into()),
        "norm.weight" => return Ok("output_norm.weight".into()),
        _ => {}
    }
    let unknown = || format!("unexpected tensor {hf}");
    let rest = name.strip_prefix("layers.").ok_or_else(unknown)?;
    let (layer, part) = rest.split_once('.').ok_or_else(unknown)?;
    let layer: u32 = layer.parse().map_err(|_| unknown())?;
    if layer >= n_layer {
        return Err(format!(
            "tensor {hf} is beyond the {n_layer} layers in config.json"
        ));
    }
    let gguf = match part {
        "input_layernorm.weight" => "attn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "self_attn.q_norm.weight" => "attn_q_norm",
        "self_attn.k_norm.weight" => "attn_k_norm",
        "post_attention_layernorm.weight" => "post_attention_norm",
        "pre_feedforward_layernorm.weight" => "ffn_norm",
        "post_feedforward_layernorm.weight" => "post_ffw_norm",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        _ => return Err(unknown()),
    };
    Ok(format!("blk.{layer}.{gguf}.weight"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensor_names_follow_llama_cpp_gemma_embedding_loader() {
        let m = |s: &str| map_tensor_name(s, 24).unwrap();
        assert_eq!(m("embed_tokens.weight"), "token_embd.weight");
        assert_eq!(m("norm.weight"), "output_norm.weight");
        assert_eq!(
            m("layers.23.pre_feedforward_layernorm.weight"),
            "blk.23.ffn_norm.weight"
        );
        assert_eq!(
            m("model.layers.0.self_attn.k_norm.weight"),
            "blk.0.attn_k_norm.weight"
        );
        assert_eq!(m("layers.4.mlp.down_proj.weight"), "blk.4.ffn_down.weight");
        assert!(map_tensor_name("layers.24.mlp.up_proj.weight", 24).is_err());
        assert!(map_tensor_name("lm_head.weight", 24).is_err());
    }

    #[test]
    fn added_tokens_follow_the_converter() {
        let tc: Json = serde_json::from_str(
            r#"{"added_tokens_decoder": {
                "0": {"content": "<pad>", "special": false},
                "1": {"content": "<unused0>", "special": false},
                "2": {"content": "\n\n", "special": false},
                "3": {"content": "<start_of_turn>", "special": true},
                "9": {"content": "<image_soft_token>", "special": true}}}"#,
        )
        .unwrap();
        let mut tokens: Vec<String> = (0..4).map(|i| format!("p{i}")).collect();
        let mut scores = vec![0.0; 4];
        let mut types = vec![NORMAL; 4];
        apply_added_tokens(&tc, &mut tokens, &mut scores, &mut types);
        assert_eq!(types, [CONTROL, CONTROL, USER_DEFINED, CONTROL]);
        assert_eq!(tokens, ["<pad>", "<unused0>", "\n\n", "<start_of_turn>"]);
        assert_eq!(scores, [-1000.0; 4]);
    }
}
