//! [`BatchConfig`]: how a run batches, how many engine threads it uses, what it does with
//! failures and how it watches memory; checked by [`BatchConfig::validate`].

use crate::chunk::ChunkConfig;
use crate::engine::{EngineMode, LLAMA_MAX_SEQ};
use crate::error::{Error, Result};
use crate::model::EmbedOptions;

/// What to do when items fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "strategy", content = "limit")]
pub enum ErrorStrategy {
    /// Record every failure and go on.
    Continue,
    /// Stop at the first failed item.
    StopOnFirst,
    /// Stop when this many items have failed.
    StopAfter(u64),
}

impl ErrorStrategy {
    pub(crate) fn limit(self) -> Option<u64> {
        match self {
            ErrorStrategy::Continue => None,
            ErrorStrategy::StopOnFirst => Some(1),
            ErrorStrategy::StopAfter(n) => Some(n),
        }
    }
}

/// How a [`BatchProcessor`] runs. Build with `Default` and the `with_*` methods; checked by
/// [`BatchConfig::validate`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct BatchConfig {
    /// Most texts per decode (llama.cpp's `n_seq_max`). Default 32.
    pub batch_size: usize,
    /// Packing target in tokens per decode. Default 128, which the exact mode (the default)
    /// caps at 63 ([`BatchConfig::effective_budget`]); the fast and aligned modes use it as is
    /// (small decodes win on CPU: specification/performance.md).
    pub token_budget: usize,
    /// Engine threads, each with its own llama.cpp context. Default: one per core, up to 8.
    pub workers: usize,
    /// CPU threads per context; `None`: the available cores divided among the workers.
    pub threads_per_worker: Option<usize>,
    /// Items per batching window (batches never span windows; resume points are window
    /// boundaries). Default 256.
    pub window: usize,
    /// Sort by token count inside a window (less attention work per batch). Default true.
    pub sort_by_length: bool,
    pub error_strategy: ErrorStrategy,
    pub progress: bool,
    pub progress_interval_batches: usize,
    /// Stop (or shrink the batch shape up front) rather than exceed this resident memory.
    pub memory_limit_mb: Option<u64>,
    pub memory_monitoring: bool,
    /// Settings that change the vectors.
    pub embed: EmbedOptions,
    /// Blank lines in text files: skipped and counted (true) or failed items (false, default).
    pub skip_blank_lines: bool,
    /// Carry each item's text to the results (for stores that keep it). Default false.
    pub keep_text: bool,
    /// How the engine batches (see [`EngineMode`] and specification/embedding.md): `Exact`
    /// (default; several texts share a decode only up to 63 tokens, whatever the budget),
    /// `Aligned` (the earlier exact mode: padding to `token_align`, no flash attention) or
    /// `Fast` (a text's vector varies with its batch in the last bits).
    pub mode: EngineMode,
    /// Token alignment of each text in `Aligned` mode (8 default; 16: byte-identical vectors
    /// across batch compositions also for rare long texts). The other modes align to 1.
    pub token_align: usize,
    /// Split each text into chunks of at most this many tokens (one vector each); `None`
    /// (default): one vector per text, truncated or refused past `max_tokens`.
    pub chunking: Option<ChunkConfig>,
    /// Give every result its content key (`key.rs`) made with these settings (canonical
    /// JSON: `VectorSettings::key_settings`); `None` (default): no keys.
    pub key_settings: Option<String>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            batch_size: 32,
            token_budget: 128,
            workers: default_workers(),
            threads_per_worker: None,
            window: 256,
            sort_by_length: true,
            error_strategy: ErrorStrategy::Continue,
            progress: false,
            progress_interval_batches: 10,
            memory_limit_mb: None,
            memory_monitoring: true,
            embed: EmbedOptions::default(),
            skip_blank_lines: false,
            keep_text: false,
            mode: EngineMode::Exact,
            token_align: crate::engine::TOKEN_ALIGN,
            chunking: None,
            key_settings: None,
        }
    }
}

/// One engine thread per core (up to 8), one CPU thread each: on small embedding models a
/// context per core beats one context with many threads (measured in
/// specification/performance.md).
pub fn default_workers() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8)
}

macro_rules! with {
    ($($name:ident: $field:ident: $ty:ty),* $(,)?) => {
        $(pub fn $name(mut self, v: $ty) -> Self { self.$field = v; self })*
    };
}

impl BatchConfig {
    with! {
        with_batch_size: batch_size: usize,
        with_token_budget: token_budget: usize,
        with_workers: workers: usize,
        with_window: window: usize,
        with_sort_by_length: sort_by_length: bool,
        with_error_strategy: error_strategy: ErrorStrategy,
        with_progress: progress: bool,
        with_progress_interval_batches: progress_interval_batches: usize,
        with_memory_monitoring: memory_monitoring: bool,
        with_embed: embed: EmbedOptions,
        with_skip_blank_lines: skip_blank_lines: bool,
        with_keep_text: keep_text: bool,
        with_mode: mode: EngineMode,
        with_token_align: token_align: usize,
    }

    /// The alignment the engine gets: `token_align` in `Aligned` mode, else 1.
    pub fn effective_align(&self) -> usize {
        if self.mode == EngineMode::Aligned {
            self.token_align
        } else {
            1
        }
    }

    /// Tokens per decode the batcher packs to: the budget, capped in `Exact` mode (a text
    /// longer than that still gets a decode of its own).
    pub fn effective_budget(&self) -> usize {
        let b = self.token_budget.max(1);
        self.mode.shared_decode_cap().map_or(b, |cap| b.min(cap))
    }

    pub fn with_threads_per_worker(mut self, n: usize) -> Self {
        self.threads_per_worker = Some(n);
        self
    }

    pub fn with_memory_limit_mb(mut self, mb: u64) -> Self {
        self.memory_limit_mb = Some(mb);
        self
    }

    /// `true`: [`ErrorStrategy::Continue`]; `false`: stop at the first failure.
    pub fn with_continue_on_error(mut self, on: bool) -> Self {
        self.error_strategy = if on {
            ErrorStrategy::Continue
        } else {
            ErrorStrategy::StopOnFirst
        };
        self
    }

    /// Content keys for every result (see [`BatchConfig::key_settings`]).
    pub fn with_key_settings(mut self, settings: Option<String>) -> Self {
        self.key_settings = settings;
        self
    }

    /// Chunk every text (see [`ChunkConfig`]).
    pub fn with_chunking(mut self, chunking: Option<ChunkConfig>) -> Self {
        self.chunking = chunking;
        self
    }

    /// Stop after `n` failures.
    pub fn with_error_threshold(mut self, n: u64) -> Self {
        self.error_strategy = ErrorStrategy::StopAfter(n);
        self
    }

    /// CPU threads each context gets.
    pub fn threads(&self) -> usize {
        self.threads_for(self.workers)
    }

    /// CPU threads per context with `workers` contexts: as set, or the cores shared out.
    pub(crate) fn threads_for(&self, workers: usize) -> usize {
        self.threads_per_worker.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (cores / workers.max(1)).max(1)
        })
    }

    /// Checks the configuration; every message says what is wrong and what is allowed.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.batch_size == 0 || self.batch_size > LLAMA_MAX_SEQ {
            return bad(format!(
                "batch size must be between 1 and {LLAMA_MAX_SEQ} texts (llama.cpp's sequence limit), not {}",
                self.batch_size
            ));
        }
        if self.token_budget == 0 {
            return bad("the token budget must be at least 1 token".into());
        }
        if !crate::engine::valid_align(self.token_align)
            || (self.mode == EngineMode::Aligned && self.token_align == 1)
        {
            return bad(format!(
                "token alignment must be 8, 16, 32 or 64 (or 1 outside the aligned mode), not {}",
                self.token_align
            ));
        }
        if self.workers == 0 || self.workers > 64 {
            return bad(format!(
                "workers must be between 1 and 64, not {}",
                self.workers
            ));
        }
        if self.threads_per_worker == Some(0) {
            return bad("threads per worker must be at least 1".into());
        }
        if self.window == 0 {
            return bad("the batching window must be at least 1 item".into());
        }
        if self.progress_interval_batches == 0 {
            return bad("the progress interval must be at least 1 batch".into());
        }
        if self.error_strategy == ErrorStrategy::StopAfter(0) {
            return bad("the error threshold must be at least 1".into());
        }
        if self.memory_limit_mb == Some(0) {
            return bad("the memory limit must be at least 1 MB".into());
        }
        if self.embed.max_tokens == Some(0) {
            return bad("max tokens must be at least 1".into());
        }
        Ok(())
    }
}
