//! `llama-embed sync INPUT --store SPEC`: brings a store to what a fresh full run of INPUT
//! into an empty store would write, embedding only the texts whose content keys ([`KeyMaker`])
//! it cannot find: a new id or a changed text is embedded (or its vector copied from a row or an
//! item with the same key), an unchanged one is left alone, and ids no longer in the input are
//! listed, or deleted with `prune`. Identical texts under several ids are embedded once.
//!
//! Crash safety comes from the store: every row is upserted with its vector and key together,
//! so a sync killed at any moment leaves rows that each match their key, and the next sync
//! finds what is still to do.
//!
//! The exact mode only (a text's vector must not depend on what else is embedded with it), and
//! not yet with `--chunk-tokens` (refused).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::error::{Error, Result};
use crate::input::{open_input, InputSpec, Selection};
use crate::item::{EmbeddingResult, ItemOutcome, SourceItem};
use crate::key::KeyMaker;
use crate::model::EmbeddingModel;
use crate::pipeline::{BatchConfig, BatchProcessor};
use crate::reader::IterSource;
use crate::sink::Sink;
use crate::store::{open_store_sink, store_settings, StoreModel, StoreSpec};
use crate::store_keys::{delete_ids, id_keys, KeyLookup};

/// What to sync.
pub struct SyncJob {
    pub model: Arc<EmbeddingModel>,
    /// The vector settings and engine plan, as for `embed`.
    pub config: BatchConfig,
    pub input: String,
    pub input_spec: InputSpec,
    pub selection: Selection,
    pub store: StoreSpec,
    /// Keep each item's text in the store (`--store-text`).
    pub store_text: bool,
    /// Delete the ids no longer in the input.
    pub prune: bool,
}

/// What a sync did (`--summary-json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Ids new to the store.
    pub added: u64,
    /// Ids whose text (as embedded) changed.
    pub changed: u64,
    pub unchanged: u64,
    /// Ids in the store and no longer in the input (deleted when `pruned`).
    pub removed: u64,
    /// Texts embedded.
    pub embedded: u64,
    /// Rows written with a vector found by key (another id of the input or of the store).
    pub reused: u64,
    /// Items that could not be embedded (the errors are printed); like a fresh run, none of
    /// them has a row after a pruning sync.
    pub failed: u64,
    pub pruned: bool,
    /// Tokens the engine embedded.
    pub tokens_embedded: u64,
    /// The first 100 removed ids.
    pub removed_ids: Vec<String>,
}

/// Where each item's vector comes from.
#[derive(Default)]
struct Plan {
    /// The first item of each key the store lacks: embedded.
    embed: Vec<SourceItem>,
    /// Items whose key an item of `embed` has.
    copies: Vec<(SourceItem, String)>,
    /// Items whose key the store holds under another id, with that vector.
    from_store: Vec<(SourceItem, String, Vec<f32>, usize)>,
    /// Every id of the input that has a text.
    seen: HashSet<String>,
}

/// What the engine did: each key's vector and token count, the items that failed, tokens.
struct Embedded {
    vectors: HashMap<String, (Vec<f32>, usize)>,
    failed: Vec<String>,
    tokens: u64,
}

/// Syncs; see the module docs.
///
/// # Errors
/// A store made with another model or other settings, a mode or chunking sync cannot do, the
/// input's and the store's errors.
pub fn sync(job: &SyncJob) -> Result<SyncReport> {
    check(job)?;
    let settings = crate::job::vector_settings(&job.model, &job.config)?;
    let keys = KeyMaker::new(&settings.key_settings());
    let model = StoreModel {
        model_sha256: settings.model_sha256.clone(),
        model_path: job.model.path().to_path_buf(),
        dims: settings.embed.output_dimensions(job.model.dimensions()),
        settings: store_settings(&settings),
    };
    // Creates the store, or refuses one of another model or other settings.
    let mut sink = open_store_sink(&job.store, &model, None)?;
    let stored = id_keys(&job.store, &model.model_sha256)?;
    let mut report = SyncReport::default();
    let mut plan = plan(job, &keys, &stored, &mut report)?;
    let to_embed = std::mem::take(&mut plan.embed);
    let done = embed(
        job,
        &settings.key_settings(),
        to_embed,
        sink.as_mut(),
        &mut report,
    )?;
    report.tokens_embedded = done.tokens;
    // A failed item has no row after a fresh run: its old row, if any, is removed.
    for id in &done.failed {
        plan.seen.remove(id);
    }
    let mut rows = Vec::new();
    for (item, key) in plan.copies {
        match done.vectors.get(&key) {
            Some((v, n)) => rows.push(row(item, key, v.clone(), *n, job.store_text)),
            None => {
                report.failed += 1;
                plan.seen.remove(&item.id.to_string());
            }
        }
    }
    for (item, key, v, n) in plan.from_store {
        rows.push(row(item, key, v, n, job.store_text));
    }
    report.reused = rows.len() as u64;
    let io = |e| Error::io(job.store.display(), e);
    sink.write_batch(&rows).map_err(io)?;
    sink.flush().map_err(io)?;
    sink.finish(&serde_json::json!({"sync": true}))
        .map_err(io)?;
    sink.cleanup().map_err(io)?;
    drop(sink);
    let mut removed: Vec<String> = stored
        .keys()
        .filter(|id| !plan.seen.contains(*id))
        .cloned()
        .collect();
    removed.sort();
    report.removed = removed.len() as u64;
    if job.prune && !removed.is_empty() {
        delete_ids(&job.store, &model.model_sha256, &removed)?;
    }
    report.pruned = job.prune;
    removed.truncate(100);
    report.removed_ids = removed;
    Ok(report)
}

fn check(job: &SyncJob) -> Result<()> {
    if job.config.mode != crate::engine::EngineMode::Exact {
        return Err(Error::Config(format!(
            "sync needs the exact mode (a text's vector must not depend on what it is embedded with), not the {} mode",
            job.config.mode
        )));
    }
    if job.config.chunking.is_some() {
        return Err(Error::Config(
            "sync does not take --chunk-tokens yet: embed chunked documents with `embed --store`"
                .into(),
        ));
    }
    Ok(())
}

/// Reads the input and decides, per item, whether it is unchanged, embedded, or copied.
fn plan(
    job: &SyncJob,
    keys: &KeyMaker,
    stored: &HashMap<String, Option<String>>,
    report: &mut SyncReport,
) -> Result<Plan> {
    let by_key: HashSet<&str> = stored.values().filter_map(|k| k.as_deref()).collect();
    let mut lookup = KeyLookup::open(&job.store, &job.model.sha256()?)?;
    let mut source = open_input(&job.input, &job.input_spec, &job.selection)?;
    let prefix = job.config.embed.prefix.as_deref();
    let mut plan = Plan::default();
    let mut new_keys: HashSet<String> = HashSet::new();
    while let Some(item) = source.next_item() {
        let id = item.id.to_string();
        let Ok(text) = &item.text else {
            report.failed += 1;
            continue;
        };
        let key = keys.text(prefix, text);
        plan.seen.insert(id.clone());
        match stored.get(&id) {
            Some(Some(k)) if *k == key => {
                report.unchanged += 1;
                continue;
            }
            Some(_) => report.changed += 1,
            None => report.added += 1,
        }
        if new_keys.contains(&key) {
            plan.copies.push((item, key));
        } else if by_key.contains(key.as_str()) {
            match lookup.get(&key)? {
                Some((v, n)) => plan.from_store.push((item, key, v, n)),
                None => {
                    new_keys.insert(key);
                    plan.embed.push(item);
                }
            }
        } else {
            new_keys.insert(key);
            plan.embed.push(item);
        }
    }
    if let Some(e) = source.take_error() {
        return Err(Error::io(&job.input, e));
    }
    Ok(plan)
}

/// Embeds `items` into `sink`.
fn embed(
    job: &SyncJob,
    key_settings: &str,
    items: Vec<SourceItem>,
    sink: &mut dyn Sink,
    report: &mut SyncReport,
) -> Result<Embedded> {
    let mut done = Embedded {
        vectors: HashMap::new(),
        failed: Vec::new(),
        tokens: 0,
    };
    if items.is_empty() {
        return Ok(done);
    }
    let config = job
        .config
        .clone()
        .with_keep_text(job.store_text)
        .with_key_settings(Some(key_settings.to_string()));
    let mut processor = BatchProcessor::new(job.model.clone(), config)?;
    let total = items.len() as u64;
    let run = processor.process_items(Box::new(IterSource(items.into_iter())), Some(total))?;
    let io = |e| Error::io(job.store.display(), e);
    let mut pending: Vec<EmbeddingResult> = Vec::with_capacity(256);
    for outcome in run {
        match outcome? {
            ItemOutcome::Embedded(r) => {
                report.embedded += 1;
                done.tokens += r.n_tokens as u64;
                if let Some(k) = &r.key {
                    done.vectors
                        .insert(k.clone(), (r.embedding.clone(), r.n_tokens));
                }
                pending.push(r);
                if pending.len() == 256 {
                    sink.write_batch(&pending).map_err(io)?;
                    pending.clear();
                }
            }
            ItemOutcome::Failed(f) => {
                eprintln!("llama-embed: item {}: {}", f.id, f.error.message);
                report.failed += 1;
                done.failed.push(f.id.to_string());
            }
        }
    }
    sink.write_batch(&pending).map_err(io)?;
    Ok(done)
}

/// The row of `item` with a vector found by its key.
fn row(
    item: SourceItem,
    key: String,
    embedding: Vec<f32>,
    n_tokens: usize,
    keep_text: bool,
) -> EmbeddingResult {
    let text = item.text.ok();
    EmbeddingResult {
        index: 0,
        id: item.id,
        embedding,
        n_tokens,
        truncated: false,
        n_chars: text.as_deref().map_or(0, |t| t.chars().count()),
        extra: item.extra,
        text: text.filter(|_| keep_text),
        chunk: None,
        key: Some(key),
    }
}
