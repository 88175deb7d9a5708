//! `model import`: turns a Hugging Face BERT-family checkpoint (safetensors + config.json +
//! vocab.txt, as sentence-transformers ships them) into a GGUF that llama.cpp's BERT loader
//! reads, without Python. It mirrors what llama.cpp's `convert_hf_to_gguf.py` writes for
//! `BertModel`: the same tensor names, metadata keys, WordPiece vocabulary spelling and
//! tensor types (1-D tensors, position and token-type embeddings stay f32), so the result gives
//! the same vectors as a GGUF made by that script (checked by `tests/import.rs`).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::gguf::{
    GgufWriter, Value, GGML_TYPE_BF16, GGML_TYPE_F16, GGML_TYPE_F32, GGML_TYPE_Q8_0,
};

/// Why an import failed.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {error}")]
    Io {
        path: PathBuf,
        /// In the message (not a `source`: chained printing would repeat it).
        error: std::io::Error,
    },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
    #[error(
        "{dir}: model type {found:?} is not supported by `model import` (supported: bert); \
         convert it with llama.cpp's convert_hf_to_gguf.py and pass the GGUF with --model"
    )]
    Unsupported { dir: PathBuf, found: String },
}

/// Element type of the written weight matrices (1-D tensors, position and token-type
/// embeddings stay f32 in every type, as llama.cpp's converter writes them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportType {
    F32,
    F16,
    /// bfloat16, rounded to nearest even (as llama.cpp's converter and PyTorch round).
    Bf16,
    /// ggml's 8-bit blocks: 32 weights share one f16 scale (`quantize_row_q8_0_ref`).
    Q8_0,
}

impl ImportType {
    pub const ALL: [ImportType; 4] = [
        ImportType::F32,
        ImportType::F16,
        ImportType::Bf16,
        ImportType::Q8_0,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ImportType::F32 => "f32",
            ImportType::F16 => "f16",
            ImportType::Bf16 => "bf16",
            ImportType::Q8_0 => "q8_0",
        }
    }

    /// The type a GGUF's `general.file_type` names, where it is one of these.
    pub fn from_file_type(file_type: u64) -> Option<ImportType> {
        ImportType::ALL
            .into_iter()
            .find(|t| u64::from(t.file_type()) == file_type)
    }

    /// llama.cpp's `general.file_type` (`LLAMA_FTYPE_*`).
    fn file_type(self) -> u32 {
        match self {
            ImportType::F32 => 0,
            ImportType::F16 => 1,
            ImportType::Q8_0 => 7,
            ImportType::Bf16 => 32,
        }
    }

    /// The GGML type and bytes of a weight matrix whose rows have `row_len` elements.
    fn encode(self, values: &[f32], row_len: usize) -> (u32, Vec<u8>) {
        match self {
            ImportType::F32 => (GGML_TYPE_F32, f32_bytes(values)),
            ImportType::F16 => (GGML_TYPE_F16, f16_bytes(values)),
            ImportType::Bf16 => (GGML_TYPE_BF16, bf16_bytes(values)),
            // A row that is not a whole number of blocks stays f16, as in the converter.
            ImportType::Q8_0 if !row_len.is_multiple_of(32) => (GGML_TYPE_F16, f16_bytes(values)),
            ImportType::Q8_0 => (GGML_TYPE_Q8_0, q8_0_bytes(values)),
        }
    }
}

impl std::fmt::Display for ImportType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ImportType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ImportType::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown type {s:?} (expected f32, f16, bf16 or q8_0)"))
    }
}

/// What an import wrote.
#[derive(Debug, Clone)]
pub struct ImportReport {
    pub output: PathBuf,
    pub tensors: usize,
    pub vocab: usize,
    pub pooling: &'static str,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |error| ImportError::Io {
        path: path.to_path_buf(),
        error,
    }
}

fn invalid(path: &Path, what: impl Into<String>) -> ImportError {
    ImportError::Invalid {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

fn read_json(path: &Path) -> Result<Json, ImportError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| invalid(path, format!("not valid JSON: {e}")))
}

/// Imports the checkpoint in `dir` into a GGUF at `output`.
///
/// # Errors
/// Missing or malformed files, an unsupported architecture, or I/O errors writing `output`.
pub fn import_model(
    dir: &Path,
    output: &Path,
    ty: ImportType,
    name: &str,
) -> Result<ImportReport, ImportError> {
    let config_path = dir.join("config.json");
    let config = read_json(&config_path)?;
    let model_type = config["model_type"].as_str().unwrap_or_default();
    if model_type != "bert" {
        return Err(ImportError::Unsupported {
            dir: dir.to_path_buf(),
            found: model_type.to_string(),
        });
    }
    let cfg_u32 = |key: &str| -> Result<u32, ImportError> {
        config[key]
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .ok_or_else(|| invalid(&config_path, format!("missing integer {key:?}")))
    };
    let n_layer = cfg_u32("num_hidden_layers")?;
    let n_ctx = cfg_u32("max_position_embeddings")?;
    let n_embd = cfg_u32("hidden_size")?;
    let n_ff = cfg_u32("intermediate_size")?;
    let n_head = cfg_u32("num_attention_heads")?;
    let n_token_types = cfg_u32("type_vocab_size").unwrap_or(2);
    let eps = config["layer_norm_eps"].as_f64().unwrap_or(1e-12) as f32;

    // Pooling from sentence-transformers' module config; mean when absent (its default).
    let pooling_path = dir.join("1_Pooling").join("config.json");
    let (pooling, pooling_id) = if pooling_path.exists() {
        let p = read_json(&pooling_path)?;
        if p["pooling_mode_cls_token"].as_bool() == Some(true) {
            ("cls", 2u32)
        } else if p["pooling_mode_mean_tokens"].as_bool() == Some(true) {
            ("mean", 1)
        } else {
            return Err(invalid(
                &pooling_path,
                "only mean and cls pooling can be expressed in GGUF",
            ));
        }
    } else {
        ("mean", 1)
    };

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
    let mut count = 0;
    for (hf_name, tensor) in tensors {
        let Some(gguf_name) = map_tensor_name(&hf_name, n_layer) else {
            continue;
        };
        let gguf_name = gguf_name.map_err(|what| invalid(&st_path, what))?;
        let keep_f32 = tensor.shape.len() == 1
            || gguf_name == "position_embd.weight"
            || gguf_name == "token_types.weight";
        let dims: Vec<u64> = tensor.shape.iter().rev().copied().collect();
        let row_len = tensor.shape.last().copied().unwrap_or(0) as usize;
        let (ggml_type, data) = if keep_f32 {
            (GGML_TYPE_F32, f32_bytes(&tensor.values))
        } else {
            ty.encode(&tensor.values, row_len)
        };
        w.add_tensor(gguf_name, dims, ggml_type, data);
        count += 1;
    }
    let expected = 5 + 16 * n_layer as usize;
    if count != expected {
        return Err(invalid(
            &st_path,
            format!("found {count} BERT tensors, expected {expected} for {n_layer} layers"),
        ));
    }
    if let Some(parent) = output.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    w.write(output).map_err(io_err(output))?;
    Ok(ImportReport {
        output: output.to_path_buf(),
        tensors: count,
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

struct StTensor {
    shape: Vec<u64>,
    values: Vec<f32>,
}

/// Reads every tensor of a safetensors file as f32 (F32, F16 and BF16 sources), in name order.
fn read_safetensors(path: &Path) -> Result<BTreeMap<String, StTensor>, ImportError> {
    let bytes = fs::read(path).map_err(io_err(path))?;
    if bytes.len() < 8 {
        return Err(invalid(path, "too short for a safetensors file"));
    }
    let header_len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    let header_end = 8usize
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| invalid(path, "header length runs past the end of the file"))?;
    let header: serde_json::Map<String, Json> = serde_json::from_slice(&bytes[8..header_end])
        .map_err(|e| invalid(path, format!("header is not JSON: {e}")))?;
    let data = &bytes[header_end..];
    let mut out = BTreeMap::new();
    for (name, info) in header {
        if name == "__metadata__" {
            continue;
        }
        let dtype = info["dtype"].as_str().unwrap_or_default();
        let shape: Vec<u64> = info["shape"]
            .as_array()
            .map(|a| a.iter().filter_map(Json::as_u64).collect())
            .unwrap_or_default();
        let offs: Vec<usize> = info["data_offsets"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_u64().map(|v| v as usize))
                    .collect()
            })
            .unwrap_or_default();
        let [start, end] = offs[..] else {
            return Err(invalid(path, format!("tensor {name} has no data_offsets")));
        };
        let raw = data
            .get(start..end)
            .ok_or_else(|| invalid(path, format!("tensor {name} runs past the end of the file")))?;
        let values: Vec<f32> = match dtype {
            "F32" => raw
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect(),
            "F16" => raw
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            "BF16" => raw
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            // Integer tensors (position ids) are not weights.
            _ => continue,
        };
        let elements: u64 = shape.iter().product();
        if elements != values.len() as u64 {
            return Err(invalid(
                path,
                format!(
                    "tensor {name}: shape {shape:?} does not match its {} values",
                    values.len()
                ),
            ));
        }
        out.insert(name, StTensor { shape, values });
    }
    Ok(out)
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// Round-to-nearest-even, as numpy's `astype(float16)` does.
fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
        .collect()
}

/// Round-to-nearest-even to bfloat16 (NaN kept quiet), as llama.cpp's converter does.
fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
        .collect()
}

/// ggml's reference Q8_0 quantiser (`quantize_row_q8_0_ref`): per block of 32, the scale is
/// max|x| / 127 stored as f16, each weight `round(x / scale)` (half away from zero) as i8.
fn q8_0_bytes(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 34);
    for block in values.chunks(32) {
        let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&half::f16::from_f32(d).to_le_bytes());
        out.extend(block.iter().map(|x| (x * id).round() as i8 as u8));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_blocks_follow_ggml_reference_quantiser() {
        let mut block: Vec<f32> = (0..32).map(|i| (i as f32 - 16.0) / 8.0).collect();
        block[5] = 2.54; // the largest magnitude: scale 0.02
        let bytes = q8_0_bytes(&block);
        assert_eq!(bytes.len(), 34);
        let d = half::f16::from_le_bytes([bytes[0], bytes[1]]).to_f32();
        assert!((d - 0.02).abs() < 1e-5, "{d}");
        assert_eq!(bytes[2 + 5] as i8, 127);
        assert_eq!(bytes[2] as i8, (-2.0f32 / 0.02).round() as i8);
        // All zero: scale 0, weights 0 (no division by zero).
        assert_eq!(q8_0_bytes(&[0.0; 32]), vec![0u8; 34]);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        // 1 + 2^-8 is halfway between two bf16 values: ties go to the even one (1.0).
        let b = bf16_bytes(&[1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0]);
        assert_eq!(&b[..2], &half::bf16::from_f32(1.0).to_le_bytes());
        assert_eq!(
            &b[2..],
            &half::bf16::from_f32(1.0 + 4.0 / 256.0).to_le_bytes()
        );
        assert_eq!("bf16".parse::<ImportType>(), Ok(ImportType::Bf16));
        assert!("q4_0".parse::<ImportType>().is_err());
        for t in ImportType::ALL {
            assert_eq!(
                ImportType::from_file_type(u64::from(t.file_type())),
                Some(t)
            );
        }
        assert_eq!(
            ImportType::from_file_type(2),
            None,
            "q4_0 is not one of ours"
        );
    }

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
