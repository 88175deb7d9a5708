//! Issue 2: fidelity against sentence-transformers, batch invariance, truncation, the engine's
//! validation of what llama.cpp would abort on.

mod common;

use llama_embedding::engine::{cosine, ContextShape, EmbeddingContext};
use llama_embedding::EngineMode;
use llama_embedding::{
    BatchConfig, BatchProcessor, EmbedOptions, ErrorStrategy, ItemErrorKind, ItemOutcome,
    Normalize, Pooling,
};

fn st_options() -> EmbedOptions {
    // sentence-transformers' max_seq_length for all-MiniLM-L6-v2.
    EmbedOptions::default().with_max_tokens(256)
}

use common::embed_all;

#[test]
fn check8_sentences_match_sentence_transformers() {
    let Some(model) = common::reference_model("check8") else {
        return;
    };
    let (sentences, reference) = common::check8().expect("check-8 reference");
    let got = embed_all(
        model,
        sentences.clone(),
        BatchConfig::default().with_embed(st_options()),
    );
    assert_eq!(got.len(), 8);
    for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
        let c = cosine(g, r);
        assert!(c >= 0.9999, "sentence {i} {:?}: cosine {c}", sentences[i]);
        let norm: f32 = g.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "not L2-normalised: {norm}");
    }
}

#[test]
fn docstrings_2000_match_sentence_transformers() {
    let Some(model) = common::reference_model("docstrings-2000") else {
        return;
    };
    let root = common::shared_dir().join("reference");
    let text = std::fs::read_to_string(root.join("docstrings-2000.txt")).unwrap();
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2000);
    let reference =
        llama_embedding::npy::read(&root.join("docstrings-2000.st-minilm.npy")).unwrap();
    assert_eq!((reference.rows, reference.cols), (2000, 384));
    let got = embed_all(
        model,
        lines,
        BatchConfig::default().with_embed(st_options()),
    );
    let mut min = (f64::MAX, 0);
    for (i, g) in got.iter().enumerate() {
        let c = cosine(g, &reference.row_f32(i));
        if c < min.0 {
            min = (c, i);
        }
    }
    eprintln!("docstrings-2000: min cosine {:.7} at line {}", min.0, min.1);
    assert!(min.0 >= 0.9999, "min cosine {} at line {}", min.0, min.1);
}

/// The default exact mode: every vector bit-identical whatever the batch, long texts (which
/// get a decode of their own) included.
#[test]
fn batch_size_does_not_change_vectors() {
    let Some(model) = common::reference_model("batch invariance") else {
        return;
    };
    let text = std::fs::read_to_string(common::shared_dir().join("reference/docstrings-2000.txt"))
        .unwrap();
    // The first 200 docstrings and the 100 longest (each of those gets a decode of its own).
    let mut lines: Vec<String> = text.lines().take(200).map(str::to_string).collect();
    let mut by_length: Vec<&str> = text.lines().skip(200).collect();
    by_length.sort_by_key(|l| std::cmp::Reverse(l.len()));
    lines.extend(by_length.iter().take(100).map(|l| l.to_string()));
    let n_long = lines
        .iter()
        .filter(|l| {
            let opts = EmbedOptions::default().with_max_tokens(512);
            model.tokenize(l, &opts, 512).unwrap().tokens.len() >= 64
        })
        .count();
    assert!(n_long >= 30, "only {n_long} texts of 64+ tokens");
    let base = embed_all(
        model.clone(),
        lines.clone(),
        BatchConfig::default().with_batch_size(1),
    );
    let plans = [
        (8, 63, 2, true),
        (32, 40, 1, false),
        (64, 63, 2, false),
        (64, 17, 1, true),
    ];
    for (bs, budget, workers, sort) in plans {
        let cfg = BatchConfig::default()
            .with_batch_size(bs)
            .with_token_budget(budget)
            .with_workers(workers)
            .with_sort_by_length(sort);
        let got = embed_all(model.clone(), lines.clone(), cfg);
        let differ = base.iter().zip(&got).filter(|(a, b)| a != b).count();
        assert_eq!(
            differ, 0,
            "batch size {bs}, budget {budget}, {workers} workers, sort {sort}: {differ} of 300 vectors differ from batch size 1"
        );
    }
    // The aligned mode (no flash attention, padding): the same to 1e-5 even in decodes of
    // 2048 tokens when the alignment covers the kernels' SIMD width in floats: 8 with AVX2, 16
    // with AVX-512 (at 8, AVX-512 kernels differ by up to 8e-5: specification/kernels.md).
    let kernels = llama_embedding::kernels::kernels().unwrap();
    let align = if kernels.features.iter().any(|f| f == "AVX512") {
        16
    } else {
        8
    };
    let aligned = |bs: usize, budget: usize| {
        BatchConfig::default()
            .with_mode(EngineMode::Aligned)
            .with_token_align(align)
            .with_batch_size(bs)
            .with_token_budget(budget)
    };
    let base = embed_all(model.clone(), lines.clone(), aligned(1, 128));
    for bs in [8, 64] {
        let got = embed_all(model.clone(), lines.clone(), aligned(bs, 2048));
        let max_diff = base
            .iter()
            .zip(&got)
            .flat_map(|(a, b)| a.iter().zip(b).map(|(x, y)| (x - y).abs()))
            .fold(0f32, f32::max);
        assert!(
            max_diff <= 1e-5,
            "aligned to {align} on {} kernels, batch size {bs}: max abs diff {max_diff}",
            kernels.variant
        );
    }
}

#[test]
fn long_texts_are_truncated_like_sentence_transformers_or_rejected_with_their_token_count() {
    let Some(model) = common::reference_model("truncation") else {
        return;
    };
    let long = "word ".repeat(600);
    let (head, tail) = model.special_tokens();
    assert_eq!((head, tail), (1, 1), "BERT adds [CLS] and [SEP]");

    let mut p = BatchProcessor::new(
        model.clone(),
        BatchConfig::default().with_embed(st_options()),
    )
    .unwrap();
    let out = p.process_texts(vec!["short".into(), long.clone()]).unwrap();
    let r = out[1].embedded().unwrap();
    assert!(r.truncated);
    assert_eq!(r.n_tokens, 256);
    assert!(!out[0].embedded().unwrap().truncated);
    assert_eq!(p.stats().truncated, 1);
    // Truncated = the first 254 text tokens between [CLS] and [SEP]: the same as embedding
    // exactly those words.
    let exact = "word ".repeat(254);
    let e = p.process_texts(vec![exact]).unwrap()[0]
        .embedded()
        .unwrap()
        .embedding
        .clone();
    assert!(cosine(&e, &r.embedding) > 0.999999);

    let strict = EmbedOptions::default()
        .with_max_tokens(256)
        .with_truncate(false);
    let mut p = BatchProcessor::new(model, BatchConfig::default().with_embed(strict)).unwrap();
    let out = p.process_texts(vec!["ok".into(), long]).unwrap();
    let f = out[1].failed().expect("rejected");
    assert_eq!(f.error.kind, ItemErrorKind::TooLong);
    assert!(
        f.error.message.contains("602 tokens"),
        "{}",
        f.error.message
    );
    assert_eq!(f.id.to_string(), "1");
    assert!(out[0].embedded().is_some());
}

#[test]
fn engine_rejects_batches_llama_cpp_would_abort_on() {
    let model = common::tiny_model();
    let shape = ContextShape {
        max_batch_tokens: 16,
        max_sequences: 2,
        threads: 1,
        pooling: Pooling::Mean,
        normalize: Normalize::L2,
        dimensions: None,
        mode: EngineMode::Aligned,
        align: llama_embedding::engine::TOKEN_ALIGN,
    };
    let mut ctx = EmbeddingContext::new(&model, shape.clone()).unwrap();
    let t = |ids: &[i32]| {
        ids.iter()
            .map(|&i| llama_cpp_2::token::LlamaToken(i))
            .collect::<Vec<_>>()
    };
    let a = t(&[2, 10, 3]);
    let err = |r: llama_embedding::Result<(Vec<Vec<f32>>, std::time::Duration)>| {
        r.expect_err("must fail").to_string()
    };
    assert!(err(ctx.embed(&[&a, &a, &a])).contains("3 sequences in one batch, the context takes 2"));
    // The context holds 24 tokens (16 rounded up for padding); 30 tokens pad to 32.
    let long = t(&[5; 30]);
    let e = err(ctx.embed(&[&long]));
    assert!(
        e.contains("32 tokens (padding included) in one batch, the context takes 24"),
        "{e}"
    );
    let bad = t(&[2, 99_999, 3]);
    assert!(err(ctx.embed(&[&bad])).contains("token id 99999 outside the vocabulary"));
    let empty: Vec<llama_cpp_2::token::LlamaToken> = vec![];
    assert!(err(ctx.embed(&[&empty])).contains("empty"));
    assert!(err(ctx.embed(&[])).contains("at least one sequence"));
    // And after all that the context still works.
    let (v, _) = ctx.embed(&[&a, &a]).unwrap();
    assert_eq!(v.len(), 2);
    assert_eq!(v[0], v[1]);
    let too_many = ContextShape {
        max_sequences: 249,
        ..shape.clone()
    };
    assert!(EmbeddingContext::new(&model, too_many)
        .err()
        .unwrap()
        .to_string()
        .contains("between 1 and 248"));

    // Exact mode: texts share a decode only below ggml's flash-attention tile (64 tokens).
    let exact = ContextShape {
        max_batch_tokens: 100,
        mode: EngineMode::Exact,
        align: 1,
        ..shape
    };
    let mut ctx = EmbeddingContext::new(&model, exact.clone()).unwrap();
    let forty = t(&[5; 40]);
    let e = err(ctx.embed(&[&forty, &forty]));
    assert!(e.contains("2 sequences with 80 tokens in one decode: in exact mode texts share a decode only up to 63 tokens"), "{e}");
    let ninety = t(&[5; 90]);
    let (alone, _) = ctx.embed(&[&ninety]).unwrap();
    let (pair, _) = ctx.embed(&[&a, &forty]).unwrap();
    let (single, _) = ctx.embed(&[&forty]).unwrap();
    assert_eq!(pair[1], single[0], "a text's vector depends on its batch");
    assert_eq!(alone.len(), 1);
    let aligned_only = ContextShape {
        align: 8,
        ..exact.clone()
    };
    assert!(EmbeddingContext::new(&model, aligned_only).is_err());
    let model_pooling = ContextShape {
        pooling: Pooling::Model,
        ..exact
    };
    assert!(EmbeddingContext::new(&model, model_pooling)
        .err()
        .unwrap()
        .to_string()
        .contains("pools itself"));
}

#[test]
fn tiny_model_plumbing_batched_equals_single_and_errors_are_per_item() {
    let model = common::tiny_model();
    assert_eq!(model.dimensions(), 32);
    assert_eq!(model.facts().architecture, "bert");
    assert!(!model.facts().causal);
    let texts: Vec<String> = (0..100)
        .map(|i| {
            format!(
                "the quick brown fox {i} jumps over the lazy dog {}",
                "a ".repeat(i % 17)
            )
        })
        .collect();
    let mut with_bad = texts.clone();
    with_bad.insert(50, String::new());
    with_bad.insert(70, "nul \0 byte".into());
    let single = embed_all(
        model.clone(),
        texts.clone(),
        BatchConfig::default().with_batch_size(1),
    );
    let mut p = BatchProcessor::new(
        model,
        BatchConfig::default()
            .with_batch_size(16)
            .with_workers(2)
            .with_window(8),
    )
    .unwrap();
    let out = p.process_texts(with_bad).unwrap();
    assert_eq!(out.len(), 102);
    assert!(
        out.iter().enumerate().all(|(i, o)| o.index() == i as u64),
        "input order"
    );
    assert_eq!(out[50].failed().unwrap().error.kind, ItemErrorKind::Empty);
    assert_eq!(out[70].failed().unwrap().error.kind, ItemErrorKind::Nul);
    let good: Vec<&ItemOutcome> = out.iter().filter(|o| o.embedded().is_some()).collect();
    for (o, s) in good.iter().zip(&single) {
        let e = &o.embedded().unwrap().embedding;
        let d = e
            .iter()
            .zip(s)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d <= 1e-5, "item {}: {d}", o.index());
    }
    let st = p.stats();
    assert_eq!(
        (
            st.texts_total,
            st.texts_succeeded,
            st.texts_failed,
            st.texts_skipped
        ),
        (102, 100, 2, 0)
    );
    let _ = ErrorStrategy::Continue;
}

#[test]
fn model_files_llama_cpp_would_abort_on_are_refused_first() {
    use llama_embedding::gguf::{GgufWriter, Value};
    use llama_embedding::{EmbeddingModel, LoadOptions};
    let dir = common::temp_dir("bad-models");
    // A chat model's header: no pooling type, so not an embedding model.
    let chat = dir.join("chat.gguf");
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("llama".into()));
    w.add(
        "tokenizer.ggml.tokens",
        Value::Array(vec![Value::String("a".into())]),
    );
    w.write(&chat).unwrap();
    let err = EmbeddingModel::load(&chat, &LoadOptions::default(), true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("is a llama model, which has no embedding pooling")
            && err.contains("--pooling"),
        "{err}"
    );
    // No tokenizer.
    let notok = dir.join("notok.gguf");
    let mut w = GgufWriter::new();
    w.add("general.architecture", Value::String("bert".into()));
    w.add("bert.pooling_type", Value::U32(1));
    w.write(&notok).unwrap();
    let err = EmbeddingModel::load(&notok, &LoadOptions::default(), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("has no tokenizer"), "{err}");
    // A real model cut in half.
    let tiny = llama_embedding::fixtures::write_tiny_bert(&dir.join("tiny")).unwrap();
    let cut = dir.join("cut.gguf");
    let bytes = std::fs::read(&tiny).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = EmbeddingModel::load(&cut, &LoadOptions::default(), true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("truncated or corrupt") && err.contains("was the download cut short"),
        "{err}"
    );
    // A missing file.
    let err = EmbeddingModel::load(&dir.join("none.gguf"), &LoadOptions::default(), true)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
}
