//! Directory inputs: `llama-embed embed docs/ [--glob '**/*.md']` makes one item per file, its
//! id the path relative to the root (`/`-separated), in byte order of those paths, so a run,
//! its resume and its shards see the same items in the same order. `.gitignore`, `.ignore` and
//! hidden files are skipped as git and ripgrep skip them (the `ignore` crate, whether or not
//! the folder is a git repository). A file that is not text (a NUL byte, or not UTF-8) or larger
//! than `--max-item-bytes` is a failed item naming the reason; the run goes on.

use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, ItemError, ItemErrorKind, Result};
use crate::item::{ItemId, SourceItem};
use crate::reader::ItemSource;

/// The files under `root` that the run embeds: (id, path), sorted by id.
///
/// # Errors
/// A glob that does not parse, or a folder that cannot be listed (naming it).
pub fn list(root: &Path, globs: &[String]) -> Result<Vec<(String, PathBuf)>> {
    let mut walk = ignore::WalkBuilder::new(root);
    walk.require_git(false).follow_links(false);
    let wanted = glob_set(globs)?;
    let mut files = Vec::new();
    for entry in walk.build() {
        let entry = entry.map_err(|e| Error::Io {
            path: root.to_path_buf(),
            error: io::Error::other(e.to_string()),
        })?;
        if !entry.file_type().is_some_and(|t| t.is_file()) {
            continue;
        }
        let rel = entry.path().strip_prefix(root).unwrap_or(entry.path());
        let id = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        if wanted.as_ref().is_none_or(|w| w.is_match(&id)) {
            files.push((id, entry.into_path()));
        }
    }
    files.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(files)
}

/// The `--glob` patterns, matched against the id (the `/`-separated path under the root) with
/// shell rules: `*` stays within a folder, `**/` spans folders (`**/*.md` is every markdown
/// file). `None`: every file.
fn glob_set(globs: &[String]) -> Result<Option<globset::GlobSet>> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut set = globset::GlobSetBuilder::new();
    for g in globs {
        let glob = globset::GlobBuilder::new(g)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::Config(format!("--glob {g:?}: {e}")))?;
        set.add(glob);
    }
    set.build()
        .map(Some)
        .map_err(|e| Error::Config(format!("--glob: {e}")))
}

/// A digest of what the run reads: every listed file's id, length and content. A resume,
/// merge or rerun compares it, as it compares a file input's sha256.
///
/// # Errors
/// As [`list`], or a file that cannot be read.
pub fn listing_sha256(root: &Path, globs: &[String]) -> Result<String> {
    let mut h = Sha256::new();
    for (id, path) in list(root, globs)? {
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        h.update(id.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(Sha256::digest(&bytes));
    }
    Ok(format!("{:x}", h.finalize()))
}

/// The items of a directory input (see the module docs).
pub struct FilesSource {
    files: std::vec::IntoIter<(String, PathBuf)>,
    max_bytes: usize,
}

impl FilesSource {
    /// # Errors
    /// As [`list`].
    pub fn open(root: &Path, globs: &[String], max_bytes: usize) -> Result<Self> {
        Ok(FilesSource {
            files: list(root, globs)?.into_iter(),
            max_bytes,
        })
    }
}

impl ItemSource for FilesSource {
    fn next_item(&mut self) -> Option<SourceItem> {
        let (id, path) = self.files.next()?;
        Some(SourceItem {
            id: ItemId::Str(id),
            text: read_text(&path, self.max_bytes),
            position: None,
            extra: None,
        })
    }
}

/// A file's text, or why it is not one.
fn read_text(path: &Path, max_bytes: usize) -> std::result::Result<String, ItemError> {
    let io_error = |e: io::Error| ItemError::new(ItemErrorKind::Parse, format!("cannot read: {e}"));
    let len = std::fs::metadata(path).map_err(io_error)?.len();
    if len > max_bytes as u64 {
        return Err(ItemError::new(
            ItemErrorKind::TooLong,
            format!("the file has {len} bytes, more than --max-item-bytes {max_bytes}"),
        ));
    }
    let bytes = std::fs::read(path).map_err(io_error)?;
    if let Some(at) = bytes.iter().position(|&b| b == 0) {
        return Err(ItemError::new(
            ItemErrorKind::Binary,
            format!("a binary file (NUL byte at byte {at}), skipped"),
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        ItemError::new(
            ItemErrorKind::Binary,
            format!(
                "not UTF-8 text (invalid byte at {}), skipped",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_in_path_order_respecting_gitignore_globs_and_hidden_files() {
        let d = std::env::temp_dir().join(format!("files-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        for (p, t) in [
            ("b.md", "b"),
            ("a/z.md", "z"),
            ("a/y.txt", "y"),
            ("a/target/skip.md", "ignored"),
            (".hidden.md", "hidden"),
            (".gitignore", "target/\n"),
            ("bin.md", "x\0y"),
            ("latin1.md", ""),
        ] {
            let path = d.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, t).unwrap();
        }
        std::fs::write(d.join("latin1.md"), b"caf\xe9").unwrap();
        let ids = |globs: &[String]| -> Vec<String> {
            list(&d, globs)
                .unwrap()
                .into_iter()
                .map(|(id, _)| id)
                .collect()
        };
        assert_eq!(
            ids(&[]),
            ["a/y.txt", "a/z.md", "b.md", "bin.md", "latin1.md"]
        );
        assert_eq!(
            ids(&["**/*.md".into()]),
            ["a/z.md", "b.md", "bin.md", "latin1.md"]
        );
        assert_eq!(ids(&["*.md".into()]), ["b.md", "bin.md", "latin1.md"]);
        let mut src = FilesSource::open(&d, &["**/*.md".into()], 1 << 20).unwrap();
        let items: Vec<SourceItem> = std::iter::from_fn(|| src.next_item()).collect();
        assert_eq!(items[1].text.as_deref(), Ok("b"));
        assert_eq!(
            items[2].text.as_ref().unwrap_err().kind,
            ItemErrorKind::Binary
        );
        assert_eq!(
            items[3].text.as_ref().unwrap_err().kind,
            ItemErrorKind::Binary
        );
        let small = FilesSource::open(&d, &[], 0).unwrap().next_item().unwrap();
        assert_eq!(small.text.unwrap_err().kind, ItemErrorKind::TooLong);
        // The digest changes with a file's content.
        let before = listing_sha256(&d, &[]).unwrap();
        std::fs::write(d.join("b.md"), "c").unwrap();
        assert_ne!(before, listing_sha256(&d, &[]).unwrap());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
