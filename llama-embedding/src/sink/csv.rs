//! `csv`: one column per dimension, spreadsheet-safe.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Makes a cell safe to open in a spreadsheet (OWASP: a leading `= + - @` tab or CR starts a
/// formula; prefix it with `'`).
pub fn spreadsheet_safe(s: &str) -> std::borrow::Cow<'_, str> {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}").into(),
        _ => s.into(),
    }
}

/// `csv`: `id,n_tokens,truncated,e0..e{dim-1}` (one column per dimension); in a chunked run
/// `id,parent_id,chunk,n_chunks,byte_start,byte_end,char_start,char_end,n_tokens,…`.
pub struct CsvSink {
    file: TrackedFile,
    dtype: Dtype,
    chunked: bool,
    rows: u64,
}

impl CsvSink {
    /// # Errors
    /// I/O errors.
    pub fn open(
        dir: &Path,
        name: &str,
        dims: usize,
        dtype: Dtype,
        chunked: bool,
        state: Option<&SinkState>,
    ) -> io::Result<Self> {
        let (mut file, rows) = TrackedFile::reopen(dir, name, state)?;
        if state.is_none() {
            let cols = if dtype == Dtype::Binary {
                dims.div_ceil(8)
            } else {
                dims
            };
            let mut header = String::from("id,");
            if chunked {
                for f in CHUNK_FIELDS {
                    header.push_str(f);
                    header.push(',');
                }
            }
            header.push_str("n_tokens,truncated");
            for i in 0..cols {
                header.push_str(&format!(",e{i}"));
            }
            header.push('\n');
            file.write(header.as_bytes())?;
        }
        Ok(CsvSink {
            file,
            dtype,
            chunked,
            rows,
        })
    }
}

impl Sink for CsvSink {
    fn write_batch(&mut self, items: &[EmbeddingResult]) -> io::Result<()> {
        let mut w = ::csv::WriterBuilder::new()
            .has_headers(false)
            .from_writer(Vec::new());
        for r in items {
            let mut row: Vec<String> = vec![spreadsheet_safe(&r.id.to_string()).into_owned()];
            if self.chunked {
                let c = r.chunk.as_ref().ok_or_else(|| {
                    io::Error::other(format!("{}: a whole item in a chunked run", r.id))
                })?;
                row.push(spreadsheet_safe(&c.parent_id.to_string()).into_owned());
                row.extend([c.chunk, c.n_chunks].map(|n| n.to_string()));
                let spans = [c.byte_start, c.byte_end, c.char_start, c.char_end];
                row.extend(spans.map(|n| n.to_string()));
            }
            row.push(r.n_tokens.to_string());
            row.push(r.truncated.to_string());
            row.extend(VectorRepr::new(&r.embedding, self.dtype).cells());
            w.write_record(&row)?;
        }
        self.rows += items.len() as u64;
        let buf = w
            .into_inner()
            .map_err(|e| io::Error::other(e.to_string()))?;
        self.file.write(&buf)
    }
    fn flush(&mut self) -> io::Result<SinkState> {
        self.file.state(self.rows)
    }
}
