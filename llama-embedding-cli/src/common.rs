//! Helpers every command shares: vector options and the model from the flags, the engine mode,
//! the exact mode's budget check, signals, usage errors.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use llama_embedding::resolve::resolve_model;
use llama_embedding::{BatchConfig, EmbedOptions, EmbeddingModel, EngineMode, LoadOptions};

use crate::args::{EngineArgs, ModelArgs};
use crate::exit::{EXIT_INTERRUPTED, EXIT_USAGE};

/// The engine mode the flags ask for: `--fast`, `--token-align N` (the aligned mode), else exact.
pub fn engine_mode(fast: bool, token_align: Option<usize>) -> EngineMode {
    if fast {
        EngineMode::Fast
    } else if token_align.is_some() {
        EngineMode::Aligned
    } else {
        EngineMode::Exact
    }
}

/// Refuses a `--token-budget` the exact mode would not use, rather than shrinking it silently.
/// The batch-plan flags over `config`: batch size and budget, and with `mode` the engine mode
/// and alignment; the budget checked against the mode.
///
/// # Errors
/// A budget the exact mode cannot take.
pub fn plan_flags(mut config: BatchConfig, e: &EngineArgs, mode: bool) -> Result<BatchConfig> {
    if let Some(b) = e.batch_size {
        config = config.with_batch_size(b);
    }
    if let Some(t) = e.token_budget {
        config = config.with_token_budget(t);
    }
    if mode {
        config = config.with_mode(engine_mode(e.fast, e.token_align));
        if let Some(n) = e.token_align {
            config = config.with_token_align(n);
        }
    }
    check_budget(&config, e.token_budget)?;
    Ok(config)
}

/// The `--workers` and `--threads` flags over `config`.
pub fn thread_flags(mut config: BatchConfig, e: &EngineArgs) -> BatchConfig {
    if let Some(w) = e.workers {
        config = config.with_workers(w);
    }
    if let Some(t) = e.threads {
        config = config.with_threads_per_worker(t);
    }
    config
}

pub fn check_budget(config: &BatchConfig, asked: Option<usize>) -> Result<()> {
    if let (Some(b), Some(cap)) = (asked, config.mode.shared_decode_cap()) {
        if b > cap {
            bail!(
                "--token-budget {b}: in the exact mode (the default) texts share a decode only up to {cap} tokens (llama.cpp's flash-attention tile; a longer text gets a decode of its own, so every vector is the same in any batch). Use --token-budget {cap} or less, or --fast for larger decodes (vectors then vary with their batch in the last bits)"
            );
        }
    }
    Ok(())
}

/// A usage error raised deep in a command: `main` prints it as `usage` does and exits 2.
#[derive(Debug)]
pub struct Usage(pub String);

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

pub fn usage(msg: impl std::fmt::Display) -> Result<u8> {
    eprintln!("llama-embed: {msg}");
    Ok(EXIT_USAGE)
}

/// Vector settings from flags; `None` fields keep the defaults.
pub fn embed_options(m: &ModelArgs) -> Result<EmbedOptions> {
    embed_options_over(EmbedOptions::default().with_truncate(!m.no_truncate), m)
}

/// `base` with the vector flags that were given applied.
pub fn embed_options_over(base: EmbedOptions, m: &ModelArgs) -> Result<EmbedOptions> {
    let mut o = base;
    if m.no_truncate {
        o = o.with_truncate(false);
    }
    if let Some(p) = &m.pooling {
        o = o.with_pooling(p.parse().map_err(anyhow::Error::msg)?);
    }
    if let Some(n) = &m.normalize {
        o = o.with_normalize(n.parse().map_err(anyhow::Error::msg)?);
    }
    if let Some(n) = m.max_tokens {
        o = o.with_max_tokens(n);
    }
    // Either replaces what went before each text in `base`.
    if let Some(p) = &m.prefix {
        o = o.with_prefix(p.clone());
        o.prompt = None;
    }
    if let Some(p) = &m.prompt {
        o = o.with_prompt(p.clone());
        o.prefix = None;
    }
    if let Some(n) = m.dimensions {
        o = o.with_dimensions(n);
    }
    Ok(o)
}

pub fn load_model(
    spec: Option<&str>,
    m: &ModelArgs,
    obtain: bool,
) -> Result<(Arc<EmbeddingModel>, String)> {
    let resolved = resolve_model(spec, obtain)?;
    let opts = LoadOptions::default().with_gpu_layers(m.gpu_layers);
    let require_pooling = m.pooling.as_deref().is_none_or(|p| p == "model");
    let model = EmbeddingModel::load(&resolved.path, &opts, require_pooling)
        .with_context(|| format!("loading {}", resolved.path.display()))?;
    Ok((Arc::new(model), resolved.source))
}

/// A flag SIGINT/SIGTERM set: a job finishes its window, checkpoints and returns. A second
/// signal while stopping ends the process at once (the last checkpoint stands).
pub fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(
            sig,
            EXIT_INTERRUPTED.into(),
            stop.clone(),
        )?;
        signal_hook::flag::register(sig, stop.clone())?;
    }
    Ok(stop)
}
