//! Random-weight BERT models of any shape, written as a Hugging Face checkpoint and imported
//! through [`crate::import`] (so they exercise the importer): the tests' tiny BERT and the
//! kernel probe's models. Their vectors mean nothing; they are
//! deterministic (fixed seed).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::import::{import_model, ImportType};

/// Sizes of a random BERT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub layers: usize,
    pub hidden: usize,
    pub ff: usize,
    pub heads: usize,
    pub positions: usize,
}

impl Shape {
    /// The tests' tiny BERT: 2 layers, 32 dimensions (about 150 KB as GGUF).
    pub const TINY: Shape = Shape {
        layers: 2,
        hidden: 32,
        ff: 64,
        heads: 2,
        positions: 128,
    };
    /// all-MiniLM-L6-v2's matrix shapes (384 × 1536, 12 heads, 512 positions) in one layer:
    /// the kernel probe runs the same matrix-product and attention shapes as the default model.
    pub const MINILM_LAYER: Shape = Shape {
        layers: 1,
        hidden: 384,
        ff: 1536,
        heads: 12,
        positions: 512,
    };
}

/// Deterministic xorshift64* in [-0.1, 0.1).
pub(crate) struct Rng(pub(crate) u64);
impl Rng {
    pub(crate) fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
    }
}

fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for c in ('a'..='z').chain('0'..='9') {
        v.push(c.to_string());
        v.push(format!("##{c}"));
    }
    for p in [".", ",", "!", "?", "'", "-", "(", ")", ":", ";", "\"", "/"] {
        v.push(p.to_string());
    }
    let words = "the of and to in is was for on that with as by at it from he she be this are \
        or his an which have not had one were but all their there been has more its when who \
        will can time than into other some them these two new only may first also after such \
        any what used many most over then world would like between through where year make \
        text line embedding model batch token file run item data test hello quick brown fox \
        jumps lazy dog rust memory safety";
    for w in words.split_whitespace() {
        v.push(w.to_string());
        v.push(format!("##{w}"));
    }
    v
}

/// The checkpoint's tensors and shapes, in the order their random values are drawn.
fn tensor_shapes(shape: &Shape, n_vocab: usize) -> Vec<(String, Vec<usize>)> {
    let Shape {
        layers,
        hidden,
        ff,
        positions,
        ..
    } = *shape;
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![n_vocab, hidden],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![positions, hidden],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![2, hidden],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![hidden]),
        ("embeddings.LayerNorm.bias".into(), vec![hidden]),
    ];
    for l in 0..layers {
        let p = format!("encoder.layer.{l}.");
        for (name, shape) in [
            ("attention.self.query", vec![hidden, hidden]),
            ("attention.self.key", vec![hidden, hidden]),
            ("attention.self.value", vec![hidden, hidden]),
            ("attention.output.dense", vec![hidden, hidden]),
            ("intermediate.dense", vec![ff, hidden]),
            ("output.dense", vec![hidden, ff]),
        ] {
            tensors.push((format!("{p}{name}.bias"), vec![shape[0]]));
            tensors.push((format!("{p}{name}.weight"), shape));
        }
        for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
            tensors.push((format!("{p}{name}.weight"), vec![hidden]));
            tensors.push((format!("{p}{name}.bias"), vec![hidden]));
        }
    }
    tensors
}

/// Writes a random BERT of `shape` as a Hugging Face checkpoint into `dir` and imports it to
/// `dir/FILE` with weights of type `ty`.
///
/// # Errors
/// I/O errors.
pub fn write(dir: &Path, shape: &Shape, ty: ImportType, file: &str) -> Result<PathBuf> {
    let Shape {
        layers,
        hidden,
        ff,
        heads,
        positions,
    } = *shape;
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let vocab = vocab();
    let n_vocab = vocab.len();
    let config = serde_json::json!({
        "model_type": "bert",
        "num_hidden_layers": layers,
        "max_position_embeddings": positions,
        "hidden_size": hidden,
        "intermediate_size": ff,
        "num_attention_heads": heads,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "vocab_size": n_vocab,
    });
    let w = |p: &str, s: String| fs::write(dir.join(p), s).map_err(|e| Error::io(dir.join(p), e));
    w("config.json", config.to_string())?;
    w("vocab.txt", vocab.join("\n") + "\n")?;
    w("tokenizer_config.json", r#"{"do_lower_case": true}"#.into())?;

    let tensors = tensor_shapes(shape, n_vocab);
    write_random_safetensors(
        &dir.join("model.safetensors"),
        &tensors,
        0x9E37_79B9_7F4A_7C15,
        |name| name.ends_with("LayerNorm.weight"),
    )?;
    let out = dir.join(file);
    import_model(dir, &out, ty, "tiny-random-bert")?;
    Ok(out)
}

/// Writes `tensors` (name, shape) as an F32 safetensors file of deterministic random values in
/// [-0.1, 0.1) drawn in order from `seed`; a tensor `around_one` names is 1 + that.
///
/// # Errors
/// I/O errors.
pub(crate) fn write_random_safetensors(
    path: &Path,
    tensors: &[(String, Vec<usize>)],
    seed: u64,
    around_one: impl Fn(&str) -> bool,
) -> Result<()> {
    let mut rng = Rng(seed);
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    for (name, shape) in tensors {
        let n: usize = shape.iter().product();
        let start = data.len();
        let offset = if around_one(name) { 1.0 } else { 0.0 };
        for _ in 0..n {
            data.extend_from_slice(&(offset + rng.next()).to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut header_bytes = serde_json::to_vec(&header).expect("json");
    while !header_bytes.len().is_multiple_of(8) {
        header_bytes.push(b' ');
    }
    let mut st = (header_bytes.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(&header_bytes);
    st.extend_from_slice(&data);
    fs::write(path, st).map_err(|e| Error::io(path, e))
}
