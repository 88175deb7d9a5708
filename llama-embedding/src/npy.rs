//! NumPy `.npy` (version 1.0) for 2-D little-endian arrays: a reader for reference data and
//! round-trip tests, and the fixed-size header the npy sink rewrites as rows are appended (the
//! header is padded to [`HEADER_LEN`] bytes so the row count can grow in place).

use std::io::{self, Read};
use std::path::Path;

/// Bytes of the header we write (magic, version, length, dict, padding).
pub const HEADER_LEN: usize = 128;

/// The `.npy` header for a C-order `(rows, cols)` array of `descr` (e.g. `<f4`, `<f2`, `|i1`,
/// `|u1`), padded to [`HEADER_LEN`] bytes.
pub fn header(descr: &str, rows: u64, cols: usize) -> Vec<u8> {
    let dict =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(b"\x93NUMPY\x01\x00");
    let body_len = HEADER_LEN - 10;
    h.extend_from_slice(&(body_len as u16).to_le_bytes());
    h.extend_from_slice(dict.as_bytes());
    while h.len() < HEADER_LEN - 1 {
        h.push(b' ');
    }
    h.push(b'\n');
    h
}

/// A 2-D array read from a `.npy` file.
#[derive(Debug, Clone, PartialEq)]
pub struct Array2 {
    pub descr: String,
    pub rows: usize,
    pub cols: usize,
    /// Raw little-endian element bytes, row-major.
    pub data: Vec<u8>,
}

impl Array2 {
    /// Row `i` as f32 (`<f4` arrays only).
    pub fn row_f32(&self, i: usize) -> Vec<f32> {
        assert_eq!(self.descr, "<f4", "row_f32 on a {} array", self.descr);
        self.data[i * self.cols * 4..(i + 1) * self.cols * 4]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
            .collect()
    }
}

/// Reads a 2-D C-order `.npy` file.
///
/// # Errors
/// I/O errors or a header this reader does not understand.
pub fn read(path: &Path) -> io::Result<Array2> {
    let mut f = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    f.read_to_end(&mut bytes)?;
    let bad = |m: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {m}", path.display()),
        )
    };
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(bad("not an .npy file"));
    }
    let (hlen, hstart) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => (
            u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize,
            12,
        ),
        _ => return Err(bad("unknown .npy version")),
    };
    let header = std::str::from_utf8(
        bytes
            .get(hstart..hstart + hlen)
            .ok_or_else(|| bad("short header"))?,
    )
    .map_err(|_| bad("header is not text"))?;
    let field = |key: &str| -> Option<&str> {
        let at = header.find(&format!("'{key}':"))? + key.len() + 3;
        Some(header[at..].trim_start())
    };
    let descr = field("descr")
        .and_then(|s| s.strip_prefix('\''))
        .and_then(|s| s.split('\'').next())
        .ok_or_else(|| bad("no descr"))?
        .to_string();
    if field("fortran_order").is_some_and(|s| s.starts_with("True")) {
        return Err(bad("Fortran order is not supported"));
    }
    let shape = field("shape")
        .and_then(|s| s.strip_prefix('('))
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| bad("no shape"))?;
    let dims: Vec<usize> = shape
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(|_| bad("bad shape")))
        .collect::<io::Result<_>>()?;
    let (rows, cols) = match dims[..] {
        [r, c] => (r, c),
        [r] => (r, 1),
        _ => return Err(bad("only 1-D and 2-D arrays are supported")),
    };
    let size = match descr.as_str() {
        "<f4" | "<i4" | "<u4" => 4,
        "<f2" => 2,
        "|i1" | "|u1" => 1,
        "<f8" => 8,
        _ => return Err(bad("unsupported dtype")),
    };
    let data = bytes[hstart + hlen..].to_vec();
    if data.len() != rows * cols * size {
        return Err(bad(&format!(
            "{} data bytes for shape ({rows}, {cols}) of {descr}",
            data.len()
        )));
    }
    Ok(Array2 {
        descr,
        rows,
        cols,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_is_fixed_size_and_reads_back() {
        let h = header("<f4", 3, 2);
        assert_eq!(h.len(), HEADER_LEN);
        let h2 = header("<f4", 123_456_789_012, 4096);
        assert_eq!(h2.len(), HEADER_LEN);
        let dir = std::env::temp_dir().join(format!("npy-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.npy");
        let mut bytes = h;
        for v in [1f32, 2., 3., 4., 5., 6.] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        std::fs::write(&p, bytes).unwrap();
        let a = read(&p).unwrap();
        assert_eq!((a.rows, a.cols), (3, 2));
        assert_eq!(a.row_f32(2), vec![5., 6.]);
    }
}
