//! [`VectorSettings`]: everything that determines a run's vectors and their order, recorded in
//! its `metadata.json` and in a store; a resume, a merge or a store write must match it.

use serde::{Deserialize, Serialize};

use crate::model::EmbedOptions;
use crate::pipeline::BatchConfig;

/// Everything that determines the vectors and their order. A resumed run must match it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VectorSettings {
    pub model_sha256: String,
    pub embed: EmbedOptions,
    /// The resolved pooling and token limit (not "model default").
    pub pooling: crate::model::Pooling,
    pub max_tokens: usize,
    /// The batch plan: the same items batched differently round differently in llama.cpp.
    pub batch_size: usize,
    pub token_budget: usize,
    pub window: usize,
    pub sort_by_length: bool,
    /// Sequence alignment in a batch (runs before it existed used 8).
    #[serde(default = "default_align")]
    pub token_align: usize,
    /// Flash attention (exact and fast modes); runs before it existed had it off.
    #[serde(default)]
    pub flash_attention: bool,
    /// The engine mode; runs made before the exact mode have none and are read by
    /// [`VectorSettings::engine_mode`] from the two fields above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<crate::engine::EngineMode>,
    /// ggml's CPU kernel variant ("icelake", "haswell"; `crate::kernels`): vectors differ in
    /// their last bits from one variant to another. Runs made before it was recorded have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_kernels: Option<String>,
    /// How texts were split into chunks (`--chunk-tokens`); `None`: one vector per text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunking: Option<crate::chunk::ChunkConfig>,
}

impl VectorSettings {
    /// The mode these vectors were made with: recorded, or for older runs aligned (flash
    /// attention off) or fast (on).
    pub fn engine_mode(&self) -> crate::engine::EngineMode {
        use crate::engine::EngineMode;
        self.mode.unwrap_or(if self.flash_attention {
            EngineMode::Fast
        } else {
            EngineMode::Aligned
        })
    }

    /// What content keys are made over besides the text ([`crate::key`]), as canonical JSON:
    /// the model, the vector and chunk settings, the mode and the CPU kernels; the batch plan
    /// too except in the exact mode, where it changes no vector. Not the prefix (the key's
    /// text is the text as embedded, prefix included) nor `--doc-vector` (a document row's key
    /// is made from its chunks' keys, which are those of the chunks alone).
    pub fn key_settings(&self) -> String {
        let mut v = serde_json::to_value(self).expect("settings are JSON");
        if let Some(embed) = v.get_mut("embed").and_then(|e| e.as_object_mut()) {
            // The prompt's name says no more than its text, which the key has.
            embed.remove("prefix");
            embed.remove("prompt");
        }
        if let Some(chunking) = v.get_mut("chunking").and_then(|e| e.as_object_mut()) {
            chunking.remove("doc_vector");
        }
        let o = v.as_object_mut().expect("an object");
        o.insert("mode".into(), serde_json::json!(self.engine_mode()));
        if self.engine_mode() == crate::engine::EngineMode::Exact {
            for plan in [
                "batch_size",
                "token_budget",
                "window",
                "sort_by_length",
                "token_align",
                "flash_attention",
            ] {
                o.remove(plan);
            }
        }
        sorted(v).to_string()
    }

    /// A [`BatchConfig`] with this batch plan and mode (the rest from `config`).
    pub fn apply_to(&self, config: BatchConfig) -> BatchConfig {
        let mode = self.engine_mode();
        let config = config
            .with_batch_size(self.batch_size)
            .with_token_budget(self.token_budget)
            .with_window(self.window)
            .with_sort_by_length(self.sort_by_length)
            .with_chunking(self.chunking)
            .with_mode(mode);
        if mode == crate::engine::EngineMode::Aligned {
            config.with_token_align(self.token_align)
        } else {
            config
        }
    }
}

/// `v` with every object's keys in sorted order: one JSON text for the same settings however
/// they were written (a run from before a field existed, a field added later).
fn sorted(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let m: std::collections::BTreeMap<String, serde_json::Value> =
                m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            serde_json::Value::Object(m.into_iter().collect())
        }
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(sorted).collect())
        }
        other => other,
    }
}

fn default_align() -> usize {
    crate::engine::TOKEN_ALIGN
}
