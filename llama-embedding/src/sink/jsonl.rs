//! `jsonl`: one JSON object a line.

#[allow(clippy::wildcard_imports)]
use super::*;

/// `jsonl`: one object a line.
pub struct JsonlSink {
    file: TrackedFile,
    dtype: Dtype,
    rows: u64,
}

impl JsonlSink {
    /// # Errors
    /// I/O errors.
    pub fn open(
        dir: &Path,
        name: &str,
        dtype: Dtype,
        state: Option<&SinkState>,
    ) -> io::Result<Self> {
        let (file, rows) = TrackedFile::reopen(dir, name, state)?;
        Ok(JsonlSink { file, dtype, rows })
    }
}

impl Sink for JsonlSink {
    fn write_batch(&mut self, items: &[EmbeddingResult]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(items.len() * 4096);
        for r in items {
            serde_json::to_writer(&mut buf, &OutputRecord::new(r, self.dtype))?;
            buf.push(b'\n');
        }
        self.rows += items.len() as u64;
        self.file.write(&buf)
    }
    fn flush(&mut self) -> io::Result<SinkState> {
        self.file.state(self.rows)
    }
}
