//! Structured inputs: JSONL, JSON arrays and CSV/TSV records, turned into [`SourceItem`]s by
//! an [`InputSpec`] (which field is the text or which template builds it, which is the id,
//! which to keep), and [`Selection`] (item range, only/skip ids, limit).
//!
//! Ids: a record's `--id-field` value (string or integer) or, without one, the 0-based item
//! number; for plain text the 0-based line number. Records that cannot be parsed become item
//! errors naming the line; the rest of the input is read.

use std::collections::HashSet;
use std::io::{BufRead, Read};
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, ItemError, ItemErrorKind, Result};
use crate::item::{ItemId, Position, SourceItem};
use crate::reader::{
    too_long_error, utf8, ItemSource, LineReader, RawLine, TextLines, TextOptions,
};

/// Input file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputFormat {
    Text,
    Jsonl,
    Json,
    Csv,
    Tsv,
    /// A directory: one item per file (`files.rs`).
    Files,
    /// One item per row (`parquet_input.rs`).
    Parquet,
}

impl InputFormat {
    /// From a file name's extension, under any `.gz`/`.zst` (`-` and unknown extensions are
    /// text; a directory is [`InputFormat::Files`]).
    pub fn from_path(path: &str) -> InputFormat {
        if path != "-" && Path::new(path).is_dir() {
            return InputFormat::Files;
        }
        let lower = path.to_ascii_lowercase();
        let lower = Compression::of(&lower).strip(&lower);
        let ext = lower.rsplit('.').next().unwrap_or("");
        match ext {
            "jsonl" | "ndjson" => InputFormat::Jsonl,
            "json" => InputFormat::Json,
            "csv" => InputFormat::Csv,
            "tsv" | "tab" => InputFormat::Tsv,
            "parquet" | "pq" => InputFormat::Parquet,
            _ => InputFormat::Text,
        }
    }
}

impl std::str::FromStr for InputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "text" | "txt" => InputFormat::Text,
            "jsonl" | "ndjson" => InputFormat::Jsonl,
            "json" => InputFormat::Json,
            "csv" => InputFormat::Csv,
            "tsv" => InputFormat::Tsv,
            "files" => InputFormat::Files,
            "parquet" => InputFormat::Parquet,
            _ => {
                return Err(format!(
                    "unknown input format {s:?} (text, jsonl, json, csv, tsv, files, parquet)"
                ))
            }
        })
    }
}

/// How an input file is compressed, from its name: read through the decoder, transparently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// `.gz` (every gzip member, as `zcat` reads them).
    Gzip,
    /// `.zst` (every frame).
    Zstd,
}

impl Compression {
    pub fn of(path: &str) -> Compression {
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".gz") {
            Compression::Gzip
        } else if lower.ends_with(".zst") || lower.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The name without the compression extension.
    fn strip(self, name: &str) -> &str {
        match self {
            Compression::None => name,
            _ => name.rsplit_once('.').map_or(name, |(stem, _)| stem),
        }
    }

    /// `file` read through its decoder.
    ///
    /// # Errors
    /// A zstd stream whose decoder cannot start.
    pub fn reader(self, file: std::fs::File) -> std::io::Result<Box<dyn Read + Send>> {
        Ok(match self {
            Compression::None => Box::new(file),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(file)?),
        })
    }
}

/// How records become items.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputSpec {
    pub format: InputFormat,
    /// Field holding the text (`a.b` for nested JSON). Default `text`.
    pub text_field: String,
    pub id_field: Option<String>,
    /// Builds the text from fields: `{title}\n\n{body}`; nested fields as `{a__b}`.
    pub template: Option<String>,
    pub keep_fields: Vec<String>,
    /// Plain text: treat `#` lines as comments.
    pub comments: bool,
    pub max_record_bytes: usize,
    /// Directory inputs: only files whose relative path matches one of these globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub globs: Vec<String>,
}

impl Default for InputSpec {
    fn default() -> Self {
        InputSpec {
            format: InputFormat::Text,
            text_field: "text".into(),
            id_field: None,
            template: None,
            keep_fields: Vec::new(),
            comments: false,
            max_record_bytes: crate::reader::DEFAULT_MAX_RECORD_BYTES,
            globs: Vec::new(),
        }
    }
}

/// Which items of the input to process.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Selection {
    /// First item number (0-based, inclusive).
    pub start: Option<u64>,
    /// Last item number (exclusive).
    pub end: Option<u64>,
    pub only: Option<HashSet<String>>,
    pub skip: Option<HashSet<String>>,
    pub limit: Option<u64>,
    /// Only the items of this shard (`--shard K/N`).
    #[serde(default)]
    pub shard: Option<Shard>,
}

impl Selection {
    pub fn is_all(&self) -> bool {
        *self == Selection::default()
    }
}

/// Shard `index` of `count`: the items whose [`shard_of`] is `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// # Errors
    /// `count` 0 or `index >= count`.
    pub fn new(index: u32, count: u32) -> Result<Shard> {
        if count == 0 || index >= count {
            return Err(Error::Config(format!(
                "shard {index}/{count} does not exist: shards are 0/N .. (N-1)/N"
            )));
        }
        Ok(Shard { index, count })
    }

    /// Parses `K/N`.
    ///
    /// # Errors
    /// Not `K/N` with `K < N`.
    pub fn parse(s: &str) -> Result<Shard> {
        let (k, n) = s
            .split_once('/')
            .ok_or_else(|| Error::Config(format!("--shard {s:?}: write K/N, e.g. 0/4")))?;
        let num = |x: &str| {
            x.trim()
                .parse::<u32>()
                .map_err(|_| Error::Config(format!("--shard {s:?}: write K/N, e.g. 0/4")))
        };
        Shard::new(num(k)?, num(n)?)
    }

    pub fn contains(&self, id: &str) -> bool {
        shard_of(id, self.count) == self.index
    }
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The shard of an item id: FNV-1a (64 bit) of the id as text (`7` for the number 7), modulo
/// `count`. Stable across machines, versions and input orders.
pub fn shard_of(id: &str, count: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(count.max(1))) as u32
}

/// Opens `path` (`-` for stdin) as a source of items.
///
/// # Errors
/// The file cannot be opened, or a JSON array cannot be parsed at all.
pub fn open_input(
    path: &str,
    spec: &InputSpec,
    selection: &Selection,
) -> Result<Box<dyn ItemSource>> {
    if spec.format == InputFormat::Files {
        let files =
            crate::files::FilesSource::open(Path::new(path), &spec.globs, spec.max_record_bytes)?;
        return Ok(select(Box::new(files), selection));
    }
    if spec.format == InputFormat::Parquet {
        #[cfg(feature = "parquet")]
        {
            let spec_ = spec.clone();
            let to_item = Box::new(move |row: &Value, n: u64, at: Position| {
                item_from_record(row, n, &spec_, Some(at))
            });
            let rows =
                crate::parquet_input::ParquetSource::open(path, record_columns(spec), to_item)?;
            return Ok(select(Box::new(rows), selection));
        }
        #[cfg(not(feature = "parquet"))]
        return Err(Error::Config(format!(
            "{path}: this build reads no Parquet (the library's `parquet` feature is off)"
        )));
    }
    let reader: Box<dyn BufRead + Send> = if path == "-" {
        Box::new(std::io::BufReader::with_capacity(1 << 16, std::io::stdin()))
    } else {
        let f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let raw = Compression::of(path)
            .reader(f)
            .map_err(|e| Error::io(path, e))?;
        Box::new(std::io::BufReader::with_capacity(1 << 16, raw))
    };
    open_reader(reader, path, spec, selection)
}

/// [`open_input`] over any reader (`name` is used in messages). The fuzz targets enter here.
///
/// # Errors
/// A CSV without the needed columns, a JSON document that is not an array.
pub fn open_reader(
    reader: Box<dyn BufRead + Send>,
    path: &str,
    spec: &InputSpec,
    selection: &Selection,
) -> Result<Box<dyn ItemSource>> {
    let inner: Box<dyn ItemSource> = match spec.format {
        InputFormat::Text => Box::new(TextLines::new(
            reader,
            TextOptions {
                skip_blank: true,
                comments: spec.comments,
                max_record_bytes: spec.max_record_bytes,
            },
        )),
        InputFormat::Jsonl => Box::new(JsonlSource {
            lines: LineReader::new(reader, spec.max_record_bytes),
            spec: spec.clone(),
            n: 0,
            skipped: 0,
        }),
        InputFormat::Json => Box::new(JsonArraySource::new(reader, path, spec.clone())?),
        InputFormat::Csv | InputFormat::Tsv => {
            Box::new(CsvSource::new(reader, path, spec.clone())?)
        }
        InputFormat::Files | InputFormat::Parquet => {
            return Err(Error::Config(format!(
                "{path}: a directory or Parquet input is read from its file, not from a stream"
            )))
        }
    };
    Ok(select(inner, selection))
}

fn select(inner: Box<dyn ItemSource>, selection: &Selection) -> Box<dyn ItemSource> {
    Box::new(Selected {
        inner,
        selection: selection.clone(),
        n: 0,
        emitted: 0,
    })
}

/// Applies a [`Selection`]; items outside it are not counted as skipped (they were not asked
/// for).
struct Selected {
    inner: Box<dyn ItemSource>,
    selection: Selection,
    n: u64,
    emitted: u64,
}

impl ItemSource for Selected {
    fn next_item(&mut self) -> Option<SourceItem> {
        let s = &self.selection;
        loop {
            if s.limit.is_some_and(|l| self.emitted >= l) || s.end.is_some_and(|e| self.n >= e) {
                return None;
            }
            let item = self.inner.next_item()?;
            let n = self.n;
            self.n += 1;
            if s.start.is_some_and(|st| n < st) {
                continue;
            }
            if s.only.is_some() || s.skip.is_some() || s.shard.is_some() {
                let id = item.id.to_string();
                if s.only.as_ref().is_some_and(|o| !o.contains(&id))
                    || s.skip.as_ref().is_some_and(|k| k.contains(&id))
                    || s.shard.is_some_and(|sh| !sh.contains(&id))
                {
                    continue;
                }
            }
            self.emitted += 1;
            return Some(item);
        }
    }
    fn skipped(&self) -> u64 {
        self.inner.skipped()
    }
    fn take_error(&mut self) -> Option<std::io::Error> {
        self.inner.take_error()
    }
}

/// Looks up `a.b.c` in a JSON object.
pub fn get_path<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |cur, key| match cur {
        Value::Object(m) => m.get(key),
        Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// Flattens nested objects to `a__b` keys (seed 004), keeping the top-level keys too.
pub fn flatten(v: &Map<String, Value>) -> Map<String, Value> {
    fn go(prefix: &str, v: &Value, out: &mut Map<String, Value>, depth: usize) {
        out.insert(prefix.to_string(), v.clone());
        if let (Value::Object(m), true) = (v, depth < 32) {
            for (k, child) in m {
                go(&format!("{prefix}__{k}"), child, out, depth + 1);
            }
        }
    }
    let mut out = Map::new();
    for (k, v) in v {
        go(k, v, &mut out, 0);
    }
    out
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Fills `{field}` placeholders (`{{`/`}}` for literal braces; `\n`, `\t` escapes).
///
/// # Errors
/// A placeholder naming a missing field, or an unclosed `{`.
pub fn render_template(template: &str, fields: &Map<String, Value>) -> Result<String, ItemError> {
    let mut out = String::with_capacity(template.len() * 2);
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                out.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                out.push('}');
            }
            '{' => {
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                let v = fields.get(&name).ok_or_else(|| {
                    ItemError::new(
                        ItemErrorKind::Parse,
                        format!("template field {{{name}}} is missing"),
                    )
                })?;
                out.push_str(&value_text(v));
            }
            '\\' => match chars.peek() {
                Some('n') => {
                    chars.next();
                    out.push('\n');
                }
                Some('t') => {
                    chars.next();
                    out.push('\t');
                }
                _ => out.push('\\'),
            },
            c => out.push(c),
        }
    }
    Ok(out)
}

fn id_from(v: &Value) -> Option<ItemId> {
    match v {
        Value::String(s) => Some(ItemId::Str(s.clone())),
        Value::Number(n) => n
            .as_u64()
            .map(ItemId::Num)
            .or_else(|| Some(ItemId::Str(n.to_string()))),
        Value::Null => None,
        other => Some(ItemId::Str(other.to_string())),
    }
}

/// The top-level fields a spec reads from a record; `None`: all (a template names its own).
#[cfg(feature = "parquet")]
fn record_columns(spec: &InputSpec) -> Option<Vec<String>> {
    if spec.template.is_some() {
        return None;
    }
    let top = |f: &str| f.split('.').next().unwrap_or(f).to_string();
    let mut cols = vec![top(&spec.text_field)];
    cols.extend(spec.id_field.as_deref().map(top));
    cols.extend(spec.keep_fields.iter().map(|f| top(f)));
    cols.sort();
    cols.dedup();
    Some(cols)
}

/// Builds an item from one JSON record (or a CSV row turned into a JSON object).
fn item_from_record(
    record: &Value,
    n: u64,
    spec: &InputSpec,
    position: Option<Position>,
) -> SourceItem {
    let id = spec
        .id_field
        .as_deref()
        .and_then(|f| get_path(record, f))
        .and_then(id_from)
        .unwrap_or(ItemId::Num(n));
    let text = match record {
        Value::Object(m) => match &spec.template {
            Some(t) => render_template(t, &flatten(m)),
            None => match get_path(record, &spec.text_field) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Null) | None => Err(ItemError::new(
                    ItemErrorKind::Parse,
                    format!("no text field {:?}", spec.text_field),
                )),
                Some(other) => Ok(other.to_string()),
            },
        },
        Value::String(s) if spec.template.is_none() => Ok(s.clone()),
        _ => Err(ItemError::new(
            ItemErrorKind::Parse,
            "the record is not a JSON object",
        )),
    };
    let missing_id = spec
        .id_field
        .as_deref()
        .is_some_and(|f| get_path(record, f).and_then(id_from).is_none());
    let text = if missing_id {
        Err(ItemError::new(
            ItemErrorKind::Parse,
            format!(
                "no id field {:?}",
                spec.id_field.as_deref().unwrap_or_default()
            ),
        ))
    } else {
        text
    };
    let extra = (!spec.keep_fields.is_empty()).then(|| {
        spec.keep_fields
            .iter()
            .filter_map(|f| get_path(record, f).map(|v| (f.clone(), v.clone())))
            .collect()
    });
    SourceItem {
        id,
        text,
        position,
        extra,
    }
}

fn parse_error(e: impl std::fmt::Display) -> ItemError {
    ItemError::new(ItemErrorKind::Parse, format!("invalid JSON: {e}"))
}

struct JsonlSource<R> {
    lines: LineReader<R>,
    spec: InputSpec,
    n: u64,
    skipped: u64,
}

impl<R: BufRead + Send> ItemSource for JsonlSource<R> {
    fn next_item(&mut self) -> Option<SourceItem> {
        loop {
            let (raw, pos) = self.lines.next_line()?;
            let n = self.n;
            let item = match raw {
                RawLine::TooLong(b) => SourceItem {
                    id: ItemId::Num(n),
                    text: Err(too_long_error(b, self.spec.max_record_bytes)),
                    position: Some(pos),
                    extra: None,
                },
                RawLine::Bytes(b) => {
                    if b.iter().all(u8::is_ascii_whitespace) {
                        self.skipped += 1;
                        continue;
                    }
                    let parsed = utf8(b)
                        .and_then(|s| serde_json::from_str::<Value>(&s).map_err(parse_error));
                    match parsed {
                        Ok(v) => item_from_record(&v, n, &self.spec, Some(pos)),
                        Err(e) => SourceItem {
                            id: ItemId::Num(n),
                            text: Err(e),
                            position: Some(pos),
                            extra: None,
                        },
                    }
                }
            };
            self.n += 1;
            return Some(item);
        }
    }
    fn skipped(&self) -> u64 {
        self.skipped
    }
    fn take_error(&mut self) -> Option<std::io::Error> {
        self.lines.error.take()
    }
}

/// A JSON array document. It is parsed whole (use JSONL for inputs larger than memory).
struct JsonArraySource {
    items: std::vec::IntoIter<Value>,
    spec: InputSpec,
    n: u64,
}

impl JsonArraySource {
    fn new(mut reader: Box<dyn BufRead + Send>, path: &str, spec: InputSpec) -> Result<Self> {
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(path, e))?;
        let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
        let v: Value = serde_json::from_slice(bytes)
            .map_err(|e| Error::Config(format!("{path} is not a JSON document: {e}")))?;
        let Value::Array(items) = v else {
            return Err(Error::Config(format!(
                "{path}: a .json input must be an array of records (use .jsonl for one record a line)"
            )));
        };
        Ok(JsonArraySource {
            items: items.into_iter(),
            spec,
            n: 0,
        })
    }
}

impl ItemSource for JsonArraySource {
    fn next_item(&mut self) -> Option<SourceItem> {
        let v = self.items.next()?;
        let item = item_from_record(&v, self.n, &self.spec, None);
        self.n += 1;
        Some(item)
    }
}

/// Counts newlines as the CSV parser reads, so that records get their true line and byte
/// offset: the csv crate's own position points at the `\n` of a CRLF line end and its line
/// count lags one behind after one (found by fuzzing `csv_reader`; regression in
/// `fuzz/regressions/csv_reader/`).
struct LineCounter<R> {
    inner: R,
    read: u64,
    /// Offsets of the newlines read and not yet passed by a record start.
    newlines: std::collections::VecDeque<u64>,
    /// Newlines before those.
    before: u64,
}

impl<R: Read> Read for LineCounter<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        for (i, b) in buf[..n].iter().enumerate() {
            if *b == b'\n' {
                self.newlines.push_back(self.read + i as u64);
            }
        }
        self.read += n as u64;
        Ok(n)
    }
}

impl<R> LineCounter<R> {
    /// The true position of a record the parser says starts at `byte`.
    fn locate(&mut self, byte: u64) -> Position {
        while self.newlines.front().is_some_and(|&o| o < byte) {
            self.newlines.pop_front();
            self.before += 1;
        }
        let byte = if self.newlines.front() == Some(&byte) {
            // The rest of a CRLF: the record starts after it.
            self.newlines.pop_front();
            self.before += 1;
            byte + 1
        } else {
            byte
        };
        Position {
            line: self.before + 1,
            byte,
        }
    }
}

/// CSV/TSV with a header row; columns are named by `--text-field` / `--id-field`.
struct CsvSource {
    reader: csv::Reader<LineCounter<Box<dyn BufRead + Send>>>,
    headers: Vec<String>,
    spec: InputSpec,
    n: u64,
    record: csv::ByteRecord,
    error: Option<std::io::Error>,
}

impl CsvSource {
    fn new(reader: Box<dyn BufRead + Send>, path: &str, spec: InputSpec) -> Result<Self> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(if spec.format == InputFormat::Tsv {
                b'\t'
            } else {
                b','
            })
            .flexible(true)
            .from_reader(LineCounter {
                inner: reader,
                read: 0,
                newlines: std::collections::VecDeque::new(),
                before: 0,
            });
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| Error::Config(format!("{path}: cannot read the CSV header: {e}")))?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').to_string())
            .collect();
        if spec.template.is_none() && !headers.contains(&spec.text_field) {
            return Err(Error::Config(format!(
                "{path}: no column {:?} for the text (columns: {}); use --text-field",
                spec.text_field,
                headers.join(", ")
            )));
        }
        if let Some(id) = &spec.id_field {
            if !headers.contains(id) {
                return Err(Error::Config(format!(
                    "{path}: no id column {id:?} (columns: {})",
                    headers.join(", ")
                )));
            }
        }
        Ok(CsvSource {
            reader,
            headers,
            spec,
            n: 0,
            record: csv::ByteRecord::new(),
            error: None,
        })
    }
}

impl ItemSource for CsvSource {
    fn next_item(&mut self) -> Option<SourceItem> {
        let ok = match self.reader.read_byte_record(&mut self.record) {
            Ok(ok) => ok,
            Err(e) => {
                if e.is_io_error() {
                    if let csv::ErrorKind::Io(io) = e.into_kind() {
                        self.error = Some(io);
                    }
                    return None;
                }
                // A CSV syntax error: report it as this record's error and go on.
                let n = self.n;
                self.n += 1;
                return Some(SourceItem {
                    id: ItemId::Num(n),
                    text: Err(ItemError::new(
                        ItemErrorKind::Parse,
                        format!("invalid CSV: {e}"),
                    )),
                    position: None,
                    extra: None,
                });
            }
        };
        if !ok {
            return None;
        }
        let n = self.n;
        self.n += 1;
        let pos = self
            .record
            .position()
            .map(|p| self.reader.get_mut().locate(p.byte()));
        if self.record.len() != self.headers.len() {
            return Some(SourceItem {
                id: ItemId::Num(n),
                text: Err(ItemError::new(
                    ItemErrorKind::Parse,
                    format!(
                        "the row has {} fields, the header has {}",
                        self.record.len(),
                        self.headers.len()
                    ),
                )),
                position: pos,
                extra: None,
            });
        }
        let mut obj = Map::new();
        for (h, field) in self.headers.iter().zip(self.record.iter()) {
            match std::str::from_utf8(field) {
                Ok(s) => {
                    obj.insert(h.clone(), Value::String(s.to_string()));
                }
                Err(e) => {
                    return Some(SourceItem {
                        id: ItemId::Num(n),
                        text: Err(ItemError::new(
                            ItemErrorKind::InvalidUtf8,
                            format!("column {h:?}: invalid UTF-8 at byte {}", e.valid_up_to()),
                        )),
                        position: pos,
                        extra: None,
                    })
                }
            }
        }
        Some(item_from_record(&Value::Object(obj), n, &self.spec, pos))
    }
    fn take_error(&mut self) -> Option<std::io::Error> {
        self.error.take()
    }
}

/// Reads ids from a comma-separated list or, with a leading `@`, from a file (one a line).
///
/// # Errors
/// The file cannot be read.
pub fn parse_ids(arg: &str) -> Result<HashSet<String>> {
    if let Some(path) = arg.strip_prefix('@') {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Ok(text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect())
    } else {
        Ok(arg
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect())
    }
}

/// Counts the items of a plain-text or JSONL file quickly (for progress ETAs): non-blank lines.
pub fn count_lines(path: &Path) -> Option<u64> {
    if Compression::of(&path.to_string_lossy()) != Compression::None {
        return None; // counting would decompress the whole file once more
    }
    let f = std::fs::File::open(path).ok()?;
    let mut r = std::io::BufReader::with_capacity(1 << 20, f);
    let mut n = 0u64;
    let mut blank = true;
    loop {
        let buf = r.fill_buf().ok()?;
        if buf.is_empty() {
            break;
        }
        for &b in buf {
            if b == b'\n' {
                if !blank {
                    n += 1;
                }
                blank = true;
            } else if !b.is_ascii_whitespace() {
                blank = false;
            }
        }
        let len = buf.len();
        r.consume(len);
    }
    Some(n + u64::from(!blank))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(src: &mut dyn ItemSource) -> Vec<SourceItem> {
        std::iter::from_fn(|| src.next_item()).collect()
    }

    fn write(name: &str, content: &[u8]) -> String {
        let dir = std::env::temp_dir().join(format!("input-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, content).unwrap();
        p.to_string_lossy().into_owned()
    }

    #[test]
    fn jsonl_ids_nested_fields_templates_and_bad_lines() {
        let p = write(
            "a.jsonl",
            b"{\"id\": \"a\", \"doc\": {\"title\": \"T\", \"body\": \"B\"}, \"lang\": \"en\"}\n\nnot json\n{\"id\": 7, \"doc\": {\"title\": \"U\"}}\n",
        );
        let spec = InputSpec {
            format: InputFormat::Jsonl,
            text_field: "doc.title".into(),
            id_field: Some("id".into()),
            keep_fields: vec!["lang".into()],
            ..Default::default()
        };
        let v = collect(&mut *open_input(&p, &spec, &Selection::default()).unwrap());
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].id, ItemId::Str("a".into()));
        assert_eq!(v[0].text.as_deref(), Ok("T"));
        assert_eq!(v[0].extra.as_ref().unwrap()["lang"], "en");
        assert_eq!(v[1].text.as_ref().unwrap_err().kind, ItemErrorKind::Parse);
        assert_eq!(v[1].position.unwrap().line, 3);
        assert_eq!(v[2].id, ItemId::Num(7));

        let spec = InputSpec {
            template: Some("{doc__title}\\n\\n{doc__body}".into()),
            ..spec
        };
        let v = collect(&mut *open_input(&p, &spec, &Selection::default()).unwrap());
        assert_eq!(v[0].text.as_deref(), Ok("T\n\nB"));
        let e = v[2].text.as_ref().unwrap_err();
        assert!(
            e.message.contains("{doc__body} is missing"),
            "{}",
            e.message
        );
    }

    #[test]
    fn csv_positions_are_right_after_crlf_and_multi_line_fields() {
        let input = b"text,id\r\na,1\r\nb,2\n\"multi\nline\",3\r\nc,4";
        let p = write("crlf.csv", input);
        let spec = InputSpec {
            format: InputFormat::Csv,
            ..Default::default()
        };
        let v = collect(&mut *open_input(&p, &spec, &Selection::default()).unwrap());
        let got: Vec<(u64, u64)> = v
            .iter()
            .map(|i| (i.position.unwrap().line, i.position.unwrap().byte))
            .collect();
        // Lines 2, 3, 4 (two lines long) and 6; each byte offset is the record's first byte.
        assert_eq!(got, vec![(2, 9), (3, 14), (4, 18), (6, 34)]);
        for (line, byte) in got {
            assert_ne!(input[byte as usize], b'\n', "line {line}");
        }
    }

    #[test]
    fn csv_columns_ragged_rows_and_tsv() {
        let p = write(
            "a.csv",
            b"id,text,extra\n1,hello,x\n2,\"quoted, with comma\",y\n3,ragged\n4,\"=cmd()\",z\n",
        );
        let spec = InputSpec {
            format: InputFormat::Csv,
            id_field: Some("id".into()),
            ..Default::default()
        };
        let v = collect(&mut *open_input(&p, &spec, &Selection::default()).unwrap());
        assert_eq!(v.len(), 4);
        assert_eq!(v[1].text.as_deref(), Ok("quoted, with comma"));
        assert!(v[2]
            .text
            .as_ref()
            .unwrap_err()
            .message
            .contains("2 fields, the header has 3"));
        assert_eq!(v[3].id, ItemId::Str("4".into()));
        let err = open_input(
            &p,
            &InputSpec {
                text_field: "body".into(),
                ..spec.clone()
            },
            &Selection::default(),
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.contains("no column \"body\"") && err.contains("id, text, extra"),
            "{err}"
        );
        let t = write("a.tsv", b"text\tid\nhello\tq\n");
        let v = collect(
            &mut *open_input(
                &t,
                &InputSpec {
                    format: InputFormat::Tsv,
                    ..spec
                },
                &Selection::default(),
            )
            .unwrap(),
        );
        assert_eq!(
            (v[0].id.to_string(), v[0].text.clone().unwrap()),
            ("q".into(), "hello".into())
        );
    }

    #[test]
    fn selection_range_only_skip_limit() {
        let p = write("s.txt", b"a\nb\nc\nd\ne\nf\n");
        let ids = |sel: Selection| -> Vec<String> {
            collect(&mut *open_input(&p, &InputSpec::default(), &sel).unwrap())
                .iter()
                .map(|i| i.id.to_string())
                .collect()
        };
        assert_eq!(
            ids(Selection {
                start: Some(1),
                end: Some(4),
                ..Default::default()
            }),
            ["1", "2", "3"]
        );
        assert_eq!(
            ids(Selection {
                only: Some(parse_ids("0,5").unwrap()),
                ..Default::default()
            }),
            ["0", "5"]
        );
        assert_eq!(
            ids(Selection {
                skip: Some(parse_ids("0,1").unwrap()),
                limit: Some(2),
                ..Default::default()
            }),
            ["2", "3"]
        );
    }

    #[test]
    fn json_arrays_and_count_lines() {
        let p = write("a.json", br#"[{"text": "x"}, {"text": "y"}, "plain"]"#);
        let v = collect(
            &mut *open_input(
                &p,
                &InputSpec {
                    format: InputFormat::Json,
                    ..Default::default()
                },
                &Selection::default(),
            )
            .unwrap(),
        );
        assert_eq!(
            v.iter()
                .map(|i| i.text.clone().unwrap())
                .collect::<Vec<_>>(),
            ["x", "y", "plain"]
        );
        let t = write("c.txt", b"a\n\n  \nb\nc");
        assert_eq!(count_lines(Path::new(&t)), Some(3));
    }
}
