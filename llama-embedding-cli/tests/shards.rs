//! Sharded runs as schedulers start them (Kubernetes Indexed Jobs: JOB_COMPLETION_INDEX;
//! Slurm job arrays: SLURM_ARRAY_TASK_*), and `merge` back into one output identical to an
//! unsharded run.

mod util;

use std::path::{Path, PathBuf};

use util::*;

const N: u64 = 1200;

fn embed(
    model: &Path,
    input: &Path,
    run_dir: &Path,
    out: &Path,
    env: &[(&str, &str)],
    extra: &[&str],
) -> std::process::Output {
    run(bin()
        .args(["embed", "-q", "-m"])
        .arg(model)
        .arg(input)
        .arg("-o")
        .arg(out)
        .arg("--run-dir")
        .arg(run_dir)
        .args(extra)
        .env_remove("SLURM_ARRAY_TASK_ID")
        .env_remove("JOB_COMPLETION_INDEX")
        .envs(env.iter().copied()))
}

/// With the real model, on real texts.
#[test]
fn indexed_job_shards_merge_to_the_unsharded_output() {
    let Some(model) = minilm("shards merge") else {
        return;
    };
    let dir = temp("shards");
    let input = dir.join("in.jsonl");
    // JSONL with string ids, one invalid record, so failed items take part.
    let mut text = String::new();
    for (i, line) in corpus(N as usize).lines().enumerate() {
        if i == 345 {
            text += "{not json\n";
        } else {
            text += &serde_json::json!({"id": format!("doc-{i}"), "text": line}).to_string();
            text += "\n";
        }
    }
    std::fs::write(&input, text).unwrap();
    // The default (exact) mode: byte-identical vectors whatever the batch
    // (specification/embedding.md), so the shards' rows equal the whole run's.
    let extra = ["--id-field", "id"];
    let whole = dir.join("whole.jsonl");
    let o = embed(&model, &input, &dir.join("whole"), &whole, &[], &extra);
    assert_eq!(o.status.code(), Some(3), "one item fails: {}", stderr(&o));

    // Four processes, as the kubelet starts an Indexed Job with completions: 4.
    let children: Vec<(PathBuf, std::process::Child)> = (0..4)
        .map(|k| {
            let run_dir = dir.join(format!("shard-{k}"));
            let child = bin()
                .args(["embed", "-q", "-m"])
                .arg(&model)
                .arg(&input)
                .args(extra)
                .args(["--shard-count", "4", "--summary-json"])
                .arg(dir.join(format!("summary-{k}.json")))
                .arg("-o")
                .arg(dir.join(format!("part-{k}.jsonl")))
                .arg("--run-dir")
                .arg(&run_dir)
                .env_remove("SLURM_ARRAY_TASK_ID")
                .env("JOB_COMPLETION_INDEX", k.to_string())
                .spawn()
                .unwrap();
            (run_dir, child)
        })
        .collect();
    let mut dirs = Vec::new();
    let mut sizes = Vec::new();
    for (k, (d, mut c)) in children.into_iter().enumerate() {
        let st = c.wait().unwrap();
        assert!(
            st.code() == Some(0) || st.code() == Some(3),
            "shard {k}: {st}"
        );
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("summary-{k}.json"))).unwrap())
                .unwrap();
        assert_eq!(s["shard"], format!("{k}/4"));
        assert!(s["shard_source"]
            .as_str()
            .unwrap()
            .contains("JOB_COMPLETION_INDEX"));
        sizes.push(s["stats"]["texts_total"].as_u64().unwrap());
        dirs.push(d);
    }
    // Every item in exactly one shard, and the hash spreads them.
    assert_eq!(sizes.iter().sum::<u64>(), N, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n > N / 5), "{sizes:?}");

    let merged = dir.join("merged.jsonl");
    // Merge in any order of the arguments.
    let o = run(bin()
        .arg("merge")
        .args([&dirs[2], &dirs[0], &dirs[3], &dirs[1]])
        .arg("-o")
        .arg(&merged)
        .arg("--json"));
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        (
            r["items"].as_u64(),
            r["rows"].as_u64(),
            r["failed"].as_u64()
        ),
        (Some(N), Some(N - 1), Some(1))
    );
    assert!(
        std::fs::read(&merged).unwrap() == std::fs::read(&whole).unwrap(),
        "merged output differs from the unsharded run"
    );

    // A shard left out: its items are reported missing and the exit code says so.
    let o = run(bin()
        .arg("merge")
        .args([&dirs[0], &dirs[1], &dirs[2]])
        .arg("-o")
        .arg(dir.join("partial.jsonl"))
        .arg("--json"));
    assert_eq!(o.status.code(), Some(3));
    let r: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(r["absent_shards"], serde_json::json!([3]));
    assert_eq!(
        r["missing_count"].as_u64().unwrap() + r["rows"].as_u64().unwrap() + 1,
        N
    );
    // The same shard twice is refused.
    let o = run(bin()
        .arg("merge")
        .args([&dirs[0], &dirs[0]])
        .arg("-o")
        .arg(dir.join("x.jsonl")));
    assert!(
        !o.status.success() && stderr(&o).contains("given twice"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn slurm_array_variables_and_explicit_shards_pick_the_same_items() {
    let model = tiny();
    let dir = temp("shards-slurm");
    let input = dir.join("in.txt");
    std::fs::write(&input, corpus(400)).unwrap();
    // --array=1-3: ids 1..3, min 1, count 3 -> shard 1/3 for task 2.
    let env = [
        ("SLURM_ARRAY_TASK_ID", "2"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_COUNT", "3"),
    ];
    let a = dir.join("a.jsonl");
    let o = embed(
        &model,
        &input,
        &dir.join("a"),
        &a,
        &env,
        &["--summary-json", dir.join("a.json").to_str().unwrap()],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("a.json")).unwrap()).unwrap();
    assert_eq!(s["shard"], "1/3");
    assert!(s["shard_source"]
        .as_str()
        .unwrap()
        .contains("SLURM_ARRAY_TASK_ID=2"));
    let b = dir.join("b.jsonl");
    let o = embed(&model, &input, &dir.join("b"), &b, &[], &["--shard", "1/3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    let ids: Vec<u64> = jsonl(&b)
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert!(
        !ids.is_empty()
            && ids
                .iter()
                .all(|i| llama_embedding::input::shard_of(&i.to_string(), 3) == 1)
    );

    // Bad values are clear errors before any work.
    for (args, env, want) in [
        (vec!["--shard", "3/3"], vec![], "does not exist"),
        (vec!["--shard", "x"], vec![], "K/N"),
        (vec![], vec![("JOB_COMPLETION_INDEX", "1")], "--shard-count"),
        (vec!["--shard-count", "2"], vec![], "JOB_COMPLETION_INDEX"),
    ] {
        let o = embed(
            &model,
            &input,
            &dir.join("bad"),
            &dir.join("bad.jsonl"),
            &env,
            &args,
        );
        assert!(!o.status.success());
        assert!(stderr(&o).contains(want), "{args:?}: {}", stderr(&o));
    }
}
