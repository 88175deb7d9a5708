//! `llama-embed runs …`: the versions of named runs (list, label, rerun, compare, reset).

use std::path::Path;

use anyhow::{bail, Result};
use llama_embedding::input::parse_ids;
use llama_embedding::job::{load_metadata, Metadata};
use llama_embedding::versions::{self, ListedVersion, RerunJob};
use llama_embedding::BatchConfig;

use crate::args::{RerunArgs, RunsCommand};
use llama_embedding::presets::Role;

use crate::common::{embed_options_over, load_model, stop_on_signals, usage};
use crate::exit::{EXIT_INTERRUPTED, EXIT_ITEMS_FAILED, EXIT_OK, EXIT_STOPPED_BY_ERRORS};

const RULE: &str = "======================================================================";

pub fn runs(cmd: RunsCommand) -> Result<u8> {
    match cmd {
        RunsCommand::List {
            name,
            all,
            status,
            json,
            root,
        } => list(
            &versions::runs_root(root.runs_dir.as_deref()),
            name.as_deref(),
            all,
            &status,
            json,
        ),
        RunsCommand::Label {
            name,
            version,
            label,
            root,
        } => {
            let root = versions::runs_root(root.runs_dir.as_deref());
            let (n, dir) = versions::resolve(&root, &name, &version)?;
            let old = versions::set_label(&dir, &label)?;
            println!("{name} v{n}: {old} -> {label}");
            Ok(EXIT_OK)
        }
        RunsCommand::Rerun(a) => rerun(*a),
        RunsCommand::Compare {
            name,
            a,
            b,
            detail,
            top,
            json,
            root,
        } => compare(
            &versions::runs_root(root.runs_dir.as_deref()),
            &name,
            &a,
            &b,
            if detail { top } else { 0 },
            json,
        ),
        RunsCommand::Reset {
            name,
            ids,
            version,
            root,
        } => {
            let root = versions::runs_root(root.runs_dir.as_deref());
            let (n, dir) = versions::resolve(&root, &name, &version)?;
            let ids = ids_of(&ids)?;
            let (found, missing) = versions::reset(&dir, &ids)?;
            if !missing.is_empty() {
                eprintln!(
                    "llama-embed: not items of {name} v{n}: {}",
                    missing.join(", ")
                );
            }
            if found.is_empty() {
                bail!("no item of {name} v{n} was marked");
            }
            println!(
                "{name} v{n}: {} item(s) marked for redoing; `llama-embed runs rerun {name}` re-embeds them into a new version",
                found.len()
            );
            Ok(if missing.is_empty() {
                EXIT_OK
            } else {
                EXIT_ITEMS_FAILED
            })
        }
    }
}

/// Ids from arguments: each may be comma-separated or @FILE; order kept, repeats dropped.
fn ids_of(args: &[String]) -> Result<Vec<String>> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for a in args {
        let mut part: Vec<String> = parse_ids(a)?.into_iter().collect();
        part.sort();
        for id in part {
            if seen.insert(id.clone()) {
                out.push(id);
            }
        }
    }
    Ok(out)
}

fn shown(v: &ListedVersion, all: bool, status: &[String]) -> bool {
    if all {
        true
    } else if !status.is_empty() {
        status.contains(&v.label)
    } else {
        v.label != "draft" && v.label != "deprecated"
    }
}

fn list(root: &Path, name: Option<&str>, all: bool, status: &[String], json: bool) -> Result<u8> {
    let names = match name {
        Some(n) => vec![n.to_string()],
        None => versions::names(root),
    };
    if names.is_empty() {
        eprintln!(
            "llama-embed: no named runs in {} (make one with embed INPUT --run-name NAME)",
            root.display()
        );
    }
    let mut out = Vec::new();
    for name in &names {
        let every = versions::list(root, name)?;
        let total = every.len();
        let latest = every.iter().find(|v| v.latest).map(|v| v.version.clone());
        let vs: Vec<ListedVersion> = every
            .into_iter()
            .filter(|v| shown(v, all, status))
            .collect();
        if json {
            out.extend(vs);
            continue;
        }
        println!("{RULE}");
        println!("RUN: {name}");
        let hidden = total - vs.len();
        if hidden > 0 {
            println!("Versions: {total} (hiding {hidden})");
        } else {
            println!("Versions: {total}");
        }
        println!(
            "Latest: {}",
            latest.as_deref().unwrap_or("(none completed)")
        );
        if !all {
            if status.is_empty() {
                println!("Showing: all labels but draft and deprecated");
            } else {
                println!("Showing: {}", status.join(", "));
            }
            if hidden > 0 {
                println!("Tip: --all shows every version, --status LABEL… filters");
            }
        }
        println!("{RULE}");
        for v in &vs {
            println!();
            println!("{}{}", v.version, if v.latest { " (latest)" } else { "" });
            println!("  Created:  {}", v.created);
            println!("  Label:    {}", v.label);
            println!("  Status:   {}", v.status);
            if let Some(n) = &v.notes {
                println!("  Notes:    {n}");
            }
            println!("  Mode:     {}", v.mode);
            if let Some(b) = &v.base_version {
                println!("  Base:     {b}");
            }
            println!("  Duration: {:.1}s", v.duration_seconds);
            println!("  Items:    {} embedded, {} failed", v.items, v.failed);
            println!(
                "  Model:    {} (sha256 {})",
                v.model.display(),
                &v.model_sha256[..v.model_sha256.len().min(12)]
            );
        }
        println!();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(EXIT_OK)
}

fn rerun(a: RerunArgs) -> Result<u8> {
    let root = versions::runs_root(a.root.runs_dir.as_deref());
    let ids = ids_of(&a.ids)?;
    // The base's settings, changed by the vector flags given.
    let base_dir = match (&a.r#continue, &a.base) {
        (Some(v), _) => {
            let (_, dir) = versions::resolve(&root, &a.name, v)?;
            let m = load_metadata(&dir)?;
            let b = m
                .version
                .and_then(|v| v.base_version)
                .unwrap_or_else(|| "latest".into());
            versions::resolve(&root, &a.name, &b)?.1
        }
        (None, b) => versions::resolve(&root, &a.name, b.as_deref().unwrap_or("latest"))?.1,
    };
    let mut base = load_metadata(&base_dir)?;
    if let Some(v) = &a.r#continue {
        // An interrupted rerun goes on with its own settings and model.
        let (_, dir) = versions::resolve(&root, &a.name, v)?;
        if let Ok(sub) = load_metadata(&dir.join("rerun")) {
            base.vectors = sub.vectors;
            base.model_path = sub.model_path;
        }
    }
    if let Some(l) = &a.label {
        versions::check_label(l)?;
    }
    let model_spec = a
        .model
        .model
        .clone()
        .unwrap_or_else(|| base.model_path.to_string_lossy().into_owned());
    llama_embedding::job::use_recorded_kernels(&base.vectors)?;
    let (model, source) = load_model(Some(&model_spec), &a.model, true)?;
    let embed = embed_options_over(base.vectors.embed.clone(), &a.model)?;
    let embed = model.resolve_options(embed, Role::Document, a.model.force_dimensions)?;
    let v = &base.vectors;
    let mut config = v
        .apply_to(BatchConfig::default())
        .with_embed(embed)
        .with_progress(!a.quiet);
    if let Some(w) = a.workers {
        config = config.with_workers(w);
    }
    if let Some(t) = a.threads {
        config = config.with_threads_per_worker(t);
    }
    config.validate()?;
    let stop = stop_on_signals()?;
    if a.r#continue.is_none() && ids.is_empty() && !a.quiet {
        eprintln!("llama-embed: no ids given: rerunning the failed items and those marked by `runs reset`");
    }
    let job = RerunJob {
        root,
        name: a.name.clone(),
        base: a.base.clone(),
        ids,
        notes: a.note.clone(),
        label: a.label.clone(),
        model,
        model_source: source,
        config,
        continue_version: a.r#continue.clone(),
    };
    let r = versions::rerun(job, crate::progress::reporter(a.quiet, 0), stop)?;
    if !a.quiet {
        eprintln!("{RULE}");
        eprintln!(
            "RERUN {} {} (base {}): {}",
            a.name, r.version, r.base_version, r.end
        );
        eprintln!("{RULE}");
        eprintln!("re-embedded: {} item(s)", r.rerun);
        if !r.rerun_failed.is_empty() {
            eprintln!(
                "failed:      {} of them (not in the output): {}",
                r.rerun_failed.len(),
                r.rerun_failed.join(", ")
            );
        }
        eprintln!(
            "collated:    {} rows of {} items ({} failed)",
            r.rows, r.items, r.failed
        );
        eprintln!("output:      {}", r.output.display());
        eprintln!("dir:         {}", r.dir.display());
        if r.end != "completed" {
            eprintln!(
                "continue:    llama-embed runs rerun {} --continue {}",
                a.name, r.version
            );
        }
        eprintln!("{RULE}");
    }
    println!("{}", r.dir.display());
    Ok(match r.end.as_str() {
        "interrupted" => EXIT_INTERRUPTED,
        "stopped_by_errors" => EXIT_STOPPED_BY_ERRORS,
        _ if !r.rerun_failed.is_empty() => EXIT_ITEMS_FAILED,
        _ => EXIT_OK,
    })
}

/// Rows of `name: a | b` for the metadata comparison; `*` marks differences.
fn side_by_side(ma: &Metadata, mb: &Metadata) -> Vec<(String, String, String)> {
    let info = |m: &Metadata| {
        let v = m.version.clone();
        serde_json::json!({
            "created": m.started_at,
            "label": v.as_ref().map(|v| v.label.clone()),
            "mode": v.as_ref().map(|v| v.mode),
            "base": v.as_ref().and_then(|v| v.base_version.clone()),
            "notes": v.as_ref().and_then(|v| v.notes.clone()),
            "duration_s": v.as_ref().map(|v| (v.duration_seconds * 10.0).round() / 10.0),
            "rerun_items": v.as_ref().and_then(|v| v.rerun_items),
            "status": m.status,
            "embedded": m.stats.texts_succeeded,
            "failed": m.stats.texts_failed,
            "input": m.input,
            "model": m.model_path,
            "model_sha256": m.vectors.model_sha256,
            "dimensions": m.model.dimensions,
            "pooling": m.vectors.pooling,
            "normalize": m.vectors.embed.normalize,
            "prefix": m.vectors.embed.prefix,
            "max_tokens": m.vectors.max_tokens,
            "truncate": m.vectors.embed.truncate,
            "batch_size": m.vectors.batch_size,
            "token_budget": m.vectors.token_budget,
            "engine_mode": m.vectors.engine_mode().to_string(),
            "token_align": m.vectors.token_align,
            "flash_attention": m.vectors.flash_attention,
            "dtype": m.dtype,
        })
    };
    let (a, b) = (info(ma), info(mb));
    let show = |v: &serde_json::Value| match v {
        serde_json::Value::Null => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    a.as_object()
        .expect("object")
        .iter()
        .map(|(k, va)| (k.clone(), show(va), show(&b[k])))
        .collect()
}

fn compare(root: &Path, name: &str, a: &str, b: &str, detail: usize, json: bool) -> Result<u8> {
    let (na, da) = versions::resolve(root, name, a)?;
    let (nb, db) = versions::resolve(root, name, b)?;
    if na == nb {
        return usage(format!("v{na} compared with itself"));
    }
    let (ma, mb) = (load_metadata(&da)?, load_metadata(&db)?);
    for (n, m) in [(na, &ma), (nb, &mb)] {
        if !Path::new(&m.output_file).is_file() {
            bail!(
                "{name} v{n} has no output yet ({}){}",
                m.status,
                if m.version
                    .as_ref()
                    .is_some_and(|v| v.mode == llama_embedding::rundir::VersionMode::Rerun)
                {
                    format!(": finish it with `llama-embed runs rerun {name} --continue v{n}`")
                } else {
                    String::new()
                }
            );
        }
        if m.status != llama_embedding::rundir::RunState::Completed {
            eprintln!(
                "llama-embed: note: v{n} is {} (compared as far as its checkpoint goes)",
                m.status
            );
        }
    }
    let c = versions::compare(&da, &db, detail)?;
    if json {
        let meta: serde_json::Map<String, serde_json::Value> = side_by_side(&ma, &mb)
            .into_iter()
            .map(|(k, x, y)| (k, serde_json::json!([x, y])))
            .collect();
        let mut v = serde_json::to_value(&c)?;
        v["metadata"] = meta.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(EXIT_OK);
    }
    println!("{RULE}");
    println!("COMPARING: {name}  v{na} vs v{nb}");
    println!("{RULE}");
    println!();
    println!(
        "  {:<14} {:<30} {:<30}",
        "",
        format!("v{na}"),
        format!("v{nb}")
    );
    for (k, x, y) in side_by_side(&ma, &mb) {
        let mark = if x != y && !matches!(k.as_str(), "created" | "duration_s") {
            "*"
        } else {
            " "
        };
        let cut = |s: &str| {
            if s.chars().count() > 30 {
                format!(
                    "…{}",
                    s.chars()
                        .rev()
                        .take(29)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<String>()
                )
            } else {
                s.to_string()
            }
        };
        println!("{mark} {k:<14} {:<30} {:<30}", cut(&x), cut(&y));
    }
    println!();
    println!("Items:");
    println!("  rows in v{na}:   {}", c.rows_a);
    println!("  rows in v{nb}:   {}", c.rows_b);
    println!("  in both:      {}", c.in_both);
    let ids = |n: u64, v: &[String]| {
        if n == 0 {
            "(none)".to_string()
        } else if (v.len() as u64) < n {
            format!("{n}: {}, …", v.join(", "))
        } else {
            format!("{n}: {}", v.join(", "))
        }
    };
    println!("  only in v{na}:  {}", ids(c.only_in_a, &c.only_in_a_ids));
    println!("  only in v{nb}:  {}", ids(c.only_in_b, &c.only_in_b_ids));
    println!();
    println!("Cosine between the two vectors of each item in both:");
    let f = |x: Option<f64>| x.map_or_else(|| "-".into(), |x| format!("{x:.6}"));
    println!("  identical:    {} of {}", c.identical, c.in_both);
    println!("  changed:      {}", c.in_both - c.identical);
    println!("  min:          {}", f(c.cosine_min));
    println!("  p1:           {}", f(c.cosine_p1));
    println!("  median:       {}", f(c.cosine_p50));
    println!("  mean:         {}", f(c.cosine_mean));
    if detail > 0 {
        println!();
        if c.most_changed.is_empty() {
            println!("Most changed: none (every vector is identical)");
        } else {
            println!("Most changed (lowest cosine first):");
            for m in &c.most_changed {
                let text = m.text.as_deref().map_or_else(
                    || "-".to_string(),
                    |t| {
                        let t = t.replace(['\n', '\r', '\t'], " ");
                        let short: String = t.chars().take(70).collect();
                        if t.chars().count() > 70 {
                            format!("{short}…")
                        } else {
                            short
                        }
                    },
                );
                println!("  {:.6}  {:<12} {text}", m.cosine, m.id);
            }
        }
    }
    Ok(EXIT_OK)
}
