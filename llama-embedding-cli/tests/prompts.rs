//! Issue 17 through the binary, on the tiny random EmbeddingGemma (prompts in its GGUF): `model
//! import` of a Gemma3 folder, `model info`, `embed` applying the document prompt by default and
//! recording it, `--prompt`, `--dimensions` and their errors, and `--resume` refusing another
//! prompt.

mod util;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use util::{bin, embed_args, jsonl, run, stderr, temp, vector};

/// The tiny EmbeddingGemma folder written by the fixture, imported again by the CLI.
fn tiny_gemma() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = temp("tiny-gemma-src").join("tiny-gemma-folder");
        llama_embedding::fixtures::write_tiny_gemma(&dir).unwrap();
        let out = dir.parent().unwrap().join("cli-import.gguf");
        let o = run(bin()
            .args(["model", "import"])
            .arg(&dir)
            .arg("-o")
            .arg(&out)
            .args(["--type", "f32"]));
        assert!(o.status.success(), "{}", stderr(&o));
        out
    })
    .clone()
}

fn input(dir: &Path) -> PathBuf {
    let p = dir.join("in.txt");
    std::fs::write(
        &p,
        "the quick brown fox\nhello world\nthe lazy dog jumps\nembedding model test\n",
    )
    .unwrap();
    p
}

fn summary(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap()
}

#[test]
fn model_info_shows_the_family_prompts_and_matryoshka_sizes() {
    let o = run(bin().args(["model", "info", "-m"]).arg(tiny_gemma()));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "EmbeddingGemma",
        "768, 512, 256, 128",
        "title: none | text: ",
        "task: search result | query: ",
        "tiny-gemma-folder",
    ] {
        assert!(out.contains(want), "{want:?} not in:\n{out}");
    }
}

#[test]
fn embed_uses_the_document_prompt_by_default_and_records_it() {
    let dir = temp("prompt-default");
    let inp = input(&dir);
    let o = run(embed_args(
        &tiny_gemma(),
        &inp,
        &dir.join("a.jsonl"),
        &dir.join("run-a"),
    )
    .arg("--summary-json")
    .arg(dir.join("summary.json")));
    assert!(o.status.success(), "{}", stderr(&o));
    let s = summary(&dir);
    assert_eq!(s["prompt"], "document");
    assert_eq!(s["prefix"], "title: none | text: ");
    assert_eq!(s["dimensions"], 32);
    // The same as writing the prompt's text as --prefix; different from --prompt none.
    let o = run(embed_args(
        &tiny_gemma(),
        &inp,
        &dir.join("b.jsonl"),
        &dir.join("run-b"),
    )
    .args(["--prefix", "title: none | text: "]));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(embed_args(
        &tiny_gemma(),
        &inp,
        &dir.join("c.jsonl"),
        &dir.join("run-c"),
    )
    .args(["--prompt", "none"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let (a, b, c) = (
        jsonl(&dir.join("a.jsonl")),
        jsonl(&dir.join("b.jsonl")),
        jsonl(&dir.join("c.jsonl")),
    );
    assert_eq!(a.len(), 4);
    for i in 0..4 {
        assert_eq!(vector(&a[i]), vector(&b[i]), "row {i}");
        assert_ne!(vector(&a[i]), vector(&c[i]), "row {i}");
    }
    // Resuming with another prompt would mix vectors: refused.
    let o = run(bin()
        .args(["embed", "-q", "-m"])
        .arg(tiny_gemma())
        .arg(&inp)
        .arg("-o")
        .arg(dir.join("a.jsonl"))
        .arg("--resume")
        .arg(dir.join("run-a"))
        .args(["--prompt", "query"]));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("vector settings differ"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn prompt_and_dimension_errors_name_the_reason() {
    let dir = temp("prompt-errors");
    let inp = input(&dir);
    let out = dir.join("o.jsonl");
    let o = run(embed_args(&tiny_gemma(), &inp, &out, &dir.join("r1")).args(["--prompt", "poem"]));
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("no prompt \"poem\"") && stderr(&o).contains("document, query"),
        "{}",
        stderr(&o)
    );
    let o =
        run(embed_args(&tiny_gemma(), &inp, &out, &dir.join("r2")).args(["--dimensions", "16"]));
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--force-dimensions"), "{}", stderr(&o));
    let o = run(
        embed_args(&tiny_gemma(), &inp, &out, &dir.join("r3")).args([
            "--dimensions",
            "16",
            "--force-dimensions",
        ]),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = jsonl(&out);
    assert_eq!(rows.len(), 4);
    for r in &rows {
        let v = vector(r);
        assert_eq!(v.len(), 16);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "norm {norm}");
    }
    // A BERT without prompts: --prompt is refused, saying so.
    let o = run(
        embed_args(&util::tiny(), &inp, &dir.join("p.jsonl"), &dir.join("r4"))
            .args(["--prompt", "query"]),
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no named prompts"), "{}", stderr(&o));
}

#[test]
fn model_info_says_when_llama_embed_appends_the_eos_a_qwen3_gguf_lacks() {
    let dir = temp("qwen3-info");
    for (eos_in_gguf, want) in [
        (false, "appended by llama-embed"),
        (true, "added by the GGUF's tokenizer"),
    ] {
        let path =
            llama_embedding::tiny_qwen3::write(&dir, &format!("q{eos_in_gguf}.gguf"), eos_in_gguf)
                .unwrap();
        let o = run(bin().args(["model", "info", "-m"]).arg(&path));
        assert!(o.status.success(), "{}", stderr(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(want) && out.contains("Qwen3-Embedding") && out.contains("(causal)"),
            "{out}"
        );
    }
}
