//! Output sinks. Every sink gets results in input order through one trait ([`Sink`]:
//! `write_batch`, `flush`, `finish`). `flush` makes what was written durable and returns a
//! [`SinkState`] (file lengths, rows) for the checkpoint; reopening a sink with that state
//! truncates anything written after it, which is how a resumed run continues byte-exactly.
//!
//! Formats: `jsonl` (one object a line), `json` (one document: job, results, summary), `csv`
//! (one column per dimension, spreadsheet-safe), `npy` (a `(rows, dim)` array plus
//! `*.ids.jsonl`), `parquet` (`parquet.rs`). Compact element types ([`Dtype`]): `f16` (rounded to nearest), `int8`
//! (`round(x * 127)` clamped to [-127, 127], for L2-normalised vectors), `binary` (bit `i` is
//! `x_i > 0`, packed most significant bit first as numpy's `packbits`).

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::item::{EmbeddingResult, ItemFailure};

mod csv;
mod errors;
mod json;
mod jsonl;
mod npy;
#[cfg(feature = "parquet")]
pub mod parquet;
mod stdout;

pub use self::csv::{spreadsheet_safe, CsvSink};
pub use errors::ErrorFile;
pub use json::JsonSink;
pub use jsonl::JsonlSink;
pub use npy::{ids_file_name, NpySink};
pub use stdout::{stdout_refusal, StdoutSink, STDOUT};

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Jsonl,
    Json,
    Csv,
    Npy,
    Parquet,
}

impl OutputFormat {
    pub fn from_path(path: &Path) -> Option<OutputFormat> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "jsonl" | "ndjson" => Some(OutputFormat::Jsonl),
            "json" => Some(OutputFormat::Json),
            "csv" => Some(OutputFormat::Csv),
            "npy" => Some(OutputFormat::Npy),
            "parquet" => Some(OutputFormat::Parquet),
            _ => None,
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jsonl => "jsonl",
            OutputFormat::Json => "json",
            OutputFormat::Csv => "csv",
            OutputFormat::Npy => "npy",
            OutputFormat::Parquet => "parquet",
        }
    }
}

impl std::str::FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "jsonl" => Ok(OutputFormat::Jsonl),
            "json" => Ok(OutputFormat::Json),
            "csv" => Ok(OutputFormat::Csv),
            "npy" => Ok(OutputFormat::Npy),
            "parquet" => Ok(OutputFormat::Parquet),
            _ => Err(format!(
                "unknown output format {s:?} (jsonl, json, csv, npy, parquet)"
            )),
        }
    }
}

/// Element type of stored vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    F32,
    F16,
    Int8,
    Binary,
}

impl std::str::FromStr for Dtype {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "f32" => Ok(Dtype::F32),
            "f16" => Ok(Dtype::F16),
            "int8" => Ok(Dtype::Int8),
            "binary" => Ok(Dtype::Binary),
            _ => Err(format!("unknown dtype {s:?} (f32, f16, int8, binary)")),
        }
    }
}

/// int8 quantisation of one component.
pub fn quantize_i8(x: f32) -> i8 {
    (x * 127.0).round().clamp(-127.0, 127.0) as i8
}

/// Sign bits packed MSB-first.
pub fn pack_bits(v: &[f32]) -> Vec<u8> {
    let mut out = vec![0u8; v.len().div_ceil(8)];
    for (i, x) in v.iter().enumerate() {
        if *x > 0.0 {
            out[i / 8] |= 0x80 >> (i % 8);
        }
    }
    out
}

/// What a checkpoint records of a sink.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SinkState {
    pub rows: u64,
    /// (file name in the run directory, durable length in bytes).
    pub files: Vec<(String, u64)>,
}

/// Receives results in input order.
pub trait Sink: Send {
    fn write_batch(&mut self, items: &[EmbeddingResult]) -> io::Result<()>;
    /// Makes everything written so far durable; the returned state is safe to checkpoint.
    fn flush(&mut self) -> io::Result<SinkState>;
    /// Completes the output (closing brackets, final headers) with the run's summary.
    fn finish(&mut self, _summary: &Value) -> io::Result<()> {
        Ok(())
    }
    /// Called once the checkpoint covering the finished output is durable: removes what only
    /// an unfinished run needs (a crash before this point resumes from the older checkpoint,
    /// so nothing it names may be deleted earlier).
    fn cleanup(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A file we append to, which knows its length and can be reopened at a checkpointed length.
pub struct TrackedFile {
    path: PathBuf,
    name: String,
    w: BufWriter<File>,
    len: u64,
}

impl TrackedFile {
    /// Creates `dir/name`, or with `resume_len` reopens it and cuts it to that length.
    ///
    /// # Errors
    /// I/O errors, or a file shorter than the checkpoint says (it was damaged).
    pub fn open(dir: &Path, name: &str, resume_len: Option<u64>) -> io::Result<Self> {
        let path = dir.join(name);
        let (file, len) = match resume_len {
            Some(len) => {
                let mut f = OpenOptions::new().read(true).write(true).open(&path)?;
                let actual = f.metadata()?.len();
                if actual < len {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} has {actual} bytes but the checkpoint covers {len}: it was truncated or replaced",
                            path.display()
                        ),
                    ));
                }
                f.set_len(len)?;
                f.seek(SeekFrom::Start(len))?;
                (f, len)
            }
            None => (File::create(&path)?, 0),
        };
        Ok(TrackedFile {
            path,
            name: name.to_string(),
            w: BufWriter::with_capacity(1 << 20, file),
            len,
        })
    }

    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Flushes and fsyncs; returns (name, length).
    pub fn sync(&mut self) -> io::Result<(String, u64)> {
        self.w.flush()?;
        self.w.get_ref().sync_data()?;
        Ok((self.name.clone(), self.len))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `dir/name` fresh, or at the length and row count `state` (a checkpoint) records.
    ///
    /// # Errors
    /// As [`TrackedFile::open`], or a checkpoint without this file.
    pub fn reopen(dir: &Path, name: &str, state: Option<&SinkState>) -> io::Result<(Self, u64)> {
        let file = TrackedFile::open(dir, name, resume_len(state, name)?)?;
        Ok((file, state.map_or(0, |s| s.rows)))
    }

    /// Syncs and describes this single-file output for a checkpoint.
    ///
    /// # Errors
    /// I/O errors.
    pub fn state(&mut self, rows: u64) -> io::Result<SinkState> {
        Ok(SinkState {
            rows,
            files: vec![self.sync()?],
        })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn file_mut(&mut self) -> io::Result<&mut File> {
        self.w.flush()?;
        Ok(self.w.get_mut())
    }
}

fn resume_len(state: Option<&SinkState>, name: &str) -> io::Result<Option<u64>> {
    match state {
        None => Ok(None),
        Some(s) => s
            .files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| Some(*l))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the checkpoint has no entry for {name}"),
                )
            }),
    }
}

/// A vector in the chosen dtype, serialised as a JSON array (f32 with its shortest exact
/// decimal form).
pub enum VectorRepr<'a> {
    F32(&'a [f32]),
    F16(Vec<f32>),
    Ints(Vec<i16>),
}

impl<'a> VectorRepr<'a> {
    pub fn new(v: &'a [f32], dtype: Dtype) -> Self {
        match dtype {
            Dtype::F32 => VectorRepr::F32(v),
            Dtype::F16 => {
                VectorRepr::F16(v.iter().map(|x| half::f16::from_f32(*x).to_f32()).collect())
            }
            Dtype::Int8 => VectorRepr::Ints(v.iter().map(|x| i16::from(quantize_i8(*x))).collect()),
            Dtype::Binary => VectorRepr::Ints(pack_bits(v).into_iter().map(i16::from).collect()),
        }
    }

    /// The components as strings (CSV cells).
    pub fn cells(&self) -> Vec<String> {
        let mut b = ryu::Buffer::new();
        match self {
            VectorRepr::F32(v) => v.iter().map(|x| b.format(*x).to_string()).collect(),
            VectorRepr::F16(v) => v.iter().map(|x| b.format(*x).to_string()).collect(),
            VectorRepr::Ints(v) => v.iter().map(ToString::to_string).collect(),
        }
    }
}

impl Serialize for VectorRepr<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            VectorRepr::F32(v) => v.serialize(s),
            VectorRepr::F16(v) => v.serialize(s),
            VectorRepr::Ints(v) => v.serialize(s),
        }
    }
}

const RESERVED: [&str; 5] = ["id", "embedding", "n_tokens", "truncated", "key"];
/// A chunk row's own fields, which kept fields of the same name do not overwrite.
pub const CHUNK_FIELDS: [&str; 7] = [
    "parent_id",
    "chunk",
    "n_chunks",
    "byte_start",
    "byte_end",
    "char_start",
    "char_end",
];

/// One output record: `id`, `embedding`, `n_tokens`, `truncated`, then kept fields.
#[derive(Serialize)]
pub struct OutputRecord<'a> {
    pub id: &'a crate::item::ItemId,
    /// A chunk's `parent_id`, `chunk`, `n_chunks` and spans, in a chunked run.
    #[serde(flatten)]
    pub chunk: Option<&'a crate::item::Chunk>,
    pub embedding: VectorRepr<'a>,
    pub n_tokens: usize,
    pub truncated: bool,
    /// The content key (`crate::key`), when the run makes them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a str>,
    #[serde(flatten)]
    pub fields: serde_json::Map<String, Value>,
}

impl<'a> OutputRecord<'a> {
    pub fn new(r: &'a EmbeddingResult, dtype: Dtype) -> Self {
        let fields = r
            .extra
            .iter()
            .flatten()
            .filter(|(k, _)| !RESERVED.contains(&k.as_str()))
            .filter(|(k, _)| r.chunk.is_none() || !CHUNK_FIELDS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        OutputRecord {
            id: &r.id,
            chunk: r.chunk.as_ref(),
            embedding: VectorRepr::new(&r.embedding, dtype),
            n_tokens: r.n_tokens,
            truncated: r.truncated,
            key: r.key.as_deref(),
            fields,
        }
    }
}

/// What every row of an output holds: vectors of `dims` as `dtype`, and the chunk fields in a
/// chunked run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowShape {
    pub dims: usize,
    pub dtype: Dtype,
    pub chunked: bool,
}

/// Opens the sink for `format` as `dir/name`.
///
/// # Errors
/// I/O errors.
pub fn open_sink(
    format: OutputFormat,
    dir: &Path,
    name: &str,
    rows: RowShape,
    job: &Value,
    state: Option<&SinkState>,
) -> io::Result<Box<dyn Sink>> {
    let RowShape {
        dims,
        dtype,
        chunked,
    } = rows;
    Ok(match format {
        OutputFormat::Jsonl => Box::new(JsonlSink::open(dir, name, dtype, state)?),
        OutputFormat::Json => Box::new(JsonSink::open(dir, name, dtype, job, state)?),
        OutputFormat::Csv => Box::new(CsvSink::open(dir, name, dims, dtype, chunked, state)?),
        OutputFormat::Npy => Box::new(NpySink::open(dir, name, dims, dtype, state)?),
        OutputFormat::Parquet => {
            if dtype != Dtype::F32 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "parquet output stores float32 vectors; use --dtype f32 (or npy for compact types)",
                ));
            }
            #[cfg(feature = "parquet")]
            {
                Box::new(parquet::ParquetSink::open(dir, name, dims, chunked, state)?)
            }
            #[cfg(not(feature = "parquet"))]
            {
                let _ = (dir, name, dims, chunked, state);
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "this build has no parquet output (the library's `parquet` feature is off)",
                ));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantisation_and_bits_are_as_documented() {
        assert_eq!(quantize_i8(1.0), 127);
        assert_eq!(quantize_i8(-2.0), -127);
        assert_eq!(quantize_i8(0.004), 1);
        assert_eq!(
            pack_bits(&[1.0, -1.0, 0.0, 0.5, -0.1, 0.1, 0.2, -0.3, 0.9]),
            vec![0b1001_0110, 0b1000_0000]
        );
    }

    #[test]
    fn formulas_are_defused() {
        assert_eq!(spreadsheet_safe("=HYPERLINK(1)"), "'=HYPERLINK(1)");
        assert_eq!(spreadsheet_safe("-2+3"), "'-2+3");
        assert_eq!(spreadsheet_safe("plain"), "plain");
    }
}
