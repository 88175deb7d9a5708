//! `llama-embed merge`: combines the JSONL outputs of the shards of one input (`--shard K/N`)
//! into one output in the original item order, and checks that every item is there exactly
//! once.
//!
//! Each shard's output is in input order, and an item's shard is a function of its id, so the
//! merge walks the input once (its sha256 must still match) and takes each item's row from the
//! head of its shard's output: no sorting, memory independent of the corpus. An item whose row
//! is not at the head is failed in its shard (it is in that shard's errors file) or missing;
//! rows left over at the end are duplicates or strays. The merged file has the ids, order and
//! rows of one unsharded run, byte for byte in the default exact mode (shards batch their texts
//! differently, which changes no vector: specification/embedding.md).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::input::{open_input, Shard};
use crate::job::{load_metadata, Metadata};
use crate::sink::OutputFormat;

/// What a merge found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MergeReport {
    pub output: PathBuf,
    pub shards: u32,
    /// Items in the input (after the runs' selection, all shards).
    pub items: u64,
    /// Rows written.
    pub rows: u64,
    /// Items that failed in their shard (listed in its errors file).
    pub failed: u64,
    /// Ids with no row and no error (a shard missing, unfinished or damaged). First 100.
    pub missing: Vec<String>,
    pub missing_count: u64,
    /// Ids of rows no input item asked for, or asked for once and present twice. First 100.
    pub duplicated: Vec<String>,
    pub duplicated_count: u64,
    /// Shard numbers no run directory was given for.
    pub absent_shards: Vec<u32>,
}

impl MergeReport {
    pub fn is_complete(&self) -> bool {
        self.missing_count == 0 && self.duplicated_count == 0 && self.absent_shards.is_empty()
    }
}

struct ShardOutput {
    rows: Rows,
    failed: HashSet<String>,
}

/// The rows of a JSONL output in order, each with its id: the head is compared with the item
/// the input walk is at (`merge`, and the collation of a rerun in `versions`).
pub(crate) struct Rows {
    path: PathBuf,
    lines: std::io::Lines<Box<dyn BufRead>>,
    pub head: Option<(String, String)>,
    /// A chunked run's output: an item's rows are `<id>#0`, `<id>#1`, … in a row.
    chunked: bool,
}

/// A file's first `len` bytes (all when `None`): only what a checkpoint covers is final.
pub(crate) fn covered_reader(path: &Path, len: Option<u64>) -> Result<Box<dyn BufRead>> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(match len {
        Some(n) => Box::new(BufReader::with_capacity(1 << 16, std::io::Read::take(f, n))),
        None => Box::new(BufReader::with_capacity(1 << 16, f)),
    })
}

impl Rows {
    pub fn open(path: &Path, len: Option<u64>, chunked: bool) -> Result<Rows> {
        let mut r = Rows {
            path: path.to_path_buf(),
            lines: covered_reader(path, len)?.lines(),
            head: None,
            chunked,
        };
        r.advance()?;
        Ok(r)
    }

    pub fn advance(&mut self) -> Result<()> {
        self.head = match self.lines.next() {
            None => None,
            Some(line) => {
                let line = line.map_err(|e| Error::io(&self.path, e))?;
                let id = crate::rundir::row_id(&line)
                    .map_err(|e| Error::Config(format!("{}: {e}", self.path.display())))?;
                Some((id, line))
            }
        };
        Ok(())
    }

    /// The head row when it is item `id`'s (in a chunked run all its chunks' rows, joined by
    /// newlines), advancing past it.
    pub fn take(&mut self, id: &str) -> Result<Option<String>> {
        if !self.chunked {
            return self.take_row(id);
        }
        let mut rows: Option<String> = None;
        for k in 0.. {
            let Some(line) = self.take_row(&format!("{id}#{k}"))? else {
                break;
            };
            match rows.as_mut() {
                Some(r) => {
                    r.push('\n');
                    r.push_str(&line);
                }
                None => rows = Some(line),
            }
        }
        Ok(rows)
    }

    fn take_row(&mut self, id: &str) -> Result<Option<String>> {
        if self.head.as_ref().is_some_and(|(h, _)| h == id) {
            let line = self.head.take().map(|(_, l)| l);
            self.advance()?;
            return Ok(line);
        }
        Ok(None)
    }
}

fn same(
    what: &str,
    a: &Metadata,
    b: &Metadata,
    dir: &Path,
    f: impl Fn(&Metadata) -> String,
) -> Result<()> {
    if f(a) != f(b) {
        return Err(Error::Config(format!(
            "{} has another {what} than the first run ({} vs {})",
            dir.display(),
            f(b),
            f(a)
        )));
    }
    Ok(())
}

/// Merges the shard runs in `dirs` into `output`.
///
/// # Errors
/// Runs that are not shards of one input with one output format and one set of vector
/// settings, unfinished runs, a changed input, or I/O errors. Missing or duplicated items are
/// not errors here: they are in the report (the CLI exits non-zero on them).
pub fn merge_runs(dirs: &[PathBuf], output: &Path) -> Result<MergeReport> {
    if dirs.is_empty() {
        return Err(Error::Config(
            "give the run directories of the shards".into(),
        ));
    }
    let mut metas = Vec::new();
    for d in dirs {
        metas.push((d.clone(), load_metadata(d)?));
    }
    let first = metas[0].1.clone();
    let count = first.selection.shard.map(|s| s.count).ok_or_else(|| {
        Error::Config(format!(
            "{} is not a shard run (--shard)",
            dirs[0].display()
        ))
    })?;
    let mut shards: BTreeMap<u32, ShardOutput> = BTreeMap::new();
    for (dir, m) in &metas {
        let shard: Shard = m.selection.shard.ok_or_else(|| {
            Error::Config(format!("{} is not a shard run (--shard)", dir.display()))
        })?;
        same("input", &first, m, dir, |m| m.input.clone())?;
        same("input checksum", &first, m, dir, |m| {
            format!("{:?}", m.input_sha256)
        })?;
        same("input format", &first, m, dir, |m| {
            format!("{:?}", m.input_spec)
        })?;
        same("shard count", &first, m, dir, |m| {
            m.selection.shard.map_or(0, |s| s.count).to_string()
        })?;
        if m.vectors.cpu_kernels != first.vectors.cpu_kernels {
            let name = |m: &Metadata| {
                m.vectors
                    .cpu_kernels
                    .clone()
                    .unwrap_or_else(|| "unrecorded".into())
            };
            return Err(Error::Kernels(format!(
                "{} was embedded with the {} CPU kernels and the first shard with the {} kernels; \
                 their vectors differ in the last bits, so they are not merged. Embed every shard \
                 with the same kernels: LLAMA_EMBED_CPU_VARIANT=NAME (a variant all the machines \
                 run, e.g. haswell), then resume or rerun the odd shard",
                dir.display(),
                name(m),
                name(&first)
            )));
        }
        same("vector settings", &first, m, dir, |m| {
            serde_json::to_string(&m.vectors).expect("json")
        })?;
        same("output format", &first, m, dir, |m| {
            format!("{:?}/{:?}", m.output_format, m.dtype)
        })?;
        if m.output_format != OutputFormat::Jsonl || !m.file_output {
            return Err(Error::Config(format!(
                "{}: merge reads JSONL outputs; this run wrote {}",
                dir.display(),
                if m.file_output {
                    format!("{:?}", m.output_format)
                } else {
                    "only to a store (stores need no merge: all shards upsert into one)".into()
                }
            )));
        }
        if m.status != crate::rundir::RunState::Completed {
            return Err(Error::Config(format!(
                "{} is {}, not completed: resume it first (llama-embed embed --resume {0})",
                dir.display(),
                m.status
            )));
        }
        let mut sub = m.selection.clone();
        sub.shard = None;
        let mut f0 = first.selection.clone();
        f0.shard = None;
        if sub != f0 {
            return Err(Error::Config(format!(
                "{} selected other items than the first run (--start/--end/--only/--skip/--limit)",
                dir.display()
            )));
        }
        let out = ShardOutput {
            rows: Rows::open(
                Path::new(&m.output_file),
                None,
                m.vectors.chunking.is_some_and(|c| c.chunk_rows()),
            )?,
            failed: crate::rundir::failed_ids(dir)?,
        };
        if shards.insert(shard.index, out).is_some() {
            return Err(Error::Config(format!(
                "shard {shard} is given twice ({})",
                dir.display()
            )));
        }
    }
    if let Some(expected) = &first.input_sha256 {
        let now = crate::job::input_sha256(&first.input, &first.input_spec)?.unwrap_or_default();
        if &now != expected {
            return Err(Error::Config(format!(
                "{} changed since the shards ran (sha256 {now}, was {expected})",
                first.input
            )));
        }
    }
    let mut selection = first.selection.clone();
    selection.shard = None;
    let mut source = open_input(&first.input, &first.input_spec, &selection)?;

    let mut report = MergeReport {
        output: output.to_path_buf(),
        shards: count,
        absent_shards: (0..count).filter(|k| !shards.contains_key(k)).collect(),
        ..MergeReport::default()
    };
    let tmp = output.with_extension("merging");
    let file = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    let io = |e| Error::io(&tmp, e);
    while let Some(item) = source.next_item() {
        report.items += 1;
        let id = item.id.to_string();
        let k = crate::input::shard_of(&id, count);
        let found = match shards.get_mut(&k) {
            None => false,
            Some(s) => {
                if let Some(line) = s.rows.take(&id)? {
                    w.write_all(line.as_bytes()).map_err(io)?;
                    w.write_all(b"\n").map_err(io)?;
                    report.rows += 1 + line.matches('\n').count() as u64;
                    true
                } else if s.failed.contains(&id) {
                    report.failed += 1;
                    true
                } else {
                    false
                }
            }
        };
        if !found {
            report.missing_count += 1;
            if report.missing.len() < 100 {
                report.missing.push(id);
            }
        }
    }
    if let Some(e) = source.take_error() {
        return Err(Error::io(&first.input, e));
    }
    for s in shards.values_mut() {
        while let Some((id, _)) = s.rows.head.take() {
            report.duplicated_count += 1;
            if report.duplicated.len() < 100 {
                report.duplicated.push(id);
            }
            s.rows.advance()?;
        }
    }
    let file = w
        .into_inner()
        .map_err(|e| Error::io(&tmp, e.into_error()))?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, output).map_err(|e| Error::io(output, e))?;
    Ok(report)
}
