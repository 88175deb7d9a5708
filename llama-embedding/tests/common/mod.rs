//! Shared test harness: where the reference model and data are, and helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use llama_embedding::{EmbeddingModel, LoadOptions};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn shared_dir() -> PathBuf {
    llama_embedding::fixtures::shared_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
}

pub fn reference_model_path(test: &str) -> Option<PathBuf> {
    llama_embedding::fixtures::reference_model_path(&shared_dir(), test)
}

/// The reference model, loaded once per test binary.
pub fn reference_model(test: &str) -> Option<Arc<EmbeddingModel>> {
    static MODEL: OnceLock<Option<Arc<EmbeddingModel>>> = OnceLock::new();
    let path = reference_model_path(test)?;
    MODEL
        .get_or_init(|| {
            Some(Arc::new(
                EmbeddingModel::load(&path, &LoadOptions::default(), true)
                    .expect("load reference model"),
            ))
        })
        .clone()
}

/// The tiny random BERT, generated once per test binary.
pub fn tiny_model() -> Arc<EmbeddingModel> {
    static MODEL: OnceLock<Arc<EmbeddingModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("llama-embed-tiny-{}", std::process::id()));
            let path = llama_embedding::fixtures::write_tiny_bert(&dir).expect("tiny bert");
            Arc::new(EmbeddingModel::load(&path, &LoadOptions::default(), true).expect("load tiny"))
        })
        .clone()
}

/// The 8 check sentences and their sentence-transformers vectors.
pub fn check8() -> Option<(Vec<String>, Vec<Vec<f32>>)> {
    let p = shared_dir().join("reference/check-8.st-minilm.json");
    let text = std::fs::read_to_string(&p).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let sentences = v["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let vectors = v["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect();
    Some((sentences, vectors))
}

pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("llama-embed-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Every text's vector (panics on a failed item).
pub fn embed_all(
    model: Arc<EmbeddingModel>,
    texts: Vec<String>,
    config: llama_embedding::BatchConfig,
) -> Vec<Vec<f32>> {
    let mut p = llama_embedding::BatchProcessor::new(model, config).unwrap();
    p.process_texts(texts)
        .unwrap()
        .into_iter()
        .map(|o| o.into_embedded().expect("embedded").embedding)
        .collect()
}
