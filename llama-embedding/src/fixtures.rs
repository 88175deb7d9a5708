//! A tiny random-weight BERT (2 layers, 32 dimensions, a 300-token vocabulary; about 150 KB as
//! GGUF) for fast plumbing tests and benches. It is written as a Hugging Face checkpoint and
//! then goes through [`crate::import`], so it also exercises the importer. Its vectors mean
//! nothing; they are deterministic (fixed seed).

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::import::{import_model, ImportType};

const LAYERS: usize = 2;
const HIDDEN: usize = 32;
const FF: usize = 64;
const HEADS: usize = 2;
const POSITIONS: usize = 128;

/// Deterministic xorshift64* in [-0.1, 0.1).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
    }
}

fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    for c in ('a'..='z').chain('0'..='9') {
        v.push(c.to_string());
        v.push(format!("##{c}"));
    }
    for p in [".", ",", "!", "?", "'", "-", "(", ")", ":", ";", "\"", "/"] {
        v.push(p.to_string());
    }
    let words = "the of and to in is was for on that with as by at it from he she be this are \
        or his an which have not had one were but all their there been has more its when who \
        will can time than into other some them these two new only may first also after such \
        any what used many most over then world would like between through where year make \
        text line embedding model batch token file run item data test hello quick brown fox \
        jumps lazy dog rust memory safety";
    for w in words.split_whitespace() {
        v.push(w.to_string());
        v.push(format!("##{w}"));
    }
    v
}

/// Writes the checkpoint into `dir` and imports it to `dir/tiny-bert.gguf` (f32).
///
/// # Errors
/// I/O errors.
pub fn write_tiny_bert(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let vocab = vocab();
    let n_vocab = vocab.len();
    let config = serde_json::json!({
        "model_type": "bert",
        "num_hidden_layers": LAYERS,
        "max_position_embeddings": POSITIONS,
        "hidden_size": HIDDEN,
        "intermediate_size": FF,
        "num_attention_heads": HEADS,
        "type_vocab_size": 2,
        "layer_norm_eps": 1e-12,
        "vocab_size": n_vocab,
    });
    let w = |p: &str, s: String| fs::write(dir.join(p), s).map_err(|e| Error::io(dir.join(p), e));
    w("config.json", config.to_string())?;
    w("vocab.txt", vocab.join("\n") + "\n")?;
    w("tokenizer_config.json", r#"{"do_lower_case": true}"#.into())?;

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        (
            "embeddings.word_embeddings.weight".into(),
            vec![n_vocab, HIDDEN],
        ),
        (
            "embeddings.position_embeddings.weight".into(),
            vec![POSITIONS, HIDDEN],
        ),
        (
            "embeddings.token_type_embeddings.weight".into(),
            vec![2, HIDDEN],
        ),
        ("embeddings.LayerNorm.weight".into(), vec![HIDDEN]),
        ("embeddings.LayerNorm.bias".into(), vec![HIDDEN]),
    ];
    for l in 0..LAYERS {
        let p = format!("encoder.layer.{l}.");
        for (name, shape) in [
            ("attention.self.query", vec![HIDDEN, HIDDEN]),
            ("attention.self.key", vec![HIDDEN, HIDDEN]),
            ("attention.self.value", vec![HIDDEN, HIDDEN]),
            ("attention.output.dense", vec![HIDDEN, HIDDEN]),
            ("intermediate.dense", vec![FF, HIDDEN]),
            ("output.dense", vec![HIDDEN, FF]),
        ] {
            tensors.push((format!("{p}{name}.bias"), vec![shape[0]]));
            tensors.push((format!("{p}{name}.weight"), shape));
        }
        for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
            tensors.push((format!("{p}{name}.weight"), vec![HIDDEN]));
            tensors.push((format!("{p}{name}.bias"), vec![HIDDEN]));
        }
    }
    let mut header = serde_json::Map::new();
    let mut data: Vec<u8> = Vec::new();
    for (name, shape) in &tensors {
        let n: usize = shape.iter().product();
        let start = data.len();
        let is_norm_weight = name.ends_with("LayerNorm.weight");
        for _ in 0..n {
            let v = if is_norm_weight {
                1.0 + rng.next()
            } else {
                rng.next()
            };
            data.extend_from_slice(&v.to_le_bytes());
        }
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut header_bytes = serde_json::to_vec(&header).expect("json");
    while !header_bytes.len().is_multiple_of(8) {
        header_bytes.push(b' ');
    }
    let mut st = (header_bytes.len() as u64).to_le_bytes().to_vec();
    st.extend_from_slice(&header_bytes);
    st.extend_from_slice(&data);
    let st_path = dir.join("model.safetensors");
    fs::write(&st_path, st).map_err(|e| Error::io(&st_path, e))?;
    let out = dir.join("tiny-bert.gguf");
    import_model(dir, &out, ImportType::F32, "tiny-random-bert")?;
    Ok(out)
}

/// `../shared` beside the workspace (or `LLAMA_EMBED_SHARED`), given a crate's manifest dir.
pub fn shared_dir(crate_dir: &Path) -> PathBuf {
    std::env::var_os("LLAMA_EMBED_SHARED")
        .map_or_else(|| crate_dir.join("../../shared"), PathBuf::from)
}

/// The all-MiniLM-L6-v2 f16 GGUF for tests: `LLAMA_EMBED_TEST_MODEL`, `shared/models`, or the
/// models directory (`llama-embed model obtain`). `None` with a SKIPPED line when there is
/// none; with `LLAMA_EMBED_REQUIRE_MODEL` set (CI), a missing model panics instead.
pub fn reference_model_path(shared: &Path, test: &str) -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("LLAMA_EMBED_TEST_MODEL").map(PathBuf::from),
        Some(shared.join("models/all-MiniLM-L6-v2-f16.gguf")),
        Some(crate::resolve::models_dir().join(crate::resolve::DEFAULT_MODEL_FILE)),
    ];
    if let Some(p) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return Some(p);
    }
    assert!(
        std::env::var_os("LLAMA_EMBED_REQUIRE_MODEL").is_none(),
        "{test}: no reference model found and LLAMA_EMBED_REQUIRE_MODEL is set"
    );
    eprintln!(
        "SKIPPED {test}: no all-MiniLM-L6-v2 GGUF (set LLAMA_EMBED_TEST_MODEL, provide ../shared/models, or run `llama-embed model obtain`)"
    );
    None
}

/// A throwaway PostgreSQL server for tests: `initdb` into a temporary folder, started with
/// `pg_ctl` on 127.0.0.1 and a free port, password authentication (scram-sha-256) for the
/// user `llama`, stopped and removed on drop. As root it runs as the `postgres` user (the
/// server refuses root). Needs Debian's postgresql and pgvector (`scripts/deps` installs both).
pub struct TempPostgres {
    pub dir: PathBuf,
    pub port: u16,
    pub user: String,
    pub password: String,
    bin: PathBuf,
    as_postgres: bool,
}

impl TempPostgres {
    /// `None` with a SKIPPED line when PostgreSQL or pgvector is missing; with
    /// `LLAMA_EMBED_REQUIRE_POSTGRES` set (CI), a missing server panics instead.
    pub fn start(test: &str) -> Option<TempPostgres> {
        match Self::try_start(test) {
            Ok(pg) => Some(pg),
            Err(why) => {
                assert!(
                    std::env::var_os("LLAMA_EMBED_REQUIRE_POSTGRES").is_none(),
                    "{test}: cannot start PostgreSQL ({why}) and LLAMA_EMBED_REQUIRE_POSTGRES is set"
                );
                eprintln!("SKIPPED {test}: cannot start PostgreSQL: {why} (run scripts/deps)");
                None
            }
        }
    }

    fn bin_dir() -> std::result::Result<PathBuf, String> {
        let mut dirs: Vec<PathBuf> = fs::read_dir("/usr/lib/postgresql")
            .map_err(|_| "no /usr/lib/postgresql".to_string())?
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").is_file() && b.join("pg_ctl").is_file())
            .collect();
        dirs.sort();
        dirs.pop()
            .ok_or_else(|| "no PostgreSQL server (initdb)".into())
    }

    fn try_start(test: &str) -> std::result::Result<TempPostgres, String> {
        use std::process::Command;
        let bin = Self::bin_dir()?;
        let version = bin
            .parent()
            .and_then(|v| v.file_name())
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        let control = PathBuf::from(format!(
            "/usr/share/postgresql/{version}/extension/vector.control"
        ));
        if !control.is_file() {
            return Err(format!(
                "pgvector is not installed ({} missing)",
                control.display()
            ));
        }
        let as_postgres = running_as_root();
        let dir = std::env::temp_dir().join(format!(
            "llama-embed-pg-{}-{}",
            std::process::id(),
            test.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let password = format!("pw-{}", std::process::id());
        fs::write(dir.join("pwfile"), &password).map_err(|e| e.to_string())?;
        if as_postgres {
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .map_err(|e| e.to_string())?
                .success();
            if !ok {
                return Err("chown to postgres failed".into());
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let pg = TempPostgres {
            dir: dir.clone(),
            port,
            user: "llama".into(),
            password,
            bin,
            as_postgres,
        };
        let data = dir.join("data");
        pg.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "llama".as_ref(),
                "--auth=scram-sha-256".as_ref(),
                "--pwfile".as_ref(),
                dir.join("pwfile").as_os_str(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
            ],
        )?;
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off",
            dir.display()
        );
        pg.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-o".as_ref(),
                opts.as_ref(),
                "-l".as_ref(),
                dir.join("log").as_os_str(),
                "-w".as_ref(),
                "start".as_ref(),
            ],
        )?;
        Ok(pg)
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> std::result::Result<(), String> {
        use std::process::Command;
        let exe = self.bin.join(tool);
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let out = c
            .args(args)
            .current_dir(&self.dir)
            .output()
            .map_err(|e| format!("{tool}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            let log = fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            Err(format!(
                "{tool} failed: {}{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// `postgres://llama@127.0.0.1:PORT/postgres` (no password: give `PGPASSWORD`).
    pub fn url(&self) -> String {
        format!("postgres://{}@127.0.0.1:{}/postgres", self.user, self.port)
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        let _ = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn running_as_root() -> bool {
    // The effective uid, from /proc (no libc dependency for one number).
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
