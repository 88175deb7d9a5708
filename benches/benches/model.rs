//! End to end with a real model (`LLAMA_EMBED_BENCH_MODEL`, else ../shared/models, else
//! skipped): the engine alone on pre-tokenised batches vs the whole pipeline (read, tokenise,
//! batch, embed, reorder) on the same 300 docstrings and the same batch plan.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use llama_embedding::engine::{ContextShape, EmbeddingContext, EngineMode};
use llama_embedding::pipeline::batcher::{Batcher, Packable, TokenBudget};
use llama_embedding::{
    BatchConfig, BatchProcessor, EmbedOptions, EmbeddingModel, LoadOptions, Normalize,
};

fn model_path() -> Option<PathBuf> {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared");
    std::env::var_os("LLAMA_EMBED_BENCH_MODEL")
        .map(PathBuf::from)
        .or_else(|| Some(shared.join("models/all-MiniLM-L6-v2-f16.gguf")))
        .filter(|p| p.is_file())
}

struct Tok(u64, Vec<llama_cpp_2::token::LlamaToken>);
impl Packable for Tok {
    fn n_tokens(&self) -> usize {
        self.1.len()
    }
    fn index(&self) -> u64 {
        self.0
    }
}

fn end_to_end(c: &mut Criterion) {
    let Some(path) = model_path() else {
        eprintln!("SKIPPED model benches: no GGUF (set LLAMA_EMBED_BENCH_MODEL)");
        return;
    };
    let corpus = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/reference/docstrings-2000.txt");
    let Ok(text) = std::fs::read_to_string(&corpus) else {
        return;
    };
    let lines: Vec<String> = text.lines().take(300).map(str::to_string).collect();
    let dir = std::env::temp_dir().join(format!("bench-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("in.txt");
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();

    let model = Arc::new(EmbeddingModel::load(&path, &LoadOptions::default(), true).unwrap());
    let opts = EmbedOptions::default().with_max_tokens(256);
    let tokens: Vec<Tok> = lines
        .iter()
        .enumerate()
        .map(|(i, l)| Tok(i as u64, model.tokenize(l, &opts, 256).unwrap().tokens))
        .collect();
    let n_tokens: u64 = tokens.iter().map(|t| t.1.len() as u64).sum();
    // The default plan: exact mode, texts share a decode up to 63 tokens.
    let budget = TokenBudget {
        tokens: BatchConfig::default().effective_budget(),
        sequences: 32,
    };

    let mut g = c.benchmark_group("minilm_300_docstrings");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n_tokens));
    // One context, one thread per core would be two contexts; the engine alone is measured with
    // one context and all cores, the pipeline with the same.
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    g.bench_function("engine_alone_1x_all_threads", |b| {
        let shape = ContextShape {
            max_batch_tokens: 256,
            max_sequences: 32,
            threads,
            pooling: model.effective_pooling(&opts).unwrap(),
            normalize: Normalize::L2,
            dimensions: None,
            mode: EngineMode::Exact,
            align: 1,
        };
        let mut ctx = EmbeddingContext::new(&model, shape).unwrap();
        b.iter(|| {
            let mut bt = Batcher::new(budget, 256, true);
            let mut batches = Vec::new();
            for t in &tokens {
                batches.extend(bt.push(Tok(t.0, t.1.clone())));
            }
            batches.extend(bt.flush());
            for batch in &batches {
                let seqs: Vec<&[_]> = batch.iter().map(|t| t.1.as_slice()).collect();
                black_box(ctx.embed(&seqs).unwrap());
            }
        })
    });
    // The engine alone at the default split: one context per worker thread, taking the next
    // pre-tokenised, pre-packed batch from a shared counter (no reading, tokenising, reordering
    // or output).
    let workers = BatchConfig::default().workers;
    let packed: Vec<Vec<Vec<llama_cpp_2::token::LlamaToken>>> = {
        let mut bt = Batcher::new(budget, 256, true);
        let mut batches = Vec::new();
        for t in &tokens {
            batches.extend(bt.push(Tok(t.0, t.1.clone())));
        }
        batches.extend(bt.flush());
        batches
            .into_iter()
            .map(|b| b.into_iter().map(|t| t.1).collect())
            .collect()
    };
    g.bench_function("engine_alone_default_workers", |b| {
        let shape = ContextShape {
            max_batch_tokens: 512,
            max_sequences: 32,
            threads: 1,
            pooling: model.effective_pooling(&opts).unwrap(),
            normalize: Normalize::L2,
            dimensions: None,
            mode: EngineMode::Exact,
            align: 1,
        };
        b.iter_custom(|iters| {
            let mut total = std::time::Duration::ZERO;
            for _ in 0..iters {
                let barrier = std::sync::Barrier::new(workers + 1);
                let start = std::sync::Mutex::new(None);
                let next = std::sync::atomic::AtomicUsize::new(0);
                std::thread::scope(|s| {
                    for _ in 0..workers {
                        let (model, shape, packed, barrier, next) =
                            (&model, shape.clone(), &packed, &barrier, &next);
                        s.spawn(move || {
                            let mut ctx = EmbeddingContext::new(model, shape).unwrap();
                            barrier.wait();
                            let order = std::sync::atomic::Ordering::Relaxed;
                            while let Some(batch) = packed.get(next.fetch_add(1, order)) {
                                let seqs: Vec<&[_]> = batch.iter().map(Vec::as_slice).collect();
                                black_box(ctx.embed(&seqs).unwrap());
                            }
                        });
                    }
                    barrier.wait();
                    *start.lock().unwrap() = Some(std::time::Instant::now());
                });
                total += start.lock().unwrap().unwrap().elapsed();
            }
            total
        })
    });
    g.bench_function("pipeline_1x_all_threads", |b| {
        let cfg = BatchConfig::default()
            .with_workers(1)
            .with_threads_per_worker(threads)
            .with_embed(opts.clone());
        let mut p = BatchProcessor::new(model.clone(), cfg).unwrap();
        b.iter(|| black_box(p.process_file(&file).unwrap().count()))
    });
    g.bench_function("pipeline_default_workers", |b| {
        let cfg = BatchConfig::default().with_embed(opts.clone());
        let mut p = BatchProcessor::new(model.clone(), cfg).unwrap();
        b.iter(|| black_box(p.process_file(&file).unwrap().count()))
    });
    g.finish();
}

criterion_group!(benches, end_to_end);
criterion_main!(benches);
