//! [`Engine`]: a long-lived pool of context threads, created once per process and shared
//! (`Arc<Engine>`) by every run, `search`, `bench` and the library API. Each thread owns one
//! context; work arrives on one bounded channel of `(batch, reply)` requests, so a caller that
//! queues the next batch while the current one runs keeps every thread busy (the channel holds
//! two batches per thread), and a slow consumer stops the producer rather than growing memory.

use std::ops::Range;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use llama_cpp_2::token::LlamaToken;

use super::backend::{Backend, Context};
use super::context::ContextShape;
use crate::error::{Error, Result};

/// What the engine hands back for one request.
#[derive(Debug)]
pub struct Reply {
    /// One vector per sequence, in order, or why the batch failed.
    pub vectors: Result<Vec<Vec<f32>>>,
    /// Time spent in the decode.
    pub model_time: Duration,
    /// Time from the thread picking the request up to the reply.
    pub latency: Duration,
}

type ReplyFn = Box<dyn FnOnce(Reply) + Send>;

struct Request {
    sequences: Vec<Vec<LlamaToken>>,
    /// Token ranges to pool per sequence (late chunking); empty: one vector per sequence.
    pools: Vec<Option<Vec<Range<usize>>>>,
    cancel: Option<Arc<AtomicBool>>,
    reply: ReplyFn,
}

/// The engine: N threads, one context each, all of one [`ContextShape`].
pub struct Engine {
    tx: Option<Sender<Request>>,
    threads: Vec<JoinHandle<()>>,
    shape: ContextShape,
    workers: usize,
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("shape", &self.shape)
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Starts `workers` threads, each making its context from `backend`; returns when all are
    /// ready.
    ///
    /// # Errors
    /// [`Error::Config`] for zero workers; the first context's error (shape, memory);
    /// [`Error::Worker`] when a thread cannot start.
    pub fn start(backend: Arc<dyn Backend>, shape: ContextShape, workers: usize) -> Result<Self> {
        if workers == 0 {
            return Err(Error::Config("an engine needs at least one worker".into()));
        }
        shape.check()?;
        let (tx, rx) = crossbeam_channel::bounded::<Request>(workers * 2);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<()>>();
        let mut engine = Engine {
            tx: Some(tx),
            threads: Vec::with_capacity(workers),
            shape,
            workers,
            backend: backend.clone(),
        };
        for w in 0..workers {
            let (backend, shape, rx) = (backend.clone(), engine.shape.clone(), rx.clone());
            let ready = ready_tx.clone();
            let thread = std::thread::Builder::new()
                .name(format!("llama-embed-engine-{w}"))
                .spawn(move || serve(backend.as_ref(), &shape, &rx, &ready))
                .map_err(|e| Error::Worker(format!("cannot start an engine thread: {e}")))?;
            engine.threads.push(thread);
        }
        drop(ready_tx);
        for _ in 0..workers {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Err(Error::Worker("an engine thread died starting".into())),
            }
        }
        Ok(engine)
    }

    pub fn shape(&self) -> &ContextShape {
        &self.shape
    }

    pub fn workers(&self) -> usize {
        self.workers
    }

    /// The model its contexts run.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Queues one batch; `reply` runs on the engine thread when it is done (or failed, or
    /// cancelled: [`Error::Cancelled`] when `cancel` was set before it started). Blocks while
    /// the queue is full.
    ///
    /// # Errors
    /// [`Error::Worker`] when the engine has stopped.
    pub fn submit(
        &self,
        sequences: Vec<Vec<LlamaToken>>,
        cancel: Option<Arc<AtomicBool>>,
        reply: impl FnOnce(Reply) + Send + 'static,
    ) -> Result<()> {
        self.submit_pooled(sequences, Vec::new(), cancel, reply)
    }

    /// As [`Engine::submit`], with token ranges to pool per sequence (see
    /// [`super::Context::embed_pooled`]): the reply's vectors are flattened in order.
    ///
    /// # Errors
    /// As [`Engine::submit`].
    pub fn submit_pooled(
        &self,
        sequences: Vec<Vec<LlamaToken>>,
        pools: Vec<Option<Vec<Range<usize>>>>,
        cancel: Option<Arc<AtomicBool>>,
        reply: impl FnOnce(Reply) + Send + 'static,
    ) -> Result<()> {
        let request = Request {
            sequences,
            pools,
            cancel,
            reply: Box::new(reply),
        };
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(request).ok())
            .ok_or_else(|| Error::Worker("the engine has stopped".into()))
    }

    /// Embeds one batch and waits for it.
    ///
    /// # Errors
    /// The batch's error, or [`Error::Worker`] when the engine stopped under it.
    pub fn embed(&self, sequences: Vec<Vec<LlamaToken>>) -> Result<Vec<Vec<f32>>> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(sequences, None, move |r| {
            let _ = tx.send(r.vectors);
        })?;
        rx.recv()
            .map_err(|_| Error::Worker("the engine thread died in a decode".into()))?
    }
}

/// One engine thread: make the context, say so, then serve requests until the channel closes.
fn serve(
    backend: &dyn Backend,
    shape: &ContextShape,
    rx: &Receiver<Request>,
    ready: &mpsc::Sender<Result<()>>,
) {
    let mut ctx = match backend.context(shape) {
        Ok(c) => c,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    for request in rx.iter() {
        let started = Instant::now();
        if request.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            (request.reply)(Reply {
                vectors: Err(Error::Cancelled),
                model_time: Duration::ZERO,
                latency: Duration::ZERO,
            });
            continue;
        }
        let (vectors, model_time) = decode(ctx.as_mut(), &request.sequences, &request.pools);
        (request.reply)(Reply {
            vectors,
            model_time,
            latency: started.elapsed(),
        });
    }
}

/// Runs one decode; a panic in the backend fails this batch, not the process.
fn decode(
    ctx: &mut dyn Context,
    sequences: &[Vec<LlamaToken>],
    pools: &[Option<Vec<Range<usize>>>],
) -> (Result<Vec<Vec<f32>>>, Duration) {
    let seqs: Vec<&[LlamaToken]> = sequences.iter().map(Vec::as_slice).collect();
    let pools: Vec<Option<&[Range<usize>]>> = pools.iter().map(Option::as_deref).collect();
    match catch_unwind(AssertUnwindSafe(|| ctx.embed_pooled(&seqs, &pools))) {
        Ok(Ok((v, dt))) => (Ok(v), dt),
        Ok(Err(e)) => (Err(e), Duration::ZERO),
        Err(_) => (
            Err(Error::Worker("the engine panicked in a decode".into())),
            Duration::ZERO,
        ),
    }
}

impl Drop for Engine {
    /// Closes the queue and waits for the threads to finish what they hold.
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
