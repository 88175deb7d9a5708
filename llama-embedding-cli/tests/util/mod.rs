//! Harness for the CLI tests: the real binary, temp dirs, the models.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_llama-embed"));
    c.env_remove("LLAMA_EMBED_MODEL");
    c
}

/// `llama-embed embed -q -m MODEL INPUT -o OUT --run-dir RUN`.
pub fn embed_args(model: &Path, input: &Path, out: &Path, run: &Path) -> Command {
    let mut c = bin();
    c.args(["embed", "-q", "-m"])
        .arg(model)
        .arg(input)
        .arg("-o")
        .arg(out)
        .arg("--run-dir")
        .arg(run);
    c
}

pub fn shared_dir() -> PathBuf {
    llama_embedding::fixtures::shared_dir(Path::new(env!("CARGO_MANIFEST_DIR")))
}

/// The reference all-MiniLM-L6-v2 f16 GGUF (see `fixtures::reference_model_path`).
pub fn minilm(test: &str) -> Option<PathBuf> {
    llama_embedding::fixtures::reference_model_path(&shared_dir(), test)
}

/// The tiny random BERT (generated once per test binary).
pub fn tiny() -> PathBuf {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("llama-embed-cli-tiny-{}", std::process::id()));
        llama_embedding::fixtures::write_tiny_bert(&dir).unwrap()
    })
    .clone()
}

pub fn temp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("llama-embed-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("run llama-embed");
    if std::env::var_os("LLAMA_EMBED_TEST_VERBOSE").is_some() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Lines of docstrings-2000.txt (or a generated corpus when ../shared is absent).
pub fn corpus(n: usize) -> String {
    match std::fs::read_to_string(shared_dir().join("reference/docstrings-2000.txt")) {
        Ok(t) => t.lines().cycle().take(n).collect::<Vec<_>>().join("\n") + "\n",
        Err(_) => (0..n)
            .map(|i| format!("line {i} the quick brown fox {}\n", "a ".repeat(i % 13)))
            .collect(),
    }
}

pub fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

pub fn vector(v: &serde_json::Value) -> Vec<f32> {
    v["embedding"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Runs to completion with kill -9 at random moments, resuming each time; returns the number
/// of kills that landed mid-run.
#[allow(clippy::too_many_arguments)]
pub fn run_with_kills(
    model: &Path,
    input: &Path,
    out: Option<&Path>,
    run_dir: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
    seed: u64,
    max_delay_ms: u64,
) -> usize {
    let mut rng = seed;
    let mut kills = 0;
    let mut first = true;
    loop {
        let mut c = bin();
        c.args(["embed", "-q", "-m"]).arg(model).args(extra);
        c.envs(env.iter().copied());
        // Killed before its metadata was written, a run has nothing to resume.
        first = first || !run_dir.join("metadata.json").exists();
        if first {
            c.arg(input).arg("--run-dir").arg(run_dir);
            if let Some(out) = out {
                c.arg("-o").arg(out);
            }
        } else {
            c.arg("--resume").arg(run_dir);
        }
        let mut child = c.stderr(std::process::Stdio::piped()).spawn().unwrap();
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = std::time::Duration::from_millis(150 + rng % max_delay_ms);
        let start = std::time::Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                let mut err = String::new();
                use std::io::Read;
                child
                    .stderr
                    .take()
                    .unwrap()
                    .read_to_string(&mut err)
                    .unwrap();
                // A kill that lands after the run finished (metadata says completed, the process
                // had not exited yet) leaves nothing to resume: that resume is refused, and the
                // run is done.
                let finished_earlier = !first && err.contains("is already complete");
                // Exit 3: completed, with failed items (they are in errors.jsonl).
                let completed = status.success() || status.code() == Some(3);
                assert!(completed || finished_earlier, "run failed: {err}");
                return kills;
            }
            if start.elapsed() >= delay {
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                kills += 1;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        first = false;
        assert!(kills < 200, "no progress after 200 kills");
    }
}

/// Asserts two files are byte for byte the same.
pub fn assert_same_bytes(got: &Path, want: &Path, what: &str) {
    assert!(
        std::fs::read(got).unwrap() == std::fs::read(want).unwrap(),
        "{what}: {} differs from {}",
        got.display(),
        want.display()
    );
}
