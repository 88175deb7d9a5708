//! The pipeline and the long-lived engine against the **fake** backend
//! (`llama_embedding::engine::FakeBackend`: whitespace tokens, vectors computed from each text's
//! own tokens), so ordering, failures, cancellation and engine sharing are tested without a
//! model. The real model's vectors are tested in `engine.rs` and `processor.rs`.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_embedding::engine::{Backend, ContextShape, Engine, EngineMode, FakeBackend};
use llama_embedding::{
    BatchConfig, BatchProcessor, EmbedOptions, Error, ItemErrorKind, ItemOutcome, Normalize,
    Pooling,
};

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let words = 1 + (i * 7) % 37;
            (0..words)
                .map(|w| format!("w{}", (i * 31 + w * 17) % 101))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn expected(fake: &FakeBackend, text: &str) -> Vec<f32> {
    let tk = fake
        .tokenize(text, &EmbedOptions::default(), 512)
        .expect("tokenizes");
    let mut v = fake.vector_of(&tk.tokens);
    llama_embedding::engine::l2_normalize(&mut v);
    v
}

fn config(workers: usize) -> BatchConfig {
    BatchConfig::default()
        .with_workers(workers)
        .with_batch_size(8)
        .with_window(16)
}

#[test]
fn outcomes_come_in_input_order_with_their_own_vectors() {
    let fake = Arc::new(FakeBackend::new(8, 512));
    let input = texts(700);
    let mut p = BatchProcessor::with_backend(fake.clone(), config(3)).unwrap();
    let out = p.process_texts(input.clone()).unwrap();
    assert_eq!(out.len(), 700);
    for (i, o) in out.iter().enumerate() {
        let r = o.embedded().expect("embedded");
        assert_eq!(r.index, i as u64);
        assert_eq!(r.id, llama_embedding::ItemId::Num(i as u64));
        assert!(r.chunk.is_none());
        assert_eq!(r.embedding, expected(&fake, &input[i]), "item {i}");
    }
    let s = p.stats();
    assert_eq!(s.texts_succeeded, 700);
    assert_eq!(s.texts_failed, 0);
    assert!(s.batches >= 700 / 8, "{} batches", s.batches);
    assert_eq!(fake.contexts(), 3);
}

#[test]
fn the_engine_outlives_a_run_and_is_shared() {
    let fake = Arc::new(FakeBackend::new(4, 512));
    let mut p = BatchProcessor::with_backend(fake.clone(), config(2)).unwrap();
    let first = p.process_texts(texts(50)).unwrap();
    let second = p.process_texts(texts(50)).unwrap();
    assert_eq!(first, second);
    assert_eq!(
        fake.contexts(),
        2,
        "the second run reuses the first run's contexts"
    );

    // Another processor (a search, a server request) on the same engine makes no contexts.
    let engine = p.engine().unwrap();
    let mut q = BatchProcessor::with_engine(engine.clone(), config(2)).unwrap();
    assert_eq!(q.process_texts(texts(50)).unwrap(), first);
    assert_eq!(fake.contexts(), 2);
    let direct = engine
        .embed(vec![
            fake.tokenize("w1 w2", &EmbedOptions::default(), 512)
                .unwrap()
                .tokens,
        ])
        .unwrap();
    assert_eq!(direct[0], expected(&fake, "w1 w2"));

    // A run that wants other vectors or bigger batches than the engine makes is refused.
    let cls = config(2).with_embed(EmbedOptions::default().with_pooling(Pooling::Cls));
    let err = BatchProcessor::with_engine(engine.clone(), cls).unwrap_err();
    assert!(err.to_string().contains("other vectors"), "{err}");
    let big = config(2).with_batch_size(64);
    let err = BatchProcessor::with_engine(engine, big).unwrap_err();
    assert!(err.to_string().contains("take 8 texts"), "{err}");
}

#[test]
fn a_failed_batch_fails_its_items_and_the_run_goes_on() {
    let fake = Arc::new(FakeBackend::new(4, 512));
    let mut input = texts(200);
    input[37] = "w1 <fail> w2".into();
    input[120] = "   ".into();
    // One text per batch, so exactly the poisoned item fails.
    let cfg = config(2).with_batch_size(1);
    let mut p = BatchProcessor::with_backend(fake.clone(), cfg).unwrap();
    let out = p.process_texts(input.clone()).unwrap();
    assert_eq!(out.len(), 200);
    for (i, o) in out.iter().enumerate() {
        assert_eq!(o.index(), i as u64);
        match (i, o) {
            (37, ItemOutcome::Failed(f)) => {
                assert_eq!(f.error.kind, ItemErrorKind::Engine);
                assert!(
                    f.error.message.contains("asked to fail"),
                    "{}",
                    f.error.message
                );
            }
            (120, ItemOutcome::Failed(f)) => assert_eq!(f.error.kind, ItemErrorKind::Empty),
            (_, ItemOutcome::Embedded(r)) => assert_eq!(r.embedding, expected(&fake, &input[i])),
            (_, o) => panic!("item {i}: {o:?}"),
        }
    }
    assert_eq!(p.stats().texts_failed, 2);
    assert_eq!(p.stats().texts_succeeded, 198);
}

#[test]
fn a_panicking_backend_fails_the_batch_not_the_process() {
    let fake = Arc::new(FakeBackend::new(4, 512));
    let mut input = texts(40);
    input[5] = "<panic>".into();
    let mut p = BatchProcessor::with_backend(fake.clone(), config(1).with_batch_size(1)).unwrap();
    let out = p.process_texts(input.clone()).unwrap();
    let failed: Vec<_> = out.iter().filter_map(ItemOutcome::failed).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].index, 5);
    assert!(
        failed[0].error.message.contains("panicked"),
        "{:?}",
        failed[0]
    );
    // The engine thread survived: the next run works on the same context.
    assert_eq!(p.process_texts(texts(10)).unwrap().len(), 10);
    assert_eq!(fake.contexts(), 1);
}

#[test]
fn stop_on_first_error_yields_the_items_before_it_then_the_error() {
    let fake = Arc::new(FakeBackend::new(4, 512));
    let mut input = texts(300);
    input[100] = String::new();
    let cfg = config(2).with_continue_on_error(false);
    let mut p = BatchProcessor::with_backend(fake, cfg).unwrap();
    let n = input.len() as u64;
    let items = input
        .into_iter()
        .enumerate()
        .map(|(i, t)| llama_embedding::SourceItem::new(i as u64, t));
    let run = p
        .process_items(
            Box::new(llama_embedding::reader::IterSource(items)),
            Some(n),
        )
        .unwrap();
    let results: Vec<_> = run.collect();
    assert_eq!(
        results.len(),
        102,
        "100 embedded, the failure, then the error"
    );
    assert!(results[..100]
        .iter()
        .all(|r| matches!(r, Ok(ItemOutcome::Embedded(_)))));
    assert!(matches!(results[100], Ok(ItemOutcome::Failed(_))));
    assert!(matches!(results[101], Err(Error::ErrorLimit { .. })));
}

#[test]
fn dropping_a_run_early_stops_it() {
    let fake = Arc::new(FakeBackend::new(4, 512));
    let mut p = BatchProcessor::with_backend(fake.clone(), config(2)).unwrap();
    let items = (0..1_000_000u64).map(|i| llama_embedding::SourceItem::new(i, format!("w{i} x")));
    let started = Instant::now();
    let mut run = p
        .process_items(Box::new(llama_embedding::reader::IterSource(items)), None)
        .unwrap();
    assert_eq!(run.by_ref().take(20).count(), 20);
    drop(run);
    assert!(
        fake.decodes() < 1_000_000 / 8,
        "the reader ran at most a few windows ahead: {} decodes",
        fake.decodes()
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    // And the engine takes the next run.
    assert_eq!(p.process_texts(texts(5)).unwrap().len(), 5);
}

#[test]
fn a_request_cancelled_before_it_starts_is_answered_cancelled() {
    let fake: Arc<dyn Backend> = Arc::new(FakeBackend::new(4, 512));
    let shape = ContextShape {
        max_batch_tokens: 64,
        max_sequences: 4,
        threads: 1,
        pooling: Pooling::Mean,
        normalize: Normalize::L2,
        mode: EngineMode::Exact,
        align: 1,
        dimensions: None,
    };
    let engine = Engine::start(fake, shape, 1).unwrap();
    let cancel = Arc::new(AtomicBool::new(true));
    let (tx, rx) = std::sync::mpsc::channel();
    engine
        .submit(
            vec![vec![llama_cpp_2::token::LlamaToken(7)]],
            Some(cancel),
            move |r| tx.send(r.vectors).unwrap(),
        )
        .unwrap();
    assert!(matches!(rx.recv().unwrap(), Err(Error::Cancelled)));
    assert!(Engine::start(
        Arc::new(FakeBackend::new(4, 512)),
        engine.shape().clone(),
        0
    )
    .is_err());
}

/// Late chunking: chunks are grouped into windows that fit the context, each window is one
/// sequence, and each chunk's vector is the mean of its own rows of that sequence (the fake's
/// rows depend on the position in the whole window, so a chunk sees where it is).
#[test]
fn late_chunks_are_pooled_from_their_rows_of_the_window() {
    use llama_cpp_2::token::LlamaToken;
    use llama_embedding::chunk::{ChunkBy, ChunkConfig};
    let fake = Arc::new(FakeBackend::new(8, 64));
    let words: Vec<String> = (0..300).map(|i| format!("w{}", (i * 13) % 97)).collect();
    let text = words.join(" ");
    let chunking = ChunkConfig::new(20, 0, ChunkBy::Text).unwrap();
    let run = |late: bool| -> Vec<llama_embedding::EmbeddingResult> {
        let c = config(2).with_chunking(Some(chunking.with_late(late)));
        let mut p = BatchProcessor::with_backend(fake.clone(), c).unwrap();
        p.process_texts(vec![text.clone()])
            .unwrap()
            .into_iter()
            .map(|o| o.into_embedded().unwrap())
            .collect()
    };
    let plain = run(false);
    let late = run(true);
    assert_eq!(plain.len(), late.len());
    assert_eq!(
        plain.len(),
        17,
        "18 words a chunk (20 tokens with [CLS] and [SEP])"
    );
    // Windows as the fake's 64-token context allows: [CLS] + 3 chunks of 18 words + [SEP].
    let word_token = |w: &str| {
        let tk = fake.tokenize(w, &EmbedOptions::default(), 64).unwrap();
        tk.tokens[1]
    };
    let mut differ = 0;
    for (k, (p, l)) in plain.iter().zip(&late).enumerate() {
        assert_eq!(p.chunk, l.chunk, "same chunks, same spans");
        let c = l.chunk.as_ref().unwrap();
        let n_words = text[c.byte_start..c.byte_end].split_whitespace().count();
        assert_eq!(l.n_tokens, n_words, "a late chunk counts its own rows");
        let first_in_window = k - k % 3;
        let window_words: Vec<&str> = late[first_in_window..(first_in_window + 3).min(late.len())]
            .iter()
            .flat_map(|r| {
                let c = r.chunk.as_ref().unwrap();
                text[c.byte_start..c.byte_end].split_whitespace()
            })
            .collect();
        let mut tokens = vec![LlamaToken(1)];
        tokens.extend(window_words.iter().map(|w| word_token(w)));
        tokens.push(LlamaToken(2));
        let start = 1 + 18 * (k % 3);
        let mut want = fake.vector_of_rows(&tokens, start..start + n_words);
        llama_embedding::engine::l2_normalize(&mut want);
        assert_eq!(
            l.embedding,
            want,
            "chunk {k} ({:?})",
            c.byte_start..c.byte_end
        );
        differ += usize::from(l.embedding != p.embedding);
    }
    assert_eq!(differ, plain.len(), "late vectors are not the plain ones");
    // Refused in the fast mode, naming why.
    let fast = config(1)
        .with_mode(EngineMode::Fast)
        .with_chunking(Some(chunking.with_late(true)));
    let e = BatchProcessor::with_backend(fake.clone(), fast)
        .and_then(|mut p| p.process_texts(vec![text.clone()]))
        .unwrap_err();
    assert!(e.to_string().contains("exact mode"), "{e}");
}
