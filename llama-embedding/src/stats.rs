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
    /// Chunks embedded, in a chunked run (each a vector; `texts_succeeded` counts items).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub chunks: u64,
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

/// Adds another segment's counters (items, tokens, batches, failures by kind; the peak memory
/// is the larger one). The timings and rates stay this side's: they describe one process.
impl std::ops::AddAssign<&BatchStats> for BatchStats {
    fn add_assign(&mut self, o: &BatchStats) {
        self.texts_succeeded += o.texts_succeeded;
        self.texts_failed += o.texts_failed;
        self.tokens += o.tokens;
        self.chunks += o.chunks;
        self.characters += o.characters;
        self.truncated += o.truncated;
        self.batches += o.batches;
        self.texts_total = self.texts_succeeded + self.texts_failed + self.texts_skipped;
        for (k, v) in &o.failures_by_kind {
            *self.failures_by_kind.entry(k.clone()).or_default() += v;
        }
        self.peak_memory_mb = self.peak_memory_mb.max(o.peak_memory_mb);
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
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
        if self.chunks > 0 {
            let _ = writeln!(
                s,
                "chunks:     {} ({:.1} per embedded text)",
                self.chunks,
                self.chunks as f64 / self.texts_succeeded.max(1) as f64
            );
        }
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

/// Resident memory of this process in MB. On Linux one read of `/proc/self/statm` (a few µs);
/// elsewhere sysinfo. sysinfo's process refresh also walks `/proc/self/task`, which took ~1 s of
/// CPU over the 900 batches of a 2,000-line run (measured in specification/performance.md), so
/// the per-batch check reads the kernel's figure directly where it can.
pub struct MemoryProbe {
    statm: Option<std::fs::File>,
    system: sysinfo::System,
    pid: sysinfo::Pid,
}

impl Default for MemoryProbe {
    fn default() -> Self {
        Self::new()
    }
}

/// Bytes per page, the unit of `/proc/self/statm`: `AT_PAGESZ` from the auxiliary vector,
/// 4096 where it cannot be read.
fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // /proc/self/auxv: (type, value) pairs of native words; AT_PAGESZ is 6.
        let word = std::mem::size_of::<usize>();
        std::fs::read("/proc/self/auxv")
            .ok()
            .and_then(|b| {
                b.chunks_exact(2 * word).find_map(|pair| {
                    let (k, v) = pair.split_at(word);
                    let k = usize::from_ne_bytes(k.try_into().ok()?);
                    let v = usize::from_ne_bytes(v.try_into().ok()?);
                    (k == 6).then_some(v as u64)
                })
            })
            .unwrap_or(4096)
    })
}

impl MemoryProbe {
    pub fn new() -> Self {
        MemoryProbe {
            statm: std::fs::File::open("/proc/self/statm").ok(),
            system: sysinfo::System::new(),
            pid: sysinfo::Pid::from_u32(std::process::id()),
        }
    }

    /// Current resident set size in MB.
    pub fn resident_mb(&mut self) -> u64 {
        if let Some(pages) = self.statm.as_mut().and_then(read_statm_resident) {
            return pages * page_size() / (1024 * 1024);
        }
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

/// The resident pages (second field) of an open `/proc/self/statm`, read from its start.
fn read_statm_resident(f: &mut std::fs::File) -> Option<u64> {
    use std::io::{Read, Seek};
    let mut buf = [0u8; 128];
    f.seek(std::io::SeekFrom::Start(0)).ok()?;
    let n = f.read(&mut buf).ok()?;
    std::str::from_utf8(&buf[..n])
        .ok()?
        .split_ascii_whitespace()
        .nth(1)?
        .parse()
        .ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The statm reading agrees with the kernel's VmRSS line (same moment, within 4 MB).
    #[test]
    #[cfg(target_os = "linux")]
    fn statm_probe_matches_vmrss() {
        let mut probe = MemoryProbe::new();
        assert!(probe.statm.is_some());
        let ballast = std::hint::black_box(vec![1u8; 64 << 20]);
        let mb = probe.resident_mb();
        let vmrss = std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .map(|v| {
                v.trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<u64>()
                    .unwrap()
                    / 1024
            })
            .unwrap();
        assert!(mb >= 64, "{mb} MB resident with 64 MB touched");
        assert!(mb.abs_diff(vmrss) <= 4, "statm {mb} MB, VmRSS {vmrss} MB");
        assert_eq!(page_size() % 4096, 0);
        drop(ballast);
    }

    #[test]
    fn adding_stats_adds_the_counters_and_keeps_this_sides_timings() {
        let mut a = BatchStats {
            texts_succeeded: 5,
            texts_failed: 1,
            texts_skipped: 2,
            tokens: 50,
            batches: 2,
            wall_seconds: 3.0,
            tokens_per_second: 16.0,
            peak_memory_mb: 90,
            ..BatchStats::default()
        };
        a.failures_by_kind.insert("empty".into(), 1);
        let mut b = BatchStats {
            texts_succeeded: 10,
            texts_failed: 2,
            tokens: 100,
            characters: 400,
            truncated: 1,
            batches: 3,
            wall_seconds: 9.0,
            peak_memory_mb: 120,
            ..BatchStats::default()
        };
        b.failures_by_kind.insert("empty".into(), 1);
        b.failures_by_kind.insert("too_long".into(), 1);
        a += &b;
        assert_eq!(
            (
                a.texts_succeeded,
                a.texts_failed,
                a.texts_total,
                a.tokens,
                a.characters
            ),
            (15, 3, 20, 150, 400)
        );
        assert_eq!((a.truncated, a.batches, a.peak_memory_mb), (1, 5, 120));
        assert_eq!(a.failures_by_kind["empty"], 2);
        assert_eq!(a.failures_by_kind["too_long"], 1);
        assert_eq!((a.wall_seconds, a.tokens_per_second), (3.0, 16.0));
    }
}
