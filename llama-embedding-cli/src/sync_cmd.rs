//! `llama-embed sync`: flags into a [`SyncJob`]; the work is `llama_embedding::sync`.

use std::path::Path;

use anyhow::{bail, Result};
use llama_embedding::input::Selection;
use llama_embedding::presets::Role;
use llama_embedding::store::StoreSpec;
use llama_embedding::sync::{self, SyncJob, SyncReport};
use llama_embedding::BatchConfig;

use crate::args::SyncArgs;
use crate::commands::input_spec;
use crate::common::{embed_options, load_model, plan_flags, thread_flags};
use crate::exit::EXIT_OK;

pub fn sync(a: SyncArgs) -> Result<u8> {
    if a.input != "-" && !Path::new(&a.input).exists() {
        bail!("input {} does not exist", a.input);
    }
    let store = StoreSpec::parse(&a.store, None)?;
    let input_spec = input_spec(&a.inputs, &a.input)?;
    let (model, _) = load_model(a.model.model.as_deref(), &a.model, true)?;
    let embed = model.resolve_options(
        embed_options(&a.model)?,
        Role::Document,
        a.model.force_dimensions,
    )?;
    let base = BatchConfig::default().with_embed(embed);
    let config = thread_flags(plan_flags(base, &a.engine, true)?, &a.engine);
    config.validate()?;
    let job = SyncJob {
        model,
        config,
        input: a.input.clone(),
        input_spec,
        selection: Selection::default(),
        store,
        store_text: a.store_text,
        prune: a.prune,
    };
    let report = sync::sync(&job)?;
    print_report(&report, &job.store.display());
    if let Some(path) = &a.summary_json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(EXIT_OK)
}

fn print_report(r: &SyncReport, store: &str) {
    eprintln!("llama-embed sync: {store}");
    eprintln!(
        "ids:        {} added, {} changed, {} unchanged, {} removed{}",
        r.added,
        r.changed,
        r.unchanged,
        r.removed,
        if r.pruned || r.removed == 0 {
            ""
        } else {
            " (kept: --prune deletes them)"
        }
    );
    eprintln!(
        "vectors:    {} embedded ({} tokens), {} reused by key, {} failed",
        r.embedded, r.tokens_embedded, r.reused, r.failed
    );
    if !r.pruned && !r.removed_ids.is_empty() {
        let more = r.removed.saturating_sub(r.removed_ids.len() as u64);
        let tail = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        eprintln!("removed:    {}{tail}", r.removed_ids.join(", "));
    }
}
