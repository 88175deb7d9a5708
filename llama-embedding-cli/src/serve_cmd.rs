//! `llama-embed serve`: the command line turned into a [`ServeConfig`]; the server itself is
//! `llama_embedding::serve`.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use llama_embedding::job;
use llama_embedding::presets::Role;
use llama_embedding::serve::{self, Limits, ServeConfig, Stopped};
use llama_embedding::store::{self, StoreSpec};
use llama_embedding::{BatchConfig, EmbedOptions, EmbeddingModel};

use crate::args::ServeArgs;
use crate::commands::store_arg;
use crate::common::{embed_options, load_model, plan_flags, thread_flags, Usage};
use crate::exit::EXIT_OK;

pub fn serve(a: ServeArgs) -> Result<u8> {
    let store = a.store.as_deref().map(store_arg).transpose()?;
    let (model_spec, embed, base) = settings_source(&a, store.as_ref())?;
    let (model, source) = load_model(model_spec.as_deref(), &a.model, true)?;
    let embed = query_options(&a, embed, &model)?;
    let mut prompts = model.preset().prompts.clone();
    prompts.extend(named_prompts(&a.named_prompt)?);
    let config = ServeConfig {
        batch: batch_config(&a, embed, base)?,
        limits: Limits {
            max_body_bytes: a.max_body_bytes,
            max_inputs: a.max_inputs,
            max_queue: a.max_queue.max(a.max_inputs),
            request_timeout_ms: a.request_timeout_ms,
            batch_wait_ms: a.batch_wait_ms,
        },
        prompts,
        store,
        model_name: model_spec.unwrap_or_else(|| {
            let stem = model.path().file_stem().unwrap_or_default();
            stem.to_string_lossy().into_owned()
        }),
        model_source: source,
    };
    if let Some(dir) = &a.like {
        check_like(dir, &model.sha256()?)?;
    }
    let service = serve::start(model, &config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let grace = Duration::from_secs(a.shutdown_grace_s);
    let stopped = runtime.block_on(async {
        let addr = format!("{}:{}", a.host, a.port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        eprintln!(
            "llama-embed serve: listening on http://{} ({}, {} dimensions, {} mode)",
            listener.local_addr()?,
            config.model_name,
            service.dimensions(),
            config.batch.mode
        );
        anyhow::Ok(serve::serve(service, listener, stop_signal(), grace).await?)
    })?;
    if stopped == Stopped::GraceExpired {
        eprintln!("llama-embed serve: stopped after {grace:?} with requests still open");
        // The open requests' engine work is abandoned, not waited for.
        std::process::exit(i32::from(EXIT_OK));
    }
    eprintln!("llama-embed serve: stopped; every open request was answered");
    Ok(EXIT_OK)
}

/// Where the vector settings come from: the model to load, its options, and the batch plan
/// to start from (a run's with --like, a store's options with --store alone, else the flags).
fn settings_source(
    a: &ServeArgs,
    store: Option<&StoreSpec>,
) -> Result<(Option<String>, EmbedOptions, BatchConfig)> {
    if let Some(dir) = &a.like {
        let m = job::load_metadata(dir)?;
        let model = a
            .model
            .model
            .clone()
            .unwrap_or_else(|| m.model_path.to_string_lossy().into_owned());
        let base = m
            .vectors
            .apply_to(BatchConfig::default())
            .with_chunking(None);
        return Ok((Some(model), m.vectors.embed.clone(), base));
    }
    if let Some(spec) = store {
        let stored = store::store_model(spec, None)?;
        let mut embed: EmbedOptions = serde_json::from_value(stored.settings["embed"].clone())
            .context("reading the store's vector settings")?;
        if let Some(p) = &a.model.prefix {
            embed.prefix = Some(p.clone());
        }
        let model = a
            .model
            .model
            .clone()
            .unwrap_or_else(|| stored.model_path.to_string_lossy().into_owned());
        return Ok((Some(model), embed, BatchConfig::default()));
    }
    Ok((
        a.model.model.clone(),
        embed_options(&a.model)?,
        BatchConfig::default(),
    ))
}

/// Requests get the model's query prompt by default (or --prompt/--prefix); settings taken
/// from a run or store keep a free --prefix but not a named document prompt.
fn query_options(
    a: &ServeArgs,
    mut embed: EmbedOptions,
    model: &EmbeddingModel,
) -> Result<EmbedOptions> {
    if embed.prompt.as_deref().is_some_and(|p| p != "none") {
        embed.prefix = None;
        embed.prompt = None;
    }
    if a.model.prompt.is_some() {
        embed.prompt = a.model.prompt.clone();
        embed.prefix = None;
    }
    Ok(model.resolve_options(
        embed,
        Role::Query,
        a.model.force_dimensions || a.like.is_some() || a.store.is_some(),
    )?)
}

/// The engine plan: the base's, with the flags given (the mode only without --like).
fn batch_config(a: &ServeArgs, embed: EmbedOptions, base: BatchConfig) -> Result<BatchConfig> {
    let config = base.with_embed(embed).with_progress(false);
    let config = plan_flags(config, &a.engine, a.like.is_none())?;
    let config = thread_flags(config, &a.engine);
    config.validate()?;
    Ok(config)
}

/// `NAME=TEXT` pairs.
fn named_prompts(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for p in pairs {
        let Some((name, text)) = p.split_once('=').filter(|(n, _)| !n.is_empty()) else {
            return Err(Usage(format!("--named-prompt {p:?}: write NAME=TEXT")).into());
        };
        out.insert(name.to_string(), text.to_string());
    }
    Ok(out)
}

/// A --like run must have been made with the model being served; kernels that differ are
/// named (vectors then differ in their last bits).
fn check_like(dir: &std::path::Path, sha256: &str) -> Result<()> {
    let m = job::load_metadata(dir)?;
    if m.vectors.model_sha256 != sha256 {
        bail!(
            "{} was embedded with the model of sha256 {}, not this one ({sha256})",
            dir.display(),
            m.vectors.model_sha256
        );
    }
    let now = llama_embedding::kernels::kernels()?.variant.clone();
    if let Some(k) = m.vectors.cpu_kernels.as_ref().filter(|k| **k != now) {
        eprintln!(
            "llama-embed serve: warning: {} was embedded with the {k} CPU kernels and this server runs {now}: \
             vectors will differ in their last bits (LLAMA_EMBED_CPU_VARIANT={k} to match)",
            dir.display()
        );
    }
    Ok(())
}

/// Resolves on SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    eprintln!("llama-embed serve: stopping: no new connections; finishing the open requests");
}
