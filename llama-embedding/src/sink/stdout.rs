//! `-o -`: JSONL rows to standard output, for a pipe (`llama-embed embed docs.txt -o - | jq`).
//! The rows are the `jsonl` format's, byte for byte. What went to the pipe cannot be taken
//! back: a resumed run writes the rows after its checkpoint, so a consumer that kept the first
//! part and appends the rest has the whole output.

#[allow(clippy::wildcard_imports)]
use super::*;

/// The output name that means standard output.
pub const STDOUT: &str = "-";

/// Why `format` cannot go to standard output, if it cannot: only JSONL streams to a pipe.
pub fn stdout_refusal(format: OutputFormat) -> Option<String> {
    (format != OutputFormat::Jsonl).then(|| {
        format!(
            "-o - writes JSONL to stdout; --format {} needs an output file",
            format.extension()
        )
    })
}

/// JSONL to standard output.
pub struct StdoutSink {
    out: BufWriter<io::Stdout>,
    dtype: Dtype,
    rows: u64,
}

impl StdoutSink {
    /// `state`: the checkpoint of the run being resumed (its rows were written already).
    pub fn new(dtype: Dtype, state: Option<&SinkState>) -> Self {
        StdoutSink {
            out: BufWriter::with_capacity(1 << 16, io::stdout()),
            dtype,
            rows: state.map_or(0, |s| s.rows),
        }
    }
}

impl Sink for StdoutSink {
    fn write_batch(&mut self, items: &[EmbeddingResult]) -> io::Result<()> {
        for r in items {
            serde_json::to_writer(&mut self.out, &OutputRecord::new(r, self.dtype))?;
            self.out.write_all(b"\n")?;
        }
        self.rows += items.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<SinkState> {
        self.out.flush()?;
        Ok(SinkState {
            rows: self.rows,
            files: Vec::new(),
        })
    }
}
