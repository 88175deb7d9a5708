//! What `bench` measures, one [`Row`] per combination of settings: the table, `bench.json`,
//! `bench.csv` and the chart (`chart.rs`) all read these.

use llama_embedding::BatchStats;
use serde::Serialize;

/// One combination of settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Setting {
    pub batch_size: usize,
    pub token_budget: usize,
    pub workers: usize,
    pub threads: usize,
}

/// Median, min and max of one measure over the repeats.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub(crate) fn of(mut v: Vec<f64>) -> Spread {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Spread {
            median,
            min: v[0],
            max: v[n - 1],
        }
    }
    /// Half the range, as a percentage of the median.
    pub(crate) fn pct(&self) -> f64 {
        if self.median > 0.0 {
            (self.max - self.min) / 2.0 / self.median * 100.0
        } else {
            0.0
        }
    }
}

/// What one combination measured.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub setting: Setting,
    /// The library's default setting, added to the sweep for reference.
    pub reference: bool,
    /// Run once only: its first run was under half the best median so far.
    pub dominated: bool,
    pub repeats: usize,
    pub texts_per_second: Spread,
    pub tokens_per_second: Spread,
    pub batch_p50_ms: Spread,
    pub batch_p95_ms: Spread,
    /// Share of the wall time the engine threads spent inside llama.cpp (per worker).
    pub model_share: Spread,
    pub peak_memory_mb: Spread,
    pub runs: Vec<BatchStats>,
}
