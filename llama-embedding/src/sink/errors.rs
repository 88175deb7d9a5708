//! The errors file (`errors.jsonl`), one failed item a line.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The errors file (`errors.jsonl`): `id`, `error`, `error_type`, `line`, `byte`, `index`.
pub struct ErrorFile {
    file: TrackedFile,
    rows: u64,
}

impl ErrorFile {
    /// # Errors
    /// I/O errors.
    pub fn open(dir: &Path, name: &str, state: Option<&SinkState>) -> io::Result<Self> {
        let (file, rows) = TrackedFile::reopen(dir, name, state)?;
        Ok(ErrorFile { file, rows })
    }

    /// # Errors
    /// I/O errors.
    pub fn write(&mut self, f: &ItemFailure) -> io::Result<()> {
        let mut v = serde_json::json!({
            "id": f.id,
            "index": f.index,
            "error": f.error.message,
            "error_type": f.error.kind,
        });
        if let Some(p) = f.position {
            v["line"] = p.line.into();
            v["byte"] = p.byte.into();
        }
        let mut line = serde_json::to_vec(&v)?;
        line.push(b'\n');
        self.rows += 1;
        self.file.write(&line)
    }

    /// # Errors
    /// I/O errors.
    pub fn flush(&mut self) -> io::Result<SinkState> {
        self.file.state(self.rows)
    }
}
