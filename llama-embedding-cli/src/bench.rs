//! `llama-embed bench`: sweeps batch size x token budget x workers/threads over one input,
//! each combination after a warm-up and several times, and reports medians and spread as a
//! table, `bench.json`, `bench.csv` and a chart (`bench.svg`, `bench.png`). Results are
//! written after every combination, so Ctrl-C (or a kill) keeps what finished.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use llama_embedding::{BatchConfig, BatchProcessor, BatchStats, EmbeddingModel, EngineMode};
use serde::Serialize;

use crate::args::BenchArgs;
pub use crate::bench_row::{Row, Setting, Spread};

#[derive(Debug, Serialize)]
struct Report<'a> {
    tool: String,
    model: &'a Path,
    model_sha256: String,
    input: String,
    texts: usize,
    tokens: u64,
    repeat: usize,
    machine: Machine,
    complete: bool,
    /// Token budgets were given (else each batch size got its own).
    budgets_swept: bool,
    best: Option<Setting>,
    rows: &'a [Row],
}

#[derive(Debug, Serialize)]
struct Machine {
    cpus: usize,
    cpu: String,
    /// The CPU flags that choose ggml's kernels.
    cpu_flags: Vec<String>,
    /// ggml's CPU kernel variant the bench ran and its instruction sets.
    kernels: String,
    memory_gb: f64,
    os: String,
}

fn machine() -> Machine {
    let cpu = llama_embedding::kernels::CpuInfo::detect();
    let kernels =
        llama_embedding::kernels::loaded().map_or_else(|| "not loaded".into(), |k| k.describe());
    let memory_gb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|l| l.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| (kb / 1024.0 / 1024.0 * 10.0).round() / 10.0);
    Machine {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpu: cpu.model,
        cpu_flags: cpu.flags,
        kernels,
        memory_gb,
        os: std::env::consts::OS.to_string(),
    }
}

/// Deterministic English-like texts of 4 to 60 words.
pub fn synthetic_texts(n: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "the",
        "model",
        "returns",
        "a",
        "vector",
        "for",
        "each",
        "line",
        "of",
        "text",
        "batch",
        "token",
        "file",
        "reads",
        "writes",
        "quickly",
        "memory",
        "search",
        "index",
        "query",
        "document",
        "embedding",
        "server",
        "store",
        "resume",
        "checkpoint",
        "parse",
        "string",
        "number",
        "list",
        "value",
        "open",
        "close",
        "socket",
        "connection",
        "error",
        "result",
    ];
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    (0..n)
        .map(|_| {
            let len = 4 + (next() % 57) as usize;
            let mut s: Vec<&str> = (0..len)
                .map(|_| WORDS[(next() % WORDS.len() as u64) as usize])
                .collect();
            s[0] = "The";
            s.join(" ") + "."
        })
        .collect()
}

pub fn load_texts(a: &BenchArgs) -> Result<(Vec<String>, String)> {
    if let Some(n) = a.synthetic {
        return Ok((synthetic_texts(n), format!("synthetic:{n}")));
    }
    let path = a
        .input
        .as_ref()
        .context("give --input FILE or --synthetic N")?;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut texts: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    if let Some(n) = a.limit {
        texts.truncate(n);
    }
    if texts.is_empty() {
        bail!("{} has no non-blank lines", path.display());
    }
    Ok((texts, path.display().to_string()))
}

/// The settings to run: the cross product of the lists. Without `--token-budgets` each batch
/// size gets a budget large enough that the batch size is what limits a decode (the mean
/// aligned text length times the batch size), so the sweep measures batch size.
fn settings(
    a: &BenchArgs,
    mean_tokens: f64,
    base: &BatchConfig,
) -> Result<(Vec<Setting>, Option<Setting>)> {
    for &b in &a.token_budgets {
        crate::common::check_budget(base, Some(b))?;
    }
    let align = base.effective_align() as f64;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = if a.workers.is_empty() {
        vec![llama_embedding::pipeline::default_workers()]
    } else {
        a.workers.clone()
    };
    let mut out = Vec::new();
    for &w in &workers {
        let threads = if a.threads.is_empty() {
            vec![(cores / w.max(1)).max(1)]
        } else {
            a.threads.clone()
        };
        for &t in &threads {
            for &b in &a.batch_sizes {
                let budgets = if a.token_budgets.is_empty() {
                    let aligned = (mean_tokens / align).ceil() * align;
                    let budget = ((aligned * b as f64) as usize).clamp(64, 16384);
                    vec![base
                        .mode
                        .shared_decode_cap()
                        .map_or(budget, |cap| budget.min(cap))]
                } else {
                    a.token_budgets.clone()
                };
                for &budget in &budgets {
                    out.push(Setting {
                        batch_size: b,
                        token_budget: budget,
                        workers: w,
                        threads: t,
                    });
                }
            }
        }
    }
    if out.is_empty() {
        bail!("nothing to run: give --batch-sizes");
    }
    // The library's defaults, as a reference row (what `embed` does without flags).
    if a.token_budgets.is_empty() && a.workers.is_empty() && a.threads.is_empty() {
        let default = default_setting(base.mode);
        if !out.contains(&default) {
            out.push(default);
            return Ok((out, Some(default)));
        }
    }
    Ok((out, None))
}

fn config(base: &BatchConfig, s: Setting) -> Result<BatchConfig> {
    let c = base
        .clone()
        .with_batch_size(s.batch_size)
        .with_token_budget(s.token_budget)
        .with_workers(s.workers)
        .with_threads_per_worker(s.threads);
    c.validate()
        .with_context(|| format!("batch size {} / budget {}", s.batch_size, s.token_budget))?;
    Ok(c)
}

/// One timed run on `p`, whose engine (its contexts) is kept from the warm-up to the last
/// repeat of a setting, as a long-lived process keeps it.
fn run_once(p: &mut BatchProcessor, texts: &[String]) -> Result<BatchStats> {
    llama_embedding::stats::reset_peak_resident();
    let outcomes = p.process_texts(texts.to_vec())?;
    let failed = outcomes.iter().filter(|o| o.embedded().is_none()).count();
    if failed > 0 {
        bail!("{failed} texts failed to embed (run `llama-embed embed` on the input to see why)");
    }
    Ok(p.stats())
}

fn row(setting: Setting, reference: bool, dominated: bool, runs: Vec<BatchStats>) -> Row {
    let f = |g: &dyn Fn(&BatchStats) -> f64| Spread::of(runs.iter().map(g).collect());
    Row {
        setting,
        reference,
        dominated,
        repeats: runs.len(),
        texts_per_second: f(&|s| s.texts_per_second),
        tokens_per_second: f(&|s| s.tokens_per_second),
        batch_p50_ms: f(&|s| s.batch_latency_p50_ms),
        batch_p95_ms: f(&|s| s.batch_latency_p95_ms),
        model_share: f(&|s| {
            if s.wall_seconds > 0.0 {
                s.model_seconds / setting.workers as f64 / s.wall_seconds
            } else {
                0.0
            }
        }),
        peak_memory_mb: f(&|s| s.peak_memory_mb as f64),
        runs,
    }
}

fn best(rows: &[Row]) -> Option<Setting> {
    rows.iter()
        .max_by(|a, b| {
            a.tokens_per_second
                .median
                .total_cmp(&b.tokens_per_second.median)
        })
        .map(|r| r.setting)
}

fn table(rows: &[Row], mode: EngineMode) -> String {
    let best = best(rows);
    let mut s = format!(
        "{:>5} {:>6} {:>5} {:>13} {:>15} {:>8} {:>8} {:>6} {:>7}\n",
        "batch", "budget", "w x t", "texts/s", "tokens/s", "p50 ms", "p95 ms", "model", "peak MB"
    );
    for r in rows {
        let st = r.setting;
        s += &format!(
            "{:>5} {:>6} {:>5} {:>7.1} ±{:>3.0}% {:>8.0} ±{:>3.0}% {:>8.1} {:>8.1} {:>5.0}% {:>7.0}{}\n",
            st.batch_size,
            st.token_budget,
            format!("{}x{}", st.workers, st.threads),
            r.texts_per_second.median,
            r.texts_per_second.pct(),
            r.tokens_per_second.median,
            r.tokens_per_second.pct(),
            r.batch_p50_ms.median,
            r.batch_p95_ms.median,
            r.model_share.median * 100.0,
            r.peak_memory_mb.median,
            match (Some(st) == best, st == default_setting(mode)) {
                (true, true) => "  <- best (the default)",
                (true, false) => "  <- best",
                (false, true) => "  (the default)",
                _ => "",
            }
        );
        if r.dominated {
            s.pop();
            s += "  [1 run: dominated]\n";
        }
    }
    s
}

/// What `embed` runs without speed flags.
fn default_setting(mode: EngineMode) -> Setting {
    let d = BatchConfig::default().with_mode(mode);
    Setting {
        batch_size: d.batch_size,
        token_budget: d.effective_budget(),
        workers: d.workers,
        threads: d.threads(),
    }
}

fn csv(rows: &[Row]) -> String {
    let mut s = String::from(
        "batch_size,token_budget,workers,threads,repeats,texts_per_second,texts_per_second_min,texts_per_second_max,\
         tokens_per_second,tokens_per_second_min,tokens_per_second_max,batch_p50_ms,batch_p95_ms,model_share,peak_memory_mb\n",
    );
    for r in rows {
        let st = r.setting;
        s += &format!(
            "{},{},{},{},{},{:.2},{:.2},{:.2},{:.1},{:.1},{:.1},{:.2},{:.2},{:.3},{:.0}\n",
            st.batch_size,
            st.token_budget,
            st.workers,
            st.threads,
            r.repeats,
            r.texts_per_second.median,
            r.texts_per_second.min,
            r.texts_per_second.max,
            r.tokens_per_second.median,
            r.tokens_per_second.min,
            r.tokens_per_second.max,
            r.batch_p50_ms.median,
            r.batch_p95_ms.median,
            r.model_share.median,
            r.peak_memory_mb.median
        );
    }
    s
}

/// The `embed` flags for a setting.
pub fn flags(s: Setting) -> String {
    format!(
        "--batch-size {} --token-budget {} --workers {} --threads {}",
        s.batch_size, s.token_budget, s.workers, s.threads
    )
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

struct Outputs {
    dir: PathBuf,
}

impl Outputs {
    fn write(&self, report: &Report<'_>) -> Result<()> {
        write_atomic(
            &self.dir.join("bench.json"),
            &serde_json::to_vec_pretty(report)?,
        )?;
        write_atomic(&self.dir.join("bench.csv"), csv(report.rows).as_bytes())?;
        if !report.rows.is_empty() {
            let title = format!(
                "{} on {} ({} texts), {} CPUs, {} kernels",
                report
                    .model
                    .file_name()
                    .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
                report.input,
                report.texts,
                report.machine.cpus,
                report.machine.kernels.split(' ').next().unwrap_or_default()
            );
            crate::chart::draw(&self.dir, &title, report.rows, report.budgets_swept)?;
        }
        Ok(())
    }
}

pub fn bench(a: BenchArgs, model: Arc<EmbeddingModel>, base: BatchConfig) -> Result<u8> {
    Ok(bench_one(&a, model, base)?.0)
}

/// One model's sweep: the exit code and the best median tokens/s (None: interrupted first).
pub fn bench_one(
    a: &BenchArgs,
    model: Arc<EmbeddingModel>,
    base: BatchConfig,
) -> Result<(u8, Option<f64>)> {
    let (texts, input) = load_texts(a)?;
    if a.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    // Token counts once, for the automatic budgets and the report.
    let max_tokens = model.max_tokens(&base.embed)?;
    let mut tokens = 0u64;
    for t in &texts {
        if let Ok(tk) = model.tokenize(t, &base.embed, max_tokens) {
            tokens += tk.tokens.len() as u64;
        }
    }
    let mean = tokens as f64 / texts.len() as f64;
    let (plan, reference) = settings(a, mean, &base)?;
    let configs: Vec<BatchConfig> = plan
        .iter()
        .map(|s| config(&base, *s))
        .collect::<Result<_>>()?;
    std::fs::create_dir_all(&a.out).with_context(|| format!("creating {}", a.out.display()))?;
    let out = Outputs { dir: a.out.clone() };

    let stop = crate::common::stop_on_signals()?;
    let total_runs = plan.len() * a.repeat;
    if !a.quiet {
        eprintln!(
            "llama-embed bench: {} settings x {} repeats over {} texts ({tokens} tokens, {mean:.1} per text) from {input}; Ctrl-C stops and keeps what finished",
            plan.len(),
            a.repeat,
            texts.len()
        );
    }
    let warm: Vec<String> = texts.iter().take(64).cloned().collect();
    let sha = model.sha256()?;
    let mut rows: Vec<Row> = Vec::new();
    let mut done = 0;
    let started = std::time::Instant::now();
    let mut interrupted = false;
    'outer: for (setting, cfg) in plan.iter().zip(&configs) {
        // Warm-up: contexts, caches and the allocator, not counted.
        let mut p = BatchProcessor::new(model.clone(), cfg.clone())?;
        run_once(&mut p, &warm)?;
        let mut runs = Vec::new();
        let best_so_far = rows
            .iter()
            .map(|r| r.tokens_per_second.median)
            .fold(0.0f64, f64::max);
        for r in 0..a.repeat {
            if stop.load(Ordering::Relaxed) {
                interrupted = true;
                break 'outer;
            }
            let st = run_once(&mut p, &texts)?;
            done += 1;
            // Clearly dominated (under half the best so far): one run is enough to say so.
            let dominated = r == 0 && !a.all_repeats && st.tokens_per_second < best_so_far / 2.0;
            if dominated {
                done += a.repeat - 1;
            }
            if !a.quiet {
                let elapsed = started.elapsed().as_secs_f64();
                let eta = elapsed / done as f64 * (total_runs - done) as f64;
                eprintln!(
                    "llama-embed bench: [{done}/{total_runs}] {} repeat {}/{}: {:.0} tokens/s, {:.1} texts/s, {} MB; ETA {eta:.0}s",
                    flags(*setting),
                    r + 1,
                    a.repeat,
                    st.tokens_per_second,
                    st.texts_per_second,
                    st.peak_memory_mb
                );
            }
            runs.push(st);
            if dominated {
                break;
            }
        }
        let dominated = runs.len() == 1 && a.repeat > 1;
        rows.push(row(*setting, reference == Some(*setting), dominated, runs));
        out.write(&Report {
            tool: format!("llama-embed {}", env!("CARGO_PKG_VERSION")),
            model: model.path(),
            model_sha256: sha.clone(),
            input: input.clone(),
            texts: texts.len(),
            tokens,
            repeat: a.repeat,
            machine: machine(),
            complete: rows.len() == plan.len(),
            budgets_swept: !a.token_budgets.is_empty(),
            best: best(&rows),
            rows: &rows,
        })?;
    }
    if rows.is_empty() {
        eprintln!("llama-embed bench: interrupted before any setting finished");
        return Ok((crate::exit::EXIT_INTERRUPTED, None));
    }
    let m = machine();
    println!(
        "machine: {} ({} CPUs); kernels: {}",
        m.cpu, m.cpus, m.kernels
    );
    print!("{}", table(&rows, base.mode));
    let b = best(&rows).expect("rows");
    println!(
        "results: {}/bench.{{json,csv,svg,png}}{}",
        a.out.display(),
        if interrupted {
            " (interrupted: the settings that finished)"
        } else {
            ""
        }
    );
    if a.recommend {
        println!(
            "recommended: llama-embed embed {}{}",
            flags(b),
            if a.fast { " --fast" } else { "" }
        );
    }
    let code = if interrupted {
        crate::exit::EXIT_INTERRUPTED
    } else {
        crate::exit::EXIT_OK
    };
    let top = rows
        .iter()
        .map(|r| r.tokens_per_second.median)
        .fold(0.0f64, f64::max);
    Ok((code, Some(top)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spread_is_median_and_range() {
        let s = Spread::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(vec![4.0, 2.0]).median, 3.0);
        assert!((Spread::of(vec![90.0, 100.0, 110.0]).pct() - 10.0).abs() < 1e-9);
    }

    #[test]
    fn synthetic_texts_are_deterministic() {
        assert_eq!(synthetic_texts(5), synthetic_texts(5));
        assert!(synthetic_texts(100)
            .iter()
            .all(|t| t.starts_with("The ") && t.ends_with('.')));
    }
}
