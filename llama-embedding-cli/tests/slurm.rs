//! A real single-node Slurm cluster (Debian's slurmctld, slurmd and munge, started by
//! `scripts/slurm-cluster` under a temp dir): `sbatch --array=0-3` runs four `llama-embed embed`
//! tasks that take their shard from Slurm's variables; `merge` must give exactly the output of
//! one unsharded run.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::*;

struct Cluster {
    dir: PathBuf,
    conf: String,
}

impl Cluster {
    fn start(dir: &Path) -> Option<Cluster> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/slurm-cluster");
        let o = Command::new(&script)
            .arg("start")
            .arg(dir)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        match stdout.lines().find_map(|l| l.strip_prefix("SLURM_CONF=")) {
            Some(conf) if o.status.success() => Some(Cluster {
                dir: dir.to_path_buf(),
                conf: conf.to_string(),
            }),
            _ => {
                let why = String::from_utf8_lossy(&o.stderr).into_owned();
                assert!(
                    std::env::var_os("LLAMA_EMBED_REQUIRE_SLURM").is_none(),
                    "cannot start Slurm and LLAMA_EMBED_REQUIRE_SLURM is set: {why}"
                );
                eprintln!("SKIPPED slurm array: cannot start Slurm: {why} (run scripts/deps)");
                None
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/slurm-cluster");
        let _ = Command::new(script).arg("stop").arg(&self.dir).status();
    }
}

#[test]
fn a_slurm_job_array_embeds_four_shards_that_merge_to_the_unsharded_output() {
    let Some(model) = minilm("slurm array") else {
        return;
    };
    let dir = temp("slurm");
    let Some(cluster) = Cluster::start(&dir.join("cluster")) else {
        return;
    };
    let input = dir.join("in.txt");
    std::fs::write(&input, corpus(600)).unwrap();
    let whole = dir.join("whole.jsonl");
    let o = run(bin()
        .args(["embed", "-q", "-m"])
        .arg(&model)
        .arg(&input)
        .arg("-o")
        .arg(&whole)
        .arg("--run-dir")
        .arg(dir.join("whole")));
    assert!(o.status.success(), "{}", stderr(&o));

    let job = dir.join("job.sh");
    std::fs::write(
        &job,
        format!(
            "#!/bin/sh\nset -e\nexec \"{bin}\" embed -q -m \"{model}\" \"{input}\" --workers 1 --threads 1 \
             --summary-json \"{d}/summary-$SLURM_ARRAY_TASK_ID.json\" \
             --run-dir \"{d}/shard-$SLURM_ARRAY_TASK_ID\" -o \"{d}/part-$SLURM_ARRAY_TASK_ID.jsonl\"\n",
            bin = env!("CARGO_BIN_EXE_llama-embed"),
            model = model.display(),
            input = input.display(),
            d = dir.display()
        ),
    )
    .unwrap();
    let o = run(Command::new("sbatch")
        .args([
            "--array=0-3",
            "--wait",
            "--cpus-per-task=1",
            "--job-name=llama-embed-test",
        ])
        .arg(format!("--output={}/slurm-%a.log", dir.display()))
        .arg(&job)
        .env("SLURM_CONF", &cluster.conf)
        .env_remove("SLURM_ARRAY_TASK_ID"));
    let logs: String = (0..4)
        .map(|k| std::fs::read_to_string(dir.join(format!("slurm-{k}.log"))).unwrap_or_default())
        .collect();
    assert!(o.status.success(), "sbatch: {} {logs}", stderr(&o));

    let mut dirs = Vec::new();
    let mut total = 0;
    for k in 0..4 {
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join(format!("summary-{k}.json"))).unwrap())
                .unwrap();
        assert_eq!(s["status"], "completed");
        assert_eq!(s["shard"], format!("{k}/4"));
        assert!(
            s["shard_source"]
                .as_str()
                .unwrap()
                .contains(&format!("SLURM_ARRAY_TASK_ID={k}")),
            "{s}"
        );
        total += s["stats"]["texts_total"].as_u64().unwrap();
        dirs.push(dir.join(format!("shard-{k}")));
    }
    assert_eq!(total, 600);
    let merged = dir.join("merged.jsonl");
    let o = run(bin().arg("merge").args(&dirs).arg("-o").arg(&merged));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read(&merged).unwrap() == std::fs::read(&whole).unwrap(),
        "merged output differs from the unsharded run"
    );
}
