//! `llama-embed sync` (issue 19): a 5,000-item corpus synced into a store, then edited (10%),
//! shrunk (5% removed), grown (5% added, some twice) and duplicated (2% under new ids): the
//! second sync embeds exactly the edited and new texts, and the store then exports byte for
//! byte like a fresh full run into an empty store, in SQLite and in PostgreSQL.

mod util;

use std::path::{Path, PathBuf};

use llama_embedding::fixtures::TempPostgres;
use serde_json::{json, Value};
use util::*;

const N: usize = 5000;

/// `(id, text)` pairs of a corpus.
type Items = Vec<(String, String)>;

fn write_corpus(path: &Path, items: &[(String, String)]) {
    let body: String = items
        .iter()
        .map(|(id, text)| json!({"id": id, "text": text}).to_string() + "\n")
        .collect();
    std::fs::write(path, body).unwrap();
}

/// The first corpus, and the edited one with how many texts are new to the store.
fn corpora() -> (Items, Items, usize) {
    let lines: Vec<String> = corpus(N).lines().map(str::to_string).collect();
    let first: Vec<(String, String)> = lines
        .iter()
        .enumerate()
        .map(|(i, t)| (format!("d{i}"), format!("{t} [{i}]")))
        .collect();
    let mut next = Vec::new();
    let mut new_texts = 0;
    for (i, (id, text)) in first.iter().enumerate() {
        match i % 20 {
            0 => {} // 5% removed
            1 | 2 => {
                next.push((id.clone(), format!("{text} (edited)"))); // 10% edited
                new_texts += 1;
            }
            _ => next.push((id.clone(), text.clone())),
        }
    }
    for k in 0..N / 20 {
        // 5% added; the last 10 share their text pairwise (embedded once each pair).
        let text = if k >= N / 20 - 10 {
            format!("a new text, one of a pair {}", k / 2)
        } else {
            format!("a new text {k} about {}", lines[k * 7 % N])
        };
        next.push((format!("new{k}"), text));
    }
    new_texts += N / 20 - 5;
    for k in 0..N / 50 {
        // 2% duplicated under new ids: texts the store holds already.
        next.push((format!("dup{k}"), first[3 + k * 20].1.clone()));
    }
    (first, next, new_texts)
}

fn sync(store: &str, input: &Path, summary: &Path, env: &[(&str, &str)], extra: &[&str]) -> Value {
    let model = minilm("sync").unwrap();
    let o = run(bin()
        .args(["sync", "-m"])
        .arg(&model)
        .arg(input)
        .args([
            "--store",
            store,
            "--store-text",
            "--id-field",
            "id",
            "--summary-json",
        ])
        .arg(summary)
        .args(extra)
        .envs(env.iter().copied()));
    assert!(o.status.success(), "sync: {}", stderr(&o));
    serde_json::from_str(&std::fs::read_to_string(summary).unwrap()).unwrap()
}

fn export(store: &str, out: &Path, env: &[(&str, &str)]) -> PathBuf {
    let o = run(bin()
        .args(["export", store, "-o"])
        .arg(out)
        .envs(env.iter().copied()));
    assert!(o.status.success(), "export: {}", stderr(&o));
    out.to_path_buf()
}

/// The whole story against one store; `fresh` is an empty store of the same kind.
fn story(dir: &Path, store: &str, fresh: &str, env: &[(&str, &str)]) {
    let (first, next, new_texts) = corpora();
    let (a, b) = (dir.join("a.jsonl"), dir.join("b.jsonl"));
    write_corpus(&a, &first);
    write_corpus(&b, &next);
    let t0 = std::time::Instant::now();
    let s = sync(store, &a, &dir.join("s1.json"), env, &[]);
    eprintln!("a sync of {N} new items took {:?}", t0.elapsed());
    assert_eq!(
        (s["added"].as_u64(), s["embedded"].as_u64()),
        (Some(N as u64), Some(N as u64)),
        "{s}"
    );

    let t0 = std::time::Instant::now();
    let s = sync(store, &a, &dir.join("s2.json"), env, &[]);
    let unchanged = t0.elapsed();
    assert_eq!(s["unchanged"], N, "{s}");
    assert_eq!(
        (s["embedded"].as_u64(), s["reused"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    eprintln!("a sync of {N} unchanged items took {unchanged:?}");

    // Without --prune the removed ids are counted and kept.
    let s = sync(store, &b, &dir.join("s3.json"), env, &[]);
    let edited = N / 10;
    assert_eq!(s["changed"], edited, "{s}");
    assert_eq!(s["added"], N / 20 + N / 50, "{s}");
    assert_eq!(s["removed"], N / 20, "{s}");
    assert_eq!(s["embedded"], new_texts, "{s}");
    assert_eq!(s["reused"], N / 50 + 5, "{s}");
    assert_eq!(s["unchanged"], N - N / 20 - edited, "{s}");
    assert_eq!(s["pruned"], false);
    let s = sync(store, &b, &dir.join("s4.json"), env, &["--prune"]);
    assert_eq!(
        (s["removed"].as_u64(), s["embedded"].as_u64()),
        (Some(N as u64 / 20), Some(0)),
        "{s}"
    );

    // A fresh full run of the new corpus into an empty store: the same rows, byte for byte.
    let model = minilm("sync").unwrap();
    let o = run(bin()
        .args(["embed", "-q", "-m"])
        .arg(&model)
        .arg(&b)
        .args([
            "--store",
            fresh,
            "--store-text",
            "--id-field",
            "id",
            "--run-dir",
        ])
        .arg(dir.join("fresh-run"))
        .envs(env.iter().copied()));
    assert!(o.status.success(), "{}", stderr(&o));
    let got = export(store, &dir.join("synced.jsonl"), env);
    let want = export(fresh, &dir.join("fresh.jsonl"), env);
    assert_eq!(jsonl(&got).len(), next.len());
    assert_same_bytes(&got, &want, "synced store");

    // The engine's tokens are those of the new texts' rows.
    let rows = jsonl(&want);
    let new_ids: std::collections::HashSet<String> = next
        .iter()
        .filter(|(id, t)| {
            t.ends_with("(edited)") || (id.starts_with("new") && !t.contains("one of a pair"))
        })
        .map(|(id, _)| id.clone())
        .collect();
    let mut tokens: u64 = rows
        .iter()
        .filter(|r| new_ids.contains(r["id"].as_str().unwrap()))
        .map(|r| r["n_tokens"].as_u64().unwrap())
        .sum();
    tokens += rows
        .iter()
        .filter(|r| r["text"].as_str().unwrap().contains("one of a pair"))
        .map(|r| r["n_tokens"].as_u64().unwrap())
        .sum::<u64>()
        / 2;
    let s3: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("s3.json")).unwrap()).unwrap();
    assert_eq!(s3["tokens_embedded"], tokens);

    // Other settings: refused, naming the difference; nothing written.
    let o = run(bin()
        .args(["sync", "-m"])
        .arg(&model)
        .arg(&b)
        .args(["--store", store, "--id-field", "id", "--max-tokens", "128"])
        .envs(env.iter().copied()));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("max_tokens"), "{}", stderr(&o));
}

#[test]
fn sync_embeds_only_what_changed_and_leaves_a_sqlite_store_as_a_fresh_run() {
    if minilm("sync").is_none() {
        return;
    }
    let dir = temp("sync-sqlite");
    let store = format!("sqlite:{}", dir.join("s.db").display());
    let fresh = format!("sqlite:{}", dir.join("fresh.db").display());
    story(&dir, &store, &fresh, &[]);
}

#[test]
fn sync_leaves_a_postgres_table_as_a_fresh_run() {
    if minilm("sync").is_none() {
        return;
    }
    let Some(pg) = TempPostgres::start("sync postgres") else {
        return;
    };
    let dir = temp("sync-pg");
    let env = [("PGPASSWORD", pg.password.as_str())];
    let store = format!("{}?table=synced", pg.url());
    let fresh = format!("{}?table=fresh", pg.url());
    story(&dir, &store, &fresh, &env);
}

/// kill -9 at several moments of a sync, then one to the end: the store is the fresh run's.
#[test]
fn a_sync_killed_at_random_moments_converges_to_a_fresh_store() {
    let Some(model) = minilm("sync kill") else {
        return;
    };
    let dir = temp("sync-kill");
    let items: Items = corpus(2000)
        .lines()
        .enumerate()
        .map(|(i, t)| (format!("d{i}"), format!("{t} [{i}]")))
        .collect();
    let input = dir.join("in.jsonl");
    write_corpus(&input, &items);
    let store = format!("sqlite:{}", dir.join("s.db").display());
    let mut kills = 0;
    for delay_ms in [1500, 3000, 4500, 6000] {
        let mut child = bin()
            .args(["sync", "-m"])
            .arg(&model)
            .arg(&input)
            .args(["--store", &store, "--store-text", "--id-field", "id"])
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        }
        child.wait().unwrap();
    }
    assert!(kills >= 2, "only {kills} kills landed mid-sync");
    let s = sync(&store, &input, &dir.join("s.json"), &[], &[]);
    // How much the killed syncs kept depends on the machine's load (none on a busy CI
    // machine, most of it here); the final store must be the fresh run's either way.
    eprintln!(
        "after {kills} kills: {} rows kept, {} embedded at the end",
        s["unchanged"], s["embedded"]
    );
    assert_eq!(
        s["embedded"].as_u64().unwrap() + s["unchanged"].as_u64().unwrap(),
        2000,
        "{s}"
    );
    let fresh = format!("sqlite:{}", dir.join("fresh.db").display());
    let o = run(bin()
        .args(["embed", "-q", "-m"])
        .arg(&model)
        .arg(&input)
        .args([
            "--store",
            &fresh,
            "--store-text",
            "--id-field",
            "id",
            "--run-dir",
        ])
        .arg(dir.join("fresh-run")));
    assert!(o.status.success(), "{}", stderr(&o));
    let got = export(&store, &dir.join("synced.jsonl"), &[]);
    let want = export(&fresh, &dir.join("fresh.jsonl"), &[]);
    assert_same_bytes(&got, &want, "the store after killed syncs");
    eprintln!("{kills} kills landed mid-sync");
}
