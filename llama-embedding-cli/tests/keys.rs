//! Content keys (issue 19): every row's `key` is the SHA-256 the library's `key::KeyMaker`
//! makes from the run's recorded settings and the text as embedded (prefix included); equal
//! texts get equal keys, other settings other keys, the batch plan none in the exact mode;
//! chunks, late chunks and document vectors follow their own rule.

mod util;

use std::path::Path;

use llama_embedding::key::{document_key, KeyMaker};
use serde_json::Value;
use util::*;

/// Embeds `input` into `dir/name.jsonl` with `extra` flags; the rows and the run's key maker.
fn embed(
    model: &Path,
    input: &Path,
    dir: &Path,
    name: &str,
    extra: &[&str],
) -> (Vec<Value>, KeyMaker) {
    let out = dir.join(format!("{name}.jsonl"));
    let run_dir = dir.join(name);
    let o = run(embed_args(model, input, &out, &run_dir).args(extra));
    assert!(o.status.success(), "{name}: {}", stderr(&o));
    let meta = llama_embedding::job::load_metadata(&run_dir).unwrap();
    (jsonl(&out), KeyMaker::new(&meta.vectors.key_settings()))
}

fn keys(rows: &[Value]) -> Vec<String> {
    rows.iter()
        .map(|r| r["key"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_rows_key_is_its_text_as_embedded_under_the_runs_settings() {
    let Some(model) = minilm("keys") else { return };
    let dir = temp("keys");
    let input = dir.join("in.txt");
    let lines = ["alpha beta", "gamma delta", "alpha beta", "epsilon"];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();

    let (rows, maker) = embed(&model, &input, &dir, "doc", &["--prefix", "doc: "]);
    let got = keys(&rows);
    for (k, line) in got.iter().zip(lines) {
        assert_eq!(*k, maker.text(Some("doc: "), line));
        assert_eq!(k.len(), 64);
    }
    assert_eq!(got[0], got[2], "equal texts, equal keys");
    assert_ne!(got[0], got[1]);

    // The batch plan changes no vector in the exact mode, so no key either.
    let (plan, _) = embed(
        &model,
        &input,
        &dir,
        "plan",
        &["--prefix", "doc: ", "--batch-size", "1", "--workers", "1"],
    );
    assert_eq!(keys(&plan), got);
    // Another prefix, mode or token limit: other keys for the same texts.
    for (name, flags) in [
        ("query", vec!["--prefix", "query: "]),
        ("fast", vec!["--prefix", "doc: ", "--fast"]),
        ("short", vec!["--prefix", "doc: ", "--max-tokens", "64"]),
    ] {
        let (other, _) = embed(&model, &input, &dir, name, &flags);
        for (a, b) in keys(&other).iter().zip(&got) {
            assert_ne!(a, b, "{name}");
        }
    }
    // "doc: alpha beta" with no prefix is the same text as embedded: the same key.
    std::fs::write(dir.join("prefixed.txt"), "doc: alpha beta\n").unwrap();
    let (same, _) = embed(&model, &dir.join("prefixed.txt"), &dir, "prefixed", &[]);
    assert_eq!(keys(&same)[0], got[0]);
}

#[test]
fn chunks_late_chunks_and_document_vectors_have_their_own_keys() {
    let Some(model) = minilm("keys chunks") else {
        return;
    };
    let dir = temp("keys-chunks");
    let text = corpus(40).replace('\n', " ");
    let input = dir.join("in.jsonl");
    std::fs::write(&input, serde_json::json!({"text": text}).to_string() + "\n").unwrap();

    let (chunks, maker) = embed(&model, &input, &dir, "chunks", &["--chunk-tokens", "48"]);
    assert!(chunks.len() > 3);
    let span = |r: &Value| {
        let (a, b) = (
            r["byte_start"].as_u64().unwrap(),
            r["byte_end"].as_u64().unwrap(),
        );
        a as usize..b as usize
    };
    for r in &chunks {
        assert_eq!(r["key"], maker.text(None, &text[span(r)]).as_str());
    }

    let (doc, _) = embed(
        &model,
        &input,
        &dir,
        "doc",
        &["--chunk-tokens", "48", "--doc-vector", "mean"],
    );
    let chunk_keys = keys(&chunks);
    assert_eq!(
        doc[0]["key"],
        document_key(chunk_keys.iter().map(String::as_str)).as_str()
    );

    let (late, maker) = embed(
        &model,
        &input,
        &dir,
        "late",
        &["--chunk-tokens", "48", "--late-chunking"],
    );
    for r in &late {
        assert_eq!(r["key"], maker.late(None, &text, span(r)).as_str());
    }
    assert_ne!(keys(&late), chunk_keys);
}
