//! An embedding job over a run directory: input -> [`BatchProcessor`] -> sink + errors file,
//! with checkpoints at batching-window boundaries and exact resume. The CLI's `embed` is a
//! thin layer over [`run_job`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::input::{open_input, InputFormat, InputSpec, Selection};
use crate::item::{EmbeddingResult, ItemOutcome};
use crate::items::{ItemRow, ItemsDb};
use crate::model::{EmbeddingModel, ModelFacts};
use crate::pipeline::{BatchConfig, BatchProcessor, ErrorStrategy};
use crate::rundir::{self, Checkpoint, RunLock};
use crate::rundir::{RunState, VersionInfo, VersionMode};
pub use crate::settings::VectorSettings;
use crate::sink::{
    open_sink, stdout_refusal, Dtype, ErrorFile, OutputFormat, RowShape, Sink, SinkState,
    StdoutSink, STDOUT,
};
use crate::skip::{InputPrefix, SkipFirst};
use crate::stats::{BatchStats, ProgressInfo};
use crate::store::{StoreModel, StoreSpec};

/// The run's `metadata.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metadata {
    pub format_version: u32,
    pub tool: String,
    pub status: RunState,
    pub started_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    pub input: String,
    /// sha256 of the input file (none for stdin); a resume refuses a changed input.
    #[serde(default)]
    pub input_sha256: Option<String>,
    pub input_spec: InputSpec,
    pub selection: Selection,
    /// Items in the input when counted up front (plain text and JSONL files).
    pub total: Option<u64>,
    pub model_path: PathBuf,
    pub model_source: String,
    pub model: ModelFacts,
    pub vectors: VectorSettings,
    pub output_format: OutputFormat,
    pub output_file: String,
    /// False when the run writes only to a store.
    #[serde(default = "yes")]
    pub file_output: bool,
    #[serde(default)]
    pub store: Option<StoreSpec>,
    /// Texts are kept in the store (`--store-text`).
    #[serde(default)]
    pub store_text: bool,
    pub dtype: Dtype,
    pub workers: usize,
    pub threads: usize,
    pub error_strategy: ErrorStrategy,
    pub resumes: u32,
    pub stats: BatchStats,
    pub message: Option<String>,
    /// Set for the versions of a named run (`--run-name`).
    #[serde(default)]
    pub version: Option<VersionInfo>,
    /// The run stopped at a read error of its input: a resume may take the fixed file if the
    /// items its checkpoint covers are the same (`skip.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_prefix: Option<InputPrefix>,
}

fn yes() -> bool {
    true
}

/// A job to run (fresh, or resuming the run directory).
pub struct EmbedJob {
    pub input: String,
    pub input_spec: InputSpec,
    pub selection: Selection,
    pub output_format: OutputFormat,
    pub dtype: Dtype,
    pub run_dir: PathBuf,
    /// Where the output goes; default `RUN_DIR/output.EXT`.
    pub output: Option<PathBuf>,
    /// Write the output file (false: only the store).
    pub file_output: bool,
    /// A vector store the results also go to. `config.keep_text` keeps texts in it.
    pub store: Option<StoreSpec>,
    pub config: BatchConfig,
    pub model: Arc<EmbeddingModel>,
    pub model_source: String,
    /// Checkpoint after at least this many items (at the next window boundary) ...
    pub save_every: Option<u64>,
    /// ... or after this much time.
    pub save_interval: Duration,
    pub total: Option<u64>,
    /// Version information of a named run (fresh runs; a resume keeps the stored one).
    pub version: Option<VersionInfo>,
}

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobEnd {
    Completed,
    /// Stopped by the error strategy.
    StoppedByErrors,
    /// Stopped by a signal (SIGINT/SIGTERM) after a final checkpoint.
    Interrupted,
}

/// What a job did.
#[derive(Debug, Clone)]
pub struct JobReport {
    pub end: JobEnd,
    /// Counters over all segments of the run; timings of this segment.
    pub stats: BatchStats,
    pub run_dir: PathBuf,
    /// The output file, when the run writes one.
    pub output: Option<PathBuf>,
    /// The store, as `sqlite:PATH` or a password-less PostgreSQL URL.
    pub store: Option<String>,
    pub errors: PathBuf,
    /// Items already done when this segment started (resume).
    pub resumed_over: u64,
    pub message: Option<String>,
}

/// The vector settings a run of `config` on `model` records (and `serve` reports).
///
/// # Errors
/// The model's refusals, its sha256, the kernels.
pub fn vector_settings(model: &EmbeddingModel, config: &BatchConfig) -> Result<VectorSettings> {
    Ok(VectorSettings {
        model_sha256: model.sha256()?,
        embed: config.embed.clone(),
        pooling: model.effective_pooling(&config.embed)?,
        max_tokens: model.max_tokens(&config.embed)?,
        batch_size: config.batch_size,
        window: config.window,
        sort_by_length: config.sort_by_length,
        token_budget: config.effective_budget(),
        token_align: config.effective_align(),
        flash_attention: config.mode.flash_attention(),
        mode: Some(config.mode),
        cpu_kernels: Some(crate::kernels::kernels()?.variant.clone()),
        chunking: config.chunking,
    })
}

/// The digest of what a run reads, recorded so that a resume, merge or rerun can tell a
/// changed input: the file's sha256, or for a directory [`crate::files::listing_sha256`];
/// `None` for stdin.
///
/// # Errors
/// The input cannot be read.
pub fn input_sha256(path: &str, spec: &InputSpec) -> Result<Option<String>> {
    match (path, spec.format) {
        ("-", _) => Ok(None),
        (_, InputFormat::Files) => {
            crate::files::listing_sha256(Path::new(path), &spec.globs).map(Some)
        }
        _ => crate::resolve::file_sha256(Path::new(path)).map(Some),
    }
}

/// Before the model of a resumed run (or a retry, or a rerun of it) is loaded: asks for the
/// CPU kernels its vectors were made with, so that the continued run gives the same bits. A run
/// that recorded none (made before kernels were chosen at run time) gets a warning.
///
/// # Errors
/// [`Error::Kernels`] when other kernels are loaded already.
pub fn use_recorded_kernels(stored: &VectorSettings) -> Result<()> {
    match &stored.cpu_kernels {
        Some(name) => match crate::kernels::requested_variant() {
            Some(asked) if asked != *name => Err(Error::Kernels(format!(
                "cannot continue this run with the {asked} CPU kernels: its vectors were made \
                 with the {name} kernels (vectors differ in their last bits between kernel \
                 variants); leave out --cpu-variant / LLAMA_EMBED_CPU_VARIANT to use {name}"
            ))),
            _ => crate::kernels::request_variant(name),
        },
        None => {
            eprintln!(
                "llama-embed: this run recorded no CPU kernels (it was made before they were chosen \
                 at run time); its new vectors may differ from the earlier ones in the last bits"
            );
            Ok(())
        }
    }
}

/// On resume: the input must be the one the run read, unless the run stopped at a read error
/// (a corrupt `.gz`, a truncated file) and the file was fixed since; then the digest its
/// skipped items must match (`skip.rs`).
fn check_input_unchanged(meta: &mut Metadata) -> Result<Option<InputPrefix>> {
    let Some(expected) = meta.input_sha256.clone() else {
        return Ok(None);
    };
    let now = input_sha256(&meta.input, &meta.input_spec)?.unwrap_or_default();
    if now == expected {
        return Ok(None);
    }
    let Some(prefix) = meta.input_prefix.take() else {
        return Err(Error::Config(format!(
            "cannot resume: {} changed since the run started (sha256 {now}, was {expected}); \
             resuming would mix two inputs. Start a new run, or use --retry-failed for fixed items",
            meta.input
        )));
    };
    meta.input_sha256 = Some(now);
    Ok(Some(prefix))
}

/// After a read error: the digest of the items the last checkpoint covers, read again.
fn prefix_of(meta: &Metadata, items: u64) -> Option<InputPrefix> {
    let mut source = open_input(&meta.input, &meta.input_spec, &meta.selection).ok()?;
    crate::skip::digest(source.as_mut(), items)
}

/// A read error that ended the input, named with the file and where it stopped; `true` when it
/// was one (the run may then resume once the file is fixed).
fn name_input_error(e: Error, input: &str, done: u64) -> (Error, bool) {
    match e {
        Error::Io { path, error } if path.as_os_str() == "input" => (
            Error::Io {
                path: PathBuf::from(input),
                error: std::io::Error::new(
                    error.kind(),
                    format!(
                        "{error} (reading stopped after item {done}; the items the last checkpoint covers are kept: fix the file and resume)"
                    ),
                ),
            },
            true,
        ),
        e => (e, false),
    }
}

/// Adds this segment's counters to those of earlier segments.
fn merged(before: &BatchStats, now: &BatchStats) -> BatchStats {
    let mut s = now.clone();
    s += before;
    s
}

/// Loads the metadata of an existing run.
///
/// # Errors
/// A missing or damaged `metadata.json`.
pub fn load_metadata(dir: &Path) -> Result<Metadata> {
    rundir::read_checked(&dir.join(rundir::METADATA)).map_err(|e| {
        Error::Config(format!(
            "{}: cannot use {} ({})",
            dir.display(),
            rundir::METADATA,
            match e {
                rundir::CheckedError::Missing =>
                    "it does not exist: is this a run directory?".to_string(),
                rundir::CheckedError::Corrupt(why) => why,
            }
        ))
    })
}

/// Checks that a resumed run would produce the same vectors in the same order.
///
/// # Errors
/// [`Error::Config`] naming the first difference.
pub fn check_resumable(stored: &VectorSettings, now: &VectorSettings) -> Result<()> {
    if stored.model_sha256 != now.model_sha256 {
        return Err(Error::Config(format!(
            "cannot resume: the run used the model with sha256 {}, this one is {}",
            stored.model_sha256, now.model_sha256
        )));
    }
    if let (Some(was), Some(is)) = (&stored.cpu_kernels, &now.cpu_kernels) {
        if was != is {
            return Err(Error::Kernels(format!(
                "cannot resume: the run's vectors were made with the {was} CPU kernels and this \
                 process runs the {is} kernels (vectors differ in their last bits between kernel \
                 variants); run with LLAMA_EMBED_CPU_VARIANT={was} on a CPU that has them"
            )));
        }
    }
    let a = serde_json::to_value(stored).expect("json");
    let b = serde_json::to_value(now).expect("json");
    for (k, v) in a.as_object().expect("object") {
        if b.get(k) != Some(v) {
            return Err(Error::Config(format!(
                "cannot resume: setting {k} was {v} in the run and is {} now (it changes the vectors)",
                b.get(k).unwrap_or(&serde_json::Value::Null)
            )));
        }
    }
    // Absent from runs that did not chunk, so not seen above.
    if stored.chunking != now.chunking {
        return Err(Error::Config(format!(
            "cannot resume: the run's chunking was {:?} and is {:?} now (it changes the vectors)",
            stored.chunking, now.chunking
        )));
    }
    Ok(())
}

/// Runs (or resumes) a job. `progress` is called with progress; `stop` set (by a signal
/// handler) makes the job finish the current window, checkpoint and return
/// [`JobEnd::Interrupted`].
///
/// # Errors
/// Setup errors (run directory in use, unreadable input, resume mismatch) and fatal run errors.
/// Outputs written before a fatal error stay covered by the last checkpoint. A version's job
/// (`EmbedJob::version`) is followed by `versions::after_run` (the layer above), which points `latest`.
pub fn run_job(
    job: EmbedJob,
    resume: bool,
    progress: Option<crate::stats::ProgressCallback>,
    stop: Arc<AtomicBool>,
) -> Result<JobReport> {
    let segment_start = Instant::now();
    if job.output.as_ref().is_some_and(|p| p.as_os_str() == STDOUT) {
        if let Some(why) = stdout_refusal(job.output_format) {
            return Err(Error::Config(why));
        }
    }
    let dir = job.run_dir.clone();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let _lock = RunLock::acquire(&dir)?;
    let settings = vector_settings(&job.model, &job.config)?;
    let output_file = match &job.output {
        Some(p) if p.as_os_str() == STDOUT => PathBuf::from(STDOUT),
        Some(p) => absolute(p)?,
        None => absolute(&dir.join(format!("output.{}", job.output_format.extension())))?,
    }
    .to_string_lossy()
    .into_owned();

    let (mut meta, checkpoint, verify_skipped) =
        start_metadata(&job, &dir, resume, &settings, &output_file)?;
    // A resume uses the stored input description and output choice.
    let (input, input_spec, selection, format, dtype, output_file) = if resume {
        meta.resumes += 1;
        meta.status = RunState::Running;
        if let Some(v) = meta
            .version
            .as_mut()
            .filter(|v| v.mode == VersionMode::Initial)
        {
            v.mode = VersionMode::Resume;
        }
        (
            meta.input.clone(),
            meta.input_spec.clone(),
            meta.selection.clone(),
            meta.output_format,
            meta.dtype,
            meta.output_file.clone(),
        )
    } else {
        (
            job.input.clone(),
            job.input_spec.clone(),
            job.selection.clone(),
            job.output_format,
            job.dtype,
            output_file,
        )
    };
    let job_json = serde_json::json!({
        "input": input,
        "model": meta.model_path,
        "model_sha256": settings.model_sha256,
        "started_at": meta.started_at,
        "settings": settings,
    });
    let (sinks, output_path) = open_outputs(
        &job,
        &meta,
        &settings,
        (format, dtype, &output_file),
        &job_json,
        checkpoint.as_ref(),
    )?;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::io(p, e)
    };
    let errors = ErrorFile::open(&dir, rundir::ERRORS, checkpoint.as_ref().map(|c| &c.errors))
        .map_err(io(&dir.join(rundir::ERRORS)))?;
    let before = checkpoint.clone().unwrap_or_default();
    let start = before.items_done;
    // Per-item states: rows a kill left past the checkpoint are redone.
    let mut db = ItemsDb::open(&dir)?;
    db.reconcile(start)?;
    let mut out = Durable {
        dir: dir.clone(),
        sinks: Outputs(sinks),
        errors,
        pending: Vec::with_capacity(job.config.batch_size),
        db,
        rows: Vec::new(),
    };
    // Make the empty (or truncated-to-checkpoint) state durable before any new work.
    let mut last = out.checkpoint(start, &before.stats)?;
    if resume {
        // Status and resume count changed above; a fresh run's metadata is already written.
        rundir::write_checked(&dir.join(rundir::METADATA), &meta)?;
    }

    let source = open_input(&input, &input_spec, &selection)?;
    let source = Box::new(SkipFirst::new(source, start, verify_skipped));
    let config = job
        .config
        .clone()
        .with_keep_text(meta.store.is_some() && meta.store_text)
        .with_key_settings(Some(meta.vectors.key_settings()));
    let mut processor = BatchProcessor::new(job.model.clone(), config)?;
    if let Some(cb) = progress {
        processor.set_progress_callback(cb);
    }
    let total = meta.total;
    let mut run =
        processor.process_items_from(source, total.map(|t| t.saturating_sub(start)), start)?;

    let (mut end, fatal) = drive(
        &job,
        &mut run,
        &mut out,
        &mut meta,
        (&before.stats, &mut last),
        &stop,
    )?;
    let message = match fatal {
        None => None,
        Some(e @ Error::ErrorLimit { .. }) => {
            end = JobEnd::StoppedByErrors;
            Some(e.to_string())
        }
        Some(e) => {
            // Keep what is consistent: the failed window is redone on resume.
            meta.status = RunState::Failed;
            meta.message = Some(e.to_string());
            meta.updated_at = rundir::now();
            let _ = rundir::write_checked(&dir.join(rundir::METADATA), &meta);
            return Err(e);
        }
    };
    let done = run.emitted();
    drop(run);
    let stats = merged(&before.stats, &processor.stats());
    if end == JobEnd::Completed {
        out.write_pending()?;
        out.sinks.each(|s| s.finish(&stats.to_json()))?;
        last = out.checkpoint(done, &stats)?;
        out.sinks.each(|s| s.cleanup())?;
        meta.status = RunState::Completed;
        meta.finished_at = Some(rundir::now());
    } else if end == JobEnd::StoppedByErrors {
        // Everything up to the failure is consistent (in order): keep it.
        last = out.checkpoint(done, &stats)?;
        meta.status = RunState::Stopped;
    } else {
        meta.status = RunState::Stopped;
    }
    meta.updated_at = rundir::now();
    meta.stats = if end == JobEnd::Interrupted {
        last.stats.clone()
    } else {
        stats.clone()
    };
    meta.message = message.clone();
    if let Some(v) = meta.version.as_mut() {
        v.duration_seconds += segment_start.elapsed().as_secs_f64();
    }
    rundir::write_checked(&dir.join(rundir::METADATA), &meta)?;
    Ok(JobReport {
        end,
        stats: meta.stats.clone(),
        output: meta.file_output.then_some(output_path),
        store: meta.store.as_ref().map(StoreSpec::display),
        errors: dir.join(rundir::ERRORS),
        run_dir: dir,
        resumed_over: start,
        message,
    })
}

/// The run's outcomes into its outputs, with a checkpoint (and the metadata) at a window
/// boundary whenever one is due, until the input ends, `stop` is set or an error ends it:
/// how it ended, and the error that did.
fn drive(
    job: &EmbedJob,
    run: &mut crate::pipeline::Run,
    out: &mut Durable,
    meta: &mut Metadata,
    (before, last): (&BatchStats, &mut Checkpoint),
    stop: &AtomicBool,
) -> Result<(JobEnd, Option<Error>)> {
    let (dir, window) = (out.dir.clone(), job.config.window as u64);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::io(p, e)
    };
    let mut since_save = Instant::now();
    let mut items_since_save = 0u64;
    let mut end = JobEnd::Completed;
    let mut fatal: Option<Error> = None;
    loop {
        let Some(outcome) = run.next() else { break };
        // A chunked item's rows come one chunk at a time: its state and any checkpoint wait
        // for its last chunk, so a checkpoint never splits an item.
        let ends_item = outcome.as_ref().is_ok_and(ItemOutcome::ends_item);
        if let (Ok(o), true) = (&outcome, ends_item) {
            out.rows.push(ItemRow::of(o));
        }
        match outcome {
            Ok(ItemOutcome::Embedded(r)) => {
                out.pending.push(r);
                if out.pending.len() >= 256 {
                    out.write_pending()?;
                }
            }
            Ok(ItemOutcome::Failed(f)) => out
                .errors
                .write(&f)
                .map_err(io(&dir.join(rundir::ERRORS)))?,
            Err(e) => {
                let (e, ended_early) = name_input_error(e, &meta.input, run.emitted());
                if ended_early {
                    meta.input_prefix = prefix_of(meta, last.items_done);
                }
                fatal = Some(e);
                break;
            }
        }
        if !ends_item {
            continue;
        }
        items_since_save += 1;
        let done = run.emitted();
        // Checkpoints only at window boundaries: a resume from here batches like the original.
        if done.is_multiple_of(window) {
            let stopping = stop.load(Ordering::Relaxed);
            let due = job
                .save_every
                .map_or(since_save.elapsed() >= job.save_interval, |n| {
                    items_since_save >= n
                });
            if due || stopping {
                let stats = merged(before, run.stats());
                *last = out.checkpoint(done, &stats)?;
                since_save = Instant::now();
                items_since_save = 0;
                meta.updated_at = rundir::now();
                meta.stats = stats;
                rundir::write_checked(&dir.join(rundir::METADATA), &*meta)?;
            }
            if stopping {
                end = JobEnd::Interrupted;
                run.cancel();
                break;
            }
        }
    }
    Ok((end, fatal))
}

/// A fresh run's metadata, written; or a resumed run's, checked against `settings` and its
/// input, with its checkpoint and what to verify of the input it skips.
fn start_metadata(
    job: &EmbedJob,
    dir: &Path,
    resume: bool,
    settings: &VectorSettings,
    output_file: &str,
) -> Result<(Metadata, Option<Checkpoint>, Option<InputPrefix>)> {
    let mut verify_skipped = None;
    let (meta, checkpoint) = if resume {
        let mut meta = load_metadata(dir)?;
        check_resumable(&meta.vectors, settings)?;
        if meta.status == RunState::Completed {
            return Err(Error::Config(format!(
                "{} is already complete; nothing to resume",
                dir.display()
            )));
        }
        verify_skipped = check_input_unchanged(&mut meta)?;
        let (cp, note) = rundir::load_checkpoint(dir)?;
        if let Some(n) = note {
            eprintln!("llama-embed: {n}");
        }
        (meta, cp)
    } else {
        if dir.join(rundir::METADATA).exists() {
            return Err(Error::Config(format!(
                "{} already holds a run; resume it with --resume {0}, or choose another --run-dir",
                dir.display()
            )));
        }
        let now = rundir::now();
        let meta = Metadata {
            format_version: 1,
            tool: format!("llama-embed {}", env!("CARGO_PKG_VERSION")),
            status: RunState::Running,
            started_at: now.clone(),
            updated_at: now,
            finished_at: None,
            input: job.input.clone(),
            input_sha256: input_sha256(&job.input, &job.input_spec)?,
            input_spec: job.input_spec.clone(),
            selection: job.selection.clone(),
            total: job.total,
            model_path: job.model.path().to_path_buf(),
            model_source: job.model_source.clone(),
            model: job.model.facts().clone(),
            vectors: settings.clone(),
            output_format: job.output_format,
            output_file: output_file.to_string(),
            file_output: job.file_output,
            store: job.store.clone(),
            store_text: job.config.keep_text,
            dtype: job.dtype,
            workers: job.config.workers,
            threads: job.config.threads(),
            error_strategy: job.config.error_strategy,
            resumes: 0,
            stats: BatchStats::default(),
            message: None,
            version: job.version.clone(),
            input_prefix: None,
        };
        rundir::write_checked(&dir.join(rundir::METADATA), &meta)?;
        (meta, None)
    };
    Ok((meta, checkpoint, verify_skipped))
}

/// The outputs and where each writes, as named in errors.
type Sinks = Vec<(PathBuf, Box<dyn Sink>)>;

/// Opens the run's output file (or stdout) and store, at `checkpoint` for a resume; returns
/// them and the output file's path.
fn open_outputs(
    job: &EmbedJob,
    meta: &Metadata,
    settings: &VectorSettings,
    (format, dtype, output_file): (OutputFormat, Dtype, &str),
    job_json: &serde_json::Value,
    checkpoint: Option<&Checkpoint>,
) -> Result<(Sinks, PathBuf)> {
    let dims = settings.embed.output_dimensions(job.model.dimensions());
    let output_path = PathBuf::from(&output_file);
    let out_dir = output_path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let out_name = output_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::Config(format!("{output_file} is not a file path")))?;
    std::fs::create_dir_all(&out_dir).map_err(|e| Error::io(&out_dir, e))?;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::io(p, e)
    };
    let mut sinks: Sinks = Vec::new();
    if meta.file_output && output_file == STDOUT {
        let state = checkpoint.map(|c| &c.output);
        sinks.push((output_path.clone(), Box::new(StdoutSink::new(dtype, state))));
    } else if meta.file_output {
        sinks.push((
            output_path.clone(),
            open_sink(
                format,
                &out_dir,
                &out_name,
                RowShape {
                    dims,
                    dtype,
                    chunked: meta.vectors.chunking.is_some_and(|c| c.chunk_rows()),
                },
                job_json,
                checkpoint.map(|c| &c.output),
            )
            .map_err(io(&output_path))?,
        ));
    }
    if let Some(spec) = &meta.store {
        if dtype != Dtype::F32 {
            return Err(Error::Config(format!(
                "stores keep float32 vectors; --dtype {dtype:?} applies to files only"
            )));
        }
        let model = StoreModel {
            model_sha256: settings.model_sha256.clone(),
            model_path: job.model.path().to_path_buf(),
            dims,
            settings: crate::store::store_settings(settings),
        };
        sinks.push((
            PathBuf::from(spec.display()),
            crate::store::open_store_sink(spec, &model, checkpoint.map(|c| &c.output))?,
        ));
    }
    if sinks.is_empty() {
        return Err(Error::Config(
            "the run has neither an output file nor a store".into(),
        ));
    }
    Ok((sinks, output_path))
}

/// The run's outputs, the file and/or the store, each with the name its errors carry (so a
/// full disk under the output file names that file, not the run directory).
struct Outputs(Vec<(PathBuf, Box<dyn Sink>)>);

impl Outputs {
    fn each(&mut self, mut f: impl FnMut(&mut dyn Sink) -> std::io::Result<()>) -> Result<()> {
        for (name, sink) in &mut self.0 {
            f(sink.as_mut()).map_err(|e| Error::io(name.as_path(), e))?;
        }
        Ok(())
    }

    /// Makes every output durable: the rows are the first output's, the files all of theirs.
    fn flush(&mut self) -> Result<SinkState> {
        let mut state = SinkState::default();
        for (i, (name, sink)) in self.0.iter_mut().enumerate() {
            let st = sink.flush().map_err(|e| Error::io(name.as_path(), e))?;
            if i == 0 {
                state.rows = st.rows;
            }
            state.files.extend(st.files);
        }
        Ok(state)
    }
}

/// What a checkpoint covers, made durable in this order: the outputs, the errors file, the
/// item states, then the checkpoint itself.
struct Durable {
    dir: PathBuf,
    sinks: Outputs,
    errors: ErrorFile,
    /// Embedded rows not yet handed to the sink.
    pending: Vec<EmbeddingResult>,
    db: ItemsDb,
    /// Item states since the last checkpoint.
    rows: Vec<ItemRow>,
}

impl Durable {
    fn write_pending(&mut self) -> Result<()> {
        let pending = &self.pending;
        self.sinks.each(|s| s.write_batch(pending))?;
        self.pending.clear();
        Ok(())
    }

    /// Outputs durable, then the item states, then the checkpoint that covers both.
    fn checkpoint(&mut self, done: u64, stats: &BatchStats) -> Result<Checkpoint> {
        self.write_pending()?;
        let c = Checkpoint {
            items_done: done,
            output: self.sinks.flush()?,
            errors: self
                .errors
                .flush()
                .map_err(|e| Error::io(self.dir.join(rundir::ERRORS), e))?,
            stats: stats.clone(),
            written_at: rundir::now(),
        };
        self.db.record(&self.rows)?;
        self.rows.clear();
        rundir::save_checkpoint(&self.dir, &c)?;
        Ok(c)
    }
}

fn absolute(p: &Path) -> Result<PathBuf> {
    std::path::absolute(p).map_err(|e| Error::io(p, e))
}

/// Progress of a run directory, for `llama-embed status`.
#[derive(Debug, Clone, Serialize)]
pub struct RunStatus {
    pub run_dir: PathBuf,
    pub status: RunState,
    pub started_at: String,
    pub last_update: String,
    pub total: Option<u64>,
    pub done: u64,
    pub embedded: u64,
    pub failed: u64,
    pub remaining: Option<u64>,
    pub texts_per_second: Option<f64>,
    pub eta_seconds: Option<f64>,
    pub output: Option<PathBuf>,
    pub store: Option<String>,
    pub errors: PathBuf,
    /// Per-item states the checkpoint covers (`items.db`; absent for older runs).
    pub items: Option<crate::items::ItemCounts>,
    pub version: Option<VersionInfo>,
    pub note: Option<String>,
}

/// Reads the status of a run directory.
///
/// # Errors
/// A missing or damaged run directory.
pub fn run_status(dir: &Path) -> Result<RunStatus> {
    let meta = load_metadata(dir)?;
    let (cp, note) = rundir::load_checkpoint(dir)?;
    let cp = cp.unwrap_or_default();
    let last = cp.written_at.clone();
    let elapsed = match (
        rundir::parse_rfc3339(&meta.started_at),
        rundir::parse_rfc3339(&last),
    ) {
        (Some(a), Some(b)) if b > a => Some((b - a) as f64),
        _ => None,
    };
    let rate = elapsed
        .filter(|_| cp.items_done > 0)
        .map(|e| cp.items_done as f64 / e);
    let remaining = meta.total.map(|t| t.saturating_sub(cp.items_done));
    Ok(RunStatus {
        run_dir: dir.to_path_buf(),
        status: meta.status,
        started_at: meta.started_at,
        last_update: last,
        total: meta.total,
        done: cp.items_done,
        embedded: cp.stats.texts_succeeded,
        failed: cp.stats.texts_failed,
        remaining,
        texts_per_second: rate,
        eta_seconds: match (remaining, rate) {
            (Some(r), Some(rate)) if rate > 0.0 => Some(r as f64 / rate),
            _ => None,
        },
        output: meta.file_output.then(|| PathBuf::from(&meta.output_file)),
        store: meta.store.as_ref().map(StoreSpec::display),
        errors: dir.join(rundir::ERRORS),
        items: crate::items::counts(dir, cp.items_done)?,
        version: meta.version.clone(),
        note,
    })
}

/// Formats a progress line for logs (not a terminal).
pub fn progress_line(p: &ProgressInfo) -> String {
    let total = p.total.map_or_else(String::new, |t| format!("/{t}"));
    let eta = p
        .eta_seconds
        .map_or_else(String::new, |e| format!(", ETA {:.0}s", e));
    format!(
        "llama-embed: {}{total} items, {} failed, {:.0} texts/s, {:.0} tokens/s, {} MB{eta}",
        p.done, p.failed, p.texts_per_second, p.tokens_per_second, p.memory_mb
    )
}
