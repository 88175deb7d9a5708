//! Faults a long run meets, and hostile input: the disk filling up under it (a size-limited
//! tmpfs, which needs root to mount; without it the test says SKIPPED), repeated kill -9s,
//! broken and hostile records.

mod util;

use std::path::{Path, PathBuf};
use std::process::Command;

use util::*;

struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Mounting needs root (CAP_SYS_ADMIN); a machine without it cannot run this test.
            eprintln!("SKIPPED disk full: cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }
    fn resize(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(st.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn disk_full_is_a_clear_error_and_the_run_resumes_identically_after_space_is_freed() {
    let model = tiny();
    let dir = temp("diskfull");
    let input = dir.join("in.txt");
    std::fs::write(&input, corpus(4000)).unwrap();
    let extra = ["--save-every", "256", "--window", "64"];
    let reference = dir.join("ref.jsonl");
    let o = run(embed_args(&model, &input, &reference, &dir.join("ref")).args(extra));
    assert!(o.status.success(), "{}", stderr(&o));
    let full_size = std::fs::metadata(&reference).unwrap().len();

    // Room for about a third of the output.
    let Some(fs) = Tmpfs::mount(&dir.join("small"), &format!("{}", full_size / 3)) else {
        return;
    };
    let out = fs.0.join("out.jsonl");
    let run_dir = fs.0.join("run");
    let o = run(embed_args(&model, &input, &out, &run_dir).args(extra));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.contains(&format!("{}: ", out.display())),
        "the error names the output file: {err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");

    // The last checkpoint is valid and covers a prefix of the reference, byte for byte.
    checkpoint_is_a_prefix(&run_dir, &out, &reference, 4000);
    let reference_bytes = std::fs::read(&reference).unwrap();

    // Space freed: resume completes to exactly the uninterrupted output.
    fs.resize(&format!("{}", full_size * 4));
    let o = run(bin().args(["embed", "-q", "--resume"]).arg(&run_dir));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read(&out).unwrap() == reference_bytes,
        "resumed output differs"
    );
}

/// The disk holding the run directory (checkpoints, metadata, items.db) fills up while the
/// output, elsewhere, still has room: the checkpoint step fails with one clear line, the last
/// good checkpoint stands, and after space is freed the resume gives the uninterrupted output
/// and an items.db with every item done once.
#[test]
fn disk_full_while_checkpointing_keeps_the_last_checkpoint_and_resumes_identically() {
    let model = tiny();
    let dir = temp("diskfull-cp");
    let input = dir.join("in.txt");
    let n = 6000u64;
    std::fs::write(&input, corpus(n as usize)).unwrap();
    let extra = ["--save-every", "64", "--window", "64"];
    let reference = dir.join("ref.jsonl");
    let o = run(embed_args(&model, &input, &reference, &dir.join("ref")).args(extra));
    assert!(o.status.success(), "{}", stderr(&o));

    // 160 KiB for the run directory: items.db and its WAL outgrow it part way.
    let Some(fs) = Tmpfs::mount(&dir.join("small"), "160k") else {
        return;
    };
    let run_dir = fs.0.join("run");
    let out = dir.join("out.jsonl");
    let o = run(embed_args(&model, &input, &out, &run_dir).args(extra));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("No space left on device") || err.contains("disk is full"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");

    // The last good checkpoint: a prefix of the reference, and items.db agrees with it.
    let st = checkpoint_is_a_prefix(&run_dir, &out, &reference, n);
    assert_eq!(st.items.unwrap().done, st.done);
    let reference_bytes = std::fs::read(&reference).unwrap();

    fs.resize("64m");
    let o = run(bin().args(["embed", "-q", "--resume"]).arg(&run_dir));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read(&out).unwrap() == reference_bytes,
        "resumed output differs"
    );
    let st = llama_embedding::job::run_status(&run_dir).unwrap();
    assert_eq!(st.items.unwrap().done, n);
    assert_eq!(
        llama_embedding::items::rows(&run_dir, n, &[])
            .unwrap()
            .len() as u64,
        n
    );
}

/// Hostile and broken text input: every bad line is one error record naming its line and why,
/// the good lines around it are embedded, and a 100 MB line does not make the process hold it.
#[test]
fn hostile_text_lines_are_item_errors_and_the_rest_is_embedded() {
    let model = tiny();
    let dir = temp("hostile-text");
    let input = dir.join("in.txt");
    let mut data: Vec<u8> = Vec::new();
    data.extend_from_slice(b"\xEF\xBB\xBFfirst line after a BOM\r\n"); // line 1
    data.extend_from_slice(b"invalid \xFF\xFE utf-8\n"); // line 2
    data.extend_from_slice(b"a NUL \x00 inside\n"); // line 3
    data.extend_from_slice(b"crlf line\r\n"); // line 4
    data.extend(std::iter::repeat_n(b'x', 100 * 1024 * 1024)); // line 5: 100 MB
    data.push(b'\n');
    data.extend_from_slice(b"the line after the huge one\n"); // line 6
    std::fs::write(&input, &data).unwrap();
    drop(data);
    let out = dir.join("out.jsonl");
    let o = run(bin()
        .args(["embed", "-q", "-m"])
        .arg(&model)
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .arg("--run-dir")
        .arg(dir.join("run"))
        .arg("--summary-json")
        .arg(dir.join("summary.json")));
    assert_eq!(
        o.status.code(),
        Some(3),
        "some items failed: {}",
        stderr(&o)
    );
    let ids: Vec<u64> = jsonl(&out)
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [0, 3, 5], "the good lines, by 0-based line number");
    let errors = jsonl(&dir.join("run/errors.jsonl"));
    let got: Vec<(u64, String)> = errors
        .iter()
        .map(|e| {
            (
                e["line"].as_u64().unwrap(),
                e["error_type"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (2, "invalid_utf8".to_string()),
            (3, "nul_byte".to_string()),
            (5, "too_long".to_string())
        ],
        "{errors:?}"
    );
    let s: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    let peak = s["stats"]["peak_memory_mb"].as_u64().unwrap();
    assert!(peak < 100, "peak {peak} MB: the 100 MB line was buffered");
    // Not left behind for the next run on this machine.
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Hostile JSONL: a record nested 10,000 deep, ids that look like paths, NUL and a 10,000
/// character id. Records are errors or rows; nothing is written outside the run directory.
#[test]
fn hostile_jsonl_records_and_ids_stay_data() {
    let model = tiny();
    let dir = temp("hostile-jsonl");
    let input = dir.join("in.jsonl");
    let long_id = "i".repeat(10_000);
    let mut text = String::new();
    text += &serde_json::json!({"id": "../../escape", "text": "path-like id"}).to_string();
    text += "\n";
    text += &format!("{}{}\n", "[".repeat(10_000), "]".repeat(10_000));
    text += &serde_json::json!({"id": "/etc/passwd", "text": "absolute path id"}).to_string();
    text += "\n";
    text += &serde_json::json!({"id": "nul\u{0}id", "text": "nul in the id"}).to_string();
    text += "\n";
    text += &serde_json::json!({"id": long_id, "text": "a very long id"}).to_string();
    text += "\n";
    text += &format!(
        "{{\"id\": \"deep\", \"text\": \"x\", \"a\": {}1{}}}\n",
        "{\"b\":".repeat(10_000),
        "}".repeat(10_000)
    );
    std::fs::write(&input, text).unwrap();
    let before: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let run_dir = dir.join("run");
    let o = run(bin()
        .args(["embed", "-q", "--id-field", "id", "-m"])
        .arg(&model)
        .arg(&input)
        .arg("--run-dir")
        .arg(&run_dir));
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let rows = jsonl(&run_dir.join("output.jsonl"));
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        [
            "../../escape",
            "/etc/passwd",
            "nul\u{0}id",
            long_id.as_str()
        ]
    );
    let errors = jsonl(&run_dir.join("errors.jsonl"));
    let lines: Vec<u64> = errors.iter().map(|e| e["line"].as_u64().unwrap()).collect();
    assert_eq!(lines, [2, 6], "{errors:?}");
    assert!(
        errors.iter().all(|e| e["error_type"] == "parse"),
        "{errors:?}"
    );
    // Only the run directory was added next to the input; inside it, only the run's files.
    let mut after: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    after.retain(|n| !before.contains(n));
    assert_eq!(after, [std::ffi::OsString::from("run")]);
    let mut inside: Vec<String> = std::fs::read_dir(&run_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    inside.sort();
    assert!(
        inside.iter().all(|n| [
            "checkpoint.json",
            "checkpoint.prev.json",
            "errors.jsonl",
            "items.db",
            "items.db-wal",
            "items.db-shm",
            "lock",
            "metadata.json",
            "output.jsonl"
        ]
        .contains(&n.as_str())),
        "{inside:?}"
    );
    // In items.db the ids are data too (bound parameters, never SQL text).
    let escape = llama_embedding::items::find(&run_dir, "../../escape").unwrap();
    assert!(escape.is_some(), "the path-like id is a row of items.db");
}

/// At least 20 kill -9s in one run, each followed by `--resume`: the output converges to the
/// uninterrupted run's, byte for byte. The kill delays scale with how long the uninterrupted
/// run takes on this machine, so a faster machine still gets its 20 kills.
#[test]
fn twenty_kills_or_more_then_resume_gives_identical_output() {
    let model = tiny();
    let dir = temp("kill20");
    let input = dir.join("in.txt");
    std::fs::write(&input, corpus(20_000)).unwrap();
    let extra = ["--save-every", "64", "--window", "64", "--workers", "2"];
    let reference = dir.join("ref.jsonl");
    let started = std::time::Instant::now();
    let o = run(embed_args(&model, &input, &reference, &dir.join("ref")).args(extra));
    assert!(o.status.success(), "{}", stderr(&o));
    let took_ms = started.elapsed().as_millis() as u64;
    let out = dir.join("killed.jsonl");
    let kills = run_with_kills(
        &model,
        &input,
        Some(&out),
        &dir.join("run"),
        &extra,
        &[],
        0x20c1,
        (took_ms / 25).max(50),
    );
    eprintln!("{kills} kills (uninterrupted run: {took_ms} ms)");
    assert!(kills >= 20, "only {kills} kills");
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&reference).unwrap(),
        "output differs after {kills} kills"
    );
    // items.db agrees: every item done once in the final state, none left pending, and the
    // same (seq, id, state) rows as the uninterrupted run.
    let rows = |d: &std::path::Path| {
        llama_embedding::items::rows(d, u64::MAX >> 1, &[])
            .unwrap()
            .into_iter()
            .map(|r| (r.seq, r.id, r.state))
            .collect::<Vec<_>>()
    };
    let (killed, whole) = (rows(&dir.join("run")), rows(&dir.join("ref")));
    assert_eq!(killed.len(), 20_000);
    assert!(killed == whole, "items.db differs after {kills} kills");
    let st = run(bin().args(["status", "--json"]).arg(dir.join("run")));
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(
        st["items"],
        serde_json::json!({"done": 20_000, "failed": 0, "pending": 0})
    );
}

/// A stopped run's last checkpoint covers some but not all of the `total` items, and the output
/// up to the checkpoint's length is the reference's first bytes.
fn checkpoint_is_a_prefix(
    run_dir: &Path,
    out: &Path,
    reference: &Path,
    total: u64,
) -> llama_embedding::job::RunStatus {
    let st = llama_embedding::job::run_status(run_dir).unwrap();
    assert!(st.done > 0 && st.done < total, "{} done", st.done);
    let (cp, _) = llama_embedding::rundir::load_checkpoint(run_dir).unwrap();
    let covered = cp.unwrap().output.files[0].1 as usize;
    assert_eq!(
        &std::fs::read(out).unwrap()[..covered],
        &std::fs::read(reference).unwrap()[..covered]
    );
    st
}
