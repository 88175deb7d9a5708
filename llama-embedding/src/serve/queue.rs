//! [`Queue`]: batching across requests. Every request's tokenised texts go into one bounded
//! queue (its size is counted in texts; a request that would overflow it is refused whole, the
//! server's 429); one thread packs what is waiting into decodes under the engine's token budget
//! and hands them to the [`Engine`]. A decode starts as soon as an engine thread is free: while
//! all are busy the batch keeps filling, up to the budget or a short wait, so a lone request
//! never waits for others and a loaded server runs full decodes. In the exact mode a text's
//! vector does not depend on which requests it shared a decode with.
//!
//! A request whose client went away (or that timed out) sets its cancel flag; its texts still
//! waiting are dropped here and never run.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use llama_cpp_2::token::LlamaToken;
use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::engine::Engine;
use crate::pipeline::batcher::{pack, Packable, TokenBudget};

/// One text to embed and where its vector goes.
pub struct Job {
    pub tokens: Vec<LlamaToken>,
    pub cancel: Arc<AtomicBool>,
    pub reply: oneshot::Sender<Done>,
    queued: Instant,
    order: u64,
}

/// A job's outcome: its vector (not normalised) or the engine's error, and its times.
#[derive(Debug)]
pub struct Done {
    pub vector: Result<Vec<f32>, String>,
    /// From entering the queue to its decode starting.
    pub queue_time: Duration,
    /// Its decode.
    pub inference_time: Duration,
}

impl Packable for Job {
    fn n_tokens(&self) -> usize {
        self.tokens.len()
    }
    fn index(&self) -> u64 {
        self.order
    }
}

/// The queue was full: nothing of the request was queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    pub waiting: usize,
    pub capacity: usize,
}

/// How the queue packs decodes.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Texts that may wait at once (all requests together).
    pub capacity: usize,
    pub budget: TokenBudget,
    /// Longest a batch keeps filling while every engine thread is busy.
    pub max_wait: Duration,
}

/// The cross-request queue; see the module docs.
pub struct Queue {
    tx: Option<Sender<Job>>,
    waiting: Arc<AtomicUsize>,
    capacity: usize,
    order: AtomicUsize,
    thread: Option<JoinHandle<()>>,
}

impl Queue {
    /// Starts the packing thread in front of `engine`.
    ///
    /// # Errors
    /// When the thread cannot start.
    pub fn start(
        engine: Arc<Engine>,
        config: QueueConfig,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job>();
        let waiting = Arc::new(AtomicUsize::new(0));
        let packer = Packer {
            engine,
            config,
            metrics,
            waiting: waiting.clone(),
            in_flight: Arc::new(AtomicUsize::new(0)),
        };
        let thread = std::thread::Builder::new()
            .name("llama-embed-serve-queue".into())
            .spawn(move || packer.run(&rx))?;
        Ok(Queue {
            tx: Some(tx),
            waiting,
            capacity: config.capacity,
            order: AtomicUsize::new(0),
            thread: Some(thread),
        })
    }

    /// Texts waiting or running now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Queues all of `texts` (each with the request's cancel flag) or, when they would not all
    /// fit, none; returns each text's reply.
    ///
    /// # Errors
    /// [`Full`] when the queue cannot take them all.
    pub fn submit(
        &self,
        texts: Vec<Vec<LlamaToken>>,
        cancel: &Arc<AtomicBool>,
    ) -> Result<Vec<oneshot::Receiver<Done>>, Full> {
        let n = texts.len();
        let admitted = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w + n <= self.capacity).then_some(w + n)
            });
        if let Err(w) = admitted {
            return Err(Full {
                waiting: w,
                capacity: self.capacity,
            });
        }
        let Some(tx) = &self.tx else {
            self.waiting.fetch_sub(n, Ordering::AcqRel);
            return Err(Full {
                waiting: 0,
                capacity: 0,
            });
        };
        let now = Instant::now();
        let mut replies = Vec::with_capacity(n);
        for tokens in texts {
            let (reply, rx) = oneshot::channel();
            let order = self.order.fetch_add(1, Ordering::Relaxed) as u64;
            let job = Job {
                tokens,
                cancel: cancel.clone(),
                reply,
                queued: now,
                order,
            };
            if tx.send(job).is_err() {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
            }
            replies.push(rx);
        }
        Ok(replies)
    }
}

impl Drop for Queue {
    /// Closes the queue; the packing thread runs what is queued, then stops.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The packing thread's state.
struct Packer {
    engine: Arc<Engine>,
    config: QueueConfig,
    metrics: Arc<Metrics>,
    waiting: Arc<AtomicUsize>,
    in_flight: Arc<AtomicUsize>,
}

impl Packer {
    fn run(&self, rx: &Receiver<Job>) {
        let (done_tx, done_rx) = crossbeam_channel::unbounded::<()>();
        while let Ok(first) = rx.recv() {
            let jobs = self.gather(first, rx, &done_rx);
            self.dispatch(jobs, &done_tx);
        }
    }

    /// Collects jobs from `first` on until a decode's worth is waiting, an engine thread is
    /// free, or the wait is over.
    fn gather(&self, first: Job, rx: &Receiver<Job>, done: &Receiver<()>) -> Vec<Job> {
        let budget = self.config.budget;
        let deadline = Instant::now() + self.config.max_wait;
        let mut tokens = first.tokens.len();
        let mut jobs = vec![first];
        let full = |jobs: &Vec<Job>, tokens: usize| {
            tokens >= budget.tokens * self.engine.workers()
                || jobs.len() >= budget.sequences * self.engine.workers()
        };
        while !full(&jobs, tokens) {
            if self.in_flight.load(Ordering::Acquire) < self.engine.workers() {
                // A free engine thread: take what is already here and go.
                while let Ok(j) = rx.try_recv() {
                    tokens += j.tokens.len();
                    jobs.push(j);
                    if full(&jobs, tokens) {
                        break;
                    }
                }
                break;
            }
            select! {
                recv(rx) -> j => match j {
                    Ok(j) => {
                        tokens += j.tokens.len();
                        jobs.push(j);
                    }
                    Err(_) => break,
                },
                recv(done) -> _ => {}
                default(deadline.saturating_duration_since(Instant::now())) => break,
            }
        }
        jobs
    }

    /// Drops the cancelled jobs, packs the rest (shortest first) and submits each decode.
    fn dispatch(&self, jobs: Vec<Job>, done: &Sender<()>) {
        let (mut live, cancelled): (Vec<Job>, Vec<Job>) = jobs
            .into_iter()
            .partition(|j| !j.cancel.load(Ordering::Relaxed));
        if !cancelled.is_empty() {
            self.waiting.fetch_sub(cancelled.len(), Ordering::AcqRel);
            self.metrics.cancelled_texts.inc_by(cancelled.len() as u64);
        }
        self.metrics.queue_size.set(self.waiting() as i64);
        live.sort_by_key(|j| (j.tokens.len(), j.order));
        for batch in pack(live, self.config.budget) {
            self.submit(batch, done);
        }
    }

    fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Hands one decode to the engine; its reply answers each job.
    fn submit(&self, batch: Vec<Job>, done: &Sender<()>) {
        let n_tokens: usize = batch.iter().map(|j| j.tokens.len()).sum();
        self.metrics.batch_size.observe(batch.len() as f64);
        self.metrics.batch_tokens.observe(n_tokens as f64);
        let started = Instant::now();
        let mut sequences = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for j in batch {
            sequences.push(j.tokens);
            replies.push((j.reply, started.saturating_duration_since(j.queued)));
        }
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let (waiting, in_flight, done) =
            (self.waiting.clone(), self.in_flight.clone(), done.clone());
        let metrics = self.metrics.clone();
        let answer = move |r: crate::engine::Reply| {
            let n = replies.len();
            // The gauge drops before the answers go out: a client that reads /metrics after
            // its answer never sees its own texts still counted.
            waiting.fetch_sub(n, Ordering::AcqRel);
            metrics
                .queue_size
                .set(waiting.load(Ordering::Relaxed) as i64);
            let mut vectors = r.vectors.map(Vec::into_iter);
            for (reply, queue_time) in replies {
                let vector = match &mut vectors {
                    Ok(v) => v
                        .next()
                        .ok_or_else(|| "the engine returned too few vectors".into()),
                    Err(e) => Err(e.to_string()),
                };
                let _ = reply.send(Done {
                    vector,
                    queue_time,
                    inference_time: r.latency,
                });
            }
            metrics.batch_inference.observe(r.latency.as_secs_f64());
            in_flight.fetch_sub(1, Ordering::AcqRel);
            let _ = done.send(());
        };
        let n = sequences.len();
        if self.engine.submit(sequences, None, answer).is_err() {
            // The engine stopped: the reply closure was dropped with the request, so the
            // jobs' receivers see a closed channel (answered as a backend failure).
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.waiting.fetch_sub(n, Ordering::AcqRel);
            self.metrics.engine_errors.inc();
        }
    }
}
