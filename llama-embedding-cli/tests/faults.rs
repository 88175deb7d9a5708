//! Faults a long run meets: the disk filling up under it (a size-limited tmpfs, which needs
//! root to mount: CI runs as root; elsewhere the test says SKIPPED).

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
            assert!(
                std::env::var_os("CI").is_none(),
                "cannot mount a tmpfs in CI (the disk-full test needs root)"
            );
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
    let o = run(bin()
        .args(["embed", "-q", "-m"])
        .arg(&model)
        .arg(&input)
        .arg("-o")
        .arg(&reference)
        .arg("--run-dir")
        .arg(dir.join("ref"))
        .args(extra));
    assert!(o.status.success(), "{}", stderr(&o));
    let full_size = std::fs::metadata(&reference).unwrap().len();

    // Room for about a third of the output.
    let Some(fs) = Tmpfs::mount(&dir.join("small"), &format!("{}", full_size / 3)) else {
        return;
    };
    let out = fs.0.join("out.jsonl");
    let run_dir = fs.0.join("run");
    let o = run(bin()
        .args(["embed", "-q", "-m"])
        .arg(&model)
        .arg(&input)
        .arg("-o")
        .arg(&out)
        .arg("--run-dir")
        .arg(&run_dir)
        .args(extra));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one clear line: {err}");

    // The last checkpoint is valid and covers a prefix of the reference, byte for byte.
    let st = llama_embedding::job::run_status(&run_dir).unwrap();
    assert!(st.done > 0 && st.done < 4000, "{} done", st.done);
    let (cp, _) = llama_embedding::rundir::load_checkpoint(&run_dir).unwrap();
    let covered = cp.unwrap().output.files[0].1 as usize;
    let reference_bytes = std::fs::read(&reference).unwrap();
    assert_eq!(
        &std::fs::read(&out).unwrap()[..covered],
        &reference_bytes[..covered]
    );

    // Space freed: resume completes to exactly the uninterrupted output.
    fs.resize(&format!("{}", full_size * 4));
    let o = run(bin().args(["embed", "-q", "--resume"]).arg(&run_dir));
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        std::fs::read(&out).unwrap() == reference_bytes,
        "resumed output differs"
    );
}
