//! [`Backend`]: what the engine and the pipeline need of a model, as a small trait, so that the
//! pipeline runs against [`super::FakeBackend`] in tests and against [`EmbeddingModel`]
//! everywhere else.

use std::ops::Range;
use std::time::Duration;

use llama_cpp_2::token::LlamaToken;

use super::context::{ContextShape, EmbeddingContext};
use crate::error::{ItemError, Result};
use crate::model::{EmbedOptions, EmbeddingModel, Pooling, Tokenized};

/// A model the engine can run: it tokenises texts and makes contexts.
pub trait Backend: Send + Sync + 'static {
    /// One line for reports: what the model is.
    fn describe(&self) -> String;
    /// Length of the vectors.
    fn dimensions(&self) -> usize;
    /// Token ids run from 0 to this (exclusive).
    fn n_vocab(&self) -> usize;
    /// Tokens per text after truncation (see [`EmbeddingModel::max_tokens`]).
    ///
    /// # Errors
    /// A limit the model cannot take.
    fn max_tokens(&self, options: &EmbedOptions) -> Result<usize>;
    /// The pooling `options` resolves to.
    ///
    /// # Errors
    /// "model default" for a model that names none.
    fn pooling(&self, options: &EmbedOptions) -> Result<Pooling>;
    /// Tokenises one text with its special tokens and prefix.
    ///
    /// # Errors
    /// The item's error (empty, NUL byte, too long).
    fn tokenize(
        &self,
        text: &str,
        options: &EmbedOptions,
        max_tokens: usize,
    ) -> std::result::Result<Tokenized, ItemError>;
    /// Tokens [`Backend::tokenize`] adds to any text (special tokens and prefix).
    fn added_tokens(&self, options: &EmbedOptions) -> usize;
    /// Whether attention is causal (each token sees only those before it).
    fn causal(&self) -> bool;
    /// One sequence of consecutive `pieces` of a text, each tokenised alone (no special tokens),
    /// between the special tokens and prefix, with each piece's token range in it (late
    /// chunking pools the chunks' ranges).
    fn tokenize_pieces(
        &self,
        pieces: &[&str],
        options: &EmbedOptions,
    ) -> (Vec<LlamaToken>, Vec<Range<usize>>);
    /// A rough upper bound of one context's compute memory for decodes of `tokens` tokens.
    fn context_estimate_mb(&self, tokens: usize) -> u64;
    /// Makes a context on the calling thread (it is used only there).
    ///
    /// # Errors
    /// A shape the backend cannot take, or no memory for it.
    fn context(&self, shape: &ContextShape) -> Result<Box<dyn Context + '_>>;
}

/// Token ranges of one sequence to pool a vector each from (late chunking); `None`: one
/// vector for the whole sequence.
pub type Pools<'a> = Option<&'a [Range<usize>]>;

/// One context: embeds a batch of token sequences in one decode.
pub trait Context {
    /// One vector per sequence, in order, and the time the decode took.
    ///
    /// # Errors
    /// A batch beyond the context's limits, or a failed decode.
    fn embed(&mut self, sequences: &[&[LlamaToken]]) -> Result<(Vec<Vec<f32>>, Duration)>;

    /// As [`Context::embed`], but a sequence with ranges in `pools` gives one vector per range
    /// (the mean of those token rows), in order: all vectors flattened in sequence order.
    /// `pools` may be shorter than `sequences` (the rest are whole).
    ///
    /// # Errors
    /// As [`Context::embed`]; a context that cannot pool ranges refuses them.
    fn embed_pooled(
        &mut self,
        sequences: &[&[LlamaToken]],
        pools: &[Pools<'_>],
    ) -> Result<(Vec<Vec<f32>>, Duration)> {
        if pools.iter().all(Option::is_none) {
            return self.embed(sequences);
        }
        Err(crate::error::Error::Config(
            "this context cannot pool token ranges (late chunking needs the exact mode)".into(),
        ))
    }
}

impl Context for EmbeddingContext<'_> {
    fn embed(&mut self, sequences: &[&[LlamaToken]]) -> Result<(Vec<Vec<f32>>, Duration)> {
        EmbeddingContext::embed_pooled(self, sequences, &[])
    }

    fn embed_pooled(
        &mut self,
        sequences: &[&[LlamaToken]],
        pools: &[Pools<'_>],
    ) -> Result<(Vec<Vec<f32>>, Duration)> {
        EmbeddingContext::embed_pooled(self, sequences, pools)
    }
}

impl Backend for EmbeddingModel {
    fn describe(&self) -> String {
        format!(
            "{} ({}, {} dimensions)",
            self.path().display(),
            self.facts().architecture,
            self.dimensions()
        )
    }

    fn dimensions(&self) -> usize {
        EmbeddingModel::dimensions(self)
    }

    fn n_vocab(&self) -> usize {
        self.facts().n_vocab
    }

    fn max_tokens(&self, options: &EmbedOptions) -> Result<usize> {
        EmbeddingModel::max_tokens(self, options)
    }

    fn pooling(&self, options: &EmbedOptions) -> Result<Pooling> {
        self.effective_pooling(options)
    }

    fn tokenize(
        &self,
        text: &str,
        options: &EmbedOptions,
        max_tokens: usize,
    ) -> std::result::Result<Tokenized, ItemError> {
        EmbeddingModel::tokenize(self, text, options, max_tokens)
    }

    fn added_tokens(&self, options: &EmbedOptions) -> usize {
        EmbeddingModel::added_tokens(self, options)
    }

    fn causal(&self) -> bool {
        self.facts().causal
    }

    fn tokenize_pieces(
        &self,
        pieces: &[&str],
        options: &EmbedOptions,
    ) -> (Vec<LlamaToken>, Vec<Range<usize>>) {
        EmbeddingModel::tokenize_pieces(self, pieces, options)
    }

    /// Activations per token plus the attention scores of the whole batch (llama.cpp sizes its
    /// buffers for the largest batch).
    fn context_estimate_mb(&self, tokens: usize) -> u64 {
        let n_embd = self.facts().dimensions.max(1) as u64;
        let n_head = u64::from(self.llama.n_head().max(1));
        let t = tokens as u64;
        let activations = t * n_embd * 4 * 16;
        let attention = n_head * t * t * 4 * 2;
        (activations + attention) / (1024 * 1024) + 8
    }

    fn context(&self, shape: &ContextShape) -> Result<Box<dyn Context + '_>> {
        Ok(Box::new(EmbeddingContext::new(self, shape.clone())?))
    }
}
