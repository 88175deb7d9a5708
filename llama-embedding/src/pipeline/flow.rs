//! What the stages send each other: [`Msg`] from the stages to the [`super::Run`], and the
//! [`Watermark`] that keeps the reader and tokenizer at most a few windows ahead of the output.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::order::SegmentKey;
use crate::item::ItemOutcome;

/// A message to the run.
pub(crate) enum Msg {
    /// Segments done (or failed), any order.
    Outcomes {
        outcomes: Vec<(SegmentKey, ItemOutcome)>,
        /// Set for engine batches.
        model_time: Option<Duration>,
        latency: Option<Duration>,
    },
    /// The reader is done: `items` is the index after the last item.
    EndOfInput {
        items: u64,
        skipped: u64,
        error: Option<std::io::Error>,
    },
}

/// The next item the output waits for; the tokenizer waits on it before it sends a batch too
/// far ahead. Woken on every move and on cancellation, so nothing polls.
pub(crate) struct Watermark {
    next: Mutex<u64>,
    moved: Condvar,
}

impl Watermark {
    pub(crate) fn new(first: u64) -> Self {
        Watermark {
            next: Mutex::new(first),
            moved: Condvar::new(),
        }
    }

    /// The output has reached item `next`.
    pub(crate) fn advance(&self, next: u64) {
        *self.next.lock().unwrap_or_else(|p| p.into_inner()) = next;
        self.moved.notify_all();
    }

    /// Wakes waiters (after `cancel` was set).
    pub(crate) fn wake(&self) {
        let _guard = self.next.lock().unwrap_or_else(|p| p.into_inner());
        self.moved.notify_all();
    }

    /// Waits until item `first` is less than `max_ahead` items ahead of the output; `false`
    /// when the run was cancelled meanwhile.
    pub(crate) fn wait_for_room(&self, first: u64, max_ahead: u64, cancel: &AtomicBool) -> bool {
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        while first >= *next + max_ahead {
            if cancel.load(Ordering::Relaxed) {
                return false;
            }
            next = self.moved.wait(next).unwrap_or_else(|p| p.into_inner());
        }
        !cancel.load(Ordering::Relaxed)
    }
}
