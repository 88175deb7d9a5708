//! `npy`: a `(rows, dim)` array plus `NAME.ids.jsonl`.

#[allow(clippy::wildcard_imports)]
use super::*;

/// `npy`: the vectors as a `(rows, cols)` array and `NAME.ids.jsonl` (one JSON id a line).
/// The header's row count is rewritten at every flush.
pub struct NpySink {
    data: TrackedFile,
    ids: TrackedFile,
    dtype: Dtype,
    cols: usize,
    rows: u64,
}

impl NpySink {
    /// # Errors
    /// I/O errors.
    pub fn open(
        dir: &Path,
        name: &str,
        dims: usize,
        dtype: Dtype,
        state: Option<&SinkState>,
    ) -> io::Result<Self> {
        let ids_name = ids_file_name(name);
        let mut data = TrackedFile::open(dir, name, resume_len(state, name)?)?;
        let ids = TrackedFile::open(dir, &ids_name, resume_len(state, &ids_name)?)?;
        let cols = if dtype == Dtype::Binary {
            dims.div_ceil(8)
        } else {
            dims
        };
        if state.is_none() {
            data.write(&crate::npy::header(Self::descr(dtype), 0, cols))?;
        }
        Ok(NpySink {
            data,
            ids,
            dtype,
            cols,
            rows: state.map_or(0, |s| s.rows),
        })
    }

    fn descr(dtype: Dtype) -> &'static str {
        match dtype {
            Dtype::F32 => "<f4",
            Dtype::F16 => "<f2",
            Dtype::Int8 => "|i1",
            Dtype::Binary => "|u1",
        }
    }
}

/// `out.npy` -> `out.ids.jsonl`.
pub fn ids_file_name(npy_name: &str) -> String {
    format!(
        "{}.ids.jsonl",
        npy_name.strip_suffix(".npy").unwrap_or(npy_name)
    )
}

impl Sink for NpySink {
    fn write_batch(&mut self, items: &[EmbeddingResult]) -> io::Result<()> {
        let mut buf = Vec::with_capacity(items.len() * self.cols * 4);
        let mut ids = Vec::new();
        for r in items {
            match self.dtype {
                Dtype::F32 => r
                    .embedding
                    .iter()
                    .for_each(|x| buf.extend_from_slice(&x.to_le_bytes())),
                Dtype::F16 => r
                    .embedding
                    .iter()
                    .for_each(|x| buf.extend_from_slice(&half::f16::from_f32(*x).to_le_bytes())),
                Dtype::Int8 => buf.extend(r.embedding.iter().map(|x| quantize_i8(*x) as u8)),
                Dtype::Binary => buf.extend(pack_bits(&r.embedding)),
            }
            serde_json::to_writer(&mut ids, &r.id)?;
            ids.push(b'\n');
        }
        self.rows += items.len() as u64;
        self.data.write(&buf)?;
        self.ids.write(&ids)
    }
    fn flush(&mut self) -> io::Result<SinkState> {
        let header = crate::npy::header(Self::descr(self.dtype), self.rows, self.cols);
        let len = self.data.len();
        let f = self.data.file_mut()?;
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&header)?;
        f.seek(SeekFrom::Start(len))?;
        Ok(SinkState {
            rows: self.rows,
            files: vec![self.data.sync()?, self.ids.sync()?],
        })
    }
}
