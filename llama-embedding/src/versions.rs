//! Versioned runs (seed 004): `embed --run-name NAME` writes `RUNS/NAME/v0`, `v1`, …, each a
//! normal run directory whose `metadata.json` also carries a [`VersionInfo`] (version, mode,
//! base version, status label, notes, duration); `RUNS/NAME/latest` points at the newest
//! completed version (a relative symlink; a small pointer file where there are none).
//!
//! A rerun ([`rerun`]) re-embeds a few items of a base version into `vN/rerun/` (a run
//! directory of its own, so it checkpoints and resumes like any run) and then collates
//! `vN/output.jsonl`: the base's rows with those items replaced, in input order, found by
//! walking the input once (its sha256 must be unchanged). [`compare`] puts two versions side by
//! side with the cosine between the vectors of every item in both.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::input::open_input;
use crate::items::{self, ItemRow, ItemState, ItemsDb};
use crate::job::{self, load_metadata, EmbedJob, JobEnd, JobReport, Metadata};
use crate::merge::{covered_reader, Rows};
use crate::model::EmbeddingModel;
use crate::pipeline::BatchConfig;
use crate::rundir::row_id;
use crate::rundir::{self, Checkpoint, RunLock};
pub use crate::rundir::{version_number, RunState, VersionInfo, VersionMode};
use crate::sink::{OutputFormat, SinkState};

pub const LATEST: &str = "latest";
/// Labels with a meaning (any other single word is accepted too).
pub const LABELS: [&str; 6] = ["draft", "alpha", "beta", "rc", "final", "deprecated"];
/// What `runs list` shows without `--all` or `--status`.
pub const LISTED_BY_DEFAULT: [&str; 3] = ["beta", "rc", "final"];

/// The folder versioned runs live in: `--runs-dir`, else `LLAMA_EMBED_RUNS_DIR`, else `runs`.
pub fn runs_root(flag: Option<&Path>) -> PathBuf {
    flag.map(Path::to_path_buf)
        .or_else(|| std::env::var_os("LLAMA_EMBED_RUNS_DIR").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("runs"))
}

/// Checks a run name: it becomes a folder name, so letters, digits, `.`, `_`, `-` only.
///
/// # Errors
/// [`Error::Config`] saying what is allowed.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "run name {name:?}: use 1 to 100 letters, digits, '.', '_' or '-' (not starting with '.')"
        )))
    }
}

/// Checks a status label: one word.
///
/// # Errors
/// [`Error::Config`].
pub fn check_label(label: &str) -> Result<()> {
    let ok = !label.is_empty()
        && label.len() <= 32
        && label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "label {label:?}: one word of letters, digits, '_' or '-' (up to 32), e.g. {}",
            LABELS.join(", ")
        )))
    }
}

/// The versions of a run, by number.
///
/// # Errors
/// [`Error::Config`] when the run does not exist.
pub fn versions(root: &Path, name: &str) -> Result<Vec<(u32, PathBuf)>> {
    check_name(name)?;
    let dir = root.join(name);
    let rd = fs::read_dir(&dir).map_err(|_| {
        Error::Config(format!(
            "no run named {name} in {} (runs are made by embed --run-name {name})",
            root.display()
        ))
    })?;
    let mut out: Vec<(u32, PathBuf)> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_str()?.strip_prefix('v')?.parse().ok()?;
            e.file_type().ok()?.is_dir().then(|| (n, e.path()))
        })
        .collect();
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

/// Creates the next version folder (`vN`, N one more than the highest there), atomically:
/// two processes never get the same N.
///
/// # Errors
/// I/O errors.
pub fn create_version_dir(root: &Path, name: &str) -> Result<(u32, PathBuf)> {
    check_name(name)?;
    let dir = root.join(name);
    fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut n = versions(root, name)?.last().map_or(0, |(n, _)| n + 1);
    loop {
        let v = dir.join(format!("v{n}"));
        match fs::create_dir(&v) {
            Ok(()) => return Ok((n, v)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(Error::io(&v, e)),
        }
    }
}

/// The version `latest` points at.
pub fn latest(root: &Path, name: &str) -> Option<u32> {
    let p = root.join(name).join(LATEST);
    let target = fs::read_link(&p)
        .ok()
        .map(|t| t.to_string_lossy().into_owned())
        .or_else(|| fs::read_to_string(&p).ok())?;
    version_number(target.trim())
}

/// After [`job::run_job`]: a completed version becomes its name's `latest`.
///
/// # Errors
/// I/O errors.
pub fn after_run(report: &JobReport) -> Result<()> {
    if report.end == JobEnd::Completed && load_metadata(&report.run_dir)?.version.is_some() {
        point_latest(&report.run_dir)?;
    }
    Ok(())
}

/// Points `latest` at the newest completed version (atomically: a new link renamed over the
/// old one).
///
/// # Errors
/// I/O errors.
pub fn point_latest(run_dir: &Path) -> Result<()> {
    let Some(name_dir) = run_dir.parent() else {
        return Ok(());
    };
    let (Some(root), Some(name)) = (name_dir.parent(), name_dir.file_name()) else {
        return Ok(());
    };
    let name = name.to_string_lossy();
    let newest = versions(root, &name)?
        .into_iter()
        .rev()
        .find(|(_, d)| load_metadata(d).is_ok_and(|m| m.status == RunState::Completed));
    let Some((n, _)) = newest else { return Ok(()) };
    let target = format!("v{n}");
    let link = name_dir.join(LATEST);
    let tmp = name_dir.join(format!(".latest.{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    #[cfg(unix)]
    std::os::unix::fs::symlink(&target, &tmp).map_err(|e| Error::io(&tmp, e))?;
    #[cfg(not(unix))]
    fs::write(&tmp, format!("{target}\n")).map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &link).map_err(|e| Error::io(&link, e))
}

/// Which version a user means: `v3`, `3` or `latest`.
///
/// # Errors
/// [`Error::Config`] when there is no such version.
pub fn resolve(root: &Path, name: &str, version: &str) -> Result<(u32, PathBuf)> {
    let all = versions(root, name)?;
    let n = if version == LATEST {
        latest(root, name).ok_or_else(|| {
            Error::Config(format!("{name} has no completed version yet (no latest)"))
        })?
    } else {
        version_number(version).ok_or_else(|| {
            Error::Config(format!(
                "{version:?} is not a version (v0, v1, … or latest)"
            ))
        })?
    };
    all.into_iter().find(|(m, _)| *m == n).ok_or_else(|| {
        Error::Config(format!(
            "{name} has no version v{n} (in {})",
            root.join(name).display()
        ))
    })
}

/// One version as `runs list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ListedVersion {
    pub name: String,
    pub version: String,
    pub dir: PathBuf,
    pub latest: bool,
    pub created: String,
    pub label: String,
    pub mode: VersionMode,
    pub base_version: Option<String>,
    pub notes: Option<String>,
    pub duration_seconds: f64,
    pub status: RunState,
    pub items: u64,
    pub failed: u64,
    pub model: PathBuf,
    pub model_sha256: String,
}

/// A run's versions with their metadata (damaged or foreign folders are skipped).
///
/// # Errors
/// [`Error::Config`] when the run does not exist.
pub fn list(root: &Path, name: &str) -> Result<Vec<ListedVersion>> {
    let latest = latest(root, name);
    Ok(versions(root, name)?
        .into_iter()
        .filter_map(|(n, dir)| {
            let m = load_metadata(&dir).ok()?;
            let v = m.version.clone()?;
            Some(ListedVersion {
                name: name.to_string(),
                version: format!("v{n}"),
                latest: latest == Some(n),
                created: m.started_at.clone(),
                label: v.label,
                mode: v.mode,
                base_version: v.base_version,
                notes: v.notes,
                duration_seconds: v.duration_seconds,
                status: m.status,
                items: m.stats.texts_succeeded,
                failed: m.stats.texts_failed,
                model: m.model_path.clone(),
                model_sha256: m.vectors.model_sha256.clone(),
                dir,
            })
        })
        .collect())
}

/// The run names under `root` (folders holding at least one version).
pub fn names(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(root)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| check_name(n).is_ok())
        .filter(|n| versions(root, n).is_ok_and(|v| !v.is_empty()))
        .collect();
    out.sort();
    out
}

/// Sets a version's status label.
///
/// # Errors
/// A bad label, a version being written, a damaged `metadata.json`.
pub fn set_label(dir: &Path, label: &str) -> Result<String> {
    check_label(label)?;
    let _lock = RunLock::acquire(dir)?;
    let mut m = load_metadata(dir)?;
    let v = m.version.as_mut().ok_or_else(|| {
        Error::Config(format!("{} is not a version of a named run", dir.display()))
    })?;
    let old = std::mem::replace(&mut v.label, label.to_string());
    rundir::write_checked(&dir.join(rundir::METADATA), &m)?;
    Ok(old)
}

/// Marks items of a version for redoing (`runs reset`); `runs rerun NAME` without ids then
/// re-embeds them. Returns the ids found and those not in the version.
///
/// # Errors
/// A version being written, a run without an items database.
pub fn reset(dir: &Path, ids: &[String]) -> Result<(Vec<String>, Vec<String>)> {
    let _lock = RunLock::acquire(dir)?;
    load_metadata(dir)?;
    if !dir.join(items::ITEMS_DB).is_file() {
        return Err(Error::Config(format!(
            "{} has no {} (made by an older llama-embed); rerun the items by id",
            dir.display(),
            items::ITEMS_DB
        )));
    }
    let covered = rundir::load_checkpoint(dir)?.0.map_or(0, |c| c.items_done);
    let found = ItemsDb::open(dir)?.reset(ids, covered)?;
    let set: HashSet<&String> = found.iter().collect();
    let missing = ids.iter().filter(|i| !set.contains(i)).cloned().collect();
    Ok((found, missing))
}

/// A rerun to do.
pub struct RerunJob {
    pub root: PathBuf,
    pub name: String,
    /// The version to start from (default: latest).
    pub base: Option<String>,
    /// Ids to re-embed; empty: the base's failed items and those marked by `runs reset`.
    pub ids: Vec<String>,
    pub notes: Option<String>,
    pub label: Option<String>,
    pub model: Arc<EmbeddingModel>,
    pub model_source: String,
    /// Batching and vector settings for the rerun items.
    pub config: BatchConfig,
    /// Finish an interrupted rerun version instead of starting a new one.
    pub continue_version: Option<String>,
}

/// What a rerun did.
#[derive(Debug, Clone, Serialize)]
pub struct RerunReport {
    pub version: String,
    pub base_version: String,
    pub dir: PathBuf,
    pub output: PathBuf,
    /// How the embedding part ended: completed, stopped_by_errors, interrupted.
    pub end: String,
    pub rerun: u64,
    /// Rerun items that failed (they are not in the collated output).
    pub rerun_failed: Vec<String>,
    pub items: u64,
    pub rows: u64,
    pub failed: u64,
}

/// The base version of a rerun and its checks.
fn rerun_base(job: &RerunJob) -> Result<(u32, PathBuf, Metadata)> {
    let (n, dir) = resolve(&job.root, &job.name, job.base.as_deref().unwrap_or(LATEST))?;
    let m = load_metadata(&dir)?;
    if m.status != RunState::Completed {
        return Err(Error::Config(format!(
            "{} v{n} is {}: a rerun starts from a completed version",
            job.name, m.status
        )));
    }
    if !m.file_output || m.output_format != OutputFormat::Jsonl {
        return Err(Error::Config(format!(
            "{} v{n} wrote {}: reruns collate JSONL outputs only",
            job.name,
            if m.file_output {
                m.output_format.extension()
            } else {
                "only to a store"
            }
        )));
    }
    if m.input == "-" {
        return Err(Error::Config(format!(
            "{} v{n} read stdin: a rerun needs the input file again",
            job.name
        )));
    }
    if let Some(expected) = &m.input_sha256 {
        let now = crate::job::input_sha256(&m.input, &m.input_spec)?.unwrap_or_default();
        if &now != expected {
            return Err(Error::Config(format!(
                "{} changed since {} v{n} was made (sha256 {now}, was {expected}); \
                 a rerun replaces items of the same input: make a new run instead",
                m.input, job.name
            )));
        }
    }
    Ok((n, dir, m))
}

/// Re-embeds some items of a version into a new version and collates its output.
///
/// # Errors
/// Unknown ids, a base that cannot be rerun, run errors.
pub fn rerun(
    job: RerunJob,
    progress: Option<crate::stats::ProgressCallback>,
    stop: Arc<AtomicBool>,
) -> Result<RerunReport> {
    let started = Instant::now();
    // `previous`: the interrupted version's start time and version info (--continue).
    let (n, dir, base_n, base_dir, base, ids, previous) = match &job.continue_version {
        Some(v) => {
            let (n, dir) = resolve(&job.root, &job.name, v)?;
            let m = load_metadata(&dir)?;
            let info = m
                .version
                .clone()
                .filter(|i| i.mode == VersionMode::Rerun)
                .ok_or_else(|| {
                    Error::Config(format!("{} v{n} is not a rerun version", job.name))
                })?;
            if m.status == RunState::Completed {
                return Err(Error::Config(format!(
                    "{} v{n} is complete; nothing to continue",
                    job.name
                )));
            }
            let base_v = info.base_version.clone().unwrap_or_default();
            let (bn, bdir) = resolve(&job.root, &job.name, &base_v)?;
            let bm = load_metadata(&bdir)?;
            let ids: Vec<String> = job::load_metadata(&dir.join("rerun"))?
                .selection
                .only
                .map(|s| s.into_iter().collect())
                .unwrap_or_default();
            (n, dir, bn, bdir, bm, ids, Some((m.started_at, info)))
        }
        None => {
            let (bn, bdir, bm) = rerun_base(&job)?;
            let covered = rundir::load_checkpoint(&bdir)?
                .0
                .map_or(0, |c| c.items_done);
            let ids = if job.ids.is_empty() {
                let todo: Vec<String> =
                    items::rows(&bdir, covered, &[ItemState::Pending, ItemState::Failed])?
                        .into_iter()
                        .map(|r| r.id)
                        .collect();
                if todo.is_empty() {
                    return Err(Error::Config(format!(
                        "{} v{bn} has no failed items and none marked by `runs reset`; name the ids to rerun",
                        job.name
                    )));
                }
                todo
            } else {
                let known: HashSet<String> = items::rows(&bdir, covered, &[])?
                    .into_iter()
                    .map(|r| r.id)
                    .collect();
                let unknown: Vec<&String> =
                    job.ids.iter().filter(|id| !known.contains(*id)).collect();
                if !unknown.is_empty() {
                    return Err(Error::Config(format!(
                        "not items of {} v{bn}: {}",
                        job.name,
                        unknown
                            .iter()
                            .take(20)
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                job.ids.clone()
            };
            if job.model.dimensions() != bm.model.dimensions {
                return Err(Error::Config(format!(
                    "the rerun model makes {}-dimensional vectors and v{bn} has {}: one output cannot mix them",
                    job.model.dimensions(),
                    bm.model.dimensions
                )));
            }
            let (n, dir) = create_version_dir(&job.root, &job.name)?;
            (n, dir, bn, bdir, bm, ids, None)
        }
    };
    let _lock = RunLock::acquire(&dir)?;
    let resume = previous.is_some();
    let (label, notes, duration) = match &previous {
        Some((_, v)) => (
            job.label.clone().unwrap_or_else(|| v.label.clone()),
            job.notes.clone().or_else(|| v.notes.clone()),
            v.duration_seconds,
        ),
        None => (
            job.label.clone().unwrap_or_else(|| "draft".into()),
            job.notes.clone(),
            0.0,
        ),
    };
    check_label(&label)?;
    let info = VersionInfo {
        name: job.name.clone(),
        version: format!("v{n}"),
        mode: VersionMode::Rerun,
        base_version: Some(format!("v{base_n}")),
        label,
        notes,
        duration_seconds: duration,
        rerun_items: Some(ids.len() as u64),
    };
    // The version's own metadata says "running" until the collated output is there.
    let mut meta = base.clone();
    meta.status = RunState::Running;
    meta.started_at = previous.map_or_else(rundir::now, |(started, _)| started);
    meta.updated_at = rundir::now();
    meta.finished_at = None;
    meta.resumes = 0;
    meta.message = None;
    meta.store = None;
    meta.store_text = false;
    meta.model_path = job.model.path().to_path_buf();
    meta.model_source = job.model_source.clone();
    meta.model = job.model.facts().clone();
    meta.output_file = std::path::absolute(dir.join("output.jsonl"))
        .map_err(|e| Error::io(&dir, e))?
        .to_string_lossy()
        .into_owned();
    meta.version = Some(info.clone());
    rundir::write_checked(&dir.join(rundir::METADATA), &meta)?;

    let sub = dir.join("rerun");
    let mut selection = base.selection.clone();
    let wanted: HashSet<String> = ids.iter().cloned().collect();
    selection.only = Some(match &base.selection.only {
        Some(o) => o.intersection(&wanted).cloned().collect(),
        None => wanted.clone(),
    });
    let sub_job = EmbedJob {
        input: base.input.clone(),
        input_spec: base.input_spec.clone(),
        selection,
        output_format: OutputFormat::Jsonl,
        dtype: base.dtype,
        run_dir: sub.clone(),
        output: None,
        file_output: true,
        store: None,
        config: job.config.clone(),
        model: job.model.clone(),
        model_source: job.model_source.clone(),
        save_every: None,
        save_interval: std::time::Duration::from_secs(5),
        total: Some(ids.len() as u64),
        version: None,
    };
    let sub_done = resume && load_metadata(&sub).is_ok_and(|m| m.status == RunState::Completed);
    let sub_resume = resume && sub.join(rundir::METADATA).is_file();
    let report = if sub_done {
        None
    } else {
        match job::run_job(sub_job, sub_resume, progress, stop) {
            Ok(r) => Some(r),
            Err(e) => {
                meta.status = RunState::Failed;
                meta.message = Some(e.to_string());
                meta.updated_at = rundir::now();
                let _ = rundir::write_checked(&dir.join(rundir::METADATA), &meta);
                return Err(e);
            }
        }
    };
    let sub_meta = load_metadata(&sub)?;
    meta.vectors = sub_meta.vectors.clone();
    let mut info = info;
    info.duration_seconds += started.elapsed().as_secs_f64();
    if let Some(r) = &report {
        if r.end != JobEnd::Completed {
            meta.status = RunState::Stopped;
            meta.message = r.message.clone().or(Some("interrupted".into()));
            meta.version = Some(info.clone());
            meta.updated_at = rundir::now();
            rundir::write_checked(&dir.join(rundir::METADATA), &meta)?;
            return Ok(RerunReport {
                version: format!("v{n}"),
                base_version: format!("v{base_n}"),
                output: PathBuf::from(&meta.output_file),
                dir,
                end: match r.end {
                    JobEnd::Interrupted => "interrupted",
                    _ => "stopped_by_errors",
                }
                .into(),
                rerun: ids.len() as u64,
                rerun_failed: Vec::new(),
                items: 0,
                rows: 0,
                failed: 0,
            });
        }
    }
    let c = collate(&base_dir, &base, &sub, &wanted, &dir)?;
    let mut stats = sub_meta.stats.clone();
    stats.texts_succeeded = c.rows;
    stats.texts_failed = c.failed;
    stats.texts_total = c.items;
    let cp = Checkpoint {
        items_done: c.items,
        output: c.output_state.clone(),
        errors: c.errors_state.clone(),
        stats: stats.clone(),
        written_at: rundir::now(),
    };
    rundir::save_checkpoint(&dir, &cp)?;
    meta.status = RunState::Completed;
    meta.stats = stats;
    meta.finished_at = Some(rundir::now());
    meta.updated_at = rundir::now();
    meta.version = Some(info);
    rundir::write_checked(&dir.join(rundir::METADATA), &meta)?;
    point_latest(&dir)?;
    Ok(RerunReport {
        version: format!("v{n}"),
        base_version: format!("v{base_n}"),
        output: PathBuf::from(&meta.output_file),
        dir,
        end: "completed".into(),
        rerun: ids.len() as u64,
        rerun_failed: c.rerun_failed,
        items: c.items,
        rows: c.rows,
        failed: c.failed,
    })
}

struct Collated {
    items: u64,
    rows: u64,
    failed: u64,
    rerun_failed: Vec<String>,
    output_state: SinkState,
    errors_state: SinkState,
}

/// Items done and the durable length of a run's output, from its checkpoint.
fn covered(dir: &Path) -> Result<(u64, Option<u64>)> {
    let cp = rundir::load_checkpoint(dir)?.0.unwrap_or_default();
    Ok((cp.items_done, cp.output.files.first().map(|f| f.1)))
}

/// Error records by id (the part the checkpoint covers).
fn error_lines(dir: &Path) -> Result<HashMap<String, String>> {
    rundir::covered_errors(dir)?
        .lines()
        .map(|l| Ok((row_id(l)?, l.to_string())))
        .collect()
}

fn collate(
    base_dir: &Path,
    base: &Metadata,
    sub: &Path,
    wanted: &HashSet<String>,
    dir: &Path,
) -> Result<Collated> {
    let (base_done, base_out) = covered(base_dir)?;
    let (sub_done, sub_out) = covered(sub)?;
    let sub_meta = load_metadata(sub)?;
    let chunked = base.vectors.chunking.is_some_and(|c| c.chunk_rows());
    let mut base_rows = Rows::open(Path::new(&base.output_file), base_out, chunked)?;
    let mut sub_rows = Rows::open(Path::new(&sub_meta.output_file), sub_out, chunked)?;
    let base_errors = error_lines(base_dir)?;
    let sub_errors = error_lines(sub)?;
    let sub_db: HashMap<String, ItemRow> = items::rows(sub, sub_done, &[])?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let base_db: HashMap<String, ItemRow> = items::rows(base_dir, base_done, &[])?
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();

    let out_path = dir.join("output.jsonl");
    let err_path = dir.join(rundir::ERRORS);
    let tmp = dir.join("output.jsonl.tmp");
    let mut out = BufWriter::new(File::create(&tmp).map_err(|e| Error::io(&tmp, e))?);
    let mut errs = Vec::new();
    let mut db_rows = Vec::new();
    let mut source = open_input(&base.input, &base.input_spec, &base.selection)?;
    let (mut items_n, mut rows, mut failed) = (0u64, 0u64, 0u64);
    let mut rerun_failed = Vec::new();
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::io(p, e)
    };
    while let Some(item) = source.next_item() {
        if items_n >= base_done {
            break; // the base's selection ended earlier (limit): keep its extent
        }
        let id = item.id.to_string();
        let seq = items_n;
        items_n += 1;
        let attempts = base_db.get(&id).map_or(1, |r| r.attempts);
        let from_base = base_rows.take(&id)?;
        let (line, state, err_line, attempts) = if wanted.contains(&id) {
            let attempts = attempts + sub_db.get(&id).map_or(1, |r| r.attempts);
            match sub_rows.take(&id)? {
                Some(l) => (Some(l), ItemState::Done, None, attempts),
                None => {
                    rerun_failed.push(id.clone());
                    (
                        None,
                        ItemState::Failed,
                        sub_errors.get(&id).cloned(),
                        attempts,
                    )
                }
            }
        } else {
            match from_base {
                Some(l) => (Some(l), ItemState::Done, None, attempts),
                None => (
                    None,
                    ItemState::Failed,
                    base_errors.get(&id).cloned(),
                    attempts,
                ),
            }
        };
        if let Some(l) = &line {
            out.write_all(l.as_bytes()).map_err(io(&tmp))?;
            out.write_all(b"\n").map_err(io(&tmp))?;
            rows += 1;
        } else {
            failed += 1;
        }
        let (error, error_type) = match (&err_line, state) {
            (Some(l), _) => {
                let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
                (
                    v["error"].as_str().map(str::to_string),
                    v["error_type"].as_str().map(str::to_string),
                )
            }
            (None, ItemState::Failed) => {
                let r = if wanted.contains(&id) {
                    sub_db.get(&id)
                } else {
                    base_db.get(&id)
                };
                (
                    Some(
                        r.and_then(|r| r.error.clone())
                            .unwrap_or_else(|| "no row and no error record".into()),
                    ),
                    r.and_then(|r| r.error_type.clone()),
                )
            }
            _ => (None, None),
        };
        if let Some(l) = err_line {
            errs.extend_from_slice(l.as_bytes());
            errs.push(b'\n');
        }
        let n_chunks = if wanted.contains(&id) {
            sub_db.get(&id)
        } else {
            base_db.get(&id)
        }
        .and_then(|r| r.n_chunks);
        db_rows.push(ItemRow {
            seq,
            id,
            state,
            error,
            error_type,
            attempts,
            updated_at: String::new(),
            n_chunks,
        });
        if db_rows.len() >= 10_000 {
            ItemsDb::open(dir)?.record(&std::mem::take(&mut db_rows))?;
        }
    }
    if let Some(e) = source.take_error() {
        return Err(Error::io(&base.input, e));
    }
    let f = out
        .into_inner()
        .map_err(|e| Error::io(&tmp, e.into_error()))?;
    f.sync_all().map_err(io(&tmp))?;
    let out_len = f.metadata().map_err(io(&tmp))?.len();
    drop(f);
    fs::rename(&tmp, &out_path).map_err(io(&out_path))?;
    rundir::write_atomic(&err_path, &errs)?;
    ItemsDb::open(dir)?.record(&db_rows)?;
    Ok(Collated {
        items: items_n,
        rows,
        failed,
        rerun_failed,
        output_state: SinkState {
            rows,
            files: vec![("output.jsonl".into(), out_len)],
        },
        errors_state: SinkState {
            rows: failed,
            files: vec![(rundir::ERRORS.into(), errs.len() as u64)],
        },
    })
}

/// Two versions side by side.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub a: String,
    pub b: String,
    pub rows_a: u64,
    pub rows_b: u64,
    pub in_both: u64,
    pub only_in_a: u64,
    pub only_in_b: u64,
    /// First 20 of each.
    pub only_in_a_ids: Vec<String>,
    pub only_in_b_ids: Vec<String>,
    /// Items in both whose vectors are bit for bit the same.
    pub identical: u64,
    pub cosine_min: Option<f64>,
    pub cosine_mean: Option<f64>,
    /// 1st percentile: 99% of the items in both are at least this similar.
    pub cosine_p1: Option<f64>,
    pub cosine_p50: Option<f64>,
    /// The most-changed items (lowest cosine first), `detail` of them.
    pub most_changed: Vec<Changed>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Changed {
    pub id: String,
    pub cosine: f64,
    pub text: Option<String>,
}

#[derive(PartialEq)]
struct ByCos(f64, String);
impl Eq for ByCos {}
impl PartialOrd for ByCos {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for ByCos {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0).then_with(|| self.1.cmp(&o.1))
    }
}

#[derive(Deserialize)]
struct VecRow {
    id: crate::item::ItemId,
    embedding: Vec<f32>,
}

fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut d, mut na, mut nb) = (0f64, 0f64, 0f64);
    for (x, y) in a.iter().zip(b) {
        let (x, y) = (f64::from(*x), f64::from(*y));
        d += x * y;
        na += x * x;
        nb += y * y;
    }
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    // sqrt(na * nb) is exactly na for identical vectors, so they compare as exactly 1.
    d / (na * nb).sqrt()
}

/// Compares the outputs of two versions (or any two completed JSONL runs of the same ids).
/// Memory: one offset per item of A, and `detail` texts.
///
/// # Errors
/// Non-JSONL outputs, unreadable files, vectors of different dimensions.
pub fn compare(dir_a: &Path, dir_b: &Path, detail: usize) -> Result<Comparison> {
    let ma = load_metadata(dir_a)?;
    let mb = load_metadata(dir_b)?;
    for (m, d) in [(&ma, dir_a), (&mb, dir_b)] {
        if !m.file_output || m.output_format != OutputFormat::Jsonl {
            return Err(Error::Config(format!(
                "{}: compare reads JSONL outputs; this run wrote {}",
                d.display(),
                if m.file_output {
                    m.output_format.extension()
                } else {
                    "only to a store"
                }
            )));
        }
    }
    let (_, a_len) = covered(dir_a)?;
    let (_, b_len) = covered(dir_b)?;
    // Pass 1: where each id of A is (in the covered part).
    let a_path = Path::new(&ma.output_file);
    let a_len = a_len.unwrap_or(0);
    let mut ra = BufReader::with_capacity(
        1 << 16,
        File::open(a_path).map_err(|e| Error::io(a_path, e))?,
    );
    let mut offsets: HashMap<String, u64> = HashMap::new();
    let mut pos = 0u64;
    let mut line = String::new();
    let mut rows_a = 0u64;
    loop {
        line.clear();
        let n = ra
            .read_line(&mut line)
            .map_err(|e| Error::Config(format!("reading {}: {e}", ma.output_file)))?;
        if n == 0 || pos + n as u64 > a_len {
            break;
        }
        rows_a += 1;
        offsets.entry(row_id(line.trim_end())?).or_insert(pos);
        pos += n as u64;
    }
    // Pass 2: B in order, A sequentially alongside (seeking when the orders differ).
    let mut rb = covered_reader(Path::new(&mb.output_file), Some(b_len.unwrap_or(0)))?;
    ra.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(&ma.output_file, e))?;
    let mut a_pos = 0u64;
    let mut seen: HashSet<String> = HashSet::new();
    let mut cos = Vec::new();
    let mut identical = 0u64;
    let mut only_b = (0u64, Vec::new());
    let mut rows_b = 0u64;
    let mut worst: BinaryHeap<ByCos> = BinaryHeap::new();
    let mut la = String::new();
    loop {
        line.clear();
        let n = rb
            .read_line(&mut line)
            .map_err(|e| Error::Config(format!("reading {}: {e}", mb.output_file)))?;
        if n == 0 {
            break;
        }
        rows_b += 1;
        let b: VecRow = serde_json::from_str(line.trim_end()).map_err(|e| {
            Error::Config(format!(
                "{}: a row is not an embedding: {e}",
                mb.output_file
            ))
        })?;
        let id = b.id.to_string();
        let Some(&off) = offsets.get(&id) else {
            only_b.0 += 1;
            if only_b.1.len() < 20 {
                only_b.1.push(id);
            }
            continue;
        };
        if !seen.insert(id.clone()) {
            continue; // a repeated id: its first row counts
        }
        if off != a_pos {
            ra.seek(SeekFrom::Start(off))
                .map_err(|e| Error::io(&ma.output_file, e))?;
        }
        la.clear();
        let m = ra
            .read_line(&mut la)
            .map_err(|e| Error::Config(format!("reading {}: {e}", ma.output_file)))?;
        a_pos = off + m as u64;
        let a: VecRow = serde_json::from_str(la.trim_end()).map_err(|e| {
            Error::Config(format!(
                "{}: a row is not an embedding: {e}",
                ma.output_file
            ))
        })?;
        if a.embedding.len() != b.embedding.len() {
            return Err(Error::Config(format!(
                "item {id} has {} dimensions in A and {} in B: vectors of different models cannot be compared",
                a.embedding.len(),
                b.embedding.len()
            )));
        }
        let same = a
            .embedding
            .iter()
            .zip(&b.embedding)
            .all(|(x, y)| x.to_bits() == y.to_bits());
        let c = if same {
            1.0
        } else {
            cosine(&a.embedding, &b.embedding)
        };
        identical += u64::from(same);
        cos.push(c);
        if detail > 0 && !same {
            worst.push(ByCos(c, id));
            if worst.len() > detail {
                worst.pop();
            }
        }
    }
    let only_a: Vec<String> = offsets
        .keys()
        .filter(|k| !seen.contains(*k))
        .cloned()
        .collect();
    let mut only_a_ids: Vec<(u64, String)> =
        only_a.iter().map(|k| (offsets[k], k.clone())).collect();
    only_a_ids.sort();
    let mut sorted = cos.clone();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        (!sorted.is_empty()).then(|| sorted[((sorted.len() - 1) as f64 * p).floor() as usize])
    };
    let mut most: Vec<ByCos> = worst.into_sorted_vec();
    most.truncate(detail);
    let texts = if most.is_empty() || mb.input == "-" {
        HashMap::new()
    } else {
        texts_of(&mb, most.iter().map(|c| c.1.clone()).collect())
    };
    Ok(Comparison {
        a: dir_a.display().to_string(),
        b: dir_b.display().to_string(),
        rows_a,
        rows_b,
        in_both: cos.len() as u64,
        only_in_a: only_a.len() as u64,
        only_in_b: only_b.0,
        only_in_a_ids: only_a_ids.into_iter().take(20).map(|(_, k)| k).collect(),
        only_in_b_ids: only_b.1,
        identical,
        cosine_min: sorted.first().copied(),
        cosine_mean: (!cos.is_empty()).then(|| cos.iter().sum::<f64>() / cos.len() as f64),
        cosine_p1: pct(0.01),
        cosine_p50: pct(0.5),
        most_changed: most
            .into_iter()
            .map(|ByCos(c, id)| Changed {
                text: texts.get(&id).cloned(),
                id,
                cosine: c,
            })
            .collect(),
    })
}

/// The texts of some items (first 200 characters), read from the run's input.
fn texts_of(m: &Metadata, ids: HashSet<String>) -> HashMap<String, String> {
    let mut sel = m.selection.clone();
    sel.only = Some(ids);
    let mut out = HashMap::new();
    if let Ok(mut src) = open_input(&m.input, &m.input_spec, &sel) {
        while let Some(item) = src.next_item() {
            if let Ok(t) = item.text {
                out.entry(item.id.to_string())
                    .or_insert_with(|| t.chars().take(200).collect());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_labels_and_version_numbers() {
        assert!(check_name("docs-2026.v2_a").is_ok());
        for bad in ["", "..", ".hidden", "a/b", "a b", &"x".repeat(101)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_label("final").is_ok() && check_label("reviewed-by-ana").is_ok());
        assert!(check_label("two words").is_err() && check_label("").is_err());
        assert_eq!(version_number("v12"), Some(12));
        assert_eq!(version_number("3"), Some(3));
        assert_eq!(version_number("vx"), None);
    }

    #[test]
    fn identical_vectors_have_cosine_exactly_one() {
        let v: Vec<f32> = (0..384)
            .map(|i| ((i * 7919) % 113) as f32 / 97.0 - 0.5)
            .collect();
        assert_eq!(cosine(&v, &v), 1.0);
        let w: Vec<f32> = v.iter().map(|x| -x).collect();
        assert_eq!(cosine(&v, &w), -1.0);
    }

    #[test]
    fn version_folders_are_numbered_and_latest_follows_completed_ones() {
        let root = std::env::temp_dir().join(format!("versions-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let (n0, d0) = create_version_dir(&root, "docs").unwrap();
        let (n1, _) = create_version_dir(&root, "docs").unwrap();
        assert_eq!((n0, n1), (0, 1));
        assert_eq!(versions(&root, "docs").unwrap().len(), 2);
        assert!(latest(&root, "docs").is_none());
        assert!(resolve(&root, "docs", "latest").is_err());
        assert_eq!(resolve(&root, "docs", "v1").unwrap().0, 1);
        assert!(resolve(&root, "docs", "v7").is_err());
        // Without a completed version, latest stays unset.
        point_latest(&d0).unwrap();
        assert!(latest(&root, "docs").is_none());
        assert_eq!(names(&root), vec!["docs".to_string()]);
    }
}
