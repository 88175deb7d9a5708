//! `parquet` output: `id` (string), `n_tokens` (uint32), `truncated` (bool), `embedding`
//! (fixed-size list of float32, the model's dimension), and in a chunked run `parent_id`
//! (string), `chunk`, `n_chunks` (uint32), `byte_start`, `byte_end`, `char_start`, `char_end`
//! (uint64), then `key` (string, null without content keys); readable by DuckDB, pandas/pyarrow and LanceDB. A Parquet file cannot be appended to after a crash (its footer is at the end), so
//! every checkpoint writes the rows since the last one as a complete part file in
//! `NAME.parts/`; `finish` concatenates the parts into `NAME`, and the parts are removed only
//! once the checkpoint naming `NAME` is durable (`cleanup`): a crash in between resumes from
//! the parts. Resume drops any part the checkpoint does not list.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{
    Array, BooleanArray, FixedSizeListArray, Float32Array, RecordBatch, StringArray, UInt32Array,
    UInt64Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;

use super::{Sink, SinkState};
use crate::item::{Chunk, EmbeddingResult};

fn pq(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("parquet: {e}"))
}

fn schema(dims: usize, chunked: bool) -> SchemaRef {
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let mut fields = vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("n_tokens", DataType::UInt32, false),
        Field::new("truncated", DataType::Boolean, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(item, dims as i32),
            false,
        ),
    ];
    if chunked {
        fields.push(Field::new("parent_id", DataType::Utf8, false));
        for name in ["chunk", "n_chunks"] {
            fields.push(Field::new(name, DataType::UInt32, false));
        }
        for name in ["byte_start", "byte_end", "char_start", "char_end"] {
            fields.push(Field::new(name, DataType::UInt64, false));
        }
    }
    fields.push(Field::new("key", DataType::Utf8, true));
    Arc::new(Schema::new(fields))
}

/// The chunk columns of `chunks`, in [`schema`]'s order.
fn chunk_columns(chunks: &[Chunk]) -> Vec<Arc<dyn Array>> {
    let u32s = |f: fn(&Chunk) -> u32| -> Arc<dyn Array> {
        Arc::new(UInt32Array::from(chunks.iter().map(f).collect::<Vec<_>>()))
    };
    let u64s = |f: fn(&Chunk) -> usize| -> Arc<dyn Array> {
        Arc::new(UInt64Array::from(
            chunks.iter().map(|c| f(c) as u64).collect::<Vec<_>>(),
        ))
    };
    vec![
        Arc::new(StringArray::from(
            chunks
                .iter()
                .map(|c| c.parent_id.to_string())
                .collect::<Vec<_>>(),
        )),
        u32s(|c| c.chunk),
        u32s(|c| c.n_chunks),
        u64s(|c| c.byte_start),
        u64s(|c| c.byte_end),
        u64s(|c| c.char_start),
        u64s(|c| c.char_end),
    ]
}

pub struct ParquetSink {
    dir: PathBuf,
    name: String,
    dims: usize,
    schema: SchemaRef,
    /// (name relative to `dir`, length) of the durable parts, or of the final file.
    parts: Vec<(String, u64)>,
    ids: Vec<String>,
    n_tokens: Vec<u32>,
    truncated: Vec<bool>,
    values: Vec<f32>,
    keys: Vec<Option<String>>,
    /// The rows' chunks, in a chunked run.
    chunks: Option<Vec<Chunk>>,
    rows: u64,
    finished: bool,
}

impl ParquetSink {
    /// # Errors
    /// I/O errors, or a checkpoint whose part files are missing or changed.
    pub fn open(
        dir: &Path,
        name: &str,
        dims: usize,
        chunked: bool,
        state: Option<&SinkState>,
    ) -> io::Result<Self> {
        let parts_dir = dir.join(format!("{name}.parts"));
        let parts = match state {
            None => {
                let _ = fs::remove_dir_all(&parts_dir);
                Vec::new()
            }
            Some(s) => {
                for (part, len) in &s.files {
                    let actual = fs::metadata(dir.join(part))?.len();
                    if actual != *len {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!("{part} has {actual} bytes, the checkpoint says {len}"),
                        ));
                    }
                }
                // Parts written after the checkpoint are not covered: drop them.
                if let Ok(entries) = fs::read_dir(&parts_dir) {
                    for e in entries.flatten() {
                        let rel = format!("{name}.parts/{}", e.file_name().to_string_lossy());
                        if !s.files.iter().any(|(p, _)| *p == rel) {
                            fs::remove_file(e.path())?;
                        }
                    }
                }
                s.files.clone()
            }
        };
        fs::create_dir_all(&parts_dir)?;
        Ok(ParquetSink {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            dims,
            schema: schema(dims, chunked),
            parts,
            ids: Vec::new(),
            n_tokens: Vec::new(),
            truncated: Vec::new(),
            values: Vec::new(),
            keys: Vec::new(),
            chunks: chunked.then(Vec::new),
            rows: state.map_or(0, |s| s.rows),
            finished: false,
        })
    }

    fn pending_batch(&mut self) -> io::Result<Option<RecordBatch>> {
        if self.ids.is_empty() {
            return Ok(None);
        }
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let values = Float32Array::from(std::mem::take(&mut self.values));
        let list = FixedSizeListArray::try_new(item, self.dims as i32, Arc::new(values), None)
            .map_err(pq)?;
        let mut columns: Vec<Arc<dyn Array>> = vec![
            Arc::new(StringArray::from(std::mem::take(&mut self.ids))),
            Arc::new(UInt32Array::from(std::mem::take(&mut self.n_tokens))),
            Arc::new(BooleanArray::from(std::mem::take(&mut self.truncated))),
            Arc::new(list),
        ];
        if let Some(chunks) = self.chunks.as_mut() {
            columns.extend(chunk_columns(&std::mem::take(chunks)));
        }
        columns.push(Arc::new(StringArray::from(std::mem::take(&mut self.keys))));
        RecordBatch::try_new(self.schema.clone(), columns)
            .map(Some)
            .map_err(pq)
    }

    fn write_file(
        &self,
        path: &Path,
        batches: impl IntoIterator<Item = io::Result<RecordBatch>>,
    ) -> io::Result<u64> {
        let tmp = path.with_extension("partial");
        let file = File::create(&tmp)?;
        let mut w = ArrowWriter::try_new(file, self.schema.clone(), None).map_err(pq)?;
        for b in batches {
            w.write(&b?).map_err(pq)?;
        }
        let file = w.into_inner().map_err(pq)?;
        file.sync_all()?;
        let len = file.metadata()?.len();
        fs::rename(&tmp, path)?;
        Ok(len)
    }
}

impl Sink for ParquetSink {
    fn write_batch(&mut self, items: &[EmbeddingResult]) -> io::Result<()> {
        for r in items {
            self.ids.push(r.id.to_string());
            self.n_tokens.push(r.n_tokens as u32);
            self.truncated.push(r.truncated);
            self.values.extend_from_slice(&r.embedding);
            self.keys.push(r.key.clone());
            if let Some(chunks) = self.chunks.as_mut() {
                let c = r
                    .chunk
                    .clone()
                    .ok_or_else(|| pq("a whole item in a chunked run"))?;
                chunks.push(c);
            }
        }
        self.rows += items.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<SinkState> {
        if !self.finished {
            if let Some(batch) = self.pending_batch()? {
                let rel = format!("{}.parts/part-{:06}.parquet", self.name, self.parts.len());
                let len = self.write_file(&self.dir.join(&rel), [Ok(batch)])?;
                self.parts.push((rel, len));
            }
        }
        Ok(SinkState {
            rows: self.rows,
            files: self.parts.clone(),
        })
    }

    fn finish(&mut self, _summary: &serde_json::Value) -> io::Result<()> {
        let pending = self.pending_batch()?;
        let mut batches: Vec<io::Result<RecordBatch>> = Vec::new();
        for (part, _) in &self.parts {
            let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(self.dir.join(part))?)
                .map_err(pq)?
                .build()
                .map_err(pq)?;
            batches.extend(reader.map(|b| b.map_err(pq)));
        }
        batches.extend(pending.map(Ok));
        let len = self.write_file(&self.dir.join(&self.name), batches)?;
        self.parts = vec![(self.name.clone(), len)];
        self.finished = true;
        Ok(())
    }

    fn cleanup(&mut self) -> io::Result<()> {
        if self.finished {
            match fs::remove_dir_all(self.dir.join(format!("{}.parts", self.name))) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Reads a parquet output back: (ids, vectors). For tests and tools.
///
/// # Errors
/// I/O or format errors.
pub fn read_parquet(path: &Path) -> io::Result<(Vec<String>, Vec<Vec<f32>>)> {
    let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(path)?)
        .map_err(pq)?
        .build()
        .map_err(pq)?;
    let (mut ids, mut vectors) = (Vec::new(), Vec::new());
    for batch in reader {
        let batch = batch.map_err(pq)?;
        let id = batch
            .column(0)
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| pq("id is not a string column"))?;
        let emb = batch
            .column(3)
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .ok_or_else(|| pq("embedding is not a fixed-size list"))?;
        for i in 0..batch.num_rows() {
            ids.push(id.value(i).to_string());
            let v = emb.value(i);
            let f = v
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| pq("embedding is not float32"))?;
            vectors.push(f.values().to_vec());
        }
    }
    Ok((ids, vectors))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::ItemId;

    fn result(i: u64) -> EmbeddingResult {
        EmbeddingResult {
            index: i,
            id: ItemId::Num(i),
            embedding: vec![i as f32, -(i as f32)],
            n_tokens: 3,
            truncated: false,
            n_chars: 1,
            extra: None,
            text: None,
            chunk: None,
            key: None,
        }
    }

    /// A crash after `finish` wrote the final file but before the checkpoint naming it was
    /// saved: the previous checkpoint (naming the parts) must still resume.
    #[test]
    fn crash_between_finish_and_its_checkpoint_resumes_from_the_parts() {
        let dir = std::env::temp_dir().join(format!("parquet-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut sink = ParquetSink::open(&dir, "out.parquet", 2, false, None).unwrap();
        sink.write_batch(&[result(0), result(1)]).unwrap();
        let state = sink.flush().unwrap();
        sink.write_batch(&[result(2)]).unwrap();
        sink.finish(&serde_json::Value::Null).unwrap();
        drop(sink); // "killed" here: the checkpoint on disk is still `state`

        let mut sink = ParquetSink::open(&dir, "out.parquet", 2, false, Some(&state)).unwrap();
        sink.write_batch(&[result(2)]).unwrap();
        sink.finish(&serde_json::Value::Null).unwrap();
        let done = sink.flush().unwrap();
        sink.cleanup().unwrap();
        assert_eq!(done.rows, 3);
        assert_eq!(done.files.len(), 1);
        assert!(!dir.join("out.parquet.parts").exists());
        let (ids, vectors) = read_parquet(&dir.join("out.parquet")).unwrap();
        assert_eq!(ids, ["0", "1", "2"]);
        assert_eq!(vectors[2], [2.0, -2.0]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
