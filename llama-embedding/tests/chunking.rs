//! Issue 16: token-exact chunking with the real model. Each chunk's vector is bit-identical to
//! embedding `text[byte_start..byte_end]` alone with the same settings (exact mode), on real
//! long documents: the licence texts and packages' copyright files every Debian machine ships.

mod common;

use std::path::PathBuf;

use llama_embedding::chunk::{ChunkBy, ChunkConfig};
use llama_embedding::{BatchConfig, BatchProcessor, EmbedOptions, EmbeddingResult};

/// Long real documents: the licences, then copyright files, in a stable order.
fn documents(max: usize) -> Vec<(PathBuf, String)> {
    let mut paths: Vec<PathBuf> = Vec::new();
    for dir in ["/usr/share/common-licenses"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            paths.extend(rd.flatten().map(|e| e.path()));
        }
    }
    if let Ok(rd) = std::fs::read_dir("/usr/share/doc") {
        paths.extend(rd.flatten().map(|e| e.path().join("copyright")));
    }
    paths.sort();
    let mut docs: Vec<(PathBuf, String)> = paths
        .into_iter()
        .filter_map(|p| {
            let t = std::fs::read_to_string(&p).ok()?;
            (t.len() > 2000 && !t.contains('\0')).then_some((p, t))
        })
        .collect();
    // Distinct texts only (GPL is a link to GPL-3, and so on).
    let mut seen = std::collections::HashSet::new();
    docs.retain(|(_, t)| seen.insert(t.clone()));
    docs.truncate(max);
    docs
}

fn chunked(
    model: &std::sync::Arc<llama_embedding::EmbeddingModel>,
    texts: &[String],
    chunking: ChunkConfig,
    embed: &EmbedOptions,
) -> Vec<EmbeddingResult> {
    let cfg = BatchConfig::default()
        .with_embed(embed.clone())
        .with_chunking(Some(chunking));
    let mut p = BatchProcessor::new(model.clone(), cfg).unwrap();
    p.process_texts(texts.to_vec())
        .unwrap()
        .into_iter()
        .map(|o| o.into_embedded().expect("every chunk embeds"))
        .collect()
}

#[test]
fn each_chunk_is_bit_identical_to_its_span_embedded_alone() {
    let Some(model) = common::reference_model("chunking") else {
        return;
    };
    let docs = documents(12);
    assert!(
        docs.len() >= 8,
        "expected Debian's licence texts, found {}",
        docs.len()
    );
    let texts: Vec<String> = docs.iter().map(|(_, t)| t.clone()).collect();
    for (chunking, prefix) in [
        (ChunkConfig::new(128, 16, ChunkBy::Text).unwrap(), None),
        (
            ChunkConfig::new(200, 0, ChunkBy::Markdown).unwrap(),
            Some("passage: ".to_string()),
        ),
    ] {
        let embed = match prefix {
            Some(p) => EmbedOptions::default().with_prefix(p),
            None => EmbedOptions::default(),
        };
        let rows = chunked(&model, &texts, chunking, &embed);
        let mut per_item = vec![0u32; texts.len()];
        let mut spans = Vec::new();
        for r in &rows {
            let c = r.chunk.as_ref().expect("chunk rows");
            let item = r.index as usize;
            assert_eq!(c.chunk, per_item[item], "chunks in order");
            per_item[item] += 1;
            assert_eq!(r.id.to_string(), format!("{}#{}", c.parent_id, c.chunk));
            assert!(r.n_tokens <= chunking.max_tokens, "{} tokens", r.n_tokens);
            assert!(!r.truncated);
            let text = &texts[item];
            let span = &text[c.byte_start..c.byte_end];
            assert_eq!(text[..c.byte_start].chars().count(), c.char_start);
            assert_eq!(span.chars().count(), c.char_end - c.char_start);
            spans.push(span.to_string());
        }
        for (i, r) in rows.iter().enumerate() {
            let n = r.chunk.as_ref().unwrap().n_chunks;
            assert_eq!(n, per_item[r.index as usize], "row {i}: n_chunks");
        }
        // Real documents make many chunks; with overlap the neighbours share text.
        assert!(rows.len() > 3 * texts.len(), "{} chunks", rows.len());
        let cfg = BatchConfig::default().with_embed(embed.clone());
        let mut alone = BatchProcessor::new(model.clone(), cfg).unwrap();
        let singles = alone.process_texts(spans.clone()).unwrap();
        let mut differ = 0;
        for (r, s) in rows.iter().zip(&singles) {
            let s = s.embedded().expect("span embeds alone");
            assert_eq!(s.n_tokens, r.n_tokens, "{}: same tokens", r.id);
            if s.embedding != r.embedding {
                differ += 1;
            }
        }
        assert_eq!(
            differ, 0,
            "chunks whose vector differs from their span alone"
        );
    }
}

#[test]
fn chunking_refuses_a_chunk_size_beyond_the_model_and_fits_short_texts_in_one() {
    let Some(model) = common::reference_model("chunking") else {
        return;
    };
    let too_big = ChunkConfig::new(100_000, 0, ChunkBy::Text).unwrap();
    let cfg = BatchConfig::default().with_chunking(Some(too_big));
    let e = BatchProcessor::new(model.clone(), cfg)
        .and_then(|mut p| p.process_texts(vec!["a".into()]))
        .unwrap_err();
    assert!(e.to_string().contains("--chunk-tokens 100000"), "{e}");

    let c = ChunkConfig::new(64, 8, ChunkBy::Text).unwrap();
    let texts = vec!["  A short text.  ".to_string(), "   ".to_string()];
    let cfg = BatchConfig::default().with_chunking(Some(c));
    let out = BatchProcessor::new(model.clone(), cfg)
        .unwrap()
        .process_texts(texts)
        .unwrap();
    let r = out[0].embedded().unwrap();
    let c = r.chunk.as_ref().unwrap();
    assert_eq!(
        (c.chunk, c.n_chunks, c.byte_start, c.byte_end),
        (0, 1, 2, 15)
    );
    assert_eq!(r.id.to_string(), "0#0");
    // A blank text fails as it does without chunking.
    let f = out[1].failed().expect("blank fails");
    assert_eq!(f.error.kind, llama_embedding::ItemErrorKind::Empty);
    assert_eq!(f.id.to_string(), "1");
}

#[test]
fn a_document_vector_is_the_normalised_mean_of_the_chunk_vectors() {
    let Some(model) = common::reference_model("chunking") else {
        return;
    };
    let texts: Vec<String> = documents(4).into_iter().map(|(_, t)| t).collect();
    let c = ChunkConfig::new(128, 0, ChunkBy::Text).unwrap();
    let chunks = chunked(&model, &texts, c, &EmbedOptions::default());
    let docs = chunked(
        &model,
        &texts,
        c.with_doc_vector(true),
        &EmbedOptions::default(),
    );
    assert_eq!(docs.len(), texts.len(), "one row per document");
    for (i, d) in docs.iter().enumerate() {
        assert!(d.chunk.is_none());
        assert_eq!(d.id.to_string(), i.to_string());
        let mine: Vec<&EmbeddingResult> = chunks.iter().filter(|r| r.index == i as u64).collect();
        assert!(mine.len() > 1);
        assert_eq!(d.n_tokens, mine.iter().map(|r| r.n_tokens).sum::<usize>());
        let mut mean = vec![0f64; d.embedding.len()];
        for r in &mine {
            for (m, x) in mean.iter_mut().zip(&r.embedding) {
                *m += f64::from(*x);
            }
        }
        let norm = mean.iter().map(|x| x * x).sum::<f64>().sqrt();
        let cos: f64 = mean
            .iter()
            .zip(&d.embedding)
            .map(|(m, x)| m / norm * f64::from(*x))
            .sum();
        assert!(cos > 0.999_999, "document {i}: cosine {cos}");
    }
}

#[test]
fn late_chunks_see_their_window_and_keep_their_bits_in_any_batch() {
    let Some(model) = common::reference_model("chunking") else {
        return;
    };
    let texts: Vec<String> = documents(3).into_iter().map(|(_, t)| t).collect();
    let late = ChunkConfig::new(96, 0, ChunkBy::Text)
        .unwrap()
        .with_late(true);
    let run = |c: ChunkConfig, batch: usize, workers: usize| -> Vec<EmbeddingResult> {
        let cfg = BatchConfig::default()
            .with_chunking(Some(c))
            .with_batch_size(batch)
            .with_workers(workers);
        let mut p = BatchProcessor::new(model.clone(), cfg).unwrap();
        p.process_texts(texts.clone())
            .unwrap()
            .into_iter()
            .map(|o| o.into_embedded().expect("late chunks embed"))
            .collect()
    };
    let a = run(late, 32, 2);
    let b = run(late, 1, 1);
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(
            (&x.id, &x.embedding),
            (&y.id, &y.embedding),
            "batch changed a late chunk"
        );
    }
    let plain = run(late.with_late(false), 32, 2);
    assert_eq!(plain.len(), a.len(), "the same chunks");
    let mut sum = 0.0;
    for (l, p) in a.iter().zip(&plain) {
        assert_eq!(l.chunk, p.chunk);
        // Its own rows only: no [CLS]/[SEP] of its own.
        assert!(l.n_tokens < p.n_tokens, "{} vs {}", l.n_tokens, p.n_tokens);
        let cos: f32 = l
            .embedding
            .iter()
            .zip(&p.embedding)
            .map(|(x, y)| x * y)
            .sum();
        assert!(
            cos > 0.4 && cos < 0.9999,
            "{}: cosine {cos} to the chunk alone",
            l.id
        );
        sum += cos;
    }
    eprintln!(
        "late vs alone: mean cosine {:.3} over {} chunks",
        sum / a.len() as f32,
        a.len()
    );
    // Refused where it cannot be right.
    let cfg = BatchConfig::default()
        .with_chunking(Some(late))
        .with_embed(EmbedOptions::default().with_pooling(llama_embedding::Pooling::Cls));
    let e = BatchProcessor::new(model.clone(), cfg)
        .and_then(|mut p| p.process_texts(texts.clone()))
        .unwrap_err();
    assert!(e.to_string().contains("--late-chunking"), "{e}");
}
