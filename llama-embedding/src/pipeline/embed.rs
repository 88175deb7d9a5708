//! The embed stage: [`Dispatch`] hands each batch of segments to the shared [`Engine`] (waiting
//! while the output is too far behind) and turns the engine's reply into outcomes for the run,
//! on the engine thread that made them. A failed batch fails each of its items with the reason.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use super::flow::{Msg, Watermark};
use super::order::SegmentKey;
use super::tokenize::Segment;
use crate::engine::{Engine, Reply};
use crate::error::{ItemError, ItemErrorKind};
use crate::item::{Chunk, EmbeddingResult, ItemFailure, ItemOutcome};

/// Where the tokenize stage sends batches and failures.
pub(crate) struct Dispatch {
    pub engine: Arc<Engine>,
    pub out: SyncSender<Msg>,
    pub watermark: Arc<Watermark>,
    pub cancel: Arc<AtomicBool>,
    /// How many items a batch may start ahead of the output.
    pub max_ahead: u64,
}

impl Dispatch {
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// Sends each batch to the engine; `false` when the run has stopped.
    pub(crate) fn send(&self, batches: Vec<Vec<Segment>>) -> bool {
        batches.into_iter().all(|b| self.send_one(b))
    }

    fn send_one(&self, batch: Vec<Segment>) -> bool {
        let first = batch.iter().map(|s| s.key.item).min().unwrap_or(0);
        if !self
            .watermark
            .wait_for_room(first, self.max_ahead, &self.cancel)
        {
            return false;
        }
        let mut sequences = Vec::with_capacity(batch.len());
        let mut pools = Vec::with_capacity(batch.len());
        let mut outputs: Vec<Done> = Vec::with_capacity(batch.len());
        for s in batch {
            if s.late.is_empty() {
                outputs.push((s.key, s.meta, s.tokens.len()));
                pools.push(None);
            } else {
                // Late chunking: one vector per chunk, pooled from its rows of the window.
                let mut ranges = Vec::with_capacity(s.late.len());
                for (key, meta, rows) in s.late {
                    outputs.push((key, meta, rows.len()));
                    ranges.push(rows);
                }
                pools.push(Some(ranges));
            }
            sequences.push(s.tokens);
        }
        let out = self.out.clone();
        self.engine
            .submit_pooled(sequences, pools, Some(self.cancel.clone()), move |reply| {
                let _ = out.send(outcomes(outputs, reply));
            })
            .is_ok()
    }

    /// Sends an item that failed before the engine; `false` when the run has stopped.
    pub(crate) fn fail(&self, key: SegmentKey, failed: ItemOutcome) -> bool {
        let msg = Msg::Outcomes {
            outcomes: vec![(key, failed)],
            model_time: None,
            latency: None,
        };
        self.out.send(msg).is_ok()
    }
}

type Done = (SegmentKey, super::tokenize::ItemMeta, usize);

/// The run's message for one engine reply.
fn outcomes(segments: Vec<Done>, reply: Reply) -> Msg {
    match reply.vectors {
        Ok(vectors) => Msg::Outcomes {
            outcomes: segments
                .into_iter()
                .zip(vectors)
                .map(|((key, meta, n_tokens), embedding)| {
                    let r = EmbeddingResult {
                        index: key.item,
                        id: meta.chunk.as_ref().map_or(meta.id, Chunk::row_id),
                        embedding,
                        n_tokens,
                        truncated: meta.truncated,
                        n_chars: meta.n_chars,
                        extra: meta.extra,
                        text: meta.text,
                        chunk: meta.chunk,
                        key: meta.key,
                    };
                    (key, ItemOutcome::Embedded(r))
                })
                .collect(),
            model_time: Some(reply.model_time),
            latency: Some(reply.latency),
        },
        Err(e) => {
            let msg = e.to_string();
            Msg::Outcomes {
                outcomes: segments
                    .into_iter()
                    .map(|(key, meta, _)| {
                        let msg = match &meta.chunk {
                            Some(c) => format!("{}: {msg}", c.describe()),
                            None => msg.clone(),
                        };
                        let error = ItemError::new(ItemErrorKind::Engine, msg);
                        let f = ItemFailure {
                            index: key.item,
                            id: meta.id,
                            error,
                            position: meta.position,
                        };
                        (key, ItemOutcome::Failed(f))
                    })
                    .collect(),
                model_time: None,
                latency: Some(reply.latency),
            }
        }
    }
}
