//! The tokenize stage: a thread that turns each item into its [`Segment`]s (the whole text, or
//! in a chunked run one per chunk, each tokenised once while the chunker measures it), packs
//! them with the [`Batcher`] and hands full batches to the embed stage. An item that cannot be
//! tokenised or chunked becomes a failed outcome here and never reaches the engine.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use llama_cpp_2::token::LlamaToken;

use super::batcher::{Batcher, Packable, TokenBudget};
use super::embed::Dispatch;
use super::order::SegmentKey;
use crate::chunk::{self, ChunkConfig};
use crate::engine::{aligned_len_to, Backend};
use crate::error::{ItemError, ItemErrorKind};
use crate::item::{Chunk, ItemFailure, ItemId, ItemOutcome, Position, SourceItem};
use crate::key::KeyMaker;
use crate::model::EmbedOptions;

/// One part of an item, tokenised, on its way to an engine thread.
pub(crate) struct Segment {
    pub key: SegmentKey,
    pub tokens: Vec<LlamaToken>,
    /// Tokens it takes in a batch, alignment padding included.
    aligned: usize,
    pub meta: ItemMeta,
    /// Late chunking: the window's chunks, each with its token rows in `tokens`; then the
    /// segment gives one vector per chunk (and `key`/`meta` are its first chunk's).
    pub late: Vec<(SegmentKey, ItemMeta, Range<usize>)>,
}

/// What the outcome of a segment carries from its item.
#[derive(Clone)]
pub(crate) struct ItemMeta {
    pub id: ItemId,
    pub truncated: bool,
    pub n_chars: usize,
    pub extra: Option<serde_json::Map<String, serde_json::Value>>,
    pub text: Option<String>,
    pub position: Option<Position>,
    /// The chunk's place in its item, in a chunked run.
    pub chunk: Option<Chunk>,
    /// The content key, when the run makes them.
    pub key: Option<String>,
}

impl Packable for Segment {
    fn n_tokens(&self) -> usize {
        self.aligned
    }
    fn index(&self) -> u64 {
        self.key.item
    }
}

/// Tokens of the spans the chunker measured, by byte range.
type Measured = HashMap<(usize, usize), Vec<LlamaToken>>;

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
    pub chunking: Option<ChunkConfig>,
    pub keys: Option<KeyMaker>,
}

impl Tokenizer {
    fn key(&self, text: &str) -> Option<String> {
        let prefix = self.embed.prefix.as_deref();
        self.keys.as_ref().map(|k| k.text(prefix, text))
    }

    /// The segments of one item, or its failure.
    fn segments(&self, index: u64, item: SourceItem) -> Result<Vec<Segment>, Box<ItemFailure>> {
        let text = match item.text {
            Ok(t) => t,
            Err(error) => return Err(failure(index, item.id, error, item.position)),
        };
        if let Some(config) = &self.chunking {
            let base = ItemMeta {
                id: item.id,
                truncated: false,
                n_chars: 0,
                extra: item.extra,
                text: None,
                position: item.position,
                chunk: None,
                key: None,
            };
            return self
                .chunks(index, &text, config, &base)
                .map_err(|e| failure(index, base.id, e, base.position));
        }
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
                key: self.key(&text),
                text: self.keep_text.then_some(text),
                position: item.position,
                chunk: None,
            },
            late: Vec::new(),
        }])
    }

    /// One segment per chunk of `text`; each chunk's tokens are the ones its measure made.
    fn chunks(
        &self,
        index: u64,
        text: &str,
        config: &ChunkConfig,
        base: &ItemMeta,
    ) -> Result<Vec<Segment>, ItemError> {
        // Empty texts and NUL bytes get the same errors as without chunking.
        if text.trim().is_empty() || text.contains('\0') {
            let e = self.backend.tokenize(text, &self.embed, usize::MAX).err();
            let e = e.unwrap_or_else(|| ItemError::new(ItemErrorKind::Empty, "the text is empty"));
            return Err(e);
        }
        let (spans, mut measured) = self.split(text, config)?;
        let chars = char_offsets(text, &spans);
        let n = spans.len() as u32;
        let mut out = Vec::with_capacity(spans.len());
        for (k, (r, (c0, c1))) in spans.into_iter().zip(chars).enumerate() {
            let tokens = match measured.remove(&(r.start, r.end)) {
                Some(t) => t,
                None => match self
                    .backend
                    .tokenize(&text[r.clone()], &self.embed, usize::MAX)
                {
                    Ok(tk) => tk.tokens,
                    Err(e) => return Err(e),
                },
            };
            let chunk = Chunk {
                parent_id: base.id.clone(),
                chunk: k as u32,
                n_chunks: n,
                byte_start: r.start,
                byte_end: r.end,
                char_start: c0,
                char_end: c1,
            };
            out.push(Segment {
                key: SegmentKey {
                    item: index,
                    part: k as u32,
                    parts: n,
                },
                aligned: aligned_len_to(tokens.len(), self.align),
                tokens,
                meta: ItemMeta {
                    id: base.id.clone(),
                    truncated: false,
                    n_chars: c1 - c0,
                    extra: base.extra.clone(),
                    key: self.chunk_key(text, r.clone(), config.late),
                    text: self.keep_text.then(|| text[r].to_string()),
                    position: base.position,
                    chunk: Some(chunk),
                },
                late: Vec::new(),
            });
        }
        if config.late {
            return Ok(self.late_windows(text, out));
        }
        Ok(out)
    }

    /// A chunk's key: over its own text, or late-chunked over its item's text and its place.
    fn chunk_key(&self, text: &str, r: Range<usize>, late: bool) -> Option<String> {
        let prefix = self.embed.prefix.as_deref();
        let keys = self.keys.as_ref()?;
        Some(if late {
            keys.late(prefix, text, r)
        } else {
            keys.text(prefix, &text[r])
        })
    }

    /// The chunk spans of `text`, and the tokens of every span measured on the way (the
    /// kept spans among them: no chunk is tokenised twice).
    fn split(
        &self,
        text: &str,
        config: &ChunkConfig,
    ) -> Result<(Vec<Range<usize>>, Measured), ItemError> {
        let mut measured = Measured::new();
        let added = self.backend.added_tokens(&self.embed);
        let mut measure = |r: Range<usize>| {
            let Ok(tk) = self
                .backend
                .tokenize(&text[r.clone()], &self.embed, usize::MAX)
            else {
                return usize::MAX;
            };
            let n = tk.tokens.len();
            measured.insert((r.start, r.end), tk.tokens);
            n
        };
        let spans = chunk::split(text, config, added, &mut measure)
            .map_err(|e| ItemError::new(ItemErrorKind::TooLong, e.to_string()))?;
        Ok((spans, measured))
    }

    /// Late chunking: the chunks regrouped into windows of consecutive chunks that fit the
    /// model's context as one sequence. Each window is cut at every chunk start and end; the
    /// pieces are tokenised alone and joined between the special tokens, so each chunk's token
    /// rows are known exactly, and the chunk's vector is pooled from them (every chunk sees its
    /// whole window).
    fn late_windows(&self, text: &str, chunks: Vec<Segment>) -> Vec<Segment> {
        let mut out = Vec::new();
        let mut window: Vec<Segment> = Vec::new();
        let mut fitted = None;
        for c in chunks {
            window.push(c);
            let refs: Vec<&Segment> = window.iter().collect();
            let trial = self.window_tokens(text, &refs);
            if window.len() > 1 && trial.0.len() > self.max_tokens {
                // Full: the window without this chunk, which starts the next one.
                let next = window.pop().expect("the chunk just pushed");
                let done = std::mem::replace(&mut window, vec![next]);
                let tokens = fitted.take().expect("the fitting window");
                out.push(window_segment(done, tokens, self.align));
                fitted = Some(self.window_tokens(text, &[&window[0]]));
            } else {
                fitted = Some(trial);
            }
        }
        if let Some(tokens) = fitted {
            out.push(window_segment(window, tokens, self.align));
        }
        out
    }

    /// The tokens of a window of chunks and each chunk's token rows in them.
    fn window_tokens(
        &self,
        text: &str,
        chunks: &[&Segment],
    ) -> (Vec<LlamaToken>, Vec<Range<usize>>) {
        let span = |s: &Segment| s.meta.chunk.as_ref().map(|c| (c.byte_start, c.byte_end));
        let mut cuts: Vec<usize> = chunks
            .iter()
            .filter_map(|s| span(s))
            .flat_map(|(a, b)| [a, b])
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        let pieces: Vec<&str> = cuts.windows(2).map(|w| &text[w[0]..w[1]]).collect();
        let (tokens, piece_rows) = self.backend.tokenize_pieces(&pieces, &self.embed);
        let rows = chunks
            .iter()
            .filter_map(|s| span(s))
            .map(|(a, b)| {
                let first = cuts.partition_point(|&c| c < a);
                let last = cuts.partition_point(|&c| c < b) - 1;
                piece_rows[first].start..piece_rows[last].end
            })
            .collect();
        (tokens, rows)
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

/// The character offsets of byte spans (in one pass over the text).
fn char_offsets(text: &str, spans: &[Range<usize>]) -> Vec<(usize, usize)> {
    let mut bytes: Vec<usize> = spans.iter().flat_map(|r| [r.start, r.end]).collect();
    bytes.sort_unstable();
    bytes.dedup();
    let mut at: HashMap<usize, usize> = HashMap::with_capacity(bytes.len());
    let mut next = bytes.iter().peekable();
    for (ci, (bi, _)) in text.char_indices().chain([(text.len(), ' ')]).enumerate() {
        while next.peek().is_some_and(|&&b| b == bi) {
            at.insert(bi, ci);
            next.next();
        }
    }
    spans.iter().map(|r| (at[&r.start], at[&r.end])).collect()
}

/// One segment for a window of chunks: its tokens, and each chunk's key, meta and rows.
fn window_segment(
    chunks: Vec<Segment>,
    (tokens, rows): (Vec<LlamaToken>, Vec<Range<usize>>),
    align: usize,
) -> Segment {
    let mut chunks = chunks.into_iter();
    let first = chunks.next().expect("a window has a chunk");
    let mut late = vec![(first.key, first.meta.clone(), rows[0].clone())];
    late.extend(
        chunks
            .zip(rows.into_iter().skip(1))
            .map(|(c, r)| (c.key, c.meta, r)),
    );
    Segment {
        key: first.key,
        aligned: aligned_len_to(tokens.len(), align),
        tokens,
        meta: first.meta,
        late,
    }
}
