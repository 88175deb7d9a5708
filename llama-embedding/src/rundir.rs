//! The run directory: `metadata.json` (what the run is: input, model + sha256, every setting
//! that changes vectors, status, stats), `checkpoint.json` (how far it got, durable), the
//! output and `errors.jsonl`, and `lock`. Both JSON files carry a sha256 of their own content;
//! a checkpoint is replaced atomically (temp file, fsync, rename, fsync of the directory) and
//! the previous one is kept as `checkpoint.prev.json`, so a damaged checkpoint falls back to the
//! one before it instead of restarting (which would duplicate output).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::sink::SinkState;
use crate::stats::BatchStats;

pub const METADATA: &str = "metadata.json";
pub const CHECKPOINT: &str = "checkpoint.json";
pub const CHECKPOINT_PREV: &str = "checkpoint.prev.json";
pub const ERRORS: &str = "errors.jsonl";
pub const LOCK: &str = "lock";

/// UTC time as RFC 3339 (`2026-11-23T12:00:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

pub fn now() -> String {
    rfc3339(SystemTime::now())
}

/// Seconds since the epoch of an [`rfc3339`] string (for rates and ETAs).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Lower-case hex of bytes (sha256 digests).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `value` with a `checksum` field (sha256 of its canonical JSON without that field),
/// atomically.
///
/// # Errors
/// I/O errors.
pub fn write_checked(path: &Path, value: &impl Serialize) -> Result<()> {
    write_atomic(path, &checked_bytes(value)?)
}

/// The bytes [`write_checked`] writes: pretty JSON with a `checksum` field.
///
/// # Errors
/// A value that is not a JSON object.
pub fn checked_bytes(value: &impl Serialize) -> Result<Vec<u8>> {
    let mut v = serde_json::to_value(value).map_err(|e| Error::Config(e.to_string()))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| Error::Config("a checked record must be a JSON object".into()))?;
    obj.remove("checksum");
    let digest = hex(&Sha256::digest(serde_json::to_vec(obj).expect("json")));
    obj.insert("checksum".into(), Value::String(digest));
    Ok(serde_json::to_vec_pretty(&v).expect("json"))
}

/// temp file + fsync + rename + fsync of the directory.
///
/// # Errors
/// I/O errors.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let io = |e| Error::io(path, e);
    let mut f = File::create(&tmp).map_err(io)?;
    f.write_all(bytes).map_err(io)?;
    f.sync_all().map_err(io)?;
    drop(f);
    fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Why a checked file could not be used.
#[derive(Debug)]
pub enum CheckedError {
    Missing,
    Corrupt(String),
}

/// Reads a file written by [`write_checked`] and verifies its checksum.
///
/// # Errors
/// [`CheckedError::Missing`] or [`CheckedError::Corrupt`] with the reason.
pub fn read_checked<T: DeserializeOwned>(path: &Path) -> Result<T, CheckedError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CheckedError::Missing),
        Err(e) => return Err(CheckedError::Corrupt(e.to_string())),
    };
    parse_checked(&bytes)
}

/// Parses and verifies the bytes of a file written by [`write_checked`] (the fuzz target
/// `checkpoint` enters here).
///
/// # Errors
/// [`CheckedError::Corrupt`] with the reason.
pub fn parse_checked<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CheckedError> {
    let mut v: Value = serde_json::from_slice(bytes)
        .map_err(|e| CheckedError::Corrupt(format!("not JSON: {e}")))?;
    let obj = v
        .as_object_mut()
        .ok_or_else(|| CheckedError::Corrupt("not a JSON object".into()))?;
    let stored = obj
        .remove("checksum")
        .and_then(|c| c.as_str().map(str::to_string))
        .ok_or_else(|| CheckedError::Corrupt("no checksum".into()))?;
    let digest = hex(&Sha256::digest(serde_json::to_vec(obj).expect("json")));
    if digest != stored {
        return Err(CheckedError::Corrupt(
            "checksum mismatch (the file was changed or damaged)".into(),
        ));
    }
    serde_json::from_value(v).map_err(|e| CheckedError::Corrupt(format!("unexpected content: {e}")))
}

/// How far a run got; written only after the outputs it covers are durable.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Items (after selection) whose outcome is in the output or the errors file.
    pub items_done: u64,
    pub output: SinkState,
    pub errors: SinkState,
    /// Counters of everything done so far (all segments of the run).
    pub stats: BatchStats,
    pub written_at: String,
}

/// The run's checkpoint, falling back to the previous one when the current is damaged.
/// Returns the checkpoint and, when a fallback happened, why.
///
/// # Errors
/// [`Error::Config`] when neither checkpoint is usable but one should exist.
pub fn load_checkpoint(dir: &Path) -> Result<(Option<Checkpoint>, Option<String>)> {
    match read_checked::<Checkpoint>(&dir.join(CHECKPOINT)) {
        Ok(c) => Ok((Some(c), None)),
        // A kill between the two renames of save_checkpoint leaves only the previous one.
        Err(CheckedError::Missing) => {
            match read_checked::<Checkpoint>(&dir.join(CHECKPOINT_PREV)) {
                Ok(c) => Ok((Some(c), None)),
                Err(_) => Ok((None, None)),
            }
        }
        Err(CheckedError::Corrupt(why)) => {
            match read_checked::<Checkpoint>(&dir.join(CHECKPOINT_PREV)) {
                Ok(c) => Ok((
                    Some(c),
                    Some(format!(
                        "{CHECKPOINT} is damaged ({why}); using {CHECKPOINT_PREV}"
                    )),
                )),
                Err(e) => Err(Error::Config(format!(
                "{}: {CHECKPOINT} is damaged ({why}) and {CHECKPOINT_PREV} is not usable ({e:?}); \
                 refusing to restart over existing output. Start a new run directory.",
                dir.display()
            ))),
            }
        }
    }
}

/// The part of a run's errors file its checkpoint covers (what is final).
///
/// # Errors
/// A damaged checkpoint with no usable previous one, an unreadable errors file.
pub fn covered_errors(dir: &Path) -> Result<String> {
    let (cp, _) = load_checkpoint(dir)?;
    let covered = cp.map_or(0, |c| c.errors.files.first().map_or(0, |f| f.1)) as usize;
    let path = dir.join(ERRORS);
    let mut text = fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    text.truncate(covered.min(text.len()));
    Ok(text)
}

/// The id of a JSONL row (an output or errors record), as text.
///
/// # Errors
/// A line that is not a JSON object with an `id`.
pub fn row_id(line: &str) -> Result<String> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: crate::item::ItemId,
    }
    let row: IdOnly = serde_json::from_str(line)
        .map_err(|e| Error::Config(format!("a row is not JSON with an id: {e}")))?;
    Ok(row.id.to_string())
}

/// Ids of the failed items a run's checkpoint covers.
///
/// # Errors
/// As [`covered_errors`], and a damaged error record.
pub fn failed_ids(dir: &Path) -> Result<std::collections::HashSet<String>> {
    covered_errors(dir)?
        .lines()
        .map(|l| {
            row_id(l).map_err(|e| Error::Config(format!("{}: {e}", dir.join(ERRORS).display())))
        })
        .collect()
}

/// Writes a checkpoint, keeping the previous one.
///
/// # Errors
/// I/O errors.
pub fn save_checkpoint(dir: &Path, c: &Checkpoint) -> Result<()> {
    let cur = dir.join(CHECKPOINT);
    if cur.exists() {
        fs::rename(&cur, dir.join(CHECKPOINT_PREV)).map_err(|e| Error::io(&cur, e))?;
    }
    write_checked(&cur, c)
}

/// An exclusive lock on a run directory, released when dropped or when the process dies.
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// # Errors
    /// [`Error::Config`] when another process holds the lock.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK);
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {
                let _ = file.set_len(0);
                let _ = (&file).write_all(format!("{}\n", std::process::id()).as_bytes());
                Ok(RunLock { _file: file })
            }
            Err(_) => {
                let pid = fs::read_to_string(&path).unwrap_or_default();
                Err(Error::Config(format!(
                    "{} is in use by another llama-embed process (pid {}); wait for it or use another run directory",
                    dir.display(),
                    pid.trim()
                )))
            }
        }
    }
}

/// The default run directory for an input: `runs/<input stem>-<UTC timestamp>`.
pub fn default_run_dir(input: &str) -> PathBuf {
    let stem = if input == "-" {
        "stdin".to_string()
    } else {
        Path::new(input)
            .file_stem()
            .map_or_else(|| "input".into(), |s| s.to_string_lossy().into_owned())
    };
    let safe: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    let ts = now().replace([':', '-'], "");
    PathBuf::from("runs").join(format!("{safe}-{ts}"))
}

/// Makes a new, empty run directory named `base`, or `base-2`, `base-3`, … when that exists:
/// `mkdir` is atomic, so two runs started in the same second (whose default names are the
/// same) never share one.
///
/// # Errors
/// The parent cannot be made, or a directory cannot be created for another reason.
pub fn claim_dir(base: &Path) -> std::io::Result<PathBuf> {
    if let Some(parent) = base.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    for n in 1u32.. {
        let dir = if n == 1 {
            base.to_path_buf()
        } else {
            let mut name = base.file_name().unwrap_or_default().to_os_string();
            name.push(format!("-{n}"));
            base.with_file_name(name)
        };
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    unreachable!("a free name")
}

/// A run's status in its `metadata.json` (written as the lowercase word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    /// A process is writing it, or one died (the lock tells which).
    Running,
    Completed,
    /// Stopped by a signal or by the error strategy; resumable.
    Stopped,
    /// Ended by an error (its message is recorded); resumable once the cause is fixed.
    Failed,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Completed => "completed",
            RunState::Stopped => "stopped",
            RunState::Failed => "failed",
        }
    }
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// How a version came to be (`VersionInfo::mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VersionMode {
    /// A fresh run.
    Initial,
    /// An initial run continued after an interruption.
    Resume,
    /// A few items re-embedded over a base version.
    Rerun,
}

impl std::fmt::Display for VersionMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            VersionMode::Initial => "initial",
            VersionMode::Resume => "resume",
            VersionMode::Rerun => "rerun",
        })
    }
}

/// What a version is, in its `metadata.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub name: String,
    /// `v0`, `v1`, …
    pub version: String,
    pub mode: VersionMode,
    pub base_version: Option<String>,
    /// draft (default), alpha, beta, rc, final, deprecated or a custom word.
    pub label: String,
    pub notes: Option<String>,
    /// Seconds spent embedding, all segments.
    pub duration_seconds: f64,
    /// Items re-embedded (reruns).
    #[serde(default)]
    pub rerun_items: Option<u64>,
}

impl VersionInfo {
    pub fn number(&self) -> u32 {
        version_number(&self.version).unwrap_or(0)
    }
}

pub fn version_number(s: &str) -> Option<u32> {
    s.strip_prefix('v').unwrap_or(s).parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn two_runs_claiming_the_same_default_name_get_two_directories() {
        let root = std::env::temp_dir().join(format!("claim-{}", std::process::id()));
        let base = root.join("runs/in-20261203T000000Z");
        let a = super::claim_dir(&base).unwrap();
        let b = super::claim_dir(&base).unwrap();
        assert_eq!(a, base);
        assert_eq!(b.file_name().unwrap(), "in-20261203T000000Z-2");
        std::fs::remove_dir_all(&root).unwrap();
    }

    use super::*;

    #[test]
    fn timestamps_round_trip() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_000_000);
        let s = rfc3339(t);
        assert_eq!(s, "2026-11-18T11:06:40Z");
        assert_eq!(parse_rfc3339(&s), Some(1_795_000_000));
    }

    #[test]
    fn damaged_checkpoint_falls_back_to_the_previous_one() {
        let dir = std::env::temp_dir().join(format!("rundir-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        assert!(load_checkpoint(&dir).unwrap().0.is_none());
        let c1 = Checkpoint {
            items_done: 10,
            ..Default::default()
        };
        let c2 = Checkpoint {
            items_done: 20,
            ..Default::default()
        };
        save_checkpoint(&dir, &c1).unwrap();
        save_checkpoint(&dir, &c2).unwrap();
        assert_eq!(load_checkpoint(&dir).unwrap().0.unwrap().items_done, 20);
        // Flip one digit: the checksum catches it.
        let p = dir.join(CHECKPOINT);
        let text = fs::read_to_string(&p)
            .unwrap()
            .replace("\"items_done\": 20", "\"items_done\": 29");
        fs::write(&p, text).unwrap();
        let (c, why) = load_checkpoint(&dir).unwrap();
        assert_eq!(c.unwrap().items_done, 10);
        assert!(why.unwrap().contains("checksum mismatch"));
        // Both damaged: refuse rather than restart.
        fs::write(dir.join(CHECKPOINT_PREV), "{").unwrap();
        let err = load_checkpoint(&dir).unwrap_err().to_string();
        assert!(err.contains("refusing to restart"), "{err}");
    }

    #[test]
    fn a_second_lock_on_the_same_directory_is_refused() {
        let dir = std::env::temp_dir().join(format!("rundir-lock-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let l = RunLock::acquire(&dir).unwrap();
        let err = RunLock::acquire(&dir).err().unwrap().to_string();
        assert!(
            err.contains("in use by another llama-embed process"),
            "{err}"
        );
        drop(l);
        RunLock::acquire(&dir).unwrap();
    }

    #[test]
    fn run_states_and_version_modes_keep_their_words_on_disk() {
        for (state, word) in [
            (RunState::Running, "running"),
            (RunState::Completed, "completed"),
            (RunState::Stopped, "stopped"),
            (RunState::Failed, "failed"),
        ] {
            assert_eq!(
                serde_json::to_string(&state).unwrap(),
                format!("\"{word}\"")
            );
            assert_eq!(
                serde_json::from_str::<RunState>(&format!("\"{word}\"")).unwrap(),
                state
            );
            assert_eq!(format!("{state:<10}|"), format!("{word:<10}|"));
        }
        for (mode, word) in [
            (VersionMode::Initial, "initial"),
            (VersionMode::Resume, "resume"),
            (VersionMode::Rerun, "rerun"),
        ] {
            assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{word}\""));
            assert_eq!(mode.to_string(), word);
        }
        assert!(serde_json::from_str::<RunState>("\"finished\"").is_err());
    }
}
