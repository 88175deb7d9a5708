//! `json`: one document, `{"job", "results", "summary"}`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// `json`: `{"job": ..., "results": [...], "summary": ...}` (seed 001's export), written as it
/// goes.
pub struct JsonSink {
    file: TrackedFile,
    dtype: Dtype,
    rows: u64,
}

impl JsonSink {
    /// # Errors
    /// I/O errors.
    pub fn open(
        dir: &Path,
        name: &str,
        dtype: Dtype,
        job: &Value,
        state: Option<&SinkState>,
    ) -> io::Result<Self> {
        let (mut file, rows) = TrackedFile::reopen(dir, name, state)?;
        if state.is_none() {
            let mut head = b"{\"job\": ".to_vec();
            serde_json::to_writer(&mut head, job)?;
            head.extend_from_slice(b",\n\"results\": [");
            file.write(&head)?;
        }
        Ok(JsonSink { file, dtype, rows })
    }
}

impl Sink for JsonSink {
    fn write_batch(&mut self, items: &[EmbeddingResult]) -> io::Result<()> {
        let mut buf = Vec::new();
        for r in items {
            buf.extend_from_slice(if self.rows == 0 { b"\n" } else { b",\n" });
            serde_json::to_writer(&mut buf, &OutputRecord::new(r, self.dtype))?;
            self.rows += 1;
        }
        self.file.write(&buf)
    }
    fn flush(&mut self) -> io::Result<SinkState> {
        self.file.state(self.rows)
    }
    fn finish(&mut self, summary: &Value) -> io::Result<()> {
        let mut tail = b"\n],\n\"summary\": ".to_vec();
        serde_json::to_writer(&mut tail, summary)?;
        tail.extend_from_slice(b"}\n");
        self.file.write(&tail)?;
        self.file.sync().map(|_| ())
    }
}
