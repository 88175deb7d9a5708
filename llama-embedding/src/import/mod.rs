//! `model import`: turns a sentence-transformers checkpoint (safetensors + config.json + its
//! tokenizer files) into a GGUF that llama.cpp reads, without Python. It mirrors what
//! llama.cpp's `convert_hf_to_gguf.py` writes: BERT ([`bert`]: WordPiece, `BertModel`) and
//! EmbeddingGemma ([`gemma`]: Gemma3 + SentencePiece + the two Dense modules). This file holds
//! the dispatch, the safetensors reader and the weight encodings.

mod bert;
mod gemma;
pub mod sentencepiece;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use crate::gguf::{GgufWriter, GGML_TYPE_BF16, GGML_TYPE_F16, GGML_TYPE_F32, GGML_TYPE_Q8_0};

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
        "{dir}: model type {found:?} is not supported by `model import` (supported: bert, gemma3_text); \
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

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |error| ImportError::Io {
        path: path.to_path_buf(),
        error,
    }
}

pub(crate) fn invalid(path: &Path, what: impl Into<String>) -> ImportError {
    ImportError::Invalid {
        path: path.to_path_buf(),
        what: what.into(),
    }
}

pub(crate) fn read_json(path: &Path) -> Result<Json, ImportError> {
    let text = fs::read_to_string(path).map_err(io_err(path))?;
    serde_json::from_str(&text).map_err(|e| invalid(path, format!("not valid JSON: {e}")))
}

/// Imports the checkpoint in `dir` into a GGUF at `output`: a BERT (`model_type` `bert`) or an
/// EmbeddingGemma (`gemma3_text`, with its sentence-transformers Dense modules).
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
    let w = match model_type {
        "bert" => bert::gguf(dir, &config, ty, name)?,
        "gemma3_text" => gemma::gguf(dir, &config, ty, name)?,
        _ => {
            return Err(ImportError::Unsupported {
                dir: dir.to_path_buf(),
                found: model_type.to_string(),
            })
        }
    };
    let report = ImportReport {
        output: output.to_path_buf(),
        tensors: w.tensors.len(),
        vocab: w.vocab,
        pooling: w.pooling,
    };
    if let Some(parent) = output.parent() {
        fs::create_dir_all(parent).map_err(io_err(parent))?;
    }
    w.writer.write(output).map_err(io_err(output))?;
    Ok(report)
}

/// A GGUF ready to write, with what the report says of it.
pub(crate) struct Imported {
    pub writer: GgufWriter,
    pub tensors: Vec<String>,
    pub vocab: usize,
    pub pooling: &'static str,
}

/// An integer hyperparameter of `config.json`.
pub(crate) fn config_u32(config: &Json, path: &Path, key: &str) -> Result<u32, ImportError> {
    config[key]
        .as_u64()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| invalid(path, format!("missing integer {key:?}")))
}

/// sentence-transformers' pooling (`1_Pooling/config.json`) as (name, GGUF pooling type);
/// mean when absent (its default).
pub(crate) fn read_pooling(dir: &Path) -> Result<(&'static str, u32), ImportError> {
    let pooling_path = dir.join("1_Pooling").join("config.json");
    if !pooling_path.exists() {
        return Ok(("mean", 1));
    }
    let p = read_json(&pooling_path)?;
    if p["pooling_mode_cls_token"].as_bool() == Some(true) {
        Ok(("cls", 2))
    } else if p["pooling_mode_mean_tokens"].as_bool() == Some(true) {
        Ok(("mean", 1))
    } else if p["pooling_mode_lasttoken"].as_bool() == Some(true) {
        Ok(("last", 3))
    } else {
        Err(invalid(
            &pooling_path,
            "only mean, cls and last-token pooling can be expressed in GGUF",
        ))
    }
}

/// Adds a weight: 1-D tensors (and those `keep_f32` names) in f32, matrices in `ty`.
pub(crate) fn add_weight(
    w: &mut GgufWriter,
    names: &mut Vec<String>,
    name: String,
    tensor: &StTensor,
    ty: ImportType,
    keep_f32: bool,
) {
    let dims: Vec<u64> = tensor.shape.iter().rev().copied().collect();
    let row_len = tensor.shape.last().copied().unwrap_or(0) as usize;
    let (ggml_type, data) = if keep_f32 || tensor.shape.len() == 1 {
        (GGML_TYPE_F32, f32_bytes(&tensor.values))
    } else {
        ty.encode(&tensor.values, row_len)
    };
    w.add_tensor(name.clone(), dims, ggml_type, data);
    names.push(name);
}

pub(crate) struct StTensor {
    pub shape: Vec<u64>,
    pub values: Vec<f32>,
}

/// Reads every tensor of a safetensors file as f32 (F32, F16 and BF16 sources), in name order.
pub(crate) fn read_safetensors(path: &Path) -> Result<BTreeMap<String, StTensor>, ImportError> {
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
}
