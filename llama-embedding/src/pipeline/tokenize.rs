//! The tokenize stage: a thread that turns each item into its [`Segment`]s (today one per item:
//! the whole text), packs them with the [`Batcher`] and hands full batches to the embed stage.
//! An item that cannot be tokenised becomes a failed outcome here and never reaches the engine.

use std::sync::mpsc::Receiver;
use std::sync::Arc;

use llama_cpp_2::token::LlamaToken;

use super::batcher::{Batcher, Packable, TokenBudget};
use super::embed::Dispatch;
use super::order::SegmentKey;
use crate::engine::{aligned_len_to, Backend};
use crate::item::{ItemFailure, ItemId, ItemOutcome, Position, SourceItem};
use crate::model::EmbedOptions;

/// One part of an item, tokenised, on its way to an engine thread.
pub(crate) struct Segment {
    pub key: SegmentKey,
    pub tokens: Vec<LlamaToken>,
    /// Tokens it takes in a batch, alignment padding included.
    aligned: usize,
    pub meta: ItemMeta,
}

/// What the outcome of a segment carries from its item.
pub(crate) struct ItemMeta {
    pub id: ItemId,
    pub truncated: bool,
    pub n_chars: usize,
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
    pub text: Option<String>,
    pub position: Option<Position>,
}

impl Packable for Segment {
    fn n_tokens(&self) -> usize {
        self.aligned
    }
    fn index(&self) -> u64 {
        self.key.item
    }
}

/// How items are tokenised and packed.
pub(crate) struct Tokenizer {
    pub backend: Arc<dyn Backend>,
    pub embed: EmbedOptions,
    pub max_tokens: usize,
    pub align: usize,
    pub keep_text: bool,
    pub budget: TokenBudget,
    pub window: usize,
    pub sort_by_length: bool,
}

impl Tokenizer {
    /// The segments of one item, or its failure.
    fn segments(&self, index: u64, item: SourceItem) -> Result<Vec<Segment>, Box<ItemFailure>> {
        let text = match item.text {
            Ok(t) => t,
            Err(error) => return Err(failure(index, item.id, error, item.position)),
        };
        let tk = match self.backend.tokenize(&text, &self.embed, self.max_tokens) {
            Ok(tk) => tk,
            Err(error) => return Err(failure(index, item.id, error, item.position)),
        };
        Ok(vec![Segment {
            key: SegmentKey::whole(index),
            aligned: aligned_len_to(tk.tokens.len(), self.align),
            tokens: tk.tokens,
            meta: ItemMeta {
                id: item.id,
                truncated: tk.truncated,
                n_chars: text.chars().count(),
                extra: item.extra,
                text: self.keep_text.then_some(text),
                position: item.position,
            },
        }])
    }

    /// The stage's thread: tokenise and pack until the input ends or the run stops.
    pub(crate) fn run(self, items: Receiver<(u64, SourceItem)>, dispatch: Dispatch) {
        let mut batcher = Batcher::new(self.budget, self.window, self.sort_by_length);
        for (index, item) in items.iter() {
            if dispatch.cancelled() {
                return;
            }
            let sent = match self.segments(index, item) {
                Ok(segments) => segments.into_iter().all(|s| dispatch.send(batcher.push(s))),
                Err(failed) => {
                    dispatch.fail(SegmentKey::whole(index), ItemOutcome::Failed(*failed))
                        && dispatch.send(batcher.advance_to(index))
                }
            };
            if !sent {
                return;
            }
        }
        dispatch.send(batcher.flush());
    }
}

fn failure(
    index: u64,
    id: ItemId,
    error: crate::error::ItemError,
    position: Option<Position>,
) -> Box<ItemFailure> {
    Box::new(ItemFailure {
        index,
        id,
        error,
        position,
    })
}
