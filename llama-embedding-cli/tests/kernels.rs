//! CPU kernels as a user meets them: `model kernels`, `--cpu-variant`, the variant recorded
//! with a run, a resume that keeps the run's kernels, and shards of different kernels refused
//! by merge.

mod util;

use std::path::Path;

use util::*;

fn kernels_json(extra: &[&str]) -> serde_json::Value {
    let out = run(bin().args(extra).args(["model", "kernels", "--json"]));
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn metadata(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("metadata.json")).unwrap()).unwrap()
}

#[test]
fn the_best_variant_runs_and_a_named_one_can_be_asked_for() {
    let k = kernels_json(&[]);
    let variants = k["variants"].as_array().unwrap();
    assert!(
        variants.len() >= 10,
        "ggml's x86-64 variants: {}",
        variants.len()
    );
    let best = &variants[0];
    let chosen = &k["chosen"];
    let refused: Vec<&str> = chosen["refused"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["variant"].as_str().unwrap())
        .collect();
    assert!(
        chosen["variant"] == best["name"] || refused.contains(&best["name"].as_str().unwrap()),
        "{k}"
    );
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap();
    assert!(cpuinfo.contains(chosen["cpu"]["model"].as_str().unwrap()));
    if cpuinfo.contains(" avx2 ") {
        assert!(
            chosen["features"]
                .as_array()
                .unwrap()
                .iter()
                .any(|f| f == "AVX2"),
            "{chosen}"
        );
    }

    // Asked for by name (flag or environment), the baseline x64 variant runs.
    let x64 = kernels_json(&["--cpu-variant", "x64"]);
    assert_eq!(x64["chosen"]["variant"], "x64");
    let out = run(bin()
        .env("LLAMA_EMBED_CPU_VARIANT", "x64")
        .args(["model", "kernels", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["chosen"]["variant"], "x64");

    // A variant that does not exist, or that this CPU cannot run, is an error, not a signal.
    let out = run(bin().args(["--cpu-variant", "nosuch", "model", "kernels"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no CPU kernel variant \"nosuch\""),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("haswell"),
        "lists the variants: {}",
        stderr(&out)
    );
    if let Some(unrunnable) = variants.iter().find(|v| v["score"] == 0) {
        let name = unrunnable["name"].as_str().unwrap();
        let out = run(bin().args(["--cpu-variant", name, "model", "kernels"]));
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(
            stderr(&out).contains("lacks an instruction set"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn a_resumed_run_keeps_its_kernels_and_shards_of_other_kernels_are_not_merged() {
    let Some(model) = minilm("kernels resume") else {
        return;
    };
    let dir = temp("kernels");
    let input = dir.join("in.txt");
    std::fs::write(&input, corpus(2000)).unwrap();
    let best = kernels_json(&[])["chosen"]["variant"]
        .as_str()
        .unwrap()
        .to_string();
    // Another variant this CPU runs (AVX2 machines: piledriver, AVX + FMA + F16C).
    let other = if best == "haswell" {
        "piledriver"
    } else {
        "haswell"
    };

    // Uninterrupted, with the other variant.
    let whole = dir.join("whole.jsonl");
    let o =
        run(embed_args(&model, &input, &whole, &dir.join("whole")).args(["--cpu-variant", other]));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        metadata(&dir.join("whole"))["vectors"]["cpu_kernels"],
        other
    );

    // Killed part way (after its first checkpoint), then resumed with no flag: the run's
    // kernels are used again.
    let part = dir.join("part.jsonl");
    let run_dir = dir.join("part");
    let mut child = embed_args(&model, &input, &part, &run_dir)
        .args(["--cpu-variant", other])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !run_dir.join("checkpoint.json").exists() && start.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert_ne!(
        metadata(&run_dir)["status"],
        "completed",
        "killed before the end"
    );
    let resumed_with_best = run(bin()
        .args(["--cpu-variant", &best, "embed", "-q", "--resume"])
        .arg(&run_dir));
    let why = stderr(&resumed_with_best);
    assert_ne!(resumed_with_best.status.code(), Some(0), "{why}");
    assert!(
        why.contains(other) && why.contains(&best),
        "names both variants: {why}"
    );
    let o = run(bin().args(["embed", "-q", "--resume"]).arg(&run_dir));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(&part).unwrap(),
        std::fs::read(&whole).unwrap(),
        "byte-identical"
    );

    // Two shards of one input, embedded with different kernels: merge refuses them.
    let mut shard_dirs = Vec::new();
    for (k, variant) in [(0, best.as_str()), (1, other)] {
        let d = dir.join(format!("shard{k}"));
        let o = run(
            embed_args(&model, &input, &dir.join(format!("shard{k}.jsonl")), &d).args([
                "--shard",
                &format!("{k}/2"),
                "--cpu-variant",
                variant,
            ]),
        );
        assert!(o.status.success(), "{}", stderr(&o));
        shard_dirs.push(d);
    }
    let o = run(bin()
        .arg("merge")
        .args(&shard_dirs)
        .arg("-o")
        .arg(dir.join("merged.jsonl")));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("CPU kernels"), "{}", stderr(&o));

    // A store made with one variant refuses vectors of another, and takes its own again.
    let small = dir.join("small.txt");
    std::fs::write(&small, corpus(50)).unwrap();
    let store = format!("sqlite:{}", dir.join("store.db").display());
    let into_store = |variant: &str, run_dir: &str| {
        run(bin()
            .args(["--cpu-variant", variant, "embed", "-q", "-m"])
            .arg(&model)
            .arg(&small)
            .args(["--store", &store, "--run-dir"])
            .arg(dir.join(run_dir)))
    };
    let o = into_store(&best, "store-a");
    assert!(o.status.success(), "{}", stderr(&o));
    let o = into_store(other, "store-b");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let why = stderr(&o);
    assert!(
        why.contains(&format!(
            "the {best} CPU kernels and this run uses the {other} kernels"
        )),
        "{why}"
    );
    assert!(why.contains("LLAMA_EMBED_CPU_VARIANT"), "{why}");
    let o = into_store(&best, "store-c");
    assert!(o.status.success(), "{}", stderr(&o));
}
