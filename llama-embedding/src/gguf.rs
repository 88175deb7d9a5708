//! GGUF files in pure Rust: a reader that checks a file completely (magic, version, metadata,
//! tensor table, that every tensor's bytes are present) before llama.cpp is handed it, because
//! llama.cpp aborts the process on some malformed files; and a writer used by `model import`.
//!
//! Format: <https://github.com/ggml-org/ggml/blob/master/docs/gguf.md> (version 2 and 3,
//! little-endian).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"GGUF";
/// Upper bounds that keep a hostile header from making us allocate without limit.
const MAX_KV: u64 = 1 << 20;
const MAX_TENSORS: u64 = 1 << 20;
const MAX_DIMS: u32 = 4;
const MAX_ARRAY_DEPTH: u32 = 4;
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// Why a file is not a usable GGUF.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot read {path}: {error}")]
    Io {
        path: PathBuf,
        /// In the message (not a `source`: chained printing would repeat it).
        error: io::Error,
    },
    #[error(
        "{path} is not a GGUF file (it starts with {found:?}, a GGUF file starts with \"GGUF\")"
    )]
    NotGguf { path: PathBuf, found: String },
    #[error("{path}: GGUF version {version} is not supported (2 and 3 are)")]
    Version { path: PathBuf, version: u32 },
    #[error("{path} is truncated or corrupt: {what}")]
    Corrupt { path: PathBuf, what: String },
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::String(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// The value as an unsigned integer, whatever its integer width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
}

/// A tensor's entry in the table (its data is not read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the innermost (contiguous) dimension.
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset from the start of the data section.
    pub offset: u64,
}

/// ggml tensor types this crate writes.
pub const GGML_TYPE_F32: u32 = 0;
pub const GGML_TYPE_F16: u32 = 1;
pub const GGML_TYPE_Q8_0: u32 = 8;
pub const GGML_TYPE_BF16: u32 = 30;

/// (block size in elements, bytes per block) for ggml types, to check tensor extents.
fn type_layout(ggml_type: u32) -> Option<(u64, u64)> {
    Some(match ggml_type {
        0 => (1, 4),     // F32
        1 => (1, 2),     // F16
        2 => (32, 18),   // Q4_0
        3 => (32, 20),   // Q4_1
        6 => (32, 22),   // Q5_0
        7 => (32, 24),   // Q5_1
        8 => (32, 34),   // Q8_0
        9 => (32, 36),   // Q8_1
        10 => (256, 84), // Q2_K
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        15 => (256, 292),
        24 => (1, 1), // I8
        25 => (1, 2), // I16
        26 => (1, 4), // I32
        27 => (1, 8), // I64
        28 => (1, 8), // F64
        30 => (1, 2), // BF16
        _ => return None,
    })
}

impl TensorInfo {
    /// Bytes of data, when the type is one whose layout we know.
    pub fn byte_len(&self) -> Option<u64> {
        let (block, bytes) = type_layout(self.ggml_type)?;
        let elements = self
            .dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))?;
        if elements % block != 0 {
            return None;
        }
        (elements / block).checked_mul(bytes)
    }
}

/// A GGUF file's header, metadata and tensor table, checked against the file's length.
#[derive(Debug, Clone)]
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    /// Absolute offset of the data section.
    pub data_offset: u64,
    pub file_len: u64,
}

struct Cursor<R> {
    inner: R,
    pos: u64,
    len: u64,
}

impl<R: Read> Cursor<R> {
    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut buf = [0u8; N];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| format!("read at byte {}: {e}", self.pos))?;
        self.pos += N as u64;
        Ok(buf)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes()?))
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes()?))
    }
    /// A length that must fit in what is left of the file (each element takes at least
    /// `min_elem` bytes), so a corrupt length cannot trigger a huge allocation.
    fn len_prefix(&mut self, min_elem: u64, what: &str) -> Result<u64, String> {
        let n = self.u64()?;
        let left = self.len.saturating_sub(self.pos);
        if n.saturating_mul(min_elem.max(1)) > left {
            return Err(format!(
                "{what} length {n} at byte {} runs past the end of the file ({left} bytes left)",
                self.pos - 8
            ));
        }
        Ok(n)
    }
    fn string(&mut self) -> Result<String, String> {
        let n = self.len_prefix(1, "string")?;
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|e| format!("read at byte {}: {e}", self.pos))?;
        self.pos += n;
        String::from_utf8(buf).map_err(|_| format!("string before byte {} is not UTF-8", self.pos))
    }
    fn value(&mut self, type_id: u32, depth: u32) -> Result<Value, String> {
        Ok(match type_id {
            0 => Value::U8(u8::from_le_bytes(self.bytes()?)),
            1 => Value::I8(i8::from_le_bytes(self.bytes()?)),
            2 => Value::U16(u16::from_le_bytes(self.bytes()?)),
            3 => Value::I16(i16::from_le_bytes(self.bytes()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.bytes()?)),
            6 => Value::F32(f32::from_le_bytes(self.bytes()?)),
            7 => match self.bytes::<1>()?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("bool value {b} before byte {}", self.pos)),
            },
            8 => Value::String(self.string()?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err("arrays nested too deep".into());
                }
                let elem_type = self.u32()?;
                let n = self.len_prefix(1, "array")?;
                let mut items = Vec::with_capacity(n.min(1 << 16) as usize);
                for _ in 0..n {
                    items.push(self.value(elem_type, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.bytes()?)),
            12 => Value::F64(f64::from_le_bytes(self.bytes()?)),
            t => return Err(format!("unknown value type {t} before byte {}", self.pos)),
        })
    }
}

impl GgufFile {
    /// Reads and checks the header, metadata and tensor table of `path`.
    ///
    /// # Errors
    /// [`GgufError`] naming the path and what is wrong: not GGUF, unsupported version,
    /// truncated, or a table that does not fit the file.
    pub fn read(path: &Path) -> Result<Self, GgufError> {
        let io_err = |error| GgufError::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = File::open(path).map_err(io_err)?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let corrupt = |what: String| GgufError::Corrupt {
            path: path.to_path_buf(),
            what,
        };
        let mut c = Cursor {
            inner: BufReader::new(file),
            pos: 0,
            len: file_len,
        };
        let magic: [u8; 4] = match c.bytes() {
            Ok(m) => m,
            Err(_) => {
                return Err(GgufError::NotGguf {
                    path: path.to_path_buf(),
                    found: format!("a {file_len}-byte file"),
                })
            }
        };
        if &magic != MAGIC {
            return Err(GgufError::NotGguf {
                path: path.to_path_buf(),
                found: String::from_utf8_lossy(&magic).into_owned(),
            });
        }
        let version = c.u32().map_err(corrupt)?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version {
                path: path.to_path_buf(),
                version,
            });
        }
        let n_tensors = c.u64().map_err(corrupt)?;
        let n_kv = c.u64().map_err(corrupt)?;
        if n_tensors > MAX_TENSORS || n_kv > MAX_KV {
            return Err(corrupt(format!(
                "header claims {n_tensors} tensors and {n_kv} metadata keys"
            )));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string().map_err(corrupt)?;
            let ty = c.u32().map_err(corrupt)?;
            let value = c.value(ty, 0).map_err(corrupt)?;
            metadata.insert(key, value);
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string().map_err(corrupt)?;
            let n_dims = c.u32().map_err(corrupt)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(corrupt(format!("tensor {name} has {n_dims} dimensions")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64().map_err(corrupt)?);
            }
            let ggml_type = c.u32().map_err(corrupt)?;
            let offset = c.u64().map_err(corrupt)?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(DEFAULT_ALIGNMENT);
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(corrupt(format!("alignment {alignment}")));
        }
        let data_offset = c.pos.div_ceil(alignment) * alignment;
        let data_len = file_len.saturating_sub(data_offset);
        for t in &tensors {
            let len = t.byte_len().unwrap_or(1);
            let end = t.offset.checked_add(len);
            if end.is_none_or(|end| end > data_len) {
                return Err(corrupt(format!(
                    "tensor {} needs bytes {}..{} of the data section, which has {data_len} \
                     (the file is {file_len} bytes; was the download cut short?)",
                    t.name,
                    t.offset,
                    t.offset.saturating_add(len)
                )));
            }
        }
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            data_offset,
            file_len,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(Value::as_str)
    }

    /// `{arch}.{suffix}`, the way llama.cpp names per-architecture keys.
    pub fn arch_key(&self, suffix: &str) -> Option<&Value> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.{suffix}"))
    }

    /// Reads one tensor's raw bytes.
    ///
    /// # Errors
    /// I/O errors, or a tensor whose type layout is unknown.
    pub fn read_tensor(&self, path: &Path, name: &str) -> io::Result<Vec<u8>> {
        let t = self
            .tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no tensor {name}")))?;
        let len = t.byte_len().ok_or_else(|| {
            io::Error::other(format!("unknown layout of ggml type {}", t.ggml_type))
        })?;
        let mut f = File::open(path)?;
        f.seek(SeekFrom::Start(self.data_offset + t.offset))?;
        let mut buf = vec![0u8; len as usize];
        f.read_exact(&mut buf)?;
        Ok(buf)
    }
}

/// Builds a GGUF (version 3) file in memory order: metadata, tensor table, aligned data.
#[derive(Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(TensorInfo, Vec<u8>)>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, key: impl Into<String>, value: Value) {
        self.metadata.push((key.into(), value));
    }

    /// Adds a tensor; `dims` are in ggml order (innermost first).
    pub fn add_tensor(
        &mut self,
        name: impl Into<String>,
        dims: Vec<u64>,
        ggml_type: u32,
        data: Vec<u8>,
    ) {
        self.tensors.push((
            TensorInfo {
                name: name.into(),
                dims,
                ggml_type,
                offset: 0,
            },
            data,
        ));
    }

    /// Writes the file to `path` (through a temporary file and a rename, so a failed write
    /// never leaves a half model where a model is expected).
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(mut self, path: &Path) -> io::Result<()> {
        let mut offset = 0u64;
        for (info, data) in &mut self.tensors {
            info.offset = offset;
            offset = (offset + data.len() as u64).div_ceil(DEFAULT_ALIGNMENT) * DEFAULT_ALIGNMENT;
        }
        let tmp = path.with_extension("gguf.partial");
        let mut w = CountingWriter {
            inner: BufWriter::new(File::create(&tmp)?),
            pos: 0,
        };
        w.write_all(MAGIC)?;
        w.write_all(&3u32.to_le_bytes())?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(self.metadata.len() as u64).to_le_bytes())?;
        for (key, value) in &self.metadata {
            write_string(&mut w, key)?;
            w.write_all(&value.type_id().to_le_bytes())?;
            write_value(&mut w, value)?;
        }
        for (info, _) in &self.tensors {
            write_string(&mut w, &info.name)?;
            w.write_all(&(info.dims.len() as u32).to_le_bytes())?;
            for d in &info.dims {
                w.write_all(&d.to_le_bytes())?;
            }
            w.write_all(&info.ggml_type.to_le_bytes())?;
            w.write_all(&info.offset.to_le_bytes())?;
        }
        w.pad_to(DEFAULT_ALIGNMENT)?;
        for (_, data) in &self.tensors {
            w.write_all(data)?;
            w.pad_to(DEFAULT_ALIGNMENT)?;
        }
        let file = w.inner.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

struct CountingWriter<W> {
    inner: W,
    pos: u64,
}

impl<W: Write> CountingWriter<W> {
    fn pad_to(&mut self, alignment: u64) -> io::Result<()> {
        let pad = self.pos.div_ceil(alignment) * alignment - self.pos;
        self.write_all(&vec![0u8; pad as usize])
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_string(w: &mut impl Write, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value(w: &mut impl Write, v: &Value) -> io::Result<()> {
    match v {
        Value::U8(x) => w.write_all(&x.to_le_bytes()),
        Value::I8(x) => w.write_all(&x.to_le_bytes()),
        Value::U16(x) => w.write_all(&x.to_le_bytes()),
        Value::I16(x) => w.write_all(&x.to_le_bytes()),
        Value::U32(x) => w.write_all(&x.to_le_bytes()),
        Value::I32(x) => w.write_all(&x.to_le_bytes()),
        Value::U64(x) => w.write_all(&x.to_le_bytes()),
        Value::I64(x) => w.write_all(&x.to_le_bytes()),
        Value::F32(x) => w.write_all(&x.to_le_bytes()),
        Value::F64(x) => w.write_all(&x.to_le_bytes()),
        Value::Bool(x) => w.write_all(&[u8::from(*x)]),
        Value::String(s) => write_string(w, s),
        Value::Array(items) => {
            let elem_type = items.first().map_or(4, Value::type_id);
            if items.iter().any(|i| i.type_id() != elem_type) {
                return Err(io::Error::other("GGUF arrays must hold one type"));
            }
            w.write_all(&elem_type.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            items.iter().try_for_each(|i| write_value(w, i))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gguf-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn write_then_read_round_trips_metadata_and_tensors() {
        let path = tmp("rt.gguf");
        let mut w = GgufWriter::new();
        w.add("general.architecture", Value::String("bert".into()));
        w.add("bert.context_length", Value::U32(512));
        w.add("bert.attention.causal", Value::Bool(false));
        w.add(
            "tokenizer.ggml.tokens",
            Value::Array(vec![
                Value::String("[PAD]".into()),
                Value::String("▁a".into()),
            ]),
        );
        w.add_tensor("a", vec![3], GGML_TYPE_F32, vec![1; 12]);
        w.add_tensor("b", vec![2, 2], GGML_TYPE_F16, vec![2; 8]);
        w.write(&path).unwrap();
        let g = GgufFile::read(&path).unwrap();
        assert_eq!(g.architecture(), Some("bert"));
        assert_eq!(
            g.arch_key("context_length").and_then(Value::as_u64),
            Some(512)
        );
        assert_eq!(
            g.arch_key("attention.causal").and_then(Value::as_bool),
            Some(false)
        );
        assert_eq!(g.tensors.len(), 2);
        assert_eq!(g.tensors[1].offset, 32);
        assert_eq!(g.read_tensor(&path, "b").unwrap(), vec![2; 8]);
    }

    #[test]
    fn truncated_file_is_reported_with_the_tensor_that_does_not_fit() {
        let path = tmp("trunc.gguf");
        let mut w = GgufWriter::new();
        w.add("general.architecture", Value::String("bert".into()));
        w.add_tensor("big", vec![1000], GGML_TYPE_F32, vec![0; 4000]);
        w.write(&path).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 100).unwrap();
        let err = GgufFile::read(&path).unwrap_err().to_string();
        assert!(err.contains("truncated") && err.contains("big"), "{err}");
        // Cut inside the header too.
        f.set_len(20).unwrap();
        let err = GgufFile::read(&path).unwrap_err().to_string();
        assert!(err.contains("truncated"), "{err}");
    }

    #[test]
    fn non_gguf_file_is_named_as_such() {
        let path = tmp("text.gguf");
        std::fs::write(&path, "hello world").unwrap();
        let err = GgufFile::read(&path).unwrap_err().to_string();
        assert!(
            err.contains("is not a GGUF file") && err.contains("hell"),
            "{err}"
        );
    }

    #[test]
    fn huge_lengths_in_a_hostile_header_are_rejected_without_allocating() {
        let path = tmp("hostile.gguf");
        let mut bytes = Vec::new();
        bytes.extend_from_slice(b"GGUF");
        bytes.extend_from_slice(&3u32.to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&1u64.to_le_bytes());
        bytes.extend_from_slice(&u64::MAX.to_le_bytes()); // key length
        std::fs::write(&path, bytes).unwrap();
        let err = GgufFile::read(&path).unwrap_err().to_string();
        assert!(err.contains("runs past the end"), "{err}");
    }
}
