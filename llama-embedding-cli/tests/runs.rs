//! Versioned runs (issue: versioned runs, selective reruns, comparison): a scripted session
//! with the real model, as a user types it.

mod util;

use std::collections::BTreeSet;
use std::path::Path;

use util::*;

fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn id_of(line: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v["id"].to_string()
}

#[test]
fn embed_rerun_compare_label_list_reset() {
    let Some(model) = minilm("versioned runs") else {
        return;
    };
    let dir = temp("runs");
    let input = dir.join("in.txt");
    std::fs::write(&input, corpus(90)).unwrap();
    let root = dir.join("runs");
    let runs = |args: &[&str]| run(bin().arg("runs").args(args).arg("--runs-dir").arg(&root));

    // v0
    let o = run(bin()
        .args(["embed", "-q", "-m"])
        .arg(&model)
        .arg(&input)
        .args(["--run-name", "docs", "--notes", "first pass", "--runs-dir"])
        .arg(&root));
    assert!(o.status.success(), "{}", stderr(&o));
    let v0 = root.join("docs/v0");
    assert_eq!(
        std::fs::read_link(root.join("docs/latest")).unwrap(),
        Path::new("v0")
    );
    let meta0: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v0.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(meta0["version"]["version"], "v0");
    assert_eq!(meta0["version"]["mode"], "initial");
    assert_eq!(meta0["version"]["label"], "draft");
    assert_eq!(meta0["version"]["notes"], "first pass");

    // v1: three items again, with a prefix.
    let o = runs(&[
        "rerun", "docs", "3,17", "42", "--prefix", "query: ", "--note", "prefix", "-q",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v1 = root.join("docs/v1");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        v1.display().to_string()
    );
    assert_eq!(
        std::fs::read_link(root.join("docs/latest")).unwrap(),
        Path::new("v1")
    );

    // The collated v1 output is v0's, byte for byte, but for the three rerun rows ...
    let (l0, l1) = (
        lines(&v0.join("output.jsonl")),
        lines(&v1.join("output.jsonl")),
    );
    assert_eq!(l0.len(), 90);
    assert_eq!(l1.len(), 90);
    let rerun: BTreeSet<String> = ["3", "17", "42"].iter().map(|s| s.to_string()).collect();
    let mut changed = BTreeSet::new();
    for (a, b) in l0.iter().zip(&l1) {
        assert_eq!(id_of(a), id_of(b), "same items in the same order");
        if a != b {
            changed.insert(id_of(a));
        }
    }
    assert_eq!(changed, rerun);
    // ... which are what a fresh run of those items with that prefix gives.
    let fresh = dir.join("fresh.jsonl");
    let o = run(bin()
        .args(["embed", "-q", "-m"])
        .arg(&model)
        .arg(&input)
        .args(["--only", "3,17,42", "--prefix", "query: ", "-o"])
        .arg(&fresh)
        .arg("--run-dir")
        .arg(dir.join("fresh")));
    assert!(o.status.success(), "{}", stderr(&o));
    let replaced: Vec<String> = l1
        .iter()
        .filter(|l| rerun.contains(&id_of(l)))
        .cloned()
        .collect();
    assert_eq!(replaced, lines(&fresh));

    // compare v0 v1: those three differ, the rest have cosine 1.
    let c = json(&runs(&[
        "compare", "docs", "v0", "v1", "--detail", "--json",
    ]));
    assert_eq!(c["in_both"], 90);
    assert_eq!(c["only_in_a"], 0);
    assert_eq!(c["only_in_b"], 0);
    assert_eq!(c["identical"], 87);
    let most: Vec<&serde_json::Value> = c["most_changed"].as_array().unwrap().iter().collect();
    let most_ids: BTreeSet<String> = most
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(most_ids, rerun);
    for m in &most {
        let cos = m["cosine"].as_f64().unwrap();
        assert!(cos < 0.999 && cos > 0.3, "{m}");
        assert!(!m["text"].as_str().unwrap().is_empty());
    }
    assert_eq!(c["cosine_min"], most[0]["cosine"]);
    assert_eq!(c["cosine_p50"], 1.0);
    assert_eq!(c["metadata"]["prefix"], serde_json::json!(["-", "query: "]));
    assert_eq!(
        c["metadata"]["mode"],
        serde_json::json!(["initial", "rerun"])
    );
    // The text form says the same.
    let o = runs(&["compare", "docs", "v0", "v1"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(text.contains("identical:    87 of 90"), "{text}");
    assert!(text.contains("* prefix"), "{text}");

    // label v1 final: the default list shows it and hides the draft v0.
    let o = runs(&["label", "docs", "v1", "final"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let l = json(&runs(&["list", "docs", "--json"]));
    let shown: Vec<(String, String, bool)> = l
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_str().unwrap().into(),
                v["label"].as_str().unwrap().into(),
                v["latest"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(shown, vec![("v1".to_string(), "final".to_string(), true)]);
    assert_eq!(
        json(&runs(&["list", "docs", "--all", "--json"]))
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(
        json(&runs(&["list", "--status", "draft", "--json"]))[0]["version"],
        "v0"
    );
    let o = runs(&["list", "docs"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        text.contains("Versions: 2 (hiding 1)") && text.contains("v1 (latest)"),
        "{text}"
    );
    let o = runs(&["label", "docs", "v1", "not a word"]);
    assert_eq!(o.status.code(), Some(1));

    // reset marks an item; rerun without ids redoes it into v2 with v1's settings.
    let o = runs(&["reset", "docs", "7"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let st = json(&run(bin().args(["status", "--json"]).arg(&v1)));
    assert_eq!(
        st["items"],
        serde_json::json!({"done": 89, "failed": 0, "pending": 1})
    );
    let o = runs(&["rerun", "docs", "-q"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v2 = root.join("docs/v2");
    let m2: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v2.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(m2["version"]["base_version"], "v1");
    assert_eq!(m2["version"]["rerun_items"], 1);
    assert_eq!(m2["vectors"]["embed"]["prefix"], "query: ");
    let st = json(&run(bin().args(["status", "--json"]).arg(&v2)));
    assert_eq!(
        st["items"],
        serde_json::json!({"done": 90, "failed": 0, "pending": 0})
    );
    let row = llama_embedding::items::find(&v2, "7").unwrap().unwrap();
    assert_eq!(row.attempts, 2);
    let c = json(&runs(&["compare", "docs", "v1", "v2", "--json"]));
    assert_eq!(c["identical"], 89);

    // Mistakes are refused with the reason.
    let o = runs(&["rerun", "docs", "99999", "-q"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("not items of docs v2: 99999"),
        "{}",
        stderr(&o)
    );
    let o = runs(&["compare", "docs", "v0", "v9"]);
    assert!(stderr(&o).contains("has no version v9"), "{}", stderr(&o));
    let o = runs(&["rerun", "docs", "--base", "v0", "-q"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no failed items"), "{}", stderr(&o));
    let tiny = tiny().display().to_string();
    let o = runs(&["rerun", "docs", "3", "-q", "-m", &tiny]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("one output cannot mix them"),
        "{}",
        stderr(&o)
    );
    assert!(
        !root.join("docs/v3").exists(),
        "a refused rerun makes no version"
    );
}

/// A version interrupted by SIGTERM is `stopped`, `latest` does not point at it; `--resume`
/// finishes it as mode `resume` and moves `latest`. An interrupted rerun is finished with
/// `runs rerun NAME --continue vN`.
#[test]
fn interrupted_versions_resume_and_continue() {
    let model = tiny();
    let dir = temp("runs-resume");
    let input = dir.join("in.txt");
    std::fs::write(&input, corpus(20000)).unwrap();
    let root = dir.join("runs");
    let sigterm_after = |mut c: std::process::Command, ms: u64| {
        let mut child = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(ms));
        let st = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        child.wait().unwrap().code()
    };
    let mut c = bin();
    c.args(["embed", "-q", "-m"])
        .arg(&model)
        .arg(&input)
        .args(["--run-name", "t", "--window", "64", "--runs-dir"])
        .arg(&root);
    assert_eq!(sigterm_after(c, 1500), Some(130));
    let v0 = root.join("t/v0");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v0.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "stopped");
    assert!(
        !root.join("t/latest").exists(),
        "latest points at completed versions only"
    );
    let o = run(bin().args(["embed", "-q", "--resume"]).arg(&v0));
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(v0.join("metadata.json")).unwrap()).unwrap();
    assert_eq!(m["status"], "completed");
    assert_eq!(m["version"]["mode"], "resume");
    assert!(m["version"]["duration_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(
        std::fs::read_link(root.join("t/latest")).unwrap(),
        Path::new("v0")
    );

    // A rerun of every item, interrupted, then continued: same output as an uninterrupted one.
    let ids = dir.join("ids.txt");
    std::fs::write(
        &ids,
        (0..20000).map(|i| format!("{i}\n")).collect::<String>(),
    )
    .unwrap();
    let ids_arg = format!("@{}", ids.display());
    let rerun = [
        "runs",
        "rerun",
        "t",
        &ids_arg,
        "--prefix",
        "p: ",
        "-q",
        "--runs-dir",
    ];
    let mut c = bin();
    c.args(rerun).arg(&root);
    assert_eq!(sigterm_after(c, 1500), Some(130));
    let o = run(bin()
        .args(["runs", "compare", "t", "v0", "v1", "--runs-dir"])
        .arg(&root));
    assert!(stderr(&o).contains("--continue v1"), "{}", stderr(&o));
    let o = run(bin()
        .args(["runs", "rerun", "t", "--continue", "v1", "-q", "--runs-dir"])
        .arg(&root));
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(bin().args(rerun).arg(&root));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read(root.join("t/v1/output.jsonl")).unwrap()
            == std::fs::read(root.join("t/v2/output.jsonl")).unwrap(),
        "a continued rerun equals an uninterrupted one"
    );
    assert_eq!(
        std::fs::read_link(root.join("t/latest")).unwrap(),
        Path::new("v2")
    );
}
