//! Issue 17 on a tiny random EmbeddingGemma (Gemma3, bidirectional, mean pooling, two Dense
//! layers, prompts in `config_sentence_transformers.json`) generated from a fixed seed and
//! imported by the project's importer: the preset read from the GGUF, prompts, Matryoshka
//! truncation, batch invariance, the exact mode's pooling against llama.cpp's own, BOS/EOS
//! added once, and a GGUF without its Dense tensors refused.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use llama_embedding::engine::cosine;
use llama_embedding::presets::{PromptSource, Role};
use llama_embedding::tiny_gemma::{DOCUMENT_PROMPT, QUERY_PROMPT};
use llama_embedding::{BatchConfig, EmbedOptions, EmbeddingModel, EngineMode, Error, LoadOptions};

fn tiny_gemma_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        llama_embedding::fixtures::write_tiny_gemma(&common::temp_dir("tiny-gemma")).unwrap()
    })
    .clone()
}

fn tiny_gemma() -> Arc<EmbeddingModel> {
    static MODEL: OnceLock<Arc<EmbeddingModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| {
            Arc::new(
                EmbeddingModel::load(&tiny_gemma_path(), &LoadOptions::default(), true).unwrap(),
            )
        })
        .clone()
}

fn texts() -> Vec<String> {
    (0..40)
        .map(|i| {
            format!(
                "the quick brown fox {i} jumps over the lazy dog{}",
                " and the data".repeat(i % 7)
            )
        })
        .collect()
}

fn embed(config: BatchConfig, texts: Vec<String>) -> Vec<Vec<f32>> {
    common::embed_all(tiny_gemma(), texts, config)
}

fn resolved(options: EmbedOptions, role: Role, force: bool) -> EmbedOptions {
    tiny_gemma().resolve_options(options, role, force).unwrap()
}

#[test]
fn the_preset_comes_from_the_gguf() {
    let m = tiny_gemma();
    assert_eq!(m.facts().architecture, "gemma-embedding");
    assert!(!m.facts().causal, "EmbeddingGemma attends both ways");
    assert_eq!(m.dimensions(), 32);
    let p = m.preset();
    assert_eq!(p.family, "EmbeddingGemma");
    assert_eq!(p.prompts_from, PromptSource::Gguf);
    assert_eq!(p.prompts["query"], QUERY_PROMPT);
    assert_eq!(p.prompts["document"], DOCUMENT_PROMPT);
    assert_eq!(p.default_prompt(Role::Document), Some("document"));
    assert_eq!(p.default_prompt(Role::Query), Some("query"));
    assert!(p.required_tensors.iter().all(|(_, has)| *has));
}

#[test]
fn bos_and_eos_are_added_exactly_once() {
    let m = tiny_gemma();
    let options = EmbedOptions::default();
    let t = m.tokenize("hello world", &options, 64).unwrap().tokens;
    let ids: Vec<i32> = t.iter().map(|t| t.0).collect();
    assert_eq!(ids.first(), Some(&2), "<bos> first: {ids:?}");
    assert_eq!(ids.last(), Some(&1), "<eos> last: {ids:?}");
    assert_eq!(ids.iter().filter(|&&i| i == 1).count(), 1, "{ids:?}");
    assert_eq!(ids.iter().filter(|&&i| i == 2).count(), 1, "{ids:?}");
    assert_eq!(m.special_tokens(), (1, 1));
}

#[test]
fn embed_applies_the_document_prompt_and_search_the_query_prompt() {
    let doc = resolved(EmbedOptions::default(), Role::Document, false);
    assert_eq!(
        (doc.prompt.as_deref(), doc.prefix.as_deref()),
        (Some("document"), Some(DOCUMENT_PROMPT))
    );
    let query = resolved(EmbedOptions::default(), Role::Query, false);
    assert_eq!(query.prefix.as_deref(), Some(QUERY_PROMPT));
    let none = resolved(
        EmbedOptions::default().with_prompt("none"),
        Role::Document,
        false,
    );
    assert_eq!(none.prefix, None);
    // A named prompt is the same as writing its text as the prefix.
    let texts = texts()[..6].to_vec();
    let by_name = embed(BatchConfig::default().with_embed(doc), texts.clone());
    let by_prefix = embed(
        BatchConfig::default().with_embed(EmbedOptions::default().with_prefix(DOCUMENT_PROMPT)),
        texts.clone(),
    );
    assert_eq!(by_name, by_prefix);
    let plain = embed(BatchConfig::default().with_embed(none), texts);
    assert!(
        cosine(&by_name[0], &plain[0]) < 0.9999,
        "the prompt changes the vector"
    );
    // Errors name what is wrong.
    let m = tiny_gemma();
    let err = m
        .resolve_options(
            EmbedOptions::default().with_prompt("poem"),
            Role::Document,
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("poem") && err.contains("document, query"),
        "{err}"
    );
    let err = m
        .resolve_options(
            EmbedOptions::default()
                .with_prompt("query")
                .with_prefix("x: "),
            Role::Document,
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("give one"), "{err}");
}

#[test]
fn dimensions_truncate_then_renormalise() {
    let m = tiny_gemma();
    // 16 is not one of EmbeddingGemma's Matryoshka sizes (768, 512, 256, 128).
    let err = m
        .resolve_options(
            EmbedOptions::default().with_dimensions(16),
            Role::Document,
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--force-dimensions") && err.contains("768, 512, 256, 128"),
        "{err}"
    );
    let err = m
        .resolve_options(
            EmbedOptions::default().with_dimensions(64),
            Role::Document,
            true,
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("give 1 to 32"), "{err}");
    let texts = texts()[..8].to_vec();
    let full = embed(
        BatchConfig::default().with_embed(resolved(EmbedOptions::default(), Role::Document, false)),
        texts.clone(),
    );
    let cut = embed(
        BatchConfig::default().with_embed(resolved(
            EmbedOptions::default().with_dimensions(16),
            Role::Document,
            true,
        )),
        texts,
    );
    for (f, c) in full.iter().zip(&cut) {
        assert_eq!(c.len(), 16);
        let norm = f[..16].iter().map(|x| x * x).sum::<f32>().sqrt();
        for (a, b) in c.iter().zip(&f[..16]) {
            assert!((a - b / norm).abs() < 1e-6, "{a} vs {}", b / norm);
        }
    }
}

#[test]
fn batched_equals_single_and_exact_pooling_equals_llama_cpp_pooling() {
    let texts = texts();
    let opts = resolved(EmbedOptions::default(), Role::Document, false);
    let single = embed(
        BatchConfig::default()
            .with_embed(opts.clone())
            .with_batch_size(1),
        texts.clone(),
    );
    let batched = embed(
        BatchConfig::default()
            .with_embed(opts.clone())
            .with_batch_size(16)
            .with_workers(2),
        texts.clone(),
    );
    assert_eq!(
        single, batched,
        "the exact mode's vectors do not depend on the batch"
    );
    // llama.cpp's own mean pooling (and its Dense layers after it), one text per decode.
    let native = embed(
        BatchConfig::default()
            .with_embed(opts)
            .with_batch_size(1)
            .with_mode(EngineMode::Fast),
        texts,
    );
    for (i, (a, b)) in single.iter().zip(&native).enumerate() {
        let c = cosine(a, b);
        assert!(
            c >= 0.99999,
            "text {i}: exact vs llama.cpp pooling cosine {c}"
        );
    }
}

#[test]
fn a_gguf_without_its_dense_tensors_is_refused_with_the_reason() {
    let dir = common::temp_dir("gemma-no-dense");
    let stripped = dir.join("no-dense.gguf");
    llama_embedding::fixtures::copy_gguf_without(
        &tiny_gemma_path(),
        &stripped,
        &["dense_2.weight", "dense_3.weight"],
        &[],
    )
    .unwrap();
    match EmbeddingModel::load(&stripped, &LoadOptions::default(), true) {
        Err(Error::ModelRefused { reason, .. }) => {
            assert!(
                reason.contains("dense_2.weight and dense_3.weight") && reason.contains("18677"),
                "{reason}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a GGUF without Dense tensors was loaded"),
    }
}

#[test]
fn a_gguf_llama_cpp_would_abort_on_for_want_of_a_full_attention_layer_is_refused() {
    let dir = common::temp_dir("gemma-2-layers");
    let path = llama_embedding::tiny_gemma::write_with_layers(
        &dir,
        llama_embedding::import::ImportType::F32,
        "two-layers.gguf",
        2,
    )
    .unwrap();
    match EmbeddingModel::load(&path, &LoadOptions::default(), true) {
        Err(Error::ModelRefused { reason, .. }) => {
            assert!(
                reason.contains("2 layers, 2 of them sliding-window"),
                "{reason}"
            );
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a model llama.cpp aborts on was loaded"),
    }
}

/// The tiny Qwen3 with (`true`) or without the EOS in its GGUF, written once per binary.
fn tiny_qwen3(eos_in_gguf: bool) -> Arc<EmbeddingModel> {
    static WITH: OnceLock<Arc<EmbeddingModel>> = OnceLock::new();
    static WITHOUT: OnceLock<Arc<EmbeddingModel>> = OnceLock::new();
    let cell = if eos_in_gguf { &WITH } else { &WITHOUT };
    cell.get_or_init(|| {
        let dir = common::temp_dir(if eos_in_gguf {
            "qwen3-eos"
        } else {
            "qwen3-old"
        });
        let path =
            llama_embedding::tiny_qwen3::write(&dir, "tiny-qwen3.gguf", eos_in_gguf).unwrap();
        Arc::new(EmbeddingModel::load(&path, &LoadOptions::default(), true).unwrap())
    })
    .clone()
}

fn embed_with(
    model: &Arc<EmbeddingModel>,
    config: BatchConfig,
    texts: Vec<String>,
) -> Vec<Vec<f32>> {
    common::embed_all(model.clone(), texts, config)
}

#[test]
fn qwen3_is_causal_pools_the_last_token_and_gets_its_eos_exactly_once() {
    let fixed = tiny_qwen3(true);
    let old = tiny_qwen3(false);
    assert_eq!(fixed.preset().family, "Qwen3-Embedding");
    assert!(fixed.facts().causal);
    assert_eq!(fixed.facts().pooling, Some(llama_embedding::Pooling::Last));
    assert_eq!(fixed.appended_eos(), None, "the tokenizer adds it");
    let eos = old.appended_eos().expect("appended for an old conversion");
    let options = EmbedOptions::default();
    for text in ["the cat", "hello world, the end", "a"] {
        let a = fixed.tokenize(text, &options, 64).unwrap().tokens;
        let b = old.tokenize(text, &options, 64).unwrap().tokens;
        assert_eq!(a, b, "{text}");
        assert_eq!(a.last(), Some(&eos), "{text}");
        assert_eq!(a.iter().filter(|&&t| t == eos).count(), 1, "{text}");
    }
    assert_eq!(old.special_tokens(), (0, 1));
    // Truncation keeps the EOS last.
    let long = "the ".repeat(100);
    let t = old
        .tokenize(&long, &options.clone().with_truncate(true), 16)
        .unwrap();
    assert_eq!((t.tokens.len(), t.tokens.last()), (16, Some(&eos)));
    // Same weights, same tokens: the same vectors.
    let texts: Vec<String> = texts()[..8].to_vec();
    assert_eq!(
        embed_with(&fixed, BatchConfig::default(), texts.clone()),
        embed_with(&old, BatchConfig::default(), texts)
    );
}

#[test]
fn qwen3_exact_mode_is_batch_invariant_and_matches_llama_cpp_last_token_pooling() {
    let m = tiny_qwen3(false);
    let texts = texts();
    let single = embed_with(&m, BatchConfig::default().with_batch_size(1), texts.clone());
    let batched = embed_with(
        &m,
        BatchConfig::default().with_batch_size(16).with_workers(2),
        texts.clone(),
    );
    assert_eq!(single, batched);
    let native = embed_with(
        &m,
        BatchConfig::default()
            .with_batch_size(1)
            .with_mode(EngineMode::Fast),
        texts,
    );
    for (i, (a, b)) in single.iter().zip(&native).enumerate() {
        let c = cosine(a, b);
        assert!(c >= 0.99999, "text {i}: cosine {c}");
    }
}

#[test]
fn qwen3_queries_get_the_instruction_and_documents_nothing() {
    let m = tiny_qwen3(true);
    let q = m
        .resolve_options(EmbedOptions::default(), Role::Query, false)
        .unwrap();
    assert!(
        q.prefix.as_deref().unwrap().starts_with("Instruct: "),
        "{q:?}"
    );
    assert!(q.prefix.as_deref().unwrap().ends_with("\nQuery:"), "{q:?}");
    let d = m
        .resolve_options(EmbedOptions::default(), Role::Document, false)
        .unwrap();
    assert_eq!((d.prompt, d.prefix), (None, None));
}
