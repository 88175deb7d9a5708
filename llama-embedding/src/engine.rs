//! The engine: one [`EmbeddingContext`] per OS thread (a `LlamaContext` is not `Send`), which
//! embeds many sequences in one `llama_decode`. Everything llama.cpp would abort on is checked
//! here first: the batch fits the context (`n_ubatch == n_batch == n_ctx`, so a BERT-style
//! model sees every token of a sequence in one micro-batch), sequence ids stay below
//! `n_seq_max`, token ids are in the vocabulary, no sequence is empty.

use std::time::{Duration, Instant};

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use crate::error::{Error, Result};
use crate::model::{backend, EmbeddingModel, Normalize, Pooling};

/// llama.cpp's compile-time cap on sequences per context (`LLAMA_MAX_SEQ`).
pub const LLAMA_MAX_SEQ: usize = 256;

/// Shape of one engine context.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextShape {
    /// Most tokens in one decode; the context is made with n_ctx = n_batch = n_ubatch = this.
    pub max_batch_tokens: usize,
    /// Most sequences in one decode (`n_seq_max`).
    pub max_sequences: usize,
    /// CPU threads for this context.
    pub threads: usize,
    pub pooling: Pooling,
    pub normalize: Normalize,
}

/// A llama.cpp context that embeds batches of token sequences. Lives on one thread.
pub struct EmbeddingContext<'m> {
    model: &'m EmbeddingModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    shape: ContextShape,
}

impl<'m> EmbeddingContext<'m> {
    /// Creates a context for `model`.
    ///
    /// # Errors
    /// [`Error::Config`] for a shape llama.cpp cannot take; [`Error::Context`] when llama.cpp
    /// cannot allocate the context.
    pub fn new(model: &'m EmbeddingModel, shape: ContextShape) -> Result<Self> {
        if shape.max_sequences == 0 || shape.max_sequences > LLAMA_MAX_SEQ {
            return Err(Error::Config(format!(
                "sequences per batch must be between 1 and {LLAMA_MAX_SEQ} (llama.cpp's limit), not {}",
                shape.max_sequences
            )));
        }
        if shape.max_batch_tokens == 0 || shape.max_batch_tokens > u32::MAX as usize / 2 {
            return Err(Error::Config(format!(
                "tokens per batch must be at least 1, not {}",
                shape.max_batch_tokens
            )));
        }
        if shape.threads == 0 {
            return Err(Error::Config("threads per context must be at least 1".into()));
        }
        let pooling = match shape.pooling {
            Pooling::Model => LlamaPoolingType::Unspecified,
            Pooling::Mean => LlamaPoolingType::Mean,
            Pooling::Cls => LlamaPoolingType::Cls,
            Pooling::Last => LlamaPoolingType::Last,
        };
        let n = shape.max_batch_tokens as u32;
        let params = LlamaContextParams::default()
            .with_embeddings(true)
            .with_n_ctx(std::num::NonZeroU32::new(n))
            .with_n_batch(n)
            .with_n_ubatch(n)
            .with_n_seq_max(shape.max_sequences as u32)
            // One KV buffer for all sequences: any sequence may use the whole context.
            .with_kv_unified(true)
            .with_n_threads(shape.threads as i32)
            .with_n_threads_batch(shape.threads as i32)
            .with_pooling_type(pooling)
            .with_flash_attention_policy(match std::env::var("LLAMA_EMBED_FA").as_deref() {
                Ok("1") => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED,
                Ok("0") => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED,
                _ => llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_AUTO,
            });
        let ctx = {
            let _guard = model.context_lock.lock().unwrap_or_else(|p| p.into_inner());
            model
                .llama
                .new_context(backend(), params)
                .map_err(|e| Error::Context {
                    reason: format!(
                        "{e}; {} tokens x {} sequences",
                        shape.max_batch_tokens, shape.max_sequences
                    ),
                })?
        };
        let batch = LlamaBatch::new(shape.max_batch_tokens, 1);
        Ok(EmbeddingContext {
            model,
            ctx,
            batch,
            shape,
        })
    }

    pub fn shape(&self) -> &ContextShape {
        &self.shape
    }

    /// Embeds each sequence (already tokenised with its special tokens) in one decode and
    /// returns one vector per sequence, in order, plus the time spent in llama.cpp.
    ///
    /// # Errors
    /// [`Error::Config`] for a batch that breaks the context's limits (checked before llama.cpp
    /// sees it); [`Error::Decode`] when llama.cpp fails.
    pub fn embed(&mut self, sequences: &[&[LlamaToken]]) -> Result<(Vec<Vec<f32>>, Duration)> {
        let total: usize = sequences.iter().map(|s| s.len()).sum();
        self.validate(sequences, total)?;
        let decode_err = |reason: String| Error::Decode {
            sequences: sequences.len(),
            tokens: total,
            reason,
        };
        self.batch.clear();
        for (seq_id, tokens) in sequences.iter().enumerate() {
            for (pos, &tok) in tokens.iter().enumerate() {
                self.batch
                    .add(tok, pos as i32, &[seq_id as i32], true)
                    .map_err(|e| decode_err(e.to_string()))?;
            }
        }
        // Sequences of the previous batch reuse these ids: forget them.
        self.ctx.clear_kv_cache();
        let start = Instant::now();
        self.ctx
            .decode(&mut self.batch)
            .map_err(|e| decode_err(e.to_string()))?;
        let mut out = Vec::with_capacity(sequences.len());
        for seq_id in 0..sequences.len() {
            let v = self
                .ctx
                .embeddings_seq_ith(seq_id as i32)
                .map_err(|e| decode_err(format!("no pooled embedding for sequence {seq_id}: {e}")))?;
            let mut v = v.to_vec();
            if self.shape.normalize == Normalize::L2 {
                l2_normalize(&mut v);
            }
            out.push(v);
        }
        Ok((out, start.elapsed()))
    }

    fn validate(&self, sequences: &[&[LlamaToken]], total: usize) -> Result<()> {
        if sequences.is_empty() {
            return Err(Error::Config("a batch needs at least one sequence".into()));
        }
        if sequences.len() > self.shape.max_sequences {
            return Err(Error::Config(format!(
                "{} sequences in one batch, the context takes {}",
                sequences.len(),
                self.shape.max_sequences
            )));
        }
        if total > self.shape.max_batch_tokens {
            return Err(Error::Config(format!(
                "{total} tokens in one batch, the context takes {}",
                self.shape.max_batch_tokens
            )));
        }
        let facts = self.model.facts();
        let n_vocab = facts.n_vocab as i32;
        for (i, s) in sequences.iter().enumerate() {
            if s.is_empty() {
                return Err(Error::Config(format!("sequence {i} of the batch is empty")));
            }
            if !facts.causal && s.len() > facts.n_ctx_train {
                return Err(Error::Config(format!(
                    "sequence {i} has {} tokens, more than the model's {} positions",
                    s.len(),
                    facts.n_ctx_train
                )));
            }
            if let Some(t) = s.iter().find(|t| t.0 < 0 || t.0 >= n_vocab) {
                return Err(Error::Config(format!(
                    "sequence {i} has token id {} outside the vocabulary of {n_vocab}",
                    t.0
                )));
            }
        }
        Ok(())
    }
}

/// Scales `v` to unit length (left as is when it is all zeros).
pub fn l2_normalize(v: &mut [f32]) {
    let norm = v.iter().map(|x| f64::from(*x) * f64::from(*x)).sum::<f64>().sqrt();
    if norm > 0.0 {
        let inv = (1.0 / norm) as f32;
        v.iter_mut().for_each(|x| *x *= inv);
    }
}

/// Cosine similarity of two vectors of the same length.
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na.sqrt() * nb.sqrt())
}
