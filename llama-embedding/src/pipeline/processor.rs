//! [`BatchProcessor`]: the library's primary interface (seed 003). It plans a run
//! ([`super::plan`]), keeps its [`Engine`] between runs (or uses one it was given), and starts
//! the stages of a [`Run`]: read → tokenize + batch → embed (the engine's threads) → order.

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use super::batcher::TokenBudget;
use super::config::BatchConfig;
use super::embed::Dispatch;
use super::flow::{Msg, Watermark};
use super::plan::{plan, Plan};
use super::read::read;
use super::run::{Run, RunParts};
use super::tokenize::Tokenizer;
use crate::engine::{Backend, ContextShape, Engine};
use crate::error::{Error, Result};
use crate::item::{ItemOutcome, SourceItem};
use crate::model::EmbeddingModel;
use crate::reader::{ItemSource, IterSource, TextLines, TextOptions};
use crate::stats::{BatchStats, MemoryProbe, ProgressCallback, StatsCallback};

/// Embeds texts, lists and files with an `Arc<EmbeddingModel>` (or any [`Backend`]).
pub struct BatchProcessor {
    backend: Arc<dyn Backend>,
    config: BatchConfig,
    engine: EngineSlot,
    callbacks: Arc<Mutex<Callbacks>>,
    last_stats: Arc<Mutex<BatchStats>>,
}

/// The engine runs use: started on the first run and kept (`requested` is the plan before any
/// memory shrinking, which is what a later run compares), or given by the caller.
enum EngineSlot {
    None,
    Owned {
        requested: Box<Plan>,
        plan: Box<Plan>,
        engine: Arc<Engine>,
    },
    Given(Arc<Engine>),
}

#[derive(Default)]
pub(crate) struct Callbacks {
    pub progress: Option<ProgressCallback>,
    pub stats: Option<StatsCallback>,
}

impl std::fmt::Debug for BatchProcessor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchProcessor")
            .field("backend", &self.backend.describe())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl BatchProcessor {
    /// # Errors
    /// [`Error::Config`] for an invalid configuration or one the model cannot run (pooling,
    /// max tokens).
    pub fn new(model: Arc<EmbeddingModel>, config: BatchConfig) -> Result<Self> {
        Self::with_backend(model, config)
    }

    /// A processor over any [`Backend`] (the model, or [`crate::engine::FakeBackend`] in tests).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn with_backend(backend: Arc<dyn Backend>, config: BatchConfig) -> Result<Self> {
        config.validate()?;
        backend.pooling(&config.embed)?;
        backend.max_tokens(&config.embed)?;
        Ok(BatchProcessor {
            backend,
            config,
            engine: EngineSlot::None,
            callbacks: Arc::default(),
            last_stats: Arc::default(),
        })
    }

    /// A processor whose runs use `engine` (shared with other processors, `search` or a
    /// server) instead of starting their own.
    ///
    /// # Errors
    /// As [`new`](Self::new), and [`Error::Config`] when the configuration asks for batches
    /// the engine's contexts cannot take or for other vectors (pooling, normalisation, mode).
    pub fn with_engine(engine: Arc<Engine>, config: BatchConfig) -> Result<Self> {
        let mut p = Self::with_backend(engine.backend().clone(), config)?;
        let want = plan(p.backend.as_ref(), &p.config, None)?;
        check_fits(engine.shape(), &want.shape)?;
        p.engine = EngineSlot::Given(engine);
        Ok(p)
    }

    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The engine runs use, started now if no run has started it yet (to share it with
    /// [`with_engine`](Self::with_engine)).
    ///
    /// # Errors
    /// As [`process_items`](Self::process_items).
    pub fn engine(&mut self) -> Result<Arc<Engine>> {
        let mut probe = self.config.memory_monitoring.then(MemoryProbe::new);
        Ok(self.engine_for_run(probe.as_mut())?.0)
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
            "model: {}\nconfig: batch size {}, token budget {}, {} worker(s) x {} thread(s), window {}, sort by length {}\n{}",
            self.backend.describe(),
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
        self.start(source, total, 0)
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
        self.start(source, total, start_index)
    }

    /// The engine for a run and the plan it was made for.
    fn engine_for_run(&mut self, memory: Option<&mut MemoryProbe>) -> Result<(Arc<Engine>, Plan)> {
        let requested = plan(self.backend.as_ref(), &self.config, None)?;
        match &self.engine {
            EngineSlot::Given(engine) => return Ok((engine.clone(), requested)),
            EngineSlot::Owned {
                requested: r,
                plan,
                engine,
            } if **r == requested => return Ok((engine.clone(), (**plan).clone())),
            _ => {}
        }
        // Another shape: free the old contexts before making the new ones.
        self.engine = EngineSlot::None;
        let plan = plan(self.backend.as_ref(), &self.config, memory)?;
        let engine = Arc::new(Engine::start(
            self.backend.clone(),
            plan.shape.clone(),
            plan.workers,
        )?);
        self.engine = EngineSlot::Owned {
            requested: Box::new(requested),
            plan: Box::new(plan.clone()),
            engine: engine.clone(),
        };
        Ok((engine, plan))
    }

    /// Starts the stages of a run over `source`, whose first item is item `first`.
    fn start(
        &mut self,
        source: Box<dyn ItemSource>,
        total: Option<u64>,
        first: u64,
    ) -> Result<Run> {
        let mut memory = self.config.memory_monitoring.then(MemoryProbe::new);
        let (engine, plan) = self.engine_for_run(memory.as_mut())?;
        let c = &self.config;
        let cancel = Arc::new(AtomicBool::new(false));
        let watermark = Arc::new(Watermark::new(first));
        let (out_tx, out_rx) = mpsc::sync_channel::<Msg>(engine.workers() * 2 + 4);
        let (items_tx, items_rx) = mpsc::sync_channel::<(u64, SourceItem)>(256);
        let tokenizer = Tokenizer {
            backend: self.backend.clone(),
            embed: c.embed.clone(),
            max_tokens: plan.max_tokens,
            align: c.effective_align(),
            keep_text: c.keep_text,
            budget: TokenBudget {
                tokens: plan.budget,
                sequences: c.batch_size,
            },
            window: c.window,
            sort_by_length: c.sort_by_length,
            chunking: c.chunking,
            keys: c.key_settings.as_deref().map(crate::key::KeyMaker::new),
        };
        let dispatch = Dispatch {
            engine: engine.clone(),
            out: out_tx.clone(),
            watermark: watermark.clone(),
            cancel: cancel.clone(),
            max_ahead: 2 * c.window as u64 + c.batch_size as u64,
        };
        let reader = {
            let cancel = cancel.clone();
            spawn("llama-embed-reader", move || {
                read(source, first, items_tx, out_tx, cancel);
            })?
        };
        let tokenizer = spawn("llama-embed-tokenizer", move || {
            tokenizer.run(items_rx, dispatch);
        })?;
        Ok(Run::new(RunParts {
            rx: out_rx,
            first,
            cancel,
            watermark,
            threads: vec![reader, tokenizer],
            engine,
            total,
            error_limit: c.error_strategy.limit(),
            memory,
            memory_limit_mb: c.memory_limit_mb,
            memory_detail: plan.memory_detail,
            progress_every: c.progress.then_some(c.progress_interval_batches),
            callbacks: self.callbacks.clone(),
            last_stats: self.last_stats.clone(),
            doc_vector: c
                .chunking
                .filter(|k| k.doc_vector)
                .map(|_| c.embed.normalize),
        }))
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) -> Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .map_err(|e| Error::Worker(format!("cannot start thread {name}: {e}")))
}

/// Whether a run that wants contexts of shape `want` can use an engine of shape `have`.
fn check_fits(have: &ContextShape, want: &ContextShape) -> Result<()> {
    let same_vectors = have.pooling == want.pooling
        && have.normalize == want.normalize
        && have.dimensions == want.dimensions
        && have.mode == want.mode
        && have.align == want.align;
    if !same_vectors {
        return Err(Error::Config(format!(
            "the engine makes other vectors ({:?} pooling, {:?}, {:?} dimensions, {} mode, align {}) than this run asks for ({:?}, {:?}, {:?}, {}, {})",
            have.pooling, have.normalize, have.dimensions, have.mode, have.align,
            want.pooling, want.normalize, want.dimensions, want.mode, want.align
        )));
    }
    if have.max_sequences < want.max_sequences || have.max_batch_tokens < want.max_batch_tokens {
        return Err(Error::Config(format!(
            "the engine's contexts take {} texts and {} tokens per batch; this run asks for {} and {}",
            have.max_sequences, have.max_batch_tokens, want.max_sequences, want.max_batch_tokens
        )));
    }
    Ok(())
}
