//! The vector stores end to end: SQLite + sqlite-vec and a real, throwaway PostgreSQL with
//! pgvector. Search results are checked against an exact cosine search over the JSONL output
//! of the same run settings; killed-and-resumed runs must leave exactly one row per id.

mod util;

use std::collections::HashSet;
use std::path::Path;

use llama_embedding::engine::cosine;
use llama_embedding::fixtures::TempPostgres;
use llama_embedding::store::{PgStore, SqliteStore};
use util::*;

const QUERIES: [&str; 4] = [
    "parse a json document",
    "open a network socket connection",
    "read the contents of a file",
    "compare two strings ignoring case",
];

/// Top-k ids by exact cosine over JSONL rows.
fn exact_top_k(rows: &[serde_json::Value], q: &[f32], k: usize) -> Vec<(String, f32)> {
    let mut scored: Vec<(String, f32)> = rows
        .iter()
        .map(|r| (r["id"].to_string(), 1.0 - cosine(&vector(r), q) as f32))
        .collect();
    scored.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
    scored.truncate(k);
    scored
}

fn search(store: &str, query: &str, extra: &[&str], env: &[(&str, &str)]) -> Vec<(String, f64)> {
    let o = run(bin()
        .args(["search", store, query, "-k", "10", "--json"])
        .args(extra)
        .envs(env.iter().copied()));
    assert!(o.status.success(), "search {store}: {}", stderr(&o));
    let hits: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    hits.iter()
        .map(|h| {
            (
                h["id"].as_str().unwrap().to_string(),
                h["distance"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn assert_same_hits(what: &str, got: &[(String, f64)], want: &[(String, f32)]) {
    let ids = |v: Vec<&String>| v.into_iter().cloned().collect::<Vec<_>>();
    assert_eq!(
        ids(got.iter().map(|h| &h.0).collect()),
        ids(want.iter().map(|h| &h.0).collect()),
        "{what}: top-10 differs from exact cosine"
    );
    for ((_, d), (_, e)) in got.iter().zip(want) {
        assert!(
            (*d - f64::from(*e)).abs() < 1e-4,
            "{what}: distance {d} vs {e}"
        );
    }
}

#[test]
fn both_stores_return_the_exact_cosine_top_10() {
    let Some(model) = minilm("stores search") else {
        return;
    };
    let pg = TempPostgres::start("stores search");
    let dir = temp("stores-search");
    let input = dir.join("in.txt");
    std::fs::write(&input, corpus(600)).unwrap();
    let m = model.to_str().unwrap();
    let embed = |extra: &[&str], run_dir: &str, env: &[(&str, &str)]| {
        let o = run(bin()
            .args(["embed", "-q", "-m", m])
            .arg(&input)
            .arg("--run-dir")
            .arg(dir.join(run_dir))
            .args(extra)
            .envs(env.iter().copied()));
        assert!(o.status.success(), "{run_dir}: {}", stderr(&o));
    };
    let jsonl = dir.join("out.jsonl");
    embed(&["-o", jsonl.to_str().unwrap()], "file", &[]);
    let rows = util::jsonl(&jsonl);
    assert_eq!(rows.len(), 600);

    // The query vectors, made the same way.
    std::fs::write(dir.join("q.txt"), QUERIES.join("\n") + "\n").unwrap();
    let o = run(bin()
        .args(["embed", "-q", "-m", m])
        .arg(dir.join("q.txt"))
        .arg("-o")
        .arg(dir.join("q.jsonl"))
        .arg("--run-dir")
        .arg(dir.join("q")));
    assert!(o.status.success(), "{}", stderr(&o));
    let queries: Vec<Vec<f32>> = util::jsonl(&dir.join("q.jsonl"))
        .iter()
        .map(vector)
        .collect();

    let db = format!("sqlite:{}", dir.join("s.db").display());
    embed(&["--store", &db, "--store-text"], "sqlite", &[]);
    assert_eq!(SqliteStore::count(&dir.join("s.db")).unwrap(), 600);
    // Store-only run: no output file was written.
    assert!(!dir.join("sqlite/output.jsonl").exists());

    let pg_store = pg.as_ref().map(|pg| format!("{}?table=docs", pg.url()));
    let pw = pg
        .as_ref()
        .map(|pg| pg.password.clone())
        .unwrap_or_default();
    let env = [("PGPASSWORD", pw.as_str())];
    if let Some(s) = &pg_store {
        embed(&["--store", s, "--store-text"], "pg", &env);
    }

    for (q, qv) in QUERIES.iter().zip(&queries) {
        let want = exact_top_k(&rows, qv, 10);
        assert_same_hits(&format!("sqlite {q:?}"), &search(&db, q, &[], &[]), &want);
        // A run directory stands for its store.
        let via_run = search(dir.join("sqlite").to_str().unwrap(), q, &[], &[]);
        assert_same_hits(&format!("sqlite via run dir {q:?}"), &via_run, &want);
        if let Some(s) = &pg_store {
            assert_same_hits(
                &format!("postgres hnsw {q:?}"),
                &search(s, q, &[], &env),
                &want,
            );
            let exact = search(s, q, &["--exact"], &env);
            assert_same_hits(&format!("postgres exact {q:?}"), &exact, &want);
        }
    }

    // Exported, each store gives back every row of the file run (id, key, vector bits, text),
    // in id order, and the two stores' exports are byte-identical.
    let export = |store: &str, name: &str, env: &[(&str, &str)]| {
        let out = dir.join(name);
        let o = run(bin()
            .args(["export", store, "-o"])
            .arg(&out)
            .envs(env.iter().copied()));
        assert!(o.status.success(), "export {store}: {}", stderr(&o));
        out
    };
    let exported = util::jsonl(&export(&db, "sqlite-export.jsonl", &[]));
    let mut want: Vec<&serde_json::Value> = rows.iter().collect();
    want.sort_by_key(|r| r["id"].to_string().trim_matches('"').to_string());
    assert_eq!(exported.len(), want.len());
    let lines: Vec<String> = corpus(600).lines().map(str::to_string).collect();
    for (e, w) in exported.iter().zip(&want) {
        let id = w["id"].as_u64().unwrap();
        assert_eq!(e["id"], id.to_string());
        assert_eq!(e["key"], w["key"], "row {id}");
        assert_eq!(e["text"], lines[id as usize], "row {id}");
        let bits =
            |v: &serde_json::Value| vector(v).iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(e), bits(w), "row {id}");
    }
    if let Some(s) = &pg_store {
        let pg_export = export(s, "pg-export.jsonl", &env);
        assert_same_bytes(
            &pg_export,
            &dir.join("sqlite-export.jsonl"),
            "postgres export",
        );
    }

    // Human output shows the stored text.
    let o = run(bin().args(["search", &db, QUERIES[0], "-k", "3"]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && out.lines().count() == 4, "{out}");
    let first_id = search(&db, QUERIES[0], &[], &[])[0].0.clone();
    let text = rows
        .iter()
        .position(|r| r["id"].as_u64() == first_id.parse().ok())
        .map(|i| corpus(600).lines().nth(i).unwrap().to_string())
        .unwrap();
    assert!(
        out.contains(&text.chars().take(40).collect::<String>()),
        "{out}"
    );

    // Another model is refused: by search, and by a run into the same store.
    let tiny = tiny();
    let o = run(bin().args(["search", &db, "x", "-m"]).arg(&tiny));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("sha256"), "{}", stderr(&o));
    let o = run(bin()
        .args(["embed", "-q", "-m"])
        .arg(&tiny)
        .arg(&input)
        .args(["--store", &db, "--run-dir"])
        .arg(dir.join("other-model")));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("another model"), "{}", stderr(&o));

    if let Some(s) = &pg_store {
        // A wrong password is a clear error, and the password never shows.
        let o = run(bin()
            .args(["search", s, "x"])
            .env("PGPASSWORD", "wrong-secret"));
        assert!(!o.status.success());
        let err = stderr(&o);
        assert!(err.contains("password authentication failed"), "{err}");
        assert!(!err.contains("wrong-secret"), "{err}");
        // .pgpass works as libpq's does.
        let pgpass = dir.join("pgpass");
        let p = pg.as_ref().unwrap();
        std::fs::write(
            &pgpass,
            format!("127.0.0.1:{}:*:llama:{}\n", p.port, p.password),
        )
        .unwrap();
        let o = run(bin()
            .args(["search", s, QUERIES[1], "--json"])
            .env_remove("PGPASSWORD")
            .env("PGPASSFILE", &pgpass));
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

/// The sha256 a store records for `model`.
fn model_sha256(model: &Path) -> String {
    llama_embedding::EmbeddingModel::load(model, &llama_embedding::LoadOptions::default(), true)
        .unwrap()
        .sha256()
        .unwrap()
}

fn ids_in(input: &Path) -> HashSet<String> {
    (0..std::fs::read_to_string(input).unwrap().lines().count())
        .map(|i| i.to_string())
        .collect()
}

#[test]
fn killed_and_resumed_runs_leave_one_row_per_id_in_each_store() {
    let model = tiny();
    let pg = TempPostgres::start("stores kill");
    let dir = temp("stores-kill");
    let input = dir.join("in.txt");
    std::fs::write(&input, corpus(5000)).unwrap();
    let extra = ["--save-every", "64", "--window", "64", "--workers", "2"];

    let db = dir.join("s.db");
    let spec = format!("sqlite:{}", db.display());
    let mut args = extra.to_vec();
    args.extend(["--store", &spec]);
    let kills = run_with_kills(
        &model,
        &input,
        None,
        &dir.join("run-sqlite"),
        &args,
        &[],
        7,
        900,
    );
    eprintln!("sqlite: {kills} kills");
    assert!(kills >= 2, "too short to be killed ({kills} kills)");
    assert_eq!(SqliteStore::count(&db).unwrap(), 5000);
    // Running the whole input again upserts: still one row per id.
    let o = run(bin()
        .args(["embed", "-q", "-m"])
        .arg(&model)
        .arg(&input)
        .args(["--store", &spec, "--run-dir"])
        .arg(dir.join("again")));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(SqliteStore::count(&db).unwrap(), 5000);

    let Some(pg) = pg else { return };
    let spec = format!("{}?table=killed", pg.url());
    let mut args = extra.to_vec();
    args.extend(["--store", &spec]);
    let env = [("PGPASSWORD", pg.password.as_str())];
    let kills = run_with_kills(
        &model,
        &input,
        None,
        &dir.join("run-pg"),
        &args,
        &env,
        11,
        900,
    );
    eprintln!("postgres: {kills} kills");
    assert!(kills >= 2, "too short to be killed ({kills} kills)");
    std::env::set_var("PGPASSWORD", &pg.password);
    let sha = model_sha256(&model);
    let url = pg.url();
    assert_eq!(PgStore::count(&url, "killed", &sha).unwrap(), 5000);
    // Same ids as the input, and search over the store works for the resumed run.
    let hits = search(
        &format!("{url}?table=killed"),
        "the quick brown fox",
        &[],
        &env,
    );
    assert_eq!(hits.len(), 10);
    let all = ids_in(&input);
    assert!(hits.iter().all(|h| all.contains(&h.0)));
}

#[test]
fn four_shards_write_one_postgres_table_at_once() {
    let model = tiny();
    let Some(pg) = TempPostgres::start("stores shards") else {
        return;
    };
    let dir = temp("stores-shards");
    let input = dir.join("in.txt");
    std::fs::write(&input, corpus(2000)).unwrap();
    let spec = format!("{}?table=sharded", pg.url());
    let children: Vec<_> = (0..4)
        .map(|k| {
            bin()
                .args(["embed", "-q", "-m"])
                .arg(&model)
                .arg(&input)
                .args([
                    "--shard",
                    &format!("{k}/4"),
                    "--store",
                    &spec,
                    "--save-every",
                    "128",
                ])
                .arg("--run-dir")
                .arg(dir.join(format!("shard-{k}")))
                .env("PGPASSWORD", &pg.password)
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let o = c.wait_with_output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    std::env::set_var("PGPASSWORD", &pg.password);
    let sha = model_sha256(&model);
    assert_eq!(PgStore::count(&pg.url(), "sharded", &sha).unwrap(), 2000);
    let hits = search(
        &spec,
        "the quick brown fox",
        &[],
        &[("PGPASSWORD", &pg.password)],
    );
    assert_eq!(hits.len(), 10);
}

#[test]
fn search_refuses_bad_arguments_before_any_work() {
    for k in ["0", "5000"] {
        let o = run(bin().args(["search", "sqlite:/nonexistent/s.db", "q", "-k", k]));
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("between 1 and 4096"), "{}", stderr(&o));
    }
    let o = run(bin().args(["search", "sqlite:/nonexistent/s.db", "q"]));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("does not exist"), "{}", stderr(&o));
    let o = run(bin().args(["search", "postgres://me@127.0.0.1:1/db", "q"]));
    assert!(stderr(&o).contains("table=NAME"), "{}", stderr(&o));
    let o = run(bin().args(["search", "postgres://me@h/db?table=a;drop", "q"]));
    assert!(stderr(&o).contains("not allowed"), "{}", stderr(&o));
}
