//! The run's plan: the engine shape and worker count a configuration asks for, shrunk up front
//! (fewer workers, then a smaller token budget) until the contexts fit the memory limit.

use super::config::BatchConfig;
use crate::engine::{Backend, ContextShape, EngineMode};
use crate::error::{Error, Result};
use crate::model::Pooling;
use crate::stats::MemoryProbe;

/// What a run will use.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub workers: usize,
    pub shape: ContextShape,
    /// Tokens per decode the batcher packs to.
    pub budget: usize,
    pub max_tokens: usize,
    /// How the memory limit was met, for its error message; empty without a limit.
    pub memory_detail: String,
}

/// The plan for `config` on `backend` (see the module docs).
///
/// # Errors
/// The model's refusals (max tokens, pooling); [`Error::MemoryLimit`] when even one worker at
/// the smallest budget would not fit.
pub fn plan(
    backend: &dyn Backend,
    config: &BatchConfig,
    memory: Option<&mut MemoryProbe>,
) -> Result<Plan> {
    let max_tokens = backend.max_tokens(&config.embed)?;
    let pooling = backend.pooling(&config.embed)?;
    if config.chunking.is_some_and(|c| c.late) {
        check_late(backend, config, pooling)?;
    }
    if let Some(c) = config.chunking.filter(|c| c.max_tokens > max_tokens) {
        return Err(Error::Config(format!(
            "--chunk-tokens {} is more than the {max_tokens} tokens a text can have with this model and --max-tokens",
            c.max_tokens
        )));
    }
    let mut workers = config.workers;
    let mut budget = config.effective_budget();
    let mut memory_detail = String::new();
    if let (Some(limit), Some(probe)) = (config.memory_limit_mb, memory) {
        let now = probe.resident_mb();
        let need =
            |w: usize, b: usize| now + w as u64 * backend.context_estimate_mb(b.max(max_tokens));
        while need(workers, budget) > limit && workers > 1 {
            workers -= 1;
        }
        while need(workers, budget) > limit && budget > max_tokens {
            budget = (budget / 2).max(max_tokens);
        }
        let est = need(workers, budget);
        memory_detail = format!(
            "{now} MB in use before the contexts, about {} MB per context for {} tokens x {workers} worker(s)",
            est.saturating_sub(now) / workers as u64,
            budget.max(max_tokens)
        );
        if est > limit {
            return Err(Error::MemoryLimit {
                in_use_mb: est,
                limit_mb: limit,
                detail: format!("{memory_detail}; lower --max-tokens or raise the limit"),
            });
        }
    }
    let shape = ContextShape {
        max_batch_tokens: budget.max(max_tokens),
        max_sequences: config.batch_size,
        threads: config.threads_for(workers),
        pooling,
        normalize: config.embed.normalize,
        dimensions: config.embed.dimensions,
        mode: config.mode,
        align: config.effective_align(),
    };
    Ok(Plan {
        workers,
        shape,
        budget,
        max_tokens,
        memory_detail,
    })
}

/// Late chunking pools chunks from the token rows of one decode: the model must attend both
/// ways (a causal model's early tokens never see the rest), pool by mean, and the engine must
/// pool the rows itself (the exact mode).
fn check_late(backend: &dyn Backend, config: &BatchConfig, pooling: Pooling) -> Result<()> {
    let refuse = |why: &str| Err(Error::Config(format!("--late-chunking: {why}")));
    if backend.causal() {
        return refuse(
            "this model's attention is causal; late chunking needs a bidirectional model",
        );
    }
    if pooling != Pooling::Mean {
        return refuse(&format!(
            "it pools each chunk by the mean of its tokens, and this run pools by {pooling:?}"
        ));
    }
    if config.mode != EngineMode::Exact {
        return refuse("it needs the exact mode (not --fast or --token-align)");
    }
    Ok(())
}
