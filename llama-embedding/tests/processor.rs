//! Issue 3: the BatchProcessor's streaming APIs, order with several workers, error strategies,
//! stats that add up, config validation, memory limits, bounded memory on a large file.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use llama_embedding::{
    BatchConfig, BatchProcessor, Error, ErrorStrategy, ItemErrorKind, ItemOutcome,
};
use tokio_stream::StreamExt;

fn write_lines(name: &str, lines: &[String]) -> std::path::PathBuf {
    let dir = common::temp_dir(name);
    let p = dir.join("in.txt");
    let mut f = std::fs::File::create(&p).unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
    p
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("item {i} the quick brown fox {}", "jumps ".repeat(i % 23)))
        .collect()
}

#[test]
fn file_apis_stream_in_input_order_with_several_workers() {
    let model = common::tiny_model();
    let lines = texts(1500);
    let path = write_lines("order", &lines);
    let cfg = BatchConfig::default()
        .with_workers(3)
        .with_threads_per_worker(1)
        .with_batch_size(7)
        .with_window(50);
    let mut p = BatchProcessor::new(model.clone(), cfg).unwrap();
    let all: Vec<ItemOutcome> = p.process_file(&path).unwrap().map(Result::unwrap).collect();
    assert_eq!(all.len(), 1500);
    assert!(all
        .iter()
        .enumerate()
        .all(|(i, o)| o.index() == i as u64 && o.id().to_string() == i.to_string()));
    let expected: Vec<Vec<f32>> = all
        .iter()
        .map(|o| o.embedded().unwrap().embedding.clone())
        .collect();

    // Batch by batch through a callback, at most batch_size at a time, same vectors.
    let mut seen = Vec::new();
    let stats = p
        .process_file_streaming(&path, |chunk| {
            assert!(!chunk.is_empty() && chunk.len() <= 7);
            seen.extend(
                chunk
                    .into_iter()
                    .map(|o| o.into_embedded().unwrap().embedding),
            );
            Ok(())
        })
        .unwrap();
    assert_eq!(seen, expected);
    assert_eq!((stats.texts_total, stats.texts_succeeded), (1500, 1500));

    // As a tokio Stream.
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let streamed: Vec<Vec<f32>> = rt.block_on(async {
        let s = p.process_file_as_stream(&path).unwrap();
        s.map(|o| o.unwrap().into_embedded().unwrap().embedding)
            .collect()
            .await
    });
    assert_eq!(streamed, expected);
}

#[test]
fn error_strategies_do_what_they_say_and_stats_add_up() {
    let model = common::tiny_model();
    let mut lines = texts(40);
    lines[5] = String::new(); // empty
    lines[9] = "   ".into(); // empty after trimming
    lines[20] = "x ".repeat(400); // too long without truncation
    let opts = llama_embedding::EmbedOptions::default()
        .with_max_tokens(64)
        .with_truncate(false);

    let mut p = BatchProcessor::new(
        model.clone(),
        BatchConfig::default().with_embed(opts.clone()),
    )
    .unwrap();
    let out = p.process_texts(lines.clone()).unwrap();
    let failed: Vec<(u64, ItemErrorKind)> = out
        .iter()
        .filter_map(|o| o.failed().map(|f| (f.index, f.error.kind)))
        .collect();
    assert_eq!(
        failed,
        [
            (5, ItemErrorKind::Empty),
            (9, ItemErrorKind::Empty),
            (20, ItemErrorKind::TooLong)
        ]
    );
    let s = p.stats();
    assert_eq!(
        (
            s.texts_total,
            s.texts_succeeded,
            s.texts_failed,
            s.texts_skipped
        ),
        (40, 37, 3, 0)
    );
    assert_eq!(
        s.texts_succeeded + s.texts_failed + s.texts_skipped,
        s.texts_total
    );
    assert_eq!(s.failures_by_kind["empty"], 2);
    assert_eq!(
        s.tokens,
        out.iter()
            .filter_map(|o| o.embedded())
            .map(|r| r.n_tokens as u64)
            .sum::<u64>()
    );

    for (strategy, stop_at) in [
        (ErrorStrategy::StopOnFirst, 5u64),
        (ErrorStrategy::StopAfter(2), 9),
    ] {
        let cfg = BatchConfig::default()
            .with_embed(opts.clone())
            .with_error_strategy(strategy);
        let mut p = BatchProcessor::new(model.clone(), cfg).unwrap();
        let mut run = p
            .process_items(
                Box::new(llama_embedding::reader::IterSource(
                    lines
                        .clone()
                        .into_iter()
                        .enumerate()
                        .map(|(i, t)| llama_embedding::SourceItem::new(i as u64, t)),
                )),
                None,
            )
            .unwrap();
        let mut emitted = Vec::new();
        let mut err = None;
        for o in run.by_ref() {
            match o {
                Ok(o) => emitted.push(o.index()),
                Err(e) => err = Some(e),
            }
        }
        // Everything before the stopping failure, and that failure, in order; then the error.
        assert_eq!(emitted, (0..=stop_at).collect::<Vec<_>>(), "{strategy:?}");
        match err {
            Some(Error::ErrorLimit { failed, last, .. }) => {
                assert_eq!(last.kind, ItemErrorKind::Empty);
                assert_eq!(failed, if stop_at == 5 { 1 } else { 2 });
            }
            other => panic!("{strategy:?}: {other:?}"),
        }
    }
}

#[test]
fn configuration_is_validated_with_clear_messages() {
    let model = common::tiny_model();
    let cases: Vec<(BatchConfig, &str)> = vec![
        (
            BatchConfig::default().with_batch_size(0),
            "batch size must be between 1 and 248",
        ),
        (
            BatchConfig::default().with_batch_size(1000),
            "batch size must be between 1 and 248",
        ),
        (
            BatchConfig::default().with_token_budget(0),
            "token budget must be at least 1 token",
        ),
        (
            BatchConfig::default().with_workers(0),
            "workers must be between 1 and 64",
        ),
        (
            BatchConfig::default().with_token_align(12),
            "token alignment must be 8, 16, 32 or 64 (or 1 outside the aligned mode), not 12",
        ),
        (
            BatchConfig::default().with_error_threshold(0),
            "error threshold must be at least 1",
        ),
        (
            BatchConfig::default().with_window(0),
            "window must be at least 1",
        ),
        (
            BatchConfig::default()
                .with_embed(llama_embedding::EmbedOptions::default().with_max_tokens(2)),
            "max tokens 2 is too small",
        ),
        (
            BatchConfig::default()
                .with_embed(llama_embedding::EmbedOptions::default().with_max_tokens(4096)),
            "larger than the model's training context 128",
        ),
    ];
    for (cfg, msg) in cases {
        let err = BatchProcessor::new(model.clone(), cfg)
            .unwrap_err()
            .to_string();
        assert!(err.contains(msg), "{msg:?} not in {err:?}");
    }
}

#[test]
fn memory_limit_stops_with_what_was_in_use_and_the_limit() {
    let model = common::tiny_model();
    // Far below what the process already uses: refused up front, naming both numbers.
    let mut p = BatchProcessor::new(
        model.clone(),
        BatchConfig::default().with_memory_limit_mb(1),
    )
    .unwrap();
    match p.process_texts(texts(10)) {
        Err(Error::MemoryLimit {
            in_use_mb,
            limit_mb,
            detail,
        }) => {
            assert_eq!(limit_mb, 1);
            assert!(in_use_mb > 1);
            assert!(detail.contains("MB in use"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    // A generous limit runs.
    let mut p = BatchProcessor::new(
        model,
        BatchConfig::default().with_memory_limit_mb(64 * 1024),
    )
    .unwrap();
    assert_eq!(p.process_texts(texts(10)).unwrap().len(), 10);
}

#[test]
fn progress_and_stats_callbacks_are_called() {
    let model = common::tiny_model();
    let progress = Arc::new(Mutex::new(Vec::new()));
    let finals = Arc::new(Mutex::new(Vec::new()));
    let cfg = BatchConfig::default()
        .with_progress(true)
        .with_progress_interval_batches(1)
        .with_batch_size(4)
        .with_workers(1);
    let mut p = BatchProcessor::new(model, cfg).unwrap();
    let pr = progress.clone();
    p.set_progress_callback(Box::new(move |i| pr.lock().unwrap().push(i.clone())));
    let fi = finals.clone();
    p.set_stats_callback(Box::new(move |s| fi.lock().unwrap().push(s.clone())));
    p.process_texts(texts(100)).unwrap();
    let progress = progress.lock().unwrap();
    assert!(progress.len() >= 10, "{} progress reports", progress.len());
    assert!(progress.windows(2).all(|w| w[0].done <= w[1].done));
    assert!(progress.iter().all(|i| i.total == Some(100)));
    let last = finals.lock().unwrap().last().cloned().unwrap();
    assert_eq!(last.texts_succeeded, 100);
    assert!(last.batches >= 25);
    assert!(p.get_performance_report().contains("100 embedded"));
    assert!(last.to_json()["tokens_per_second"].as_f64().unwrap() > 0.0);
}

#[test]
fn memory_does_not_grow_with_the_input() {
    // A generous bound: the figures themselves are in specification/performance.md.
    let model = common::tiny_model();
    let dir = common::temp_dir("growth");
    let path = dir.join("big.txt");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for i in 0..60_000u32 {
        writeln!(
            f,
            "line {i} the quick brown fox jumps over the lazy dog {}",
            i % 97
        )
        .unwrap();
    }
    drop(f);
    let mut p = BatchProcessor::new(model, BatchConfig::default()).unwrap();
    let mut probe = llama_embedding::stats::MemoryProbe::new();
    let mut first_mb = 0;
    let mut n = 0u64;
    for o in p.process_file(&path).unwrap() {
        o.unwrap();
        n += 1;
        if n == 10_000 {
            first_mb = probe.resident_mb();
        }
    }
    let last_mb = probe.resident_mb();
    assert_eq!(n, 60_000);
    // Had results accumulated, 50k results (32 floats, id, bookkeeping) would add ~20 MB.
    assert!(
        last_mb <= first_mb + 8,
        "resident memory grew from {first_mb} MB to {last_mb} MB"
    );
}
