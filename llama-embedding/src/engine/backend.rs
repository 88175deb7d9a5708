//! [`Backend`]: what the engine and the pipeline need of a model, as a small trait, so that the
//! pipeline runs against [`super::FakeBackend`] in tests and against [`EmbeddingModel`]
//! everywhere else.

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
    /// A rough upper bound of one context's compute memory for decodes of `tokens` tokens.
    fn context_estimate_mb(&self, tokens: usize) -> u64;
    /// Makes a context on the calling thread (it is used only there).
    ///
    /// # Errors
    /// A shape the backend cannot take, or no memory for it.
    fn context(&self, shape: &ContextShape) -> Result<Box<dyn Context + '_>>;
}

/// One context: embeds a batch of token sequences in one decode.
pub trait Context {
    /// One vector per sequence, in order, and the time the decode took.
    ///
    /// # Errors
    /// A batch beyond the context's limits, or a failed decode.
    fn embed(&mut self, sequences: &[&[LlamaToken]]) -> Result<(Vec<Vec<f32>>, Duration)>;
}

impl Context for EmbeddingContext<'_> {
    fn embed(&mut self, sequences: &[&[LlamaToken]]) -> Result<(Vec<Vec<f32>>, Duration)> {
        EmbeddingContext::embed(self, sequences)
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
