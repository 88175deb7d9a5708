//! [`BatchProcessor`]: the library's primary interface (seed 003). A run is a pipeline of
//! threads joined by bounded channels:
//!
//! reader -> tokenizer + batcher -> engine thread(s) -> [`Run`] (reorders, counts, checks memory)
//!
//! The reader and tokenizer run ahead of the output by at most two batching windows, so memory
//! does not grow with the input. Output is always in input order.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use llama_cpp_2::token::LlamaToken;

use crate::batcher::{Batcher, Packable, TokenBudget};
use crate::engine::{ContextShape, EmbeddingContext, EngineMode, LLAMA_MAX_SEQ};
use crate::error::{Error, ItemError, ItemErrorKind, Result};
use crate::item::{EmbeddingResult, ItemFailure, ItemId, ItemOutcome, Position, SourceItem};
use crate::model::{EmbedOptions, EmbeddingModel};
use crate::reader::{ItemSource, IterSource, TextLines, TextOptions};
use crate::stats::{
    peak_resident_mb, BatchStats, LatencyLog, MemoryProbe, ProgressCallback, ProgressInfo,
    StatsCallback,
};

/// What to do when items fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "strategy", content = "limit")]
pub enum ErrorStrategy {
    /// Record every failure and go on.
    Continue,
    /// Stop at the first failed item.
    StopOnFirst,
    /// Stop when this many items have failed.
    StopAfter(u64),
}

impl ErrorStrategy {
    fn limit(self) -> Option<u64> {
        match self {
            ErrorStrategy::Continue => None,
            ErrorStrategy::StopOnFirst => Some(1),
            ErrorStrategy::StopAfter(n) => Some(n),
        }
    }
}

/// How a [`BatchProcessor`] runs. Build with `Default` and the `with_*` methods; checked by
/// [`BatchConfig::validate`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BatchConfig {
    /// Most texts per decode (llama.cpp's `n_seq_max`). Default 32.
    pub batch_size: usize,
    /// Packing target in tokens per decode. Default 128, which the exact mode (the default)
    /// caps at 63 ([`BatchConfig::effective_budget`]); the fast and aligned modes use it as is
    /// (small decodes win on CPU: specification/performance.md).
    pub token_budget: usize,
    /// Engine threads, each with its own llama.cpp context. Default: one per core, up to 8.
    pub workers: usize,
    /// CPU threads per context; `None`: the available cores divided among the workers.
    pub threads_per_worker: Option<usize>,
    /// Items per batching window (batches never span windows; resume points are window
    /// boundaries). Default 256.
    pub window: usize,
    /// Sort by token count inside a window (less attention work per batch). Default true.
    pub sort_by_length: bool,
    pub error_strategy: ErrorStrategy,
    pub progress: bool,
    pub progress_interval_batches: usize,
    /// Stop (or shrink the batch shape up front) rather than exceed this resident memory.
    pub memory_limit_mb: Option<u64>,
    pub memory_monitoring: bool,
    /// Settings that change the vectors.
    pub embed: EmbedOptions,
    /// Blank lines in text files: skipped and counted (true) or failed items (false, default).
    pub skip_blank_lines: bool,
    /// Carry each item's text to the results (for stores that keep it). Default false.
    pub keep_text: bool,
    /// How the engine batches (see [`EngineMode`] and specification/embedding.md): `Exact`
    /// (default; several texts share a decode only up to 63 tokens, whatever the budget),
    /// `Aligned` (the earlier exact mode: padding to `token_align`, no flash attention) or
    /// `Fast` (a text's vector varies with its batch in the last bits).
    pub mode: EngineMode,
    /// Token alignment of each text in `Aligned` mode (8 default; 16: byte-identical vectors
    /// across batch compositions also for rare long texts). The other modes align to 1.
    pub token_align: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            batch_size: 32,
            token_budget: 128,
            workers: default_workers(),
            threads_per_worker: None,
            window: 256,
            sort_by_length: true,
            error_strategy: ErrorStrategy::Continue,
            progress: false,
            progress_interval_batches: 10,
            memory_limit_mb: None,
            memory_monitoring: true,
            embed: EmbedOptions::default(),
            skip_blank_lines: false,
            keep_text: false,
            mode: EngineMode::Exact,
            token_align: crate::engine::TOKEN_ALIGN,
        }
    }
}

/// One engine thread per core (up to 8), one CPU thread each: on small embedding models a
/// context per core beats one context with many threads (measured in
/// specification/performance.md).
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
}

macro_rules! with {
    ($($name:ident: $field:ident: $ty:ty),* $(,)?) => {
        $(pub fn $name(mut self, v: $ty) -> Self { self.$field = v; self })*
    };
}

impl BatchConfig {
    with! {
        with_batch_size: batch_size: usize,
        with_token_budget: token_budget: usize,
        with_workers: workers: usize,
        with_window: window: usize,
        with_sort_by_length: sort_by_length: bool,
        with_error_strategy: error_strategy: ErrorStrategy,
        with_progress: progress: bool,
        with_progress_interval_batches: progress_interval_batches: usize,
        with_memory_monitoring: memory_monitoring: bool,
        with_embed: embed: EmbedOptions,
        with_skip_blank_lines: skip_blank_lines: bool,
        with_keep_text: keep_text: bool,
        with_mode: mode: EngineMode,
        with_token_align: token_align: usize,
    }

    /// The alignment the engine gets: `token_align` in `Aligned` mode, else 1.
    pub fn effective_align(&self) -> usize {
        if self.mode == EngineMode::Aligned {
            self.token_align
        } else {
            1
        }
    }

    /// Tokens per decode the batcher packs to: the budget, capped in `Exact` mode (a text
    /// longer than that still gets a decode of its own).
    pub fn effective_budget(&self) -> usize {
        let b = self.token_budget.max(1);
        self.mode.shared_decode_cap().map_or(b, |cap| b.min(cap))
    }

    pub fn with_threads_per_worker(mut self, n: usize) -> Self {
        self.threads_per_worker = Some(n);
        self
    }

    pub fn with_memory_limit_mb(mut self, mb: u64) -> Self {
        self.memory_limit_mb = Some(mb);
        self
    }

    /// `true`: [`ErrorStrategy::Continue`]; `false`: stop at the first failure.
    pub fn with_continue_on_error(mut self, on: bool) -> Self {
        self.error_strategy = if on {
            ErrorStrategy::Continue
        } else {
            ErrorStrategy::StopOnFirst
        };
        self
    }

    /// Stop after `n` failures.
    pub fn with_error_threshold(mut self, n: u64) -> Self {
        self.error_strategy = ErrorStrategy::StopAfter(n);
        self
    }

    /// CPU threads each context gets.
    pub fn threads(&self) -> usize {
        self.threads_for(self.workers)
    }

    /// CPU threads per context with `workers` contexts: as set, or the cores shared out.
    fn threads_for(&self, workers: usize) -> usize {
        self.threads_per_worker.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / workers.max(1)).max(1)
        })
    }

    /// Checks the configuration; every message says what is wrong and what is allowed.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.batch_size == 0 || self.batch_size > LLAMA_MAX_SEQ {
            return bad(format!(
                "batch size must be between 1 and {LLAMA_MAX_SEQ} texts (llama.cpp's sequence limit), not {}",
                self.batch_size
            ));
        }
        if self.token_budget == 0 {
            return bad("the token budget must be at least 1 token".into());
        }
        if !crate::engine::valid_align(self.token_align)
            || (self.mode == EngineMode::Aligned && self.token_align == 1)
        {
            return bad(format!(
                "token alignment must be 8, 16, 32 or 64 (or 1 outside the aligned mode), not {}",
                self.token_align
            ));
        }
        if self.workers == 0 || self.workers > 64 {
            return bad(format!(
                "workers must be between 1 and 64, not {}",
                self.workers
            ));
        }
        if self.threads_per_worker == Some(0) {
            return bad("threads per worker must be at least 1".into());
        }
        if self.window == 0 {
            return bad("the batching window must be at least 1 item".into());
        }
        if self.progress_interval_batches == 0 {
            return bad("the progress interval must be at least 1 batch".into());
        }
        if self.error_strategy == ErrorStrategy::StopAfter(0) {
            return bad("the error threshold must be at least 1".into());
        }
        if self.memory_limit_mb == Some(0) {
            return bad("the memory limit must be at least 1 MB".into());
        }
        if self.embed.max_tokens == Some(0) {
            return bad("max tokens must be at least 1".into());
        }
        Ok(())
    }
}

/// Embeds texts, lists and files with an `Arc<EmbeddingModel>`.
pub struct BatchProcessor {
    model: Arc<EmbeddingModel>,
    config: BatchConfig,
    callbacks: Arc<Mutex<Callbacks>>,
    last_stats: Arc<Mutex<BatchStats>>,
}

#[derive(Default)]
struct Callbacks {
    progress: Option<ProgressCallback>,
    stats: Option<StatsCallback>,
}

impl std::fmt::Debug for BatchProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchProcessor")
            .field("model", &self.model)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl BatchProcessor {
    /// # Errors
    /// [`Error::Config`] for an invalid configuration or one the model cannot run (pooling,
    /// max tokens).
    pub fn new(model: Arc<EmbeddingModel>, config: BatchConfig) -> Result<Self> {
        config.validate()?;
        model.effective_pooling(&config.embed)?;
        model.max_tokens(&config.embed)?;
        Ok(BatchProcessor {
            model,
            config,
            callbacks: Arc::default(),
            last_stats: Arc::default(),
        })
    }

    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    pub fn model(&self) -> &Arc<EmbeddingModel> {
        &self.model
    }

    pub fn set_progress_callback(&mut self, cb: ProgressCallback) {
        self.callbacks.lock().expect("callbacks").progress = Some(cb);
    }

    pub fn set_stats_callback(&mut self, cb: StatsCallback) {
        self.callbacks.lock().expect("callbacks").stats = Some(cb);
    }

    /// Stats of the last finished run.
    pub fn stats(&self) -> BatchStats {
        self.last_stats.lock().expect("stats").clone()
    }

    /// A human report of the last run with the configuration that produced it.
    pub fn get_performance_report(&self) -> String {
        let c = &self.config;
        format!(
            "model: {} ({}, {} dimensions)\nconfig: batch size {}, token budget {}, {} worker(s) x {} thread(s), window {}, sort by length {}\n{}",
            self.model.path().display(),
            self.model.facts().architecture,
            self.model.dimensions(),
            c.batch_size,
            c.token_budget,
            c.workers,
            c.threads(),
            c.window,
            c.sort_by_length,
            self.stats().summary()
        )
    }

    /// Embeds a slice of texts; ids are their positions.
    ///
    /// # Errors
    /// What stops a run ([`Run`]).
    pub fn process_batch(&mut self, texts: &[String]) -> Result<Vec<ItemOutcome>> {
        self.process_texts(texts.to_vec())
    }

    /// Embeds a list of texts; ids are their positions.
    ///
    /// # Errors
    /// What stops a run ([`Run`]).
    pub fn process_texts(&mut self, texts: Vec<String>) -> Result<Vec<ItemOutcome>> {
        let n = texts.len() as u64;
        let items = texts
            .into_iter()
            .enumerate()
            .map(|(i, t)| SourceItem::new(i as u64, t));
        self.process_items(Box::new(IterSource(items)), Some(n))?
            .collect()
    }

    /// Streams a text file (one item per line) through the pipeline; the returned iterator
    /// yields outcomes in input order. The file is never loaded whole.
    ///
    /// # Errors
    /// The file cannot be opened; later errors come through the iterator.
    pub fn process_file(&mut self, path: &Path) -> Result<Run> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let reader = TextLines::new(
            std::io::BufReader::with_capacity(1 << 16, file),
            TextOptions {
                skip_blank: self.config.skip_blank_lines,
                ..TextOptions::default()
            },
        );
        self.process_items(Box::new(reader), None)
    }

    /// Like [`process_file`](Self::process_file), handing outcomes to `callback` batch by
    /// batch (at most `batch_size` at a time, in input order). Returns the stats.
    ///
    /// # Errors
    /// What stops a run, or the callback's error (which stops it).
    pub fn process_file_streaming<F>(&mut self, path: &Path, mut callback: F) -> Result<BatchStats>
    where
        F: FnMut(Vec<ItemOutcome>) -> Result<()>,
    {
        let mut run = self.process_file(path)?;
        let mut chunk = Vec::with_capacity(self.config.batch_size);
        for outcome in run.by_ref() {
            chunk.push(outcome?);
            if chunk.len() == self.config.batch_size {
                callback(std::mem::take(&mut chunk))?;
            }
        }
        if !chunk.is_empty() {
            callback(chunk)?;
        }
        Ok(run.stats().clone())
    }

    /// The outcomes of a text file as a `tokio_stream::Stream`. The pipeline runs on its own
    /// threads; the stream is bounded (a slow consumer slows the pipeline, not memory).
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn process_file_as_stream(
        &mut self,
        path: &Path,
    ) -> Result<tokio_stream::wrappers::ReceiverStream<Result<ItemOutcome>>> {
        let run = self.process_file(path)?;
        let (tx, rx) = tokio::sync::mpsc::channel(self.config.batch_size.max(16));
        std::thread::Builder::new()
            .name("llama-embed-stream".into())
            .spawn(move || {
                for outcome in run {
                    if tx.blocking_send(outcome).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| Error::Worker(e.to_string()))?;
        Ok(tokio_stream::wrappers::ReceiverStream::new(rx))
    }

    /// The general entry point: runs `source` through the pipeline. `total` (when known)
    /// gives progress an ETA.
    ///
    /// # Errors
    /// [`Error::MemoryLimit`] when the batch shape cannot fit the memory limit; other errors
    /// come through the iterator.
    pub fn process_items(
        &mut self,
        source: Box<dyn ItemSource>,
        total: Option<u64>,
    ) -> Result<Run> {
        Run::start(self, source, total, 0)
    }

    /// Like [`process_items`](Self::process_items) for a source whose first item is item
    /// `start_index` of the whole input (a resumed run). Batching windows are counted from
    /// the start of the input, so the batches are those of an uninterrupted run when
    /// `start_index` is a multiple of the window.
    ///
    /// # Errors
    /// As [`process_items`](Self::process_items).
    pub fn process_items_from(
        &mut self,
        source: Box<dyn ItemSource>,
        total: Option<u64>,
        start_index: u64,
    ) -> Result<Run> {
        Run::start(self, source, total, start_index)
    }
}

/// A tokenised item on its way to an engine thread.
struct Prepared {
    index: u64,
    id: ItemId,
    tokens: Vec<LlamaToken>,
    /// Tokens it takes in a batch, alignment padding included.
    aligned: usize,
    truncated: bool,
    n_chars: usize,
    extra: Option<serde_json::Map<String, serde_json::Value>>,
    text: Option<String>,
    position: Option<Position>,
}

impl Packable for Prepared {
    fn n_tokens(&self) -> usize {
        self.aligned
    }
    fn index(&self) -> u64 {
        self.index
    }
}

enum Msg {
    Outcomes {
        outcomes: Vec<ItemOutcome>,
        /// Set for engine batches.
        model_time: Option<Duration>,
        latency: Option<Duration>,
    },
    EndOfInput {
        items: u64,
        skipped: u64,
        error: Option<std::io::Error>,
    },
    Fatal(Error),
}

/// How far (in items) the reader may run ahead of the output.
struct Watermark {
    next: Mutex<u64>,
    moved: Condvar,
}

/// A running job: an iterator of outcomes in input order, then `None`; a fatal error is
/// yielded once as `Err` and ends it. Dropping it stops the pipeline.
pub struct Run {
    rx: Receiver<Msg>,
    pending: BTreeMap<u64, ItemOutcome>,
    next: u64,
    end: Option<u64>,
    cancel: Arc<AtomicBool>,
    watermark: Arc<Watermark>,
    threads: Vec<JoinHandle<()>>,
    stats: BatchStats,
    latency: LatencyLog,
    model_time: Duration,
    started: Instant,
    workers: usize,
    total: Option<u64>,
    error_limit: Option<u64>,
    queued_error: Option<Error>,
    finished: bool,
    memory: Option<MemoryProbe>,
    memory_limit_mb: Option<u64>,
    memory_detail: String,
    progress_every: Option<usize>,
    batches_since_progress: usize,
    callbacks: Arc<Mutex<Callbacks>>,
    last_stats: Arc<Mutex<BatchStats>>,
    input_error: Option<std::io::Error>,
}

/// A rough upper bound of one context's compute memory (llama.cpp sizes its buffers for the
/// largest batch): activations per token plus the attention scores of the whole batch.
fn context_estimate_mb(model: &EmbeddingModel, tokens: usize) -> u64 {
    let f = model.facts();
    let n_embd = f.dimensions.max(1) as u64;
    let n_head = u64::from(model.llama.n_head().max(1));
    let t = tokens as u64;
    let activations = t * n_embd * 4 * 16;
    let attention = n_head * t * t * 4 * 2;
    (activations + attention) / (1024 * 1024) + 8
}

impl Run {
    fn start(
        p: &BatchProcessor,
        mut source: Box<dyn ItemSource>,
        total: Option<u64>,
        start_index: u64,
    ) -> Result<Run> {
        let model = p.model.clone();
        let config = p.config.clone();
        let embed = config.embed.clone();
        let max_tokens = model.max_tokens(&embed)?;
        let pooling = model.effective_pooling(&embed)?;
        let mut workers = config.workers;
        let mut budget = config.effective_budget();
        let mut memory = config.memory_monitoring.then(MemoryProbe::new);

        // Up front: would the contexts fit the memory limit? Shrink the shape until they do.
        let mut memory_detail = String::new();
        if let (Some(limit), Some(probe)) = (config.memory_limit_mb, memory.as_mut()) {
            let now = probe.resident_mb();
            let need = |w: usize, b: usize| {
                now + w as u64 * context_estimate_mb(&model, b.max(max_tokens))
            };
            while need(workers, budget) > limit && workers > 1 {
                workers -= 1;
            }
            while need(workers, budget) > limit && budget > max_tokens {
                budget = (budget / 2).max(max_tokens);
            }
            let est = need(workers, budget);
            memory_detail = format!(
                "{now} MB in use before the contexts, about {} MB per context for {} tokens x {workers} worker(s)",
                est.saturating_sub(now) / workers as u64,
                budget.max(max_tokens)
            );
            if est > limit {
                return Err(Error::MemoryLimit {
                    in_use_mb: est,
                    limit_mb: limit,
                    detail: format!("{memory_detail}; lower --max-tokens or raise the limit"),
                });
            }
        }

        let shape = ContextShape {
            max_batch_tokens: budget.max(max_tokens),
            max_sequences: config.batch_size,
            threads: config.threads_for(workers),
            pooling,
            normalize: embed.normalize,
            mode: config.mode,
            align: config.effective_align(),
        };
        let window = config.window;
        let max_ahead = 2 * window as u64 + config.batch_size as u64;

        let cancel = Arc::new(AtomicBool::new(false));
        let watermark = Arc::new(Watermark {
            next: Mutex::new(start_index),
            moved: Condvar::new(),
        });
        let (out_tx, out_rx) = mpsc::sync_channel::<Msg>(workers * 2 + 4);
        let (src_tx, src_rx) = mpsc::sync_channel::<(u64, SourceItem)>(256);
        let (work_tx, work_rx) = crossbeam_channel::bounded::<Vec<Prepared>>(workers * 2);
        let mut threads = Vec::new();
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.to_string())
                .spawn(f)
                .map_err(|e| Error::Worker(format!("cannot start thread {name}: {e}")))
        };

        // Reader.
        {
            let cancel = cancel.clone();
            let out_tx = out_tx.clone();
            threads.push(spawn(
                "llama-embed-reader",
                Box::new(move || {
                    let mut index = start_index;
                    while !cancel.load(Ordering::Relaxed) {
                        let Some(item) = source.next_item() else {
                            break;
                        };
                        if src_tx.send((index, item)).is_err() {
                            return;
                        }
                        index += 1;
                    }
                    drop(src_tx);
                    let _ = out_tx.send(Msg::EndOfInput {
                        items: index,
                        skipped: source.skipped(),
                        error: source.take_error(),
                    });
                }),
            )?);
        }

        // Tokenizer + batcher.
        {
            let cancel = cancel.clone();
            let out_tx = out_tx.clone();
            let model = model.clone();
            let watermark = watermark.clone();
            let budget = TokenBudget {
                tokens: budget,
                sequences: config.batch_size,
            };
            let sort = config.sort_by_length;
            let keep_text = config.keep_text;
            let align = config.effective_align();
            threads.push(spawn(
                "llama-embed-tokenizer",
                Box::new(move || {
                    let mut batcher = Batcher::new(budget, window, sort);
                    let send_batches = |batches: Vec<Vec<Prepared>>| -> bool {
                        for b in batches {
                            let first = b.iter().map(|p| p.index).min().unwrap_or(0);
                            let mut next = watermark.next.lock().expect("watermark");
                            while first >= *next + max_ahead {
                                if cancel.load(Ordering::Relaxed) {
                                    return false;
                                }
                                next = watermark
                                    .moved
                                    .wait_timeout(next, Duration::from_millis(50))
                                    .expect("watermark")
                                    .0;
                            }
                            drop(next);
                            if work_tx.send(b).is_err() {
                                return false;
                            }
                        }
                        true
                    };
                    for (index, item) in src_rx.iter() {
                        if cancel.load(Ordering::Relaxed) {
                            return;
                        }
                        let tokenized = item.text.as_deref().map_err(Clone::clone).and_then(|t| {
                            model
                                .tokenize(t, &embed, max_tokens)
                                .map(|tk| (tk, t.chars().count()))
                        });
                        match tokenized {
                            Ok((tk, n_chars)) => {
                                let ready = batcher.push(Prepared {
                                    index,
                                    id: item.id,
                                    aligned: crate::engine::aligned_len_to(tk.tokens.len(), align),
                                    tokens: tk.tokens,
                                    truncated: tk.truncated,
                                    n_chars,
                                    extra: item.extra,
                                    text: if keep_text { item.text.ok() } else { None },
                                    position: item.position,
                                });
                                if !send_batches(ready) {
                                    return;
                                }
                            }
                            Err(error) => {
                                let fail = ItemOutcome::Failed(ItemFailure {
                                    index,
                                    id: item.id,
                                    error,
                                    position: item.position,
                                });
                                let msg = Msg::Outcomes {
                                    outcomes: vec![fail],
                                    model_time: None,
                                    latency: None,
                                };
                                if out_tx.send(msg).is_err()
                                    || !send_batches(batcher.advance_to(index))
                                {
                                    return;
                                }
                            }
                        }
                    }
                    send_batches(batcher.flush());
                }),
            )?);
        }

        // Engine threads.
        for w in 0..workers {
            let model = model.clone();
            let shape = shape.clone();
            let work_rx = work_rx.clone();
            let out_tx = out_tx.clone();
            let cancel = cancel.clone();
            threads.push(spawn(
                &format!("llama-embed-engine-{w}"),
                Box::new(move || {
                    let mut ctx = match EmbeddingContext::new(&model, shape) {
                        Ok(c) => c,
                        Err(e) => {
                            cancel.store(true, Ordering::Relaxed);
                            let _ = out_tx.send(Msg::Fatal(e));
                            return;
                        }
                    };
                    for batch in work_rx.iter() {
                        if cancel.load(Ordering::Relaxed) {
                            return;
                        }
                        let started = Instant::now();
                        let seqs: Vec<&[LlamaToken]> =
                            batch.iter().map(|p| p.tokens.as_slice()).collect();
                        let result = ctx.embed(&seqs);
                        let (outcomes, model_time) = match result {
                            Ok((vectors, dt)) => (
                                batch
                                    .into_iter()
                                    .zip(vectors)
                                    .map(|(p, embedding)| {
                                        ItemOutcome::Embedded(EmbeddingResult {
                                            index: p.index,
                                            id: p.id,
                                            embedding,
                                            n_tokens: p.tokens.len(),
                                            truncated: p.truncated,
                                            n_chars: p.n_chars,
                                            extra: p.extra,
                                            text: p.text,
                                        })
                                    })
                                    .collect(),
                                Some(dt),
                            ),
                            Err(e) => {
                                let msg = e.to_string();
                                (
                                    batch
                                        .into_iter()
                                        .map(|p| {
                                            ItemOutcome::Failed(ItemFailure {
                                                index: p.index,
                                                id: p.id,
                                                error: ItemError::new(
                                                    ItemErrorKind::Engine,
                                                    msg.clone(),
                                                ),
                                                position: p.position,
                                            })
                                        })
                                        .collect(),
                                    None,
                                )
                            }
                        };
                        let msg = Msg::Outcomes {
                            outcomes,
                            model_time,
                            latency: Some(started.elapsed()),
                        };
                        if out_tx.send(msg).is_err() {
                            return;
                        }
                    }
                }),
            )?);
        }
        drop(out_tx);

        Ok(Run {
            rx: out_rx,
            pending: BTreeMap::new(),
            next: start_index,
            end: None,
            cancel,
            watermark,
            threads,
            stats: BatchStats::default(),
            latency: LatencyLog::default(),
            model_time: Duration::ZERO,
            started: Instant::now(),
            workers,
            total,
            error_limit: config.error_strategy.limit(),
            queued_error: None,
            finished: false,
            memory,
            memory_limit_mb: config.memory_limit_mb,
            memory_detail,
            progress_every: config.progress.then_some(config.progress_interval_batches),
            batches_since_progress: 0,
            callbacks: p.callbacks.clone(),
            last_stats: p.last_stats.clone(),
            input_error: None,
        })
    }

    /// Stats so far (final once the iterator has ended).
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// Items emitted so far (all in input order): the next index to come.
    pub fn emitted(&self) -> u64 {
        self.next
    }

    /// Stops the pipeline; the iterator ends after what it has already received is dropped.
    pub fn cancel(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.finished = true;
    }

    fn refresh_stats(&mut self) {
        let s = &mut self.stats;
        s.wall_seconds = self.started.elapsed().as_secs_f64();
        s.model_seconds = self.model_time.as_secs_f64();
        s.other_seconds = (s.wall_seconds - s.model_seconds / self.workers as f64).max(0.0);
        if s.wall_seconds > 0.0 {
            let done = (s.texts_succeeded + s.texts_failed) as f64;
            s.texts_per_second = done / s.wall_seconds;
            s.tokens_per_second = s.tokens as f64 / s.wall_seconds;
        }
        s.texts_total = s.texts_succeeded + s.texts_failed + s.texts_skipped;
        self.latency.fill(s);
        s.peak_memory_mb = s.peak_memory_mb.max(peak_resident_mb());
    }

    fn on_batch(&mut self, model_time: Option<Duration>, latency: Option<Duration>) -> Result<()> {
        if let Some(dt) = model_time {
            self.model_time += dt;
        }
        if let Some(l) = latency {
            self.latency.push(l);
            self.stats.batches += 1;
        } else {
            return Ok(());
        }
        if let Some(probe) = self.memory.as_mut() {
            let now = probe.resident_mb();
            self.stats.peak_memory_mb = self.stats.peak_memory_mb.max(now);
            if let Some(limit) = self.memory_limit_mb {
                if now > limit {
                    return Err(Error::MemoryLimit {
                        in_use_mb: now,
                        limit_mb: limit,
                        detail: if self.memory_detail.is_empty() {
                            "measured after a batch".into()
                        } else {
                            self.memory_detail.clone()
                        },
                    });
                }
            }
        }
        if let Some(every) = self.progress_every {
            self.batches_since_progress += 1;
            if self.batches_since_progress >= every {
                self.batches_since_progress = 0;
                self.report_progress();
            }
        }
        Ok(())
    }

    fn report_progress(&mut self) {
        self.refresh_stats();
        let s = &self.stats;
        let done = s.texts_succeeded + s.texts_failed;
        let rate = s.texts_per_second;
        let info = ProgressInfo {
            done,
            total: self.total,
            failed: s.texts_failed,
            tokens: s.tokens,
            elapsed_seconds: s.wall_seconds,
            texts_per_second: rate,
            tokens_per_second: s.tokens_per_second,
            eta_seconds: self
                .total
                .filter(|_| rate > 0.0)
                .map(|t| t.saturating_sub(done) as f64 / rate),
            memory_mb: self.memory.as_mut().map_or(0, MemoryProbe::resident_mb),
        };
        let mut cbs = self.callbacks.lock().expect("callbacks");
        if let Some(cb) = cbs.progress.as_mut() {
            cb(&info);
        }
        if let Some(cb) = cbs.stats.as_mut() {
            cb(&self.stats);
        }
    }

    fn finish(&mut self) {
        self.finished = true;
        self.cancel.store(true, Ordering::Relaxed);
        self.refresh_stats();
        *self.last_stats.lock().expect("stats") = self.stats.clone();
        if let Some(cb) = self.callbacks.lock().expect("callbacks").stats.as_mut() {
            cb(&self.stats);
        }
    }

    fn count(&mut self, o: &ItemOutcome) {
        match o {
            ItemOutcome::Embedded(r) => {
                self.stats.texts_succeeded += 1;
                self.stats.tokens += r.n_tokens as u64;
                self.stats.characters += r.n_chars as u64;
                self.stats.truncated += u64::from(r.truncated);
            }
            ItemOutcome::Failed(f) => {
                self.stats.texts_failed += 1;
                *self
                    .stats
                    .failures_by_kind
                    .entry(f.error.kind.as_str().to_string())
                    .or_default() += 1;
                if let Some(limit) = self.error_limit {
                    if self.stats.texts_failed >= limit {
                        self.queued_error = Some(Error::ErrorLimit {
                            failed: self.stats.texts_failed,
                            limit,
                            last: f.error.clone(),
                        });
                        self.cancel.store(true, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// The input's I/O error, if reading stopped early because of one.
    pub fn input_error(&self) -> Option<&std::io::Error> {
        self.input_error.as_ref()
    }
}

impl Iterator for Run {
    type Item = Result<ItemOutcome>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(e) = self.queued_error.take() {
                self.finish();
                return Some(Err(e));
            }
            if self.finished {
                return None;
            }
            if let Some(o) = self.pending.remove(&self.next) {
                self.next += 1;
                *self.watermark.next.lock().expect("watermark") = self.next;
                self.watermark.moved.notify_all();
                self.count(&o);
                return Some(Ok(o));
            }
            if self.end == Some(self.next) {
                self.finish();
                if let Some(e) = self.input_error.take() {
                    let e = Error::Io {
                        path: "input".into(),
                        error: e,
                    };
                    self.input_error = None;
                    return Some(Err(e));
                }
                return None;
            }
            match self.rx.recv() {
                Ok(Msg::Outcomes {
                    outcomes,
                    model_time,
                    latency,
                }) => {
                    for o in outcomes {
                        self.pending.insert(o.index(), o);
                    }
                    if let Err(e) = self.on_batch(model_time, latency) {
                        self.queued_error = Some(e);
                        self.cancel.store(true, Ordering::Relaxed);
                    }
                }
                Ok(Msg::EndOfInput {
                    items,
                    skipped,
                    error,
                }) => {
                    self.end = Some(items);
                    self.stats.texts_skipped = skipped;
                    self.input_error = error;
                }
                Ok(Msg::Fatal(e)) => self.queued_error = Some(e),
                Err(_) => {
                    self.queued_error = Some(Error::Worker(
                        "the pipeline ended before every item was processed".into(),
                    ));
                }
            }
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.watermark.moved.notify_all();
        // Unblock threads waiting to send to us, then wait for them.
        let (_tx, dummy) = mpsc::sync_channel(1);
        drop(std::mem::replace(&mut self.rx, dummy));
        // The reader (first thread) may be blocked reading stdin; it exits on its next send.
        for t in self.threads.drain(..).skip(1) {
            let _ = t.join();
        }
    }
}
