//! [`EmbeddingContext`]: one llama.cpp context, living on one OS thread (a `LlamaContext` is
//! not `Send`), which embeds many sequences in one `llama_decode`. Everything llama.cpp would
//! abort on is checked here first: the batch fits the context (`n_ubatch == n_batch == n_ctx`,
//! so a BERT-style model sees every token of a sequence in one micro-batch), sequence ids stay
//! below `n_seq_max`, token ids are in the vocabulary, no sequence is empty.

use std::ops::Range;
use std::time::{Duration, Instant};

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::backend::Pools;
use super::mode::{
    aligned_len_to, context_tokens, valid_align, EngineMode, LLAMA_MAX_SEQ, LLAMA_SEQ_IDS,
};
use crate::error::{Error, Result};
use crate::model::{backend, EmbeddingModel, Normalize, Pooling};
use crate::vectors::{finish, mean};

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
    /// Matryoshka truncation before normalising (`None`: the full vector).
    pub dimensions: Option<usize>,
    pub mode: EngineMode,
    /// In [`EngineMode::Aligned`], every sequence starts at a multiple of this many tokens
    /// ([`TOKEN_ALIGN`] by default; 16 also makes long texts byte-identical across batch
    /// compositions). The other modes take 1.
    pub align: usize,
}

impl ContextShape {
    /// Checks the shape against llama.cpp's limits and the modes' rules.
    ///
    /// # Errors
    /// [`Error::Config`] saying what is wrong.
    pub fn check(&self) -> Result<()> {
        if self.max_sequences == 0 || self.max_sequences > LLAMA_MAX_SEQ {
            return Err(Error::Config(format!(
                "sequences per batch must be between 1 and {LLAMA_MAX_SEQ} (llama.cpp's limit), not {}",
                self.max_sequences
            )));
        }
        if self.max_batch_tokens == 0 || self.max_batch_tokens > u32::MAX as usize / 2 {
            return Err(Error::Config(format!(
                "tokens per batch must be at least 1, not {}",
                self.max_batch_tokens
            )));
        }
        if self.threads == 0 {
            return Err(Error::Config(
                "threads per context must be at least 1".into(),
            ));
        }
        if !valid_align(self.align) || (self.mode != EngineMode::Aligned && self.align != 1) {
            return Err(Error::Config(format!(
                "token alignment {} is not one of 8, 16, 32, 64 (aligned mode) or 1 (the others)",
                self.align
            )));
        }
        if self.mode == EngineMode::Exact && self.pooling == Pooling::Model {
            return Err(Error::Config(
                "the exact mode pools itself: give it the pooling (mean, cls, last), not the model's"
                    .into(),
            ));
        }
        Ok(())
    }
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
        shape.check()?;
        let pooling = match shape.pooling {
            // Exact mode: llama.cpp returns every token's row; the pooling is done here.
            _ if shape.mode == EngineMode::Exact => LlamaPoolingType::None,
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
        let params = context_params(&shape, pooling, n, n_seq as u32);
        let ctx = {
            let _guard = model.context_lock.lock().unwrap_or_else(|p| p.into_inner());
            model
                .llama
                .new_context(backend()?, params)
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
        self.embed_pooled(sequences, &[])
    }

    /// As [`EmbeddingContext::embed`], and a sequence with token ranges in `pools` gives one
    /// vector per range, the mean of those rows (late chunking; the exact mode only, where the
    /// rows are pooled here).
    ///
    /// # Errors
    /// As [`EmbeddingContext::embed`]; ranges outside the exact mode or their sequence.
    pub fn embed_pooled(
        &mut self,
        sequences: &[&[LlamaToken]],
        pools: &[Pools<'_>],
    ) -> Result<(Vec<Vec<f32>>, Duration)> {
        check_pools(self.shape.mode, sequences, pools)?;
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
        if self.shape.mode == EngineMode::Exact {
            let out = self.pool_rows(sequences, pools).map_err(decode_err)?;
            return Ok((out, start.elapsed()));
        }
        let mut out = Vec::with_capacity(sequences.len());
        for seq_id in 0..sequences.len() {
            let v = self.ctx.embeddings_seq_ith(seq_id as i32).map_err(|e| {
                decode_err(format!("no pooled embedding for sequence {seq_id}: {e}"))
            })?;
            out.push(self.normalized(v.to_vec()));
        }
        Ok((out, start.elapsed()))
    }

    /// Pools each sequence's token rows (exact mode; the batch holds them back to back, no
    /// padding): the mean summed in f64 in token order, or the first / last row; a sequence
    /// with ranges in `pools` gives the mean of each range's rows.
    fn pool_rows(
        &self,
        sequences: &[&[LlamaToken]],
        pools: &[Pools<'_>],
    ) -> std::result::Result<Vec<Vec<f32>>, String> {
        let mut out = Vec::with_capacity(sequences.len());
        let mut start = 0usize;
        for (seq_id, tokens) in sequences.iter().enumerate() {
            let at = |rows: Range<usize>| start + rows.start..start + rows.end;
            if let Some(ranges) = pools.get(seq_id).copied().flatten() {
                for r in ranges {
                    out.push(self.normalized(self.mean_of_rows(at(r.clone()), start, seq_id)?));
                }
            } else {
                let last = start + tokens.len() - 1;
                let v = match self.shape.pooling {
                    Pooling::Cls => self.row(start, start, seq_id)?.to_vec(),
                    Pooling::Last => self.row(last, start, seq_id)?.to_vec(),
                    Pooling::Mean | Pooling::Model => {
                        self.mean_of_rows(at(0..tokens.len()), start, seq_id)?
                    }
                };
                out.push(self.normalized(v));
            }
            start += tokens.len();
        }
        Ok(out)
    }

    /// Row `i` of the batch (token `i - start` of sequence `seq_id`), checked for its length.
    fn row(&self, i: usize, start: usize, seq_id: usize) -> std::result::Result<&[f32], String> {
        let dims = self.model.facts().dimensions;
        let r = self.ctx.embeddings_ith(i as i32).map_err(|e| {
            format!(
                "no embedding for token {} of sequence {seq_id}: {e}",
                i - start
            )
        })?;
        if r.len() == dims {
            Ok(r)
        } else {
            Err(format!(
                "token rows of {} values, the model has {dims} dimensions",
                r.len()
            ))
        }
    }

    /// The mean of the batch's rows `rows` ([`crate::vectors::mean`]: summed in f64 in order).
    fn mean_of_rows(
        &self,
        rows: Range<usize>,
        start: usize,
        seq_id: usize,
    ) -> std::result::Result<Vec<f32>, String> {
        let rows: Vec<&[f32]> = rows
            .map(|i| self.row(i, start, seq_id))
            .collect::<std::result::Result<_, _>>()?;
        Ok(mean(&rows, self.model.facts().dimensions))
    }

    /// Truncated to the shape's dimensions, then normalised.
    fn normalized(&self, mut v: Vec<f32>) -> Vec<f32> {
        let l2 = self.shape.normalize == Normalize::L2;
        finish(&mut v, self.shape.dimensions, l2);
        v
    }

    fn validate(&self, sequences: &[&[LlamaToken]], total: usize) -> Result<()> {
        if sequences.is_empty() {
            return Err(Error::Config("a batch needs at least one sequence".into()));
        }
        if let Some(cap) = self.shape.mode.shared_decode_cap() {
            if sequences.len() > 1 && total > cap {
                return Err(Error::Config(format!(
                    "{} sequences with {total} tokens in one decode: in exact mode texts share a decode only up to {cap} tokens",
                    sequences.len()
                )));
            }
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

/// llama.cpp's parameters for a context of `n` tokens and `n_seq` sequences.
fn context_params(
    shape: &ContextShape,
    pooling: LlamaPoolingType,
    n: u32,
    n_seq: u32,
) -> LlamaContextParams {
    LlamaContextParams::default()
        .with_embeddings(true)
        .with_n_ctx(std::num::NonZeroU32::new(n))
        .with_n_batch(n)
        .with_n_ubatch(n)
        .with_n_seq_max(n_seq)
        // One KV buffer for all sequences: any sequence may use the whole context.
        .with_kv_unified(true)
        .with_n_threads(shape.threads as i32)
        .with_n_threads_batch(shape.threads as i32)
        .with_pooling_type(pooling)
        // ggml's CPU flash attention is exact per text below FLASH_TILE tokens and switches
        // to a tiled kernel at it; the aligned mode uses the plain attention path instead.
        .with_flash_attention_policy(if shape.mode.flash_attention() {
            llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_ENABLED
        } else {
            llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED
        })
}

/// Token ranges to pool are for the exact mode only, non-empty and inside their sequence.
fn check_pools(mode: EngineMode, sequences: &[&[LlamaToken]], pools: &[Pools<'_>]) -> Result<()> {
    for (i, p) in pools.iter().enumerate() {
        let Some(ranges) = p else { continue };
        if mode != EngineMode::Exact {
            return Err(Error::Config(
                "pooling token ranges (late chunking) needs the exact mode".into(),
            ));
        }
        let len = sequences.get(i).map_or(0, |s| s.len());
        if let Some(r) = ranges.iter().find(|r| r.is_empty() || r.end > len) {
            return Err(Error::Config(format!(
                "token range {r:?} is empty or outside sequence {i} of {len} tokens"
            )));
        }
    }
    Ok(())
}
