//! Input readers. Each turns a byte stream into [`SourceItem`]s without loading it whole, and
//! turns bad records into per-item errors rather than stopping: invalid UTF-8, over-long lines.
//! Normalisations, applied identically everywhere: a UTF-8 BOM at the start is dropped, a
//! trailing `\r` (CRLF files) is dropped.

use std::io::{BufRead, ErrorKind};

use crate::error::{ItemError, ItemErrorKind};
use crate::item::{ItemId, Position, SourceItem};

/// Longest record a reader buffers (bytes); longer ones become [`ItemErrorKind::TooLong`]
/// errors and are skipped over without being held in memory.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 8 << 20;

/// A source of items for the processor (readers, in-memory lists).
pub trait ItemSource: Send {
    fn next_item(&mut self) -> Option<SourceItem>;
    /// Records the source passed over without making an item (blank lines, comments).
    fn skipped(&self) -> u64 {
        0
    }
    /// Errors that end the input (an I/O error mid-file), reported at the end of the run.
    fn take_error(&mut self) -> Option<std::io::Error> {
        None
    }
}

/// Any iterator of items is a source.
pub struct IterSource<I>(pub I);

impl<I: Iterator<Item = SourceItem> + Send> ItemSource for IterSource<I> {
    fn next_item(&mut self) -> Option<SourceItem> {
        self.0.next()
    }
}

/// One raw line: its bytes (without the line end) or the fact that it was too long.
pub(crate) enum RawLine {
    Bytes(Vec<u8>),
    TooLong(u64),
}

/// Reads lines with bounded memory; tracks line numbers and byte offsets.
pub(crate) struct LineReader<R> {
    inner: R,
    max_bytes: usize,
    pub line: u64,
    pub byte: u64,
    at_start: bool,
    pub error: Option<std::io::Error>,
}

impl<R: BufRead> LineReader<R> {
    pub fn new(inner: R, max_bytes: usize) -> Self {
        LineReader {
            inner,
            max_bytes,
            line: 0,
            byte: 0,
            at_start: true,
            error: None,
        }
    }

    /// The next line and its position, `None` at the end (or after an I/O error, kept in
    /// `self.error`).
    pub fn next_line(&mut self) -> Option<(RawLine, Position)> {
        let start = self.byte;
        let mut buf = Vec::new();
        let mut total: u64 = 0;
        let mut too_long = false;
        let mut saw_any = false;
        loop {
            let chunk = match self.inner.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.error = Some(e);
                    return None;
                }
            };
            if chunk.is_empty() {
                break;
            }
            saw_any = true;
            let (take, done) = match memchr(chunk) {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            total += take as u64;
            if !too_long {
                if buf.len() + take > self.max_bytes + 2 {
                    too_long = true;
                    buf = Vec::new();
                } else {
                    buf.extend_from_slice(&chunk[..take]);
                }
            }
            self.inner.consume(take);
            if done {
                break;
            }
        }
        if !saw_any {
            return None;
        }
        self.byte += total;
        self.line += 1;
        let pos = Position {
            line: self.line,
            byte: start,
        };
        if too_long {
            return Some((RawLine::TooLong(total), pos));
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        }
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
        if self.at_start {
            self.at_start = false;
            if buf.starts_with(b"\xEF\xBB\xBF") {
                buf.drain(..3);
            }
        }
        if buf.len() > self.max_bytes {
            return Some((RawLine::TooLong(total), pos));
        }
        Some((RawLine::Bytes(buf), pos))
    }
}

fn memchr(b: &[u8]) -> Option<usize> {
    b.iter().position(|&c| c == b'\n')
}

pub(crate) fn too_long_error(bytes: u64, max: usize) -> ItemError {
    ItemError::new(
        ItemErrorKind::TooLong,
        format!("record of {bytes} bytes is larger than the reader's limit of {max} bytes"),
    )
}

pub(crate) fn utf8(bytes: Vec<u8>) -> Result<String, ItemError> {
    String::from_utf8(bytes).map_err(|e| {
        ItemError::new(
            ItemErrorKind::InvalidUtf8,
            format!(
                "invalid UTF-8 at byte {} of the record",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// How a plain-text reader treats blank lines and `#` lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TextOptions {
    /// Skip (and count) blank lines; otherwise they are items that fail as empty.
    pub skip_blank: bool,
    /// Treat lines starting with `#` as comments (skipped and counted).
    pub comments: bool,
    pub max_record_bytes: usize,
}

impl Default for TextOptions {
    fn default() -> Self {
        TextOptions {
            skip_blank: false,
            comments: false,
            max_record_bytes: DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

/// One item per line; the id is the 0-based line number.
pub struct TextLines<R> {
    lines: LineReader<R>,
    options: TextOptions,
    skipped: u64,
}

impl<R: BufRead> TextLines<R> {
    pub fn new(reader: R, options: TextOptions) -> Self {
        TextLines {
            lines: LineReader::new(reader, options.max_record_bytes),
            options,
            skipped: 0,
        }
    }
}

impl<R: BufRead + Send> ItemSource for TextLines<R> {
    fn next_item(&mut self) -> Option<SourceItem> {
        loop {
            let (raw, pos) = self.lines.next_line()?;
            let id = ItemId::Num(pos.line - 1);
            let text = match raw {
                RawLine::TooLong(n) => Err(too_long_error(n, self.options.max_record_bytes)),
                RawLine::Bytes(b) => {
                    let blank = b.iter().all(u8::is_ascii_whitespace);
                    if (blank && self.options.skip_blank)
                        || (self.options.comments && b.first() == Some(&b'#'))
                    {
                        self.skipped += 1;
                        continue;
                    }
                    utf8(b)
                }
            };
            return Some(SourceItem {
                id,
                text,
                position: Some(pos),
                extra: None,
            });
        }
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }

    fn take_error(&mut self) -> Option<std::io::Error> {
        self.lines.error.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(input: &[u8], options: TextOptions) -> (Vec<SourceItem>, u64) {
        let mut r = TextLines::new(input, options);
        let mut v = Vec::new();
        while let Some(i) = r.next_item() {
            v.push(i);
        }
        (v, r.skipped())
    }

    #[test]
    fn lines_keep_their_numbers_and_crlf_bom_are_normalised() {
        let (v, skipped) = items(
            b"\xEF\xBB\xBFfirst\r\n\nthird\n# note\nlast",
            TextOptions {
                skip_blank: true,
                comments: true,
                ..Default::default()
            },
        );
        let got: Vec<(String, String)> = v
            .iter()
            .map(|i| (i.id.to_string(), i.text.clone().unwrap()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("0".into(), "first".into()),
                ("2".into(), "third".into()),
                ("4".into(), "last".into())
            ]
        );
        assert_eq!(skipped, 2);
        assert_eq!(v[1].position, Some(Position { line: 3, byte: 11 }));
    }

    #[test]
    fn invalid_utf8_and_over_long_lines_are_item_errors_and_reading_goes_on() {
        let mut input = b"ok\n\xff\xfe bad\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100));
        input.extend_from_slice(b"\nafter\n");
        let (v, _) = items(
            &input,
            TextOptions {
                max_record_bytes: 50,
                ..Default::default()
            },
        );
        assert_eq!(v.len(), 4);
        assert_eq!(
            v[1].text.as_ref().unwrap_err().kind,
            ItemErrorKind::InvalidUtf8
        );
        let e = v[2].text.as_ref().unwrap_err();
        assert_eq!(e.kind, ItemErrorKind::TooLong);
        assert!(e.message.contains("101 bytes"), "{}", e.message);
        assert_eq!(v[3].text.as_deref(), Ok("after"));
    }

    #[test]
    fn blank_lines_are_items_unless_skipped() {
        let (v, skipped) = items(b"a\n\n  \nb\n", TextOptions::default());
        assert_eq!(v.len(), 4);
        assert_eq!(skipped, 0);
    }
}
