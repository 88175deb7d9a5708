//! The `llama-embed` binary end to end: inputs, every output format round-tripped, exit
//! codes, resume (including kill -9 at random moments), status and errors.

mod util;

use std::path::Path;
use std::time::Duration;

use llama_embedding::engine::cosine;
use util::*;

/// `llama-embed embed -q -m MODEL EXTRA.. FLAG RUN_DIR` (FLAG: --resume or --retry-failed).
fn continue_run(model: &Path, flag: &str, run_dir: &Path, extra: &[&str]) -> std::process::Output {
    run(bin()
        .args(["embed", "-q"])
        .args(extra)
        .arg("-m")
        .arg(model)
        .arg(flag)
        .arg(run_dir))
}

#[test]
fn sample_text_to_jsonl_matches_sentence_transformers() {
    let Some(model) = minilm("cli check8") else {
        return;
    };
    let dir = temp("check8");
    let refj: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared_dir().join("reference/check-8.st-minilm.json")).unwrap(),
    )
    .unwrap();
    let sentences: Vec<&str> = refj["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    // A blank line in the middle: skipped and counted, ids stay line numbers.
    let mut text = sentences[..4].join("\n");
    text.push_str("\n\n");
    text.push_str(&sentences[4..].join("\n"));
    std::fs::write(dir.join("in.txt"), text).unwrap();
    let out = run(embed_args(
        &model,
        &dir.join("in.txt"),
        &dir.join("out.jsonl"),
        &dir.join("run"),
    )
    .args(["--max-tokens", "256", "--summary-json"])
    .arg(dir.join("summary.json")));
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = jsonl(&dir.join("out.jsonl"));
    let ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [0, 1, 2, 3, 5, 6, 7, 8]);
    for (i, r) in rows.iter().enumerate() {
        let reference: Vec<f32> = refj["embeddings"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let c = cosine(&vector(r), &reference);
        assert!(c >= 0.9999, "row {i}: cosine {c}");
        assert!(r["n_tokens"].as_u64().unwrap() >= 3);
        assert_eq!(r["truncated"], false);
    }
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["stats"]["texts_succeeded"], 8);
    assert_eq!(s["stats"]["texts_skipped"], 1);
    assert_eq!(s["status"], "completed");
}

fn read_npy_f32(path: &Path) -> Vec<Vec<f32>> {
    let a = llama_embedding::npy::read(path).unwrap();
    (0..a.rows).map(|i| a.row_f32(i)).collect()
}

#[test]
fn every_output_format_round_trips_the_same_vectors() {
    let model = tiny();
    let dir = temp("formats");
    std::fs::write(dir.join("in.txt"), corpus(120)).unwrap();
    let mut vectors = Vec::new();
    for fmt in ["jsonl", "json", "csv", "npy", "parquet"] {
        // The format named by --format (the file name says nothing).
        let out = dir.join(format!("out-{fmt}.vectors"));
        let o = run(embed_args(
            &model,
            &dir.join("in.txt"),
            &out,
            &dir.join(format!("run-{fmt}")),
        )
        .args(["--format", fmt]));
        assert!(o.status.success(), "{fmt}: {}", stderr(&o));
        let v: Vec<Vec<f32>> = match fmt {
            "jsonl" => jsonl(&out).iter().map(vector).collect(),
            "json" => {
                let doc: serde_json::Value =
                    serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
                assert_eq!(doc["summary"]["texts_succeeded"], 120);
                assert!(doc["job"]["model_sha256"].as_str().unwrap().len() == 64);
                doc["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(vector)
                    .collect()
            }
            "csv" => {
                let mut r = csv::Reader::from_path(&out).unwrap();
                assert_eq!(r.headers().unwrap().len(), 3 + 32);
                r.records()
                    .map(|rec| {
                        rec.unwrap()
                            .iter()
                            .skip(3)
                            .map(|x| x.parse::<f32>().unwrap())
                            .collect()
                    })
                    .collect()
            }
            "npy" => {
                let ids = std::fs::read_to_string(dir.join("out-npy.vectors.ids.jsonl")).unwrap();
                assert_eq!(ids.lines().next(), Some("0"));
                assert_eq!(ids.lines().count(), 120);
                read_npy_f32(&out)
            }
            "parquet" => {
                let (ids, v) = llama_embedding::sink::parquet::read_parquet(&out).unwrap();
                assert_eq!(ids.first().map(String::as_str), Some("0"));
                assert!(
                    !dir.join("out-parquet.vectors.parts").exists(),
                    "parts are removed at the end"
                );
                v
            }
            _ => unreachable!(),
        };
        assert_eq!(v.len(), 120, "{fmt}");
        vectors.push(v);
    }
    for (i, v) in vectors.iter().enumerate().skip(1) {
        assert_eq!(
            v, &vectors[0],
            "format {i} differs from jsonl (bit for bit)"
        );
    }
    // Compact dtypes are derived as documented.
    for (dtype, cols, descr) in [
        ("f16", 32, "<f2"),
        ("int8", 32, "|i1"),
        ("binary", 4, "|u1"),
    ] {
        let out = dir.join(format!("{dtype}.npy"));
        let o = run(embed_args(
            &model,
            &dir.join("in.txt"),
            &out,
            &dir.join(format!("run-{dtype}")),
        )
        .args(["--dtype", dtype]));
        assert!(o.status.success(), "{}", stderr(&o));
        let a = llama_embedding::npy::read(&out).unwrap();
        assert_eq!((a.rows, a.cols, a.descr.as_str()), (120, cols, descr));
        let first = &vectors[0][0];
        match dtype {
            "int8" => assert_eq!(
                a.data[0] as i8,
                llama_embedding::sink::quantize_i8(first[0])
            ),
            "binary" => assert_eq!(a.data[0..4], llama_embedding::sink::pack_bits(first)[..]),
            _ => {
                let h = half::f16::from_le_bytes([a.data[0], a.data[1]]).to_f32();
                assert!((h - first[0]).abs() < 1e-3);
            }
        }
    }
}

#[test]
fn jsonl_and_csv_inputs_keep_their_ids_fields_and_templates() {
    let model = tiny();
    let dir = temp("inputs");
    std::fs::write(
        dir.join("in.jsonl"),
        "{\"doc\": {\"id\": \"a/../x\"}, \"title\": \"hello\", \"body\": \"world\", \"lang\": \"en\"}\n\
         {\"doc\": {\"id\": \"b\"}, \"title\": \"quick\", \"lang\": \"de\"}\n\
         not json at all\n\
         {\"doc\": {\"id\": \"c\"}, \"title\": \"fox\", \"body\": \"dog\", \"lang\": \"fr\"}\n",
    )
    .unwrap();
    let o = run(embed_args(
        &model,
        &dir.join("in.jsonl"),
        &dir.join("out.jsonl"),
        &dir.join("run"),
    )
    .args([
        "--id-field",
        "doc.id",
        "--template",
        "{title}\\n\\n{body}",
        "--keep-fields",
        "lang",
    ]));
    assert_eq!(
        o.status.code(),
        Some(3),
        "some items failed: {}",
        stderr(&o)
    );
    let rows = jsonl(&dir.join("out.jsonl"));
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["a/../x", "c"]);
    assert_eq!(rows[1]["lang"], "fr");
    let errors = jsonl(&dir.join("run/errors.jsonl"));
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["id"], "b");
    assert!(errors[0]["error"]
        .as_str()
        .unwrap()
        .contains("{body} is missing"));
    assert_eq!(errors[1]["error_type"], "parse");
    assert_eq!(errors[1]["line"], 3);
    // The ids never became paths: nothing was written outside the run directory.
    assert!(!dir.join("x").exists());

    std::fs::write(
        dir.join("in.csv"),
        "key,text\nk1,hello world\n=2+3,quick fox\n",
    )
    .unwrap();
    let o = run(embed_args(
        &model,
        &dir.join("in.csv"),
        &dir.join("out.csv"),
        &dir.join("run-csv"),
    )
    .args(["--id-field", "key"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(dir.join("out.csv")).unwrap();
    assert!(
        text.lines().nth(2).unwrap().starts_with("'=2+3,"),
        "formula defused: {text}"
    );
}

#[test]
fn exit_codes_and_one_line_errors_before_any_work() {
    let model = tiny();
    let dir = temp("exits");
    let o = run(bin().args(["embed", "missing.txt", "-m"]).arg(&model));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("input missing.txt does not exist"),
        "{}",
        stderr(&o)
    );
    std::fs::write(dir.join("in.txt"), "a\nb\n").unwrap();
    let o = run(bin()
        .args(["embed", "-m", "nope.gguf"])
        .arg(dir.join("in.txt")));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("nope.gguf") && stderr(&o).contains("does not exist"),
        "{}",
        stderr(&o)
    );
    std::fs::write(dir.join("not.gguf"), "this is text").unwrap();
    let o = run(bin()
        .args(["embed", "-m"])
        .arg(dir.join("not.gguf"))
        .arg(dir.join("in.txt")));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not a GGUF file"), "{}", stderr(&o));
    let o = run(bin().args(["embed", "--bogus"]));
    assert_eq!(o.status.code(), Some(2));
    let o = run(&mut embed_args(
        &model,
        &dir.join("in.txt"),
        &dir.join("o.xyz"),
        &dir.join("r0"),
    ));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // Stop on the first failure: exit 4, the items before it are kept.
    std::fs::write(dir.join("bad.txt"), b"one\ntwo\n\xff\nfour\n").unwrap();
    let o = run(embed_args(
        &model,
        &dir.join("bad.txt"),
        &dir.join("o.jsonl"),
        &dir.join("r1"),
    )
    .args(["--stop-on-error", "--window", "1"]));
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert_eq!(jsonl(&dir.join("o.jsonl")).len(), 2);
    let o = run(&mut embed_args(
        &model,
        &dir.join("bad.txt"),
        &dir.join("o2.jsonl"),
        &dir.join("r2"),
    ));
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(jsonl(&dir.join("o2.jsonl")).len(), 3);
    let st = run(bin().arg("status").arg(dir.join("r2")));
    let st = String::from_utf8_lossy(&st.stdout);
    assert!(
        st.contains("completed") && st.contains("done:         4 (3 embedded, 1 failed)"),
        "{st}"
    );
    let er = run(bin().arg("errors").arg(dir.join("r2")));
    assert!(String::from_utf8_lossy(&er.stdout).contains("2 (line 3): invalid UTF-8"));
}

#[test]
fn resume_refuses_other_vector_settings_and_finished_runs() {
    let model = tiny();
    let dir = temp("refuse");
    std::fs::write(dir.join("in.txt"), corpus(50)).unwrap();
    let o = run(&mut embed_args(
        &model,
        &dir.join("in.txt"),
        &dir.join("o.jsonl"),
        &dir.join("run"),
    ));
    assert!(o.status.success());
    let o = continue_run(&model, "--resume", &dir.join("run"), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already complete"), "{}", stderr(&o));
    // Mark it unfinished, then resume with another --max-tokens.
    let meta_path = dir.join("run/metadata.json");
    let mut m = llama_embedding::job::load_metadata(&dir.join("run")).unwrap();
    m.status = llama_embedding::rundir::RunState::Stopped;
    llama_embedding::rundir::write_checked(&meta_path, &m).unwrap();
    let o = continue_run(
        &model,
        "--resume",
        &dir.join("run"),
        &["--max-tokens", "64"],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot continue") && stderr(&o).contains("vector settings differ"),
        "{}",
        stderr(&o)
    );
    // A changed input is refused.
    let mut text = std::fs::read_to_string(dir.join("in.txt")).unwrap();
    text.push_str("one more line\n");
    std::fs::write(dir.join("in.txt"), text).unwrap();
    let o = continue_run(&model, "--resume", &dir.join("run"), &[]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("in.txt changed since the run started"),
        "{}",
        stderr(&o)
    );
    // And a tampered metadata file is detected.
    let text = std::fs::read_to_string(&meta_path)
        .unwrap()
        .replace("\"stopped\"", "\"running\"");
    std::fs::write(&meta_path, text).unwrap();
    let o = run(bin().arg("status").arg(dir.join("run")));
    assert!(stderr(&o).contains("checksum mismatch"), "{}", stderr(&o));
}

#[test]
fn kill_9_at_random_moments_then_resume_gives_byte_identical_output() {
    let model = tiny();
    let dir = temp("kill");
    std::fs::write(dir.join("in.txt"), corpus(6000)).unwrap();
    let extra = ["--save-every", "64", "--window", "64", "--workers", "2"];
    for fmt in ["jsonl", "npy", "parquet"] {
        let reference = dir.join(format!("ref.{fmt}"));
        let o = run(embed_args(
            &model,
            &dir.join("in.txt"),
            &reference,
            &dir.join(format!("ref-{fmt}")),
        )
        .args(extra));
        assert!(o.status.success(), "{}", stderr(&o));
        let out = dir.join(format!("killed.{fmt}"));
        let kills = run_with_kills(
            &model,
            &dir.join("in.txt"),
            Some(&out),
            &dir.join(format!("run-{fmt}")),
            &extra,
            &[],
            0x5eed + fmt.len() as u64,
            900,
        );
        eprintln!("{fmt}: {kills} kills");
        assert!(
            kills >= 2,
            "the run was too short to be killed ({kills} kills)"
        );
        assert!(
            std::fs::read(&out).unwrap() == std::fs::read(&reference).unwrap(),
            "{fmt} differs after {kills} kills"
        );
        if fmt == "npy" {
            assert_eq!(
                std::fs::read(dir.join("killed.ids.jsonl")).unwrap(),
                std::fs::read(dir.join("ref.ids.jsonl")).unwrap()
            );
        }
        let st = llama_embedding::job::run_status(&dir.join(format!("run-{fmt}"))).unwrap();
        assert_eq!((st.status.as_str(), st.done), ("completed", 6000));
    }
}

#[test]
fn a_killed_run_with_the_real_model_resumes_to_identical_output() {
    let Some(model) = minilm("kill real model") else {
        return;
    };
    let dir = temp("kill-real");
    std::fs::write(dir.join("in.txt"), corpus(1200)).unwrap();
    let extra = ["--save-every", "32", "--window", "32"];
    let reference = dir.join("ref.jsonl");
    let o = run(embed_args(&model, &dir.join("in.txt"), &reference, &dir.join("ref")).args(extra));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.join("killed.jsonl");
    let kills = run_with_kills(
        &model,
        &dir.join("in.txt"),
        Some(&out),
        &dir.join("run"),
        &extra,
        &[],
        42,
        3000,
    );
    assert!(kills >= 1);
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&reference).unwrap(),
        "differs after {kills} kills"
    );
}

#[test]
fn sigterm_checkpoints_exits_130_and_resume_completes_identically() {
    let model = tiny();
    let dir = temp("sigterm");
    std::fs::write(dir.join("in.txt"), corpus(20000)).unwrap();
    let extra = ["--window", "64"];
    let o = run(embed_args(
        &model,
        &dir.join("in.txt"),
        &dir.join("ref.jsonl"),
        &dir.join("ref"),
    )
    .args(extra));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut child = embed_args(
        &model,
        &dir.join("in.txt"),
        &dir.join("out.jsonl"),
        &dir.join("run"),
    )
    .args(extra)
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = std::time::Instant::now();
    let status = child.wait().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(130));
    let st = llama_embedding::job::run_status(&dir.join("run")).unwrap();
    assert_eq!(st.status, llama_embedding::rundir::RunState::Stopped);
    assert!(
        st.done > 0 && st.done < 20000 && st.done.is_multiple_of(64),
        "done {}",
        st.done
    );
    let o = continue_run(&model, "--resume", &dir.join("run"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read(dir.join("out.jsonl")).unwrap()
            == std::fs::read(dir.join("ref.jsonl")).unwrap()
    );
}

#[test]
fn retry_failed_re_embeds_only_the_failed_items() {
    let model = tiny();
    let dir = temp("retry");
    let input = dir.join("in.txt");
    std::fs::write(
        &input,
        b"one fox\ntwo dogs\n\xff broken\nfour cats\n\x00nul\nsix\n",
    )
    .unwrap();
    let o = run(&mut embed_args(
        &model,
        &input,
        &dir.join("out.jsonl"),
        &dir.join("run"),
    ));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert_eq!(jsonl(&dir.join("out.jsonl")).len(), 4);
    // The user fixes the two bad lines, then retries only those.
    std::fs::write(
        &input,
        "one fox\ntwo dogs\nthree birds\nfour cats\nfive fish\nsix\n",
    )
    .unwrap();
    let o = continue_run(&model, "--retry-failed", &dir.join("run"), &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let retried = jsonl(&dir.join("run/retry-1/output.jsonl"));
    let ids: Vec<u64> = retried.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, [2, 4]);
    // Same vectors as a full run over the fixed file.
    let o = run(&mut embed_args(
        &model,
        &input,
        &dir.join("full.jsonl"),
        &dir.join("full"),
    ));
    assert!(o.status.success());
    let full = jsonl(&dir.join("full.jsonl"));
    assert_eq!(vector(&retried[0]), vector(&full[2]));
    assert_eq!(vector(&retried[1]), vector(&full[4]));
    // A retry with other vector settings is refused, not a crash.
    let o = continue_run(
        &model,
        "--retry-failed",
        &dir.join("run"),
        &["--max-tokens", "16"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("vector settings differ"),
        "{}",
        stderr(&o)
    );
    // Nothing left to retry in a clean run.
    let o = continue_run(&model, "--retry-failed", &dir.join("full"), &[]);
    assert!(
        o.status.success() && stderr(&o).contains("has no failed items"),
        "{}",
        stderr(&o)
    );
}

/// `--fast` (flash attention, no alignment): every vector within a cosine of 1e-4 of the
/// exact one (and its components within 1e-3); batches still repeat exactly, so a killed and
/// resumed fast run gives the uninterrupted fast run's output byte for byte; a resume cannot
/// switch modes.
#[test]
fn fast_mode_is_close_to_exact_and_resumes_identically() {
    let Some(model) = minilm("fast mode") else {
        return;
    };
    let dir = temp("fast");
    let input = dir.join("in.txt");
    std::fs::write(&input, corpus(1200)).unwrap();
    let exact = dir.join("exact.jsonl");
    let o = run(&mut embed_args(&model, &input, &exact, &dir.join("exact")));
    assert!(o.status.success(), "{}", stderr(&o));
    let extra = ["--fast", "--save-every", "32", "--window", "32"];
    let fast = dir.join("fast.jsonl");
    let o = run(embed_args(&model, &input, &fast, &dir.join("fast")).args(extra));
    assert!(o.status.success(), "{}", stderr(&o));
    let (a, b) = (jsonl(&exact), jsonl(&fast));
    assert_eq!(a.len(), 1200);
    assert_eq!(b.len(), 1200);
    let mut differ = 0;
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["id"], y["id"]);
        let (u, v) = (vector(x), vector(y));
        let c = cosine(&u, &v);
        assert!(c > 0.9999, "item {}: cosine {c}", x["id"]);
        let worst = u
            .iter()
            .zip(&v)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "item {}: component off by {worst}", x["id"]);
        differ += usize::from(u != v);
    }
    // It is a different computation, not the same one renamed.
    assert!(differ > 0, "fast and exact vectors are all identical");

    let killed = dir.join("killed.jsonl");
    let kills = run_with_kills(
        &model,
        &input,
        Some(&killed),
        &dir.join("run"),
        &extra,
        &[],
        7,
        3000,
    );
    assert!(kills >= 1);
    assert!(
        std::fs::read(&killed).unwrap() == std::fs::read(&fast).unwrap(),
        "fast output differs after {kills} kills"
    );
    let meta = |run: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.join(run).join("metadata.json")).unwrap())
            .unwrap()
    };
    let m = meta("fast");
    assert_eq!(m["vectors"]["mode"], "fast");
    assert_eq!(m["vectors"]["flash_attention"], true);
    assert_eq!(m["vectors"]["token_align"], 1);
    assert_eq!(m["vectors"]["token_budget"], 128);
    let m = meta("exact");
    assert_eq!(m["vectors"]["mode"], "exact");
    assert_eq!(m["vectors"]["token_budget"], 63);

    // The aligned mode (the exact mode of 0.1) is close to the exact one, and a run made before
    // modes were recorded (no `mode`, flash attention off) resumes in it, byte for byte.
    let aligned_extra = ["--token-align", "8", "--save-every", "32", "--window", "32"];
    let aligned = dir.join("aligned.jsonl");
    let o = run(embed_args(&model, &input, &aligned, &dir.join("aligned")).args(aligned_extra));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(meta("aligned")["vectors"]["mode"], "aligned");
    let c = jsonl(&aligned);
    let mut differ = 0;
    for (x, y) in a.iter().zip(&c) {
        let (u, v) = (vector(x), vector(y));
        let c = cosine(&u, &v);
        assert!(c > 0.9999, "item {}: cosine {c}", x["id"]);
        differ += usize::from(u != v);
    }
    assert!(differ > 0, "aligned and exact vectors are all identical");
    let legacy = dir.join("legacy.jsonl");
    let legacy_dir = dir.join("legacy");
    let mut delay = 1500;
    for attempt in 0.. {
        assert!(attempt < 20, "never caught the run in progress");
        let _ = std::fs::remove_dir_all(&legacy_dir);
        let mut child = embed_args(&model, &input, &legacy, &legacy_dir)
            .args(aligned_extra)
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();
        let path = legacy_dir.join("metadata.json");
        let Ok(bytes) = std::fs::read(&path) else {
            delay += 500;
            continue;
        };
        let mut m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        if m["status"] != "running" {
            delay /= 2;
            continue;
        }
        m["vectors"].as_object_mut().unwrap().remove("mode");
        // As 0.1 wrote it: no `mode`, a valid checksum.
        std::fs::write(&path, llama_embedding::rundir::checked_bytes(&m).unwrap()).unwrap();
        break;
    }
    let o = run(bin()
        .args(["embed", "-q", "-m"])
        .arg(&model)
        .arg("--resume")
        .arg(&legacy_dir));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read(&legacy).unwrap() == std::fs::read(&aligned).unwrap(),
        "a resumed pre-mode run is not the aligned mode's output"
    );
}

/// `-o -`: the JSONL rows go to stdout, byte for byte what `-o out.jsonl` writes; the summary
/// stays on stderr. Formats other than JSONL, versions and shards need a file.
#[test]
fn dash_output_writes_the_jsonl_rows_to_stdout() {
    let model = tiny();
    let dir = temp("stdout");
    std::fs::write(dir.join("in.txt"), corpus(300)).unwrap();
    let file = dir.join("out.jsonl");
    let o = run(&mut embed_args(
        &model,
        &dir.join("in.txt"),
        &file,
        &dir.join("run-file"),
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    let mut piped = bin();
    piped
        .args(["embed", "-m"])
        .arg(&model)
        .arg(dir.join("in.txt"))
        .args(["-o", "-", "--run-dir"])
        .arg(dir.join("run-pipe"));
    let o = run(&mut piped);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        o.stdout,
        std::fs::read(&file).unwrap(),
        "stdout rows = file rows"
    );
    assert!(stderr(&o).contains("embedded"), "the summary is on stderr");
    assert_eq!(jsonl(&file).len(), 300);

    for extra in [
        &["--format", "csv"][..],
        &["--run-name", "piped"][..],
        &["--shard", "1/2"][..],
    ] {
        let mut c = bin();
        c.args(["embed", "-q", "-m"])
            .arg(&model)
            .arg(dir.join("in.txt"))
            .args(["-o", "-"])
            .args(extra)
            .current_dir(&dir);
        if extra[0] != "--run-name" {
            c.arg("--run-dir").arg(dir.join("run-refused"));
        }
        let o = run(&mut c);
        assert_eq!(o.status.code(), Some(2), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("-o -"), "{extra:?}: {}", stderr(&o));
        assert!(o.stdout.is_empty());
    }
    assert!(!dir.join("run-refused").exists(), "refused before any work");
    assert!(!dir.join("runs").exists());
}
