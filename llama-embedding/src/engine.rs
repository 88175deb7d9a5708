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

/// Most texts per batch. llama.cpp's compile-time cap on sequences per context
/// (`LLAMA_MAX_SEQ`) is 256; some ids are reserved for padding sequences.
pub const LLAMA_MAX_SEQ: usize = 248;
const LLAMA_SEQ_IDS: usize = 256;

/// Batches are padded to a multiple of this many tokens. ggml's CPU matmul kernels treat the
/// rows of a full 8-row tile and those of a trailing partial tile differently (different
/// accumulation), so without padding the last sequence of a batch rounds differently from the
/// same sequence elsewhere (measured: up to 3e-4 per component on all-MiniLM-L6-v2 f16).
/// With every sequence starting at a multiple of 8 (padding in between) and flash attention
/// off, each text's vector is bit-identical in any batch
/// (tests/engine.rs `batch_size_does_not_change_vectors`).
pub const TOKEN_ALIGN: usize = 8;

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
    /// Every sequence starts at a multiple of this many tokens ([`TOKEN_ALIGN`] by default;
    /// 16 also makes long texts byte-identical across batch compositions, at ~20% speed).
    pub align: usize,
    /// llama.cpp's flash attention (fast mode): faster, but its CPU kernels round differently
    /// with the batch size.
    pub flash_attention: bool,
}

/// Tokens a context is made for: room for the padding sequence (up to `TOKEN_ALIGN - 1`
/// tokens), and a multiple of `n_seq_max` (`max_sequences + 1`), because llama.cpp's graph
/// reservation aborts (GGML_ASSERT in ggml_can_mul_mat) when `n_ubatch` is not one.
/// Tokens a sequence takes in a batch, padding included.
pub fn aligned_len(n: usize) -> usize {
    aligned_len_to(n, TOKEN_ALIGN)
}

/// Tokens a sequence takes with alignment `align`.
pub fn aligned_len_to(n: usize, align: usize) -> usize {
    n.next_multiple_of(align)
}

/// Whether `align` is an alignment the engine takes: 8, 16, 32 or 64, or 1 (none: the fast
/// mode, where vectors vary with their batch in the last bits).
pub fn valid_align(align: usize) -> bool {
    matches!(align, 1 | 8 | 16 | 32 | 64)
}

pub fn context_tokens(max_batch_tokens: usize, n_seq: usize, align: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let step = align / gcd(align, n_seq) * n_seq;
    max_batch_tokens
        .next_multiple_of(align)
        .next_multiple_of(step)
}

/// A llama.cpp context that embeds batches of token sequences. Lives on one thread.
pub struct EmbeddingContext<'m> {
    model: &'m EmbeddingModel,
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'static>,
    shape: ContextShape,
    n_ctx: usize,
    pad_positions: usize,
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
            return Err(Error::Config(
                "threads per context must be at least 1".into(),
            ));
        }
        if !valid_align(shape.align) {
            return Err(Error::Config(format!(
                "token alignment {} is not one of 8, 16, 32, 64",
                shape.align
            )));
        }
        let pooling = match shape.pooling {
            Pooling::Model => LlamaPoolingType::Unspecified,
            Pooling::Mean => LlamaPoolingType::Mean,
            Pooling::Cls => LlamaPoolingType::Cls,
            Pooling::Last => LlamaPoolingType::Last,
        };
        // Padding sequences take positions 0, 1, 2, ... (llama.cpp wants them consecutive);
        // a BERT-style model has only n_ctx_train positions, so padding may need several.
        let facts = model.facts();
        let pad_positions = if facts.causal {
            usize::MAX
        } else {
            facts.n_ctx_train.max(shape.align)
        };
        let pad_seqs = ((shape.align - 1) * shape.max_sequences)
            .div_ceil(pad_positions)
            .max(1);
        let n_seq = shape.max_sequences + pad_seqs;
        if n_seq > LLAMA_SEQ_IDS {
            return Err(Error::Config(format!(
                "{} texts per batch need {n_seq} llama.cpp sequences with padding; the limit is {LLAMA_SEQ_IDS}",
                shape.max_sequences
            )));
        }
        let n = context_tokens(shape.max_batch_tokens, n_seq, shape.align) as u32;
        let params = LlamaContextParams::default()
            .with_embeddings(true)
            .with_n_ctx(std::num::NonZeroU32::new(n))
            .with_n_batch(n)
            .with_n_ubatch(n)
            .with_n_seq_max(n_seq as u32)
            // One KV buffer for all sequences: any sequence may use the whole context.
            .with_kv_unified(true)
            .with_n_threads(shape.threads as i32)
            .with_n_threads_batch(shape.threads as i32)
            .with_pooling_type(pooling)
            // ggml's CPU flash attention switches kernels (and rounding) with the batch size;
            // the plain path gives each text the same bits in any batch. On only in fast mode.
            .with_flash_attention_policy(if shape.flash_attention {
                llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED
            } else {
                llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED
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
        let batch = LlamaBatch::new(n as usize, 1);
        Ok(EmbeddingContext {
            model,
            ctx,
            batch,
            shape,
            n_ctx: n as usize,
            pad_positions,
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
        let align = self.shape.align;
        let total: usize = sequences
            .iter()
            .map(|s| aligned_len_to(s.len(), align))
            .sum();
        self.validate(sequences, total)?;
        let decode_err = |reason: String| Error::Decode {
            sequences: sequences.len(),
            tokens: total,
            reason,
        };
        self.batch.clear();
        // Every sequence starts at a multiple of the alignment: the gaps (and the tail) belong
        // to a padding sequence with its own id, so nothing attends to it; its vector is
        // dropped.
        let mut pad_seq = sequences.len() as i32;
        let mut pad_pos = 0usize;
        for (seq_id, tokens) in sequences.iter().enumerate() {
            for (pos, &tok) in tokens.iter().enumerate() {
                self.batch
                    .add(tok, pos as i32, &[seq_id as i32], true)
                    .map_err(|e| decode_err(e.to_string()))?;
            }
            for _ in tokens.len()..aligned_len_to(tokens.len(), align) {
                if pad_pos == self.pad_positions {
                    pad_seq += 1;
                    pad_pos = 0;
                }
                self.batch
                    .add(tokens[0], pad_pos as i32, &[pad_seq], true)
                    .map_err(|e| decode_err(e.to_string()))?;
                pad_pos += 1;
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
            let v = self.ctx.embeddings_seq_ith(seq_id as i32).map_err(|e| {
                decode_err(format!("no pooled embedding for sequence {seq_id}: {e}"))
            })?;
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
        if total > self.n_ctx {
            return Err(Error::Config(format!(
                "{total} tokens (padding included) in one batch, the context takes {}",
                self.n_ctx
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
    let norm = v
        .iter()
        .map(|x| f64::from(*x) * f64::from(*x))
        .sum::<f64>()
        .sqrt();
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
