//! [`Run`]: the output end of the pipeline. It receives segments from the stages, reorders them
//! ([`Reorder`]), counts, checks memory after each batch, reports progress and yields outcomes
//! in input order.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::document::document;
use super::flow::{Msg, Watermark};
use super::order::Reorder;
use super::processor::Callbacks;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::item::ItemOutcome;
use crate::model::Normalize;
use crate::stats::{peak_resident_mb, BatchStats, LatencyLog, MemoryProbe, ProgressInfo};

/// A running job: an iterator of outcomes in input order, then `None`; a fatal error is
/// yielded once as `Err` and ends it. Dropping it stops the pipeline.
pub struct Run {
    rx: Receiver<Msg>,
    order: Reorder<ItemOutcome>,
    ready: VecDeque<ItemOutcome>,
    end: Option<u64>,
    cancel: Arc<AtomicBool>,
    watermark: Arc<Watermark>,
    /// The reader, then the tokenizer.
    threads: Vec<JoinHandle<()>>,
    /// Kept alive while its batches are in flight.
    engine: Arc<Engine>,
    stats: BatchStats,
    latency: LatencyLog,
    model_time: Duration,
    started: Instant,
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
    /// `--doc-vector mean`: each chunked item becomes one vector (normalised like the run's).
    doc_vector: Option<Normalize>,
}

/// What a [`Run`] is made of; built by the processor.
pub(crate) struct RunParts {
    pub rx: Receiver<Msg>,
    pub first: u64,
    pub cancel: Arc<AtomicBool>,
    pub watermark: Arc<Watermark>,
    pub threads: Vec<JoinHandle<()>>,
    pub engine: Arc<Engine>,
    pub total: Option<u64>,
    pub error_limit: Option<u64>,
    pub memory: Option<MemoryProbe>,
    pub memory_limit_mb: Option<u64>,
    pub memory_detail: String,
    pub progress_every: Option<usize>,
    pub callbacks: Arc<Mutex<Callbacks>>,
    pub last_stats: Arc<Mutex<BatchStats>>,
    pub doc_vector: Option<Normalize>,
}

impl Run {
    pub(crate) fn new(p: RunParts) -> Run {
        Run {
            rx: p.rx,
            order: Reorder::new(p.first),
            ready: VecDeque::new(),
            end: None,
            cancel: p.cancel,
            watermark: p.watermark,
            threads: p.threads,
            engine: p.engine,
            stats: BatchStats::default(),
            latency: LatencyLog::default(),
            model_time: Duration::ZERO,
            started: Instant::now(),
            total: p.total,
            error_limit: p.error_limit,
            queued_error: None,
            finished: false,
            memory: p.memory,
            memory_limit_mb: p.memory_limit_mb,
            memory_detail: p.memory_detail,
            progress_every: p.progress_every,
            batches_since_progress: 0,
            callbacks: p.callbacks,
            last_stats: p.last_stats,
            input_error: None,
            doc_vector: p.doc_vector,
        }
    }

    /// Stats so far (final once the iterator has ended).
    pub fn stats(&self) -> &BatchStats {
        &self.stats
    }

    /// Items whose every part has been emitted (all in input order): the next index to come.
    pub fn emitted(&self) -> u64 {
        self.order.next_item() - u64::from(!self.ready.is_empty())
    }

    /// Stops the pipeline; the iterator ends after what it has already received is dropped.
    pub fn cancel(&mut self) {
        self.stop();
        self.finished = true;
    }

    fn stop(&self) {
        self.cancel.store(true, Ordering::Relaxed);
        self.watermark.wake();
    }

    /// The input's I/O error, if reading stopped early because of one.
    pub fn input_error(&self) -> Option<&std::io::Error> {
        self.input_error.as_ref()
    }

    fn refresh_stats(&mut self) {
        let s = &mut self.stats;
        s.wall_seconds = self.started.elapsed().as_secs_f64();
        s.model_seconds = self.model_time.as_secs_f64();
        s.other_seconds =
            (s.wall_seconds - s.model_seconds / self.engine.workers() as f64).max(0.0);
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
        let Some(l) = latency else {
            return Ok(());
        };
        self.latency.push(l);
        self.stats.batches += 1;
        self.check_memory()?;
        if let Some(every) = self.progress_every {
            self.batches_since_progress += 1;
            if self.batches_since_progress >= every {
                self.batches_since_progress = 0;
                self.report_progress();
            }
        }
        Ok(())
    }

    fn check_memory(&mut self) -> Result<()> {
        let Some(probe) = self.memory.as_mut() else {
            return Ok(());
        };
        let now = probe.resident_mb();
        self.stats.peak_memory_mb = self.stats.peak_memory_mb.max(now);
        match self.memory_limit_mb {
            Some(limit) if now > limit => Err(Error::MemoryLimit {
                in_use_mb: now,
                limit_mb: limit,
                detail: if self.memory_detail.is_empty() {
                    "measured after a batch".into()
                } else {
                    self.memory_detail.clone()
                },
            }),
            _ => Ok(()),
        }
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
        self.stop();
        self.refresh_stats();
        *self.last_stats.lock().expect("stats") = self.stats.clone();
        if let Some(cb) = self.callbacks.lock().expect("callbacks").stats.as_mut() {
            cb(&self.stats);
        }
    }

    fn count(&mut self, o: &ItemOutcome) {
        match o {
            ItemOutcome::Embedded(r) => {
                self.stats.texts_succeeded += u64::from(r.ends_item());
                self.stats.chunks += u64::from(r.chunk.is_some());
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
                        self.stop();
                    }
                }
            }
        }
    }

    /// The next outcome in order, if it is here.
    fn take_ready(&mut self) -> Option<ItemOutcome> {
        if self.ready.is_empty() {
            let (_, parts) = self.order.pop()?;
            match self.doc_vector {
                Some(normalize) => self.ready.push_back(document(parts, normalize)),
                None => self.ready.extend(one_failure(parts)),
            }
            self.watermark.advance(self.order.next_item());
        }
        self.ready.pop_front()
    }

    /// The end of the output: the input's error, if reading stopped on one.
    fn end_of_output(&mut self) -> Option<Result<ItemOutcome>> {
        self.finish();
        let e = self.input_error.take()?;
        Some(Err(Error::Io {
            path: "input".into(),
            error: e,
        }))
    }

    fn receive(&mut self) {
        match self.rx.recv() {
            Ok(Msg::Outcomes {
                outcomes,
                model_time,
                latency,
            }) => {
                for (key, o) in outcomes {
                    self.order.push(key, o);
                }
                if let Err(e) = self.on_batch(model_time, latency) {
                    self.queued_error = Some(e);
                    self.stop();
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
            Err(_) => {
                self.queued_error = Some(Error::Worker(
                    "the pipeline ended before every item was processed".into(),
                ));
            }
        }
    }
}

/// An item's outcomes, or its first failure alone when a part failed: a chunked item is
/// written whole or not at all (its error names the chunk).
fn one_failure(parts: Vec<ItemOutcome>) -> Vec<ItemOutcome> {
    if parts.len() > 1 {
        if let Some(i) = parts.iter().position(|o| o.failed().is_some()) {
            return parts.into_iter().skip(i).take(1).collect();
        }
    }
    parts
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
            if let Some(o) = self.take_ready() {
                self.count(&o);
                return Some(Ok(o));
            }
            if self.end == Some(self.order.next_item()) {
                return self.end_of_output();
            }
            self.receive();
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        self.stop();
        // Unblock threads waiting to send to us, then wait for them.
        let (_tx, dummy) = mpsc::sync_channel(1);
        drop(std::mem::replace(&mut self.rx, dummy));
        // The reader (first thread) may be blocked reading stdin; it exits on its next send.
        for t in self.threads.drain(..).skip(1) {
            let _ = t.join();
        }
    }
}
