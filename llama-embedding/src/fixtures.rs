//! Test fixtures: a tiny random-weight BERT (2 layers, 32 dimensions, a 300-token vocabulary;
//! about 150 KB as GGUF, [`crate::tiny_bert`]) for fast plumbing tests and benches, the
//! reference model and files of `../shared`, and a throwaway PostgreSQL.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::import::ImportType;
use crate::tiny_bert::Shape;

/// Writes the checkpoint into `dir` and imports it to `dir/tiny-bert.gguf` (f32).
///
/// # Errors
/// I/O errors.
pub fn write_tiny_bert(dir: &Path) -> Result<PathBuf> {
    crate::tiny_bert::write(dir, &Shape::TINY, ImportType::F32, "tiny-bert.gguf")
}

/// Writes the tiny random EmbeddingGemma ([`crate::tiny_gemma`]) into `dir` and imports it to
/// `dir/tiny-gemma.gguf` (f32).
///
/// # Errors
/// I/O errors, or the importer's.
pub fn write_tiny_gemma(dir: &Path) -> Result<PathBuf> {
    crate::tiny_gemma::write(dir, ImportType::F32, "tiny-gemma.gguf")
}

/// Copies the GGUF at `src` to `dst` without the tensors `drop` names and without the metadata
/// keys `drop_keys` names (a model with a part missing, for the refusal tests).
///
/// # Errors
/// I/O or GGUF errors.
pub fn copy_gguf_without(src: &Path, dst: &Path, drop: &[&str], drop_keys: &[&str]) -> Result<()> {
    let g = crate::gguf::GgufFile::read(src)
        .map_err(|e| crate::error::Error::Config(format!("{}: {e}", src.display())))?;
    let mut w = crate::gguf::GgufWriter::new();
    for (k, v) in &g.metadata {
        if !drop_keys.contains(&k.as_str()) {
            w.add(k.clone(), v.clone());
        }
    }
    for t in g
        .tensors
        .iter()
        .filter(|t| !drop.contains(&t.name.as_str()))
    {
        let data = g
            .read_tensor(src, &t.name)
            .map_err(|e| crate::error::Error::io(src, e))?;
        w.add_tensor(t.name.clone(), t.dims.clone(), t.ggml_type, data);
    }
    w.write(dst).map_err(|e| crate::error::Error::io(dst, e))
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
