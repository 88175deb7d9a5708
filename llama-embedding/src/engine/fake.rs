//! [`FakeBackend`]: a **fake** model for tests of the engine and the pipeline without llama.cpp.
//! It tokenises on whitespace and computes each vector from its own tokens only, so a text's
//! vector never depends on its batch, as the exact mode promises. The word `<fail>` makes the
//! decode of its batch fail and `<panic>` makes it panic; each decode sleeps a little, longer
//! for odd token sums, so batches finish out of order across engine threads.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use llama_cpp_2::token::LlamaToken;

use super::backend::{Backend, Context, Pools};
use super::context::ContextShape;
use crate::error::{Error, ItemError, ItemErrorKind, Result};
use crate::model::{EmbedOptions, Normalize, Pooling, Tokenized};
use crate::vectors::finish;

const CLS: i32 = 1;
const SEP: i32 = 2;
const FAIL: i32 = 3;
const PANIC: i32 = 4;
const VOCAB: i32 = 1000;

/// A fake model (see the module docs). `contexts()` counts the contexts made, so tests can see
/// that a long-lived engine keeps its own.
#[derive(Debug)]
pub struct FakeBackend {
    dimensions: usize,
    n_ctx_train: usize,
    contexts: AtomicUsize,
    decodes: AtomicUsize,
}

impl FakeBackend {
    pub fn new(dimensions: usize, n_ctx_train: usize) -> Self {
        FakeBackend {
            dimensions,
            n_ctx_train,
            contexts: AtomicUsize::new(0),
            decodes: AtomicUsize::new(0),
        }
    }

    /// Contexts made so far.
    pub fn contexts(&self) -> usize {
        self.contexts.load(Ordering::Relaxed)
    }

    /// Decodes run so far.
    pub fn decodes(&self) -> usize {
        self.decodes.load(Ordering::Relaxed)
    }

    /// The vector the fake gives one token sequence (before normalisation).
    pub fn vector_of(&self, tokens: &[LlamaToken]) -> Vec<f32> {
        self.vector_of_rows(tokens, 0..tokens.len())
    }

    /// The mean of the fake's token rows `rows` of a sequence (each row depends on its token
    /// and its position in the whole sequence), as late chunking pools a chunk.
    pub fn vector_of_rows(&self, tokens: &[LlamaToken], rows: Range<usize>) -> Vec<f32> {
        let n = rows.len() as f32;
        (0..self.dimensions)
            .map(|d| {
                rows.clone()
                    .map(|pos| {
                        ((tokens[pos].0 as f32 + 0.37 * pos as f32) * (d as f32 + 1.0)).sin()
                    })
                    .sum::<f32>()
                    / n
            })
            .collect()
    }

    fn word_token(word: &str) -> i32 {
        match word {
            "<fail>" => FAIL,
            "<panic>" => PANIC,
            w => {
                let h = w.bytes().fold(2166136261u32, |h, b| {
                    (h ^ u32::from(b)).wrapping_mul(16777619)
                });
                5 + (h % (VOCAB as u32 - 5)) as i32
            }
        }
    }
}

impl Backend for FakeBackend {
    fn describe(&self) -> String {
        format!("fake backend ({} dimensions)", self.dimensions)
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn max_tokens(&self, options: &EmbedOptions) -> Result<usize> {
        let n = options.max_tokens.unwrap_or(self.n_ctx_train);
        if n < 3 || n > self.n_ctx_train {
            return Err(Error::Config(format!(
                "max tokens {n} is outside 3..={}",
                self.n_ctx_train
            )));
        }
        Ok(n)
    }

    fn pooling(&self, options: &EmbedOptions) -> Result<Pooling> {
        Ok(match options.pooling {
            Pooling::Model => Pooling::Mean,
            p => p,
        })
    }

    fn n_vocab(&self) -> usize {
        VOCAB as usize
    }

    fn tokenize(
        &self,
        text: &str,
        options: &EmbedOptions,
        max_tokens: usize,
    ) -> std::result::Result<Tokenized, ItemError> {
        if text.trim().is_empty() {
            return Err(ItemError::new(ItemErrorKind::Empty, "the text is empty"));
        }
        let full = format!("{}{text}", options.prefix.as_deref().unwrap_or(""));
        let mut tokens = vec![LlamaToken(CLS)];
        tokens.extend(
            full.split_whitespace()
                .map(|w| LlamaToken(Self::word_token(w))),
        );
        tokens.push(LlamaToken(SEP));
        Tokenized::fit(tokens, max_tokens, 1, options.truncate)
    }

    fn causal(&self) -> bool {
        false
    }

    fn tokenize_pieces(
        &self,
        pieces: &[&str],
        options: &EmbedOptions,
    ) -> (Vec<LlamaToken>, Vec<Range<usize>>) {
        let mut tokens = vec![LlamaToken(CLS)];
        let words = |t: &str| -> Vec<LlamaToken> {
            t.split_whitespace()
                .map(|w| LlamaToken(Self::word_token(w)))
                .collect()
        };
        tokens.extend(words(options.prefix.as_deref().unwrap_or("")));
        let mut ranges = Vec::new();
        for p in pieces {
            let start = tokens.len();
            tokens.extend(words(p));
            ranges.push(start..tokens.len());
        }
        tokens.push(LlamaToken(SEP));
        (tokens, ranges)
    }

    fn added_tokens(&self, options: &EmbedOptions) -> usize {
        2 + options
            .prefix
            .as_deref()
            .map_or(0, |p| p.split_whitespace().count())
    }

    fn context_estimate_mb(&self, tokens: usize) -> u64 {
        1 + tokens as u64 / 1024
    }

    fn context(&self, shape: &ContextShape) -> Result<Box<dyn Context + '_>> {
        self.contexts.fetch_add(1, Ordering::Relaxed);
        Ok(Box::new(FakeContext {
            backend: self,
            shape: shape.clone(),
        }))
    }
}

struct FakeContext<'b> {
    backend: &'b FakeBackend,
    shape: ContextShape,
}

impl Context for FakeContext<'_> {
    fn embed(&mut self, sequences: &[&[LlamaToken]]) -> Result<(Vec<Vec<f32>>, Duration)> {
        self.embed_pooled(sequences, &[])
    }

    fn embed_pooled(
        &mut self,
        sequences: &[&[LlamaToken]],
        pools: &[Pools<'_>],
    ) -> Result<(Vec<Vec<f32>>, Duration)> {
        let start = Instant::now();
        let total: usize = sequences.iter().map(|s| s.len()).sum();
        if sequences.is_empty() || sequences.len() > self.shape.max_sequences {
            return Err(Error::Config(format!(
                "{} sequences in one batch, the context takes {}",
                sequences.len(),
                self.shape.max_sequences
            )));
        }
        if sequences.len() > 1 && total > self.shape.max_batch_tokens {
            return Err(Error::Config(format!(
                "{total} tokens in one batch, the context takes {}",
                self.shape.max_batch_tokens
            )));
        }
        let all = sequences.iter().flat_map(|s| s.iter());
        if all.clone().any(|t| t.0 == PANIC) {
            panic!("the fake backend was asked to panic");
        }
        if all.clone().any(|t| t.0 == FAIL) {
            return Err(Error::Decode {
                sequences: sequences.len(),
                tokens: total,
                reason: "the fake backend was asked to fail".into(),
            });
        }
        self.backend.decodes.fetch_add(1, Ordering::Relaxed);
        let odd = all.map(|t| t.0 as u64).sum::<u64>() % 2 == 1;
        std::thread::sleep(Duration::from_micros(if odd { 900 } else { 100 }));
        let mut out = Vec::new();
        for (i, s) in sequences.iter().enumerate() {
            let whole = 0..s.len();
            let ranges = pools
                .get(i)
                .copied()
                .flatten()
                .unwrap_or(std::slice::from_ref(&whole));
            for r in ranges {
                let mut v = self.backend.vector_of_rows(s, r.clone());
                let l2 = self.shape.normalize == Normalize::L2;
                finish(&mut v, self.shape.dimensions, l2);
                out.push(v);
            }
        }
        Ok((out, start.elapsed()))
    }
}
