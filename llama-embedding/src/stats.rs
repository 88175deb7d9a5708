//! Run statistics ([`BatchStats`]), progress ([`ProgressInfo`]) and the process's memory.

use serde::{Deserialize, Serialize};

/// Counts and timings of a run. `succeeded + failed + skipped == total`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BatchStats {
    pub texts_total: u64,
    pub texts_succeeded: u64,
    pub texts_failed: u64,
    /// Items the reader skipped (blank lines, comments), not sent to the model.
    pub texts_skipped: u64,
    pub tokens: u64,
    pub characters: u64,
    pub truncated: u64,
    pub batches: u64,
    pub wall_seconds: f64,
    /// Time inside llama.cpp's decode, summed over engine threads.
    pub model_seconds: f64,
    /// Wall time not covered by the model: `wall - model / workers` (reading, tokenising,
    /// writing, waiting).
    pub other_seconds: f64,
    pub texts_per_second: f64,
    pub tokens_per_second: f64,
    pub batch_latency_mean_ms: f64,
    pub batch_latency_p50_ms: f64,
    pub batch_latency_p95_ms: f64,
    pub peak_memory_mb: u64,
    /// Failures by kind (`empty`, `too_long`, ...).
    pub failures_by_kind: std::collections::BTreeMap<String, u64>,
}

impl BatchStats {
    /// A human summary, one fact a line.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        use std::fmt::Write;
        let _ = writeln!(
            s,
            "texts:      {} total, {} embedded, {} failed, {} skipped",
            self.texts_total, self.texts_succeeded, self.texts_failed, self.texts_skipped
        );
        let _ = writeln!(
            s,
            "tokens:     {} ({} texts truncated), {} characters",
            self.tokens, self.truncated, self.characters
        );
        let _ = writeln!(
            s,
            "throughput: {:.1} texts/s, {:.0} tokens/s",
            self.texts_per_second, self.tokens_per_second
        );
        let _ = writeln!(
            s,
            "time:       {:.2}s wall, {:.2}s in the model, {:.2}s other",
            self.wall_seconds, self.model_seconds, self.other_seconds
        );
        let _ = writeln!(
            s,
            "batches:    {} (latency mean {:.1} ms, p50 {:.1} ms, p95 {:.1} ms)",
            self.batches,
            self.batch_latency_mean_ms,
            self.batch_latency_p50_ms,
            self.batch_latency_p95_ms
        );
        let _ = write!(s, "memory:     {} MB peak resident", self.peak_memory_mb);
        if !self.failures_by_kind.is_empty() {
            let kinds: Vec<String> = self
                .failures_by_kind
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            let _ = write!(s, "\nfailures:   {}", kinds.join(", "));
        }
        s
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("stats serialise")
    }
}

/// Collects per-batch latencies and fills the derived fields of [`BatchStats`].
#[derive(Debug, Default)]
#[cfg(feature = "engine")]
pub(crate) struct LatencyLog {
    ms: Vec<f32>,
}

#[cfg(feature = "engine")]
impl LatencyLog {
    pub fn push(&mut self, d: std::time::Duration) {
        self.ms.push(d.as_secs_f32() * 1000.0);
    }

    pub fn fill(&self, stats: &mut BatchStats) {
        if self.ms.is_empty() {
            return;
        }
        let mut v = self.ms.clone();
        v.sort_by(f32::total_cmp);
        let pct = |p: f64| f64::from(v[((v.len() - 1) as f64 * p).round() as usize]);
        stats.batch_latency_mean_ms = v.iter().map(|x| f64::from(*x)).sum::<f64>() / v.len() as f64;
        stats.batch_latency_p50_ms = pct(0.5);
        stats.batch_latency_p95_ms = pct(0.95);
    }
}

/// Progress of a running job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressInfo {
    /// Items finished (embedded or failed), in input order.
    pub done: u64,
    /// Items in the input, when known up front.
    pub total: Option<u64>,
    pub failed: u64,
    pub tokens: u64,
    pub elapsed_seconds: f64,
    pub texts_per_second: f64,
    pub tokens_per_second: f64,
    pub eta_seconds: Option<f64>,
    pub memory_mb: u64,
}

/// Called with progress every `progress_interval_batches` batches.
pub type ProgressCallback = Box<dyn FnMut(&ProgressInfo) + Send>;
/// Called with the stats at the end of a run and, with progress on, periodically.
pub type StatsCallback = Box<dyn FnMut(&BatchStats) + Send>;

/// Resident memory of this process in MB (sysinfo).
pub struct MemoryProbe {
    system: sysinfo::System,
    pid: sysinfo::Pid,
}

impl Default for MemoryProbe {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryProbe {
    pub fn new() -> Self {
        MemoryProbe {
            system: sysinfo::System::new(),
            pid: sysinfo::Pid::from_u32(std::process::id()),
        }
    }

    /// Current resident set size in MB.
    pub fn resident_mb(&mut self) -> u64 {
        self.system.refresh_processes_specifics(
            sysinfo::ProcessesToUpdate::Some(&[self.pid]),
            true,
            sysinfo::ProcessRefreshKind::nothing().with_memory(),
        );
        self.system
            .process(self.pid)
            .map_or(0, |p| p.memory() / (1024 * 1024))
    }
}

/// Peak resident memory of this process in MB: the kernel's high-water mark where there is one
/// (catches peaks between samples), else 0.
pub fn peak_resident_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// Resets the kernel's peak-resident mark (`VmHWM`) to the current resident size, so the
/// next [`peak_resident_mb`] covers only what follows (Linux: `5` into `/proc/self/clear_refs`).
/// Returns whether it could.
pub fn reset_peak_resident() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}
