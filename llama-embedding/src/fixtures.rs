//! A tiny random-weight BERT (2 layers, 32 dimensions, a 300-token vocabulary; about 150 KB as
//! GGUF) for fast plumbing tests and benches. It is written as a Hugging Face checkpoint and
//! then goes through [`crate::import`], so it also exercises the importer. Its vectors mean
//! nothing; they are deterministic (fixed seed).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::import::{import_model, ImportType};

const LAYERS: usize = 2;
const HIDDEN: usize = 32;
const FF: usize = 64;
const HEADS: usize = 2;
const POSITIONS: usize = 128;

/// Deterministic xorshift64* in [-0.1, 0.1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
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

/// Writes the checkpoint into `dir` and imports it to `dir/tiny-bert.gguf` (f32).
///
/// # Errors
/// I/O errors.
pub fn write_tiny_bert(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let vocab = vocab();
    let n_vocab = vocab.len();
    let config = serde_json::json!({
        "model_type": "bert",
        "num_hidden_layers": LAYERS,
        "max_position_embeddings": POSITIONS,
        "hidden_size": HIDDEN,
        "intermediate_size": FF,
        "num_attention_heads": HEADS,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "vocab_size": n_vocab,
    });
    let w = |p: &str, s: String| fs::write(dir.join(p), s).map_err(|e| Error::io(dir.join(p), e));
    w("config.json", config.to_string())?;
    w("vocab.txt", vocab.join("\n") + "\n")?;
    w("tokenizer_config.json", r#"{"do_lower_case": true}"#.into())?;

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![n_vocab, HIDDEN],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![POSITIONS, HIDDEN],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![2, HIDDEN],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![HIDDEN]),
        ("embeddings.LayerNorm.bias".into(), vec![HIDDEN]),
    ];
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}.");
        for (name, shape) in [
            ("attention.self.query", vec![HIDDEN, HIDDEN]),
            ("attention.self.key", vec![HIDDEN, HIDDEN]),
            ("attention.self.value", vec![HIDDEN, HIDDEN]),
            ("attention.output.dense", vec![HIDDEN, HIDDEN]),
            ("intermediate.dense", vec![FF, HIDDEN]),
            ("output.dense", vec![HIDDEN, FF]),
        ] {
            tensors.push((format!("{p}{name}.bias"), vec![shape[0]]));
            tensors.push((format!("{p}{name}.weight"), shape));
        }
        for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
            tensors.push((format!("{p}{name}.weight"), vec![HIDDEN]));
            tensors.push((format!("{p}{name}.bias"), vec![HIDDEN]));
        }
    }
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    for (name, shape) in &tensors {
        let n: usize = shape.iter().product();
        let start = data.len();
        let is_norm_weight = name.ends_with("LayerNorm.weight");
        for _ in 0..n {
            let v = if is_norm_weight {
                1.0 + rng.next()
            } else {
                rng.next()
            };
            data.extend_from_slice(&v.to_le_bytes());
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
    let st_path = dir.join("model.safetensors");
    fs::write(&st_path, st).map_err(|e| Error::io(&st_path, e))?;
    let out = dir.join("tiny-bert.gguf");
    import_model(dir, &out, ImportType::F32, "tiny-random-bert")?;
    Ok(out)
}

/// `../shared` beside the workspace (or `LLAMA_EMBED_SHARED`), given a crate's manifest dir.
pub fn shared_dir(crate_dir: &Path) -> PathBuf {
    std::env::var_os("LLAMA_EMBED_SHARED")
        .map_or_else(|| crate_dir.join("../../shared"), PathBuf::from)
}

/// The all-MiniLM-L6-v2 f16 GGUF for tests: `LLAMA_EMBED_TEST_MODEL`, `shared/models`, or the
/// models directory (`llama-embed model obtain`). `None` with a SKIPPED line when there is
/// none; with `LLAMA_EMBED_REQUIRE_MODEL` set (CI), a missing model panics instead.
pub fn reference_model_path(shared: &Path, test: &str) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("LLAMA_EMBED_TEST_MODEL").map(PathBuf::from),
        Some(shared.join("models/all-MiniLM-L6-v2-f16.gguf")),
        Some(crate::resolve::models_dir().join(crate::resolve::DEFAULT_MODEL_FILE)),
    ];
    if let Some(p) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return Some(p);
    }
    assert!(
        std::env::var_os("LLAMA_EMBED_REQUIRE_MODEL").is_none(),
        "{test}: no reference model found and LLAMA_EMBED_REQUIRE_MODEL is set"
    );
    eprintln!(
        "SKIPPED {test}: no all-MiniLM-L6-v2 GGUF (set LLAMA_EMBED_TEST_MODEL, provide ../shared/models, or run `llama-embed model obtain`)"
    );
    None
}
