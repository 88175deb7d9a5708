//! Issue 16: chunked runs from the command line. A chunked run killed at random moments
//! (mid-document) resumes to byte-identical output; sharded chunked runs merge to the
//! unsharded output byte for byte; every format has the chunk fields; a store search returns
//! the chunk whose text was queried first, with its parent id.

mod util;

use std::path::{Path, PathBuf};

use util::run as run_cmd;
use util::*;

/// The licence texts and copyright files every Debian machine has, as JSONL documents with
/// string ids (`licenses/GPL-3`, `doc/bash`), and their texts.
fn documents(dir: &Path, max: usize) -> (PathBuf, Vec<(String, String)>) {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/usr/share/common-licenses") {
        for e in rd.flatten() {
            found.push((
                format!("licenses/{}", e.file_name().to_string_lossy()),
                e.path(),
            ));
        }
    }
    if let Ok(rd) = std::fs::read_dir("/usr/share/doc") {
        for e in rd.flatten() {
            let name = format!("doc/{}", e.file_name().to_string_lossy());
            found.push((name, e.path().join("copyright")));
        }
    }
    found.sort();
    let mut seen = std::collections::HashSet::new();
    let docs: Vec<(String, String)> = found
        .into_iter()
        .filter_map(|(id, p)| Some((id, std::fs::read_to_string(p).ok()?)))
        .filter(|(_, t)| (3000..16_000).contains(&t.len()) && seen.insert(t.clone()))
        .take(max)
        .collect();
    assert!(docs.len() >= max.min(10), "expected Debian's licence texts");
    let path = dir.join("docs.jsonl");
    let lines: String = docs
        .iter()
        .map(|(id, t)| serde_json::json!({"id": id, "text": t}).to_string() + "\n")
        .collect();
    std::fs::write(&path, lines).unwrap();
    (path, docs)
}

const CHUNKING: [&str; 6] = [
    "--chunk-tokens",
    "96",
    "--chunk-overlap",
    "12",
    "--id-field",
    "id",
];

#[test]
fn a_killed_chunked_run_resumes_to_byte_identical_output() {
    let Some(model) = minilm("chunked kill -9") else {
        return;
    };
    let dir = temp("chunks-kill");
    let (input, docs) = documents(&dir, 16);
    let mut extra = CHUNKING.to_vec();
    extra.extend(["--window", "1", "--save-every", "1"]);
    let reference = dir.join("ref.jsonl");
    let o = run(embed_args(&model, &input, &reference, &dir.join("ref")).args(&extra));
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = jsonl(&reference);
    // Rows per chunk, in item order, with spans that slice the item's text exactly.
    let mut by_item = std::collections::BTreeMap::<String, u64>::new();
    for r in &rows {
        let parent = r["parent_id"].as_str().unwrap();
        let k = r["chunk"].as_u64().unwrap();
        assert_eq!(r["id"], format!("{parent}#{k}"));
        assert_eq!(k, *by_item.get(parent).unwrap_or(&0), "chunks in order");
        by_item.insert(parent.to_string(), k + 1);
        let text = &docs.iter().find(|(id, _)| id == parent).unwrap().1;
        let (b0, b1) = (
            r["byte_start"].as_u64().unwrap() as usize,
            r["byte_end"].as_u64().unwrap() as usize,
        );
        let (c0, c1) = (
            r["char_start"].as_u64().unwrap() as usize,
            r["char_end"].as_u64().unwrap() as usize,
        );
        assert_eq!(text[..b0].chars().count(), c0);
        assert_eq!(text[b0..b1].chars().count(), c1 - c0);
        assert!(r["n_tokens"].as_u64().unwrap() <= 96);
    }
    assert_eq!(by_item.len(), docs.len(), "every document has rows");
    for r in &rows {
        assert_eq!(
            r["n_chunks"].as_u64(),
            by_item.get(r["parent_id"].as_str().unwrap()).copied()
        );
    }
    assert!(rows.len() > 5 * docs.len(), "{} chunks", rows.len());

    let out = dir.join("killed.jsonl");
    let started = std::time::Instant::now();
    let o =
        run(embed_args(&model, &input, &dir.join("timed.jsonl"), &dir.join("timed")).args(&extra));
    assert!(o.status.success(), "{}", stderr(&o));
    // Kills land anywhere in a whole run's time (model load included).
    let span = started.elapsed().as_millis() as u64;
    let kills = run_with_kills(
        &model,
        &input,
        Some(&out),
        &dir.join("run"),
        &extra,
        &[],
        0xc4u64,
        span / 2,
    );
    eprintln!("{kills} kills");
    assert!(
        kills >= 2,
        "the run was too short to be killed ({kills} kills)"
    );
    assert_same_bytes(&out, &reference, &format!("differs after {kills} kills"));
    let st = llama_embedding::job::run_status(&dir.join("run")).unwrap();
    assert_eq!(
        (st.status.as_str(), st.done),
        ("completed", docs.len() as u64)
    );
    // items.db: one row per document, with its chunk count.
    let db = llama_embedding::items::rows(&dir.join("run"), st.done, &[]).unwrap();
    assert_eq!(db.len(), docs.len());
    for r in &db {
        assert_eq!(
            r.n_chunks.map(u64::from),
            by_item.get(&r.id).copied(),
            "{}",
            r.id
        );
    }
    // The summary counts documents and chunks.
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("ref/metadata.json")).unwrap()).unwrap();
    assert_eq!(
        meta["stats"]["texts_succeeded"].as_u64(),
        Some(docs.len() as u64)
    );
    assert_eq!(meta["stats"]["chunks"].as_u64(), Some(rows.len() as u64));
    assert_eq!(meta["vectors"]["chunking"]["max_tokens"], 96);
    // Chunking is a vector setting: resuming with other chunking flags is refused.
    let o = run(bin()
        .args(["embed", "-q", "--resume"])
        .arg(dir.join("ref"))
        .args(["--chunk-tokens", "50"]));
    assert!(!o.status.success());
}

#[test]
fn sharded_chunked_runs_merge_to_the_unsharded_output_and_formats_have_the_chunk_fields() {
    let Some(model) = minilm("chunked shards") else {
        return;
    };
    let dir = temp("chunks-shards");
    let (input, _) = documents(&dir, 12);
    let whole = dir.join("whole.jsonl");
    let o = run(embed_args(&model, &input, &whole, &dir.join("whole")).args(CHUNKING));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut dirs = Vec::new();
    for k in 0..3 {
        let d = dir.join(format!("shard-{k}"));
        let out = dir.join(format!("part-{k}.jsonl"));
        let o = run(embed_args(&model, &input, &out, &d)
            .args(CHUNKING)
            .args(["--shard", &format!("{k}/3")]));
        assert!(o.status.success(), "{}", stderr(&o));
        dirs.push(d);
    }
    let merged = dir.join("merged.jsonl");
    let o = run(bin()
        .arg("merge")
        .args(&dirs)
        .arg("-o")
        .arg(&merged)
        .arg("--json"));
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = jsonl(&whole);
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["rows"].as_u64(), Some(rows.len() as u64));
    assert_same_bytes(
        &merged,
        &whole,
        "merged chunked shards differ from the unsharded run",
    );

    // CSV: the chunk columns after the id, one line per chunk.
    let csv = dir.join("whole.csv");
    let o = run(embed_args(&model, &input, &csv, &dir.join("csv")).args(CHUNKING));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&csv).unwrap();
    let mut lines = text.lines();
    assert!(lines
        .next()
        .unwrap()
        .starts_with("id,parent_id,chunk,n_chunks,byte_start,byte_end,char_start,char_end,n_tokens,truncated,e0,"));
    assert_eq!(lines.count(), rows.len());
    // Parquet: the same rows, ids in order.
    let pq = dir.join("whole.parquet");
    let o = run(embed_args(&model, &input, &pq, &dir.join("pq")).args(CHUNKING));
    assert!(o.status.success(), "{}", stderr(&o));
    let (ids, vectors) = llama_embedding::sink::parquet::read_parquet(&pq).unwrap();
    let want: Vec<String> = rows
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, want);
    assert_eq!(vectors[3], vector(&rows[3]));
}

#[test]
fn store_search_returns_the_queried_chunk_first_with_its_parent() {
    let Some(model) = minilm("chunked store search") else {
        return;
    };
    let dir = temp("chunks-store");
    let (input, docs) = documents(&dir, 10);
    let db = format!("sqlite:{}", dir.join("s.db").display());
    let o = run(bin()
        .args(["embed", "-q", "-m"])
        .arg(&model)
        .arg(&input)
        .args(CHUNKING)
        .args(["--store", &db, "--store-text", "--run-dir"])
        .arg(dir.join("run")));
    assert!(o.status.success(), "{}", stderr(&o));
    // Query with the text of a chunk from the middle of the fourth document.
    let o = run(bin()
        .args(["embed", "-q", "-m"])
        .arg(&model)
        .arg(&input)
        .args(CHUNKING)
        .arg("-o")
        .arg(dir.join("rows.jsonl"))
        .arg("--run-dir")
        .arg(dir.join("rows")));
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = jsonl(&dir.join("rows.jsonl"));
    let parent = &docs[3].0;
    let mine: Vec<&serde_json::Value> = rows
        .iter()
        .filter(|r| r["parent_id"] == *parent.as_str())
        .collect();
    let target = mine[mine.len() / 2];
    let (b0, b1) = (
        target["byte_start"].as_u64().unwrap() as usize,
        target["byte_end"].as_u64().unwrap() as usize,
    );
    let query = &docs[3].1[b0..b1];
    let o = run(bin().args(["search", &db, query, "-k", "3", "--json"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let hits: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(hits[0]["id"], target["id"], "{hits:?}");
    assert_eq!(hits[0]["fields"]["parent_id"], *parent.as_str());
    assert_eq!(hits[0]["text"], query);
    assert!(hits[0]["distance"].as_f64().unwrap() < 1e-4);
    // The table view names the parent and the span.
    let o = run(bin().args(["search", &db, query, "-k", "1"]));
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(
        table.contains(&format!("[in {parent}, bytes {b0}..{b1}]")),
        "{table}"
    );
}

/// A folder of real documents in subfolders, with a binary file, a .gitignore'd folder and a
/// hidden file.
fn document_folder(dir: &Path) -> Vec<String> {
    let root = dir.join("corpus");
    let mut ids = Vec::new();
    let mut packages: Vec<PathBuf> = std::fs::read_dir("/usr/share/doc")
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    packages.sort();
    let mut seen = std::collections::HashSet::new();
    for p in packages {
        let Ok(text) = std::fs::read_to_string(p.join("copyright")) else {
            continue;
        };
        if !(3000..12_000).contains(&text.len()) || !seen.insert(text.clone()) {
            continue;
        }
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let sub = if ids.len() % 2 == 0 { "a" } else { "b/c" };
        let id = format!("{sub}/{name}.txt");
        std::fs::create_dir_all(root.join(sub)).unwrap();
        std::fs::write(root.join(&id), text).unwrap();
        ids.push(id);
        if ids.len() == 14 {
            break;
        }
    }
    std::fs::write(root.join("a/blob.bin"), b"\x7fELF\0\0\x01").unwrap();
    ids.push("a/blob.bin".into());
    std::fs::create_dir_all(root.join("build")).unwrap();
    std::fs::write(root.join("build/ignored.txt"), "ignored").unwrap();
    std::fs::write(root.join(".gitignore"), "build/\n").unwrap();
    std::fs::write(root.join(".hidden.txt"), "hidden").unwrap();
    ids.sort();
    ids
}

#[test]
fn a_directory_input_is_one_item_per_file_and_a_killed_chunked_run_resumes_identically() {
    let Some(model) = minilm("directory input") else {
        return;
    };
    let dir = temp("chunks-dir");
    let ids = document_folder(&dir);
    let root = dir.join("corpus");
    let extra = [
        "--chunk-tokens",
        "128",
        "--window",
        "1",
        "--save-every",
        "1",
    ];
    let reference = dir.join("ref.jsonl");
    let started = std::time::Instant::now();
    let o = run(embed_args(&model, &root, &reference, &dir.join("ref")).args(extra));
    let span = started.elapsed().as_millis() as u64;
    assert_eq!(
        o.status.code(),
        Some(3),
        "the binary file fails: {}",
        stderr(&o)
    );
    let rows = jsonl(&reference);
    let parents: std::collections::BTreeSet<String> = rows
        .iter()
        .map(|r| r["parent_id"].as_str().unwrap().to_string())
        .collect();
    let want: std::collections::BTreeSet<String> = ids
        .iter()
        .filter(|i| !i.ends_with(".bin"))
        .cloned()
        .collect();
    assert_eq!(
        parents, want,
        "one item per file, ignored and hidden files skipped"
    );
    let errors = std::fs::read_to_string(dir.join("ref/errors.jsonl")).unwrap();
    let e: serde_json::Value = serde_json::from_str(errors.lines().next().unwrap()).unwrap();
    assert_eq!(
        (e["id"].as_str(), e["error_type"].as_str()),
        (Some("a/blob.bin"), Some("binary")),
        "{errors}"
    );
    // Rows follow the files' path order.
    let order: Vec<&str> = rows
        .iter()
        .map(|r| r["parent_id"].as_str().unwrap())
        .collect();
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);

    let out = dir.join("killed.jsonl");
    let kills = run_with_kills(
        &model,
        &root,
        Some(&out),
        &dir.join("run"),
        &extra,
        &[],
        0x5eed,
        span / 2,
    );
    assert!(
        kills >= 2,
        "the run was too short to be killed ({kills} kills)"
    );
    assert_same_bytes(&out, &reference, &format!("differs after {kills} kills"));

    // --glob picks files (shell rules), and needs a directory INPUT.
    let o = run(
        embed_args(&model, &root, &dir.join("glob.jsonl"), &dir.join("glob"))
            .args(["--glob", "b/**/*.txt"]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let got: Vec<String> = jsonl(&dir.join("glob.jsonl"))
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = ids
        .iter()
        .filter(|i| i.starts_with("b/"))
        .cloned()
        .collect();
    assert_eq!(got, want);
    let o = run(bin()
        .args(["embed", "-q", "--glob", "*.md", "-m"])
        .arg(&model)
        .arg(dir.join("ref.jsonl")));
    assert_eq!(
        o.status.code(),
        Some(2),
        "--glob needs a directory: {}",
        stderr(&o)
    );
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn gz_and_zst_inputs_read_transparently_and_a_killed_chunked_gz_run_resumes_identically() {
    let Some(model) = minilm("compressed inputs") else {
        return;
    };
    let dir = temp("chunks-gz");
    let (plain, _) = documents(&dir, 10);
    let bytes = std::fs::read(&plain).unwrap();
    let gz = dir.join("docs.jsonl.gz");
    std::fs::write(&gz, gzip(&bytes)).unwrap();
    let zst = dir.join("docs.jsonl.zst");
    std::fs::write(&zst, zstd::encode_all(&bytes[..], 3).unwrap()).unwrap();
    let mut extra = CHUNKING.to_vec();
    extra.extend(["--window", "1", "--save-every", "1"]);
    let reference = dir.join("ref.jsonl");
    let started = std::time::Instant::now();
    let o = run(embed_args(&model, &plain, &reference, &dir.join("ref")).args(&extra));
    assert!(o.status.success(), "{}", stderr(&o));
    let span = started.elapsed().as_millis() as u64;
    let out = dir.join("zst.jsonl");
    let o = run(embed_args(&model, &zst, &out, &dir.join("zst")).args(&extra));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_bytes(&out, &reference, "zst differs");
    let out = dir.join("gz.jsonl");
    let kills = run_with_kills(
        &model,
        &gz,
        Some(&out),
        &dir.join("gz"),
        &extra,
        &[],
        0x9a,
        span / 2,
    );
    assert!(
        kills >= 2,
        "the run was too short to be killed ({kills} kills)"
    );
    assert_same_bytes(&out, &reference, &format!("gz differs after {kills} kills"));
}

#[test]
fn a_corrupt_gz_input_fails_naming_the_file_and_resumes_once_it_is_fixed() {
    let model = tiny();
    let dir = temp("corrupt-gz");
    let text = corpus(3000);
    let plain = dir.join("in.txt");
    std::fs::write(&plain, &text).unwrap();
    let extra = ["--window", "16", "--save-every", "1"];
    let reference = dir.join("ref.jsonl");
    let o = run(embed_args(&model, &plain, &reference, &dir.join("ref")).args(extra));
    assert!(o.status.success(), "{}", stderr(&o));

    let good = gzip(text.as_bytes());
    let gz = dir.join("in.txt.gz");
    // Cut the stream two thirds in: a truncated download.
    std::fs::write(&gz, &good[..good.len() * 2 / 3]).unwrap();
    let out = dir.join("out.jsonl");
    let o = run(embed_args(&model, &gz, &out, &dir.join("run")).args(extra));
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("in.txt.gz") && err.contains("reading stopped after item"),
        "{err}"
    );
    let st = llama_embedding::job::run_status(&dir.join("run")).unwrap();
    assert!(
        st.done > 1000,
        "the items before the cut are kept: {}",
        st.done
    );

    // Fixed (downloaded again): the resume checks the ids it skips and finishes identically.
    std::fs::write(&gz, &good).unwrap();
    let o = run(bin().args(["embed", "-q", "--resume"]).arg(dir.join("run")));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_bytes(&out, &reference, "differs after the fix");

    // Another file in its place is refused: its items are not the run's.
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(&gz, &good[..good.len() / 2]).unwrap();
    let o = run(embed_args(&model, &gz, &dir.join("o.jsonl"), &other).args(extra));
    assert!(!o.status.success());
    let shuffled: String = text.lines().rev().map(|l| format!("{l}\n")).collect();
    std::fs::write(&gz, gzip(shuffled.as_bytes())).unwrap();
    let o = run(bin().args(["embed", "-q", "--resume"]).arg(&other));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("differs from the one the run read"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_parquet_input_gives_the_rows_of_the_same_records_as_jsonl() {
    use std::sync::Arc;
    let Some(model) = minilm("parquet input") else {
        return;
    };
    let dir = temp("chunks-parquet");
    let (plain, docs) = documents(&dir, 10);
    let schema = Arc::new(arrow_schema::Schema::new(vec![
        arrow_schema::Field::new("id", arrow_schema::DataType::Utf8, false),
        arrow_schema::Field::new("text", arrow_schema::DataType::Utf8, false),
    ]));
    let ids: Vec<&str> = docs.iter().map(|(id, _)| id.as_str()).collect();
    let texts: Vec<&str> = docs.iter().map(|(_, t)| t.as_str()).collect();
    let batch = arrow_array::RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(arrow_array::StringArray::from(ids)),
            Arc::new(arrow_array::StringArray::from(texts)),
        ],
    )
    .unwrap();
    let pq = dir.join("docs.parquet");
    let props = parquet::file::properties::WriterProperties::builder()
        .set_max_row_group_row_count(Some(3))
        .build();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&pq).unwrap(),
        schema,
        Some(props),
    )
    .unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    let want = dir.join("jsonl.jsonl");
    let o = run(embed_args(&model, &plain, &want, &dir.join("a")).args(CHUNKING));
    assert!(o.status.success(), "{}", stderr(&o));
    let got = dir.join("parquet.jsonl");
    let o = run(embed_args(&model, &pq, &got, &dir.join("b"))
        .args(CHUNKING)
        .args(["--window", "2", "--save-every", "1"]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_bytes(&got, &want, "parquet rows differ from jsonl");
    let o = run(
        embed_args(&model, &pq, &dir.join("x.jsonl"), &dir.join("c"))
            .args(["--text-field", "body"]),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no column \"body\""), "{}", stderr(&o));
}

/// A store under test: its spec, how to count its rows, its environment.
struct TestStore {
    spec: String,
    count: Box<dyn Fn() -> u64>,
    env: Vec<(String, String)>,
}

#[test]
fn both_stores_drop_the_extra_chunk_rows_of_an_item_that_shrank() {
    let Some(model) = minilm("chunked store rewrite") else {
        return;
    };
    let dir = temp("chunks-shrink");
    let (input, docs) = documents(&dir, 4);
    // The first document cut to its first paragraph: fewer chunks than before.
    let short = dir.join("short.jsonl");
    let mut lines: Vec<String> = std::fs::read_to_string(&input)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let first_para = docs[0].1.split("\n\n").next().unwrap();
    lines[0] = serde_json::json!({"id": docs[0].0, "text": first_para}).to_string();
    std::fs::write(&short, lines.join("\n") + "\n").unwrap();
    let out = dir.join("check.jsonl");
    let o = run_cmd(embed_args(&model, &short, &out, &dir.join("check")).args(CHUNKING));
    assert!(o.status.success(), "{}", stderr(&o));
    let want = jsonl(&out).len() as u64;

    let pg = llama_embedding::fixtures::TempPostgres::start("chunked store rewrite");
    let sha = llama_embedding::EmbeddingModel::load(&model, &Default::default(), true)
        .unwrap()
        .sha256()
        .unwrap();
    let mut stores: Vec<TestStore> = Vec::new();
    let db = dir.join("s.db");
    stores.push(TestStore {
        spec: format!("sqlite:{}", db.display()),
        count: Box::new(move || llama_embedding::store::SqliteStore::count(&db).unwrap()),
        env: Vec::new(),
    });
    if let Some(pg) = &pg {
        let (url, pw) = (pg.url(), pg.password.clone());
        std::env::set_var("PGPASSWORD", &pw);
        let sha = sha.clone();
        let u = url.clone();
        stores.push(TestStore {
            spec: format!("{url}?table=chunks"),
            count: Box::new(move || {
                llama_embedding::store::PgStore::count(&u, "chunks", &sha).unwrap()
            }),
            env: vec![("PGPASSWORD".into(), pw)],
        });
    }
    for (k, TestStore { spec, count, env }) in stores.iter().enumerate() {
        let embed = |input: &Path, run: &str| {
            let o = run_cmd(
                bin()
                    .args(["embed", "-q", "-m"])
                    .arg(&model)
                    .arg(input)
                    .args(CHUNKING)
                    .args(["--store", spec, "--run-dir"])
                    .arg(dir.join(format!("{run}-{k}")))
                    .envs(env.iter().map(|(a, b)| (a.as_str(), b.as_str()))),
            );
            assert!(o.status.success(), "{spec}: {}", stderr(&o));
        };
        embed(&input, "first");
        let before = count();
        embed(&short, "second");
        assert_eq!(count(), want, "{spec}: no stale chunk rows (was {before})");
        assert!(want < before);
    }
}

#[test]
fn a_chunked_version_reruns_whole_items_and_compares_per_chunk_row() {
    let Some(model) = minilm("chunked versions") else {
        return;
    };
    let dir = temp("chunks-versions");
    let (input, docs) = documents(&dir, 6);
    let root = dir.join("runs");
    let runs = |args: &[&str]| run_cmd(bin().arg("runs").args(args).arg("--runs-dir").arg(&root));
    let o = run_cmd(
        bin()
            .args(["embed", "-q", "-m"])
            .arg(&model)
            .arg(&input)
            .args(CHUNKING)
            .args(["--run-name", "docs", "--runs-dir"])
            .arg(&root),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v0 = root.join("docs/v0/output.jsonl");
    let rows = jsonl(&v0);
    // Rerun two documents with the run's settings: the same bits, every row in place.
    let picked = format!("{},{}", docs[1].0, docs[4].0);
    let o = runs(&["rerun", "docs", &picked, "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_same_bytes(
        &root.join("docs/v1/output.jsonl"),
        &v0,
        "a chunked rerun with the same settings",
    );
    // With a prefix, only those documents' chunks change; compare counts chunk rows.
    let o = runs(&["rerun", "docs", &picked, "--prefix", "passage: ", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v2 = jsonl(&root.join("docs/v2/output.jsonl"));
    let changed: Vec<&serde_json::Value> = v2
        .iter()
        .filter(|r| r["parent_id"] == *docs[1].0.as_str() || r["parent_id"] == *docs[4].0.as_str())
        .collect();
    assert!(!changed.is_empty());
    let o = runs(&["compare", "docs", "v0", "v2", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let c: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let kept = rows.len()
        - rows
            .iter()
            .filter(|r| {
                r["parent_id"] == *docs[1].0.as_str() || r["parent_id"] == *docs[4].0.as_str()
            })
            .count();
    assert_eq!(c["identical"].as_u64(), Some(kept as u64), "{c}");
}
