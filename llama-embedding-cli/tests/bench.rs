//! `llama-embed bench` end to end on the tiny model: every output, the table's best mark,
//! the recommendation as flags `embed` accepts, and Ctrl-C keeping what finished.

mod util;

use std::time::{Duration, Instant};

use util::*;

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn bench_sweeps_and_writes_table_json_csv_svg_png_and_a_recommendation() {
    let model = tiny();
    let dir = temp("bench");
    let out = dir.join("out");
    let o = run(bin()
        .args([
            "bench",
            "--synthetic",
            "120",
            "--batch-sizes",
            "1,8",
            "--workers",
            "1,2",
        ])
        .args(["--repeat", "2", "--all-repeats", "--recommend", "-m"])
        .arg(&model)
        .arg("--out")
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bench.json")).unwrap()).unwrap();
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4, "2 batch sizes x 2 splits");
    assert_eq!(report["complete"], true);
    assert_eq!(report["texts"], 120);
    let mut splits: Vec<(u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["setting"]["workers"].as_u64().unwrap(),
                r["setting"]["threads"].as_u64().unwrap(),
            )
        })
        .collect();
    splits.dedup();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    assert_eq!(splits, [(1, cores), (2, (cores / 2).max(1))]);
    for r in rows {
        assert_eq!(r["repeats"], 2);
        let runs = r["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        for run in runs {
            assert_eq!(run["texts_succeeded"], 120);
            assert_eq!(run["texts_failed"], 0);
        }
        let tps = &r["tokens_per_second"];
        assert!(tps["min"].as_f64().unwrap() <= tps["median"].as_f64().unwrap());
        assert!(tps["median"].as_f64().unwrap() <= tps["max"].as_f64().unwrap());
        assert!(r["peak_memory_mb"]["median"].as_f64().unwrap() > 0.0);
    }
    // The best setting is the fastest median, marked once in the table.
    let fastest = rows
        .iter()
        .max_by(|a, b| {
            a["tokens_per_second"]["median"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["tokens_per_second"]["median"].as_f64().unwrap())
        })
        .unwrap();
    assert_eq!(report["best"], fastest["setting"]);
    assert_eq!(stdout.matches("<- best").count(), 1, "{stdout}");

    let csv = std::fs::read_to_string(out.join("bench.csv")).unwrap();
    assert_eq!(csv.lines().count(), 5);
    assert!(csv.starts_with("batch_size,token_budget,workers,threads,"));

    let svg = std::fs::read_to_string(out.join("bench.svg")).unwrap();
    assert!(svg.starts_with("<svg") || svg.contains("<svg"));
    assert!(
        svg.contains("batch size") && svg.contains("worker x"),
        "labels missing"
    );
    assert_eq!(
        png_size(&std::fs::read(out.join("bench.png")).unwrap()),
        (1200, 520)
    );

    // The recommendation is flags `embed` takes.
    let rec = stdout
        .lines()
        .find_map(|l| l.strip_prefix("recommended: llama-embed embed "))
        .unwrap_or_else(|| panic!("no recommendation in {stdout}"));
    std::fs::write(dir.join("in.txt"), corpus(50)).unwrap();
    let o = run(bin()
        .args(["embed", "-q", "-m"])
        .arg(&model)
        .arg(dir.join("in.txt"))
        .arg("-o")
        .arg(dir.join("rec.jsonl"))
        .arg("--run-dir")
        .arg(dir.join("rec"))
        .args(rec.split_whitespace()));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(jsonl(&dir.join("rec.jsonl")).len(), 50);
}

#[test]
fn ctrl_c_stops_the_bench_and_keeps_the_settings_that_finished() {
    let model = tiny();
    let dir = temp("bench-int");
    let out = dir.join("out");
    let mut child = bin()
        .args([
            "bench",
            "--synthetic",
            "3000",
            "--batch-sizes",
            "1,2,4,8,16,32",
        ])
        .args(["--repeat", "3", "-q", "-m"])
        .arg(&model)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    while !out.join("bench.json").exists() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no setting finished"
        );
        assert!(child.try_wait().unwrap().is_none(), "bench ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = Instant::now();
    let pid = child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap()
        .success());
    let o = child.wait_with_output().unwrap();
    assert!(
        sent.elapsed() < Duration::from_secs(20),
        "took {:?}",
        sent.elapsed()
    );
    assert_eq!(
        o.status.code(),
        Some(130),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("bench.json")).unwrap()).unwrap();
    assert_eq!(report["complete"], false);
    let n = report["rows"].as_array().unwrap().len();
    assert!((1..7).contains(&n), "{n} rows");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("interrupted") && stdout.contains("<- best"),
        "{stdout}"
    );
    assert!(out.join("bench.png").is_file() && out.join("bench.csv").is_file());
}

/// `bench --models`: one sweep per model (each into OUT/NAME/), then a table of weight type,
/// best tokens/s and min cosine against the first model. The second model is the tiny BERT
/// re-imported as q8_0 (`model import --type q8_0`).
#[test]
fn bench_models_compares_weight_types() {
    let f32_model = tiny();
    let dir = temp("bench-models");
    let q8 = dir.join("tiny-q8_0.gguf");
    let checkpoint = f32_model.parent().unwrap();
    let o = run(bin()
        .args(["model", "import"])
        .arg(checkpoint)
        .arg("-o")
        .arg(&q8)
        .args(["--type", "q8_0"]));
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.join("out");
    let models = format!("{},{}", f32_model.display(), q8.display());
    let o = run(bin()
        .args([
            "bench",
            "--synthetic",
            "60",
            "--batch-sizes",
            "8",
            "--repeat",
            "1",
            "-q",
        ])
        .args(["--models", &models, "--out"])
        .arg(&out));
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    for name in ["tiny-bert", "tiny-q8_0"] {
        assert!(
            out.join(name).join("bench.json").is_file(),
            "{name}: {stdout}"
        );
    }
    let line = |name: &str| -> Vec<String> {
        stdout
            .lines()
            .find(|l| l.starts_with(name) && !l.contains("bench."))
            .unwrap_or_else(|| panic!("no line for {name}: {stdout}"))
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let first = line("tiny-bert");
    assert_eq!(
        (first[1].as_str(), first[3].as_str()),
        ("f32", "-"),
        "{stdout}"
    );
    assert!(first[2].parse::<f64>().unwrap() > 0.0);
    let second = line("tiny-q8_0");
    assert_eq!(second[1], "q8_0", "{stdout}");
    let cos: f64 = second[3].parse().unwrap();
    assert!(cos > 0.9 && cos < 1.0, "q8_0 against f32: {cos}");
}
