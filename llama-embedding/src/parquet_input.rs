//! Parquet inputs (`.parquet`, as the Hugging Face datasets export them): one item per row,
//! read one record batch at a time (only the columns asked for) so memory stays bounded. Each
//! row becomes a JSON object of its scalar columns (strings, integers, floats, booleans; other
//! types as null), which the caller's `to_item` makes an item (`input.rs`: by the same rules as
//! a JSONL record, `--text-field`, `--id-field`, `--template`, `--keep-fields`). A file that is not Parquet, or a column that is missing,
//! fails the run before it starts; a corrupt row group ends the input with an error naming the
//! file and the row reached (the items before it are kept).

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, BooleanArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array, Int8Array,
    LargeStringArray, RecordBatch, StringArray, StringViewArray, UInt16Array, UInt32Array,
    UInt64Array, UInt8Array,
};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::item::{Position, SourceItem};
use crate::reader::ItemSource;

/// Makes an item of a row: (the row as a JSON object, its 0-based number, its position).
pub type RowToItem = Box<dyn FnMut(&Value, u64, Position) -> SourceItem + Send>;

/// The rows of a Parquet file as items.
pub struct ParquetSource {
    path: String,
    batches: ParquetRecordBatchReader,
    batch: Option<RecordBatch>,
    row: usize,
    n: u64,
    to_item: RowToItem,
    error: Option<std::io::Error>,
}

impl ParquetSource {
    /// Reads the top-level `columns` (all when `None`).
    ///
    /// # Errors
    /// The file cannot be opened or is not Parquet, or a named column is missing.
    pub fn open(path: &str, columns: Option<Vec<String>>, to_item: RowToItem) -> Result<Self> {
        let bad = |e: parquet::errors::ParquetError| {
            Error::Config(format!("{path}: not a readable Parquet file: {e}"))
        };
        let file = File::open(path).map_err(|e| Error::io(Path::new(path), e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(bad)?;
        let schema = builder.schema().clone();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let wanted = columns;
        for w in wanted.iter().flatten() {
            if !names.contains(&w.as_str()) {
                return Err(Error::Config(format!(
                    "{path}: no column {w:?} (the columns are {})",
                    names.join(", ")
                )));
            }
        }
        let builder = match &wanted {
            Some(cols) => {
                let indices = names
                    .iter()
                    .enumerate()
                    .filter(|(_, n)| cols.iter().any(|c| c == *n))
                    .map(|(i, _)| i);
                let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
                builder.with_projection(mask)
            }
            None => builder,
        };
        let batches = builder.with_batch_size(256).build().map_err(bad)?;
        Ok(ParquetSource {
            path: path.to_string(),
            batches,
            batch: None,
            row: 0,
            n: 0,
            to_item,
            error: None,
        })
    }
}

/// Rows in the file, from its footer (for progress); `None` if it cannot be read.
pub fn count_rows(path: &Path) -> Option<u64> {
    let file = File::open(path).ok()?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).ok()?;
    u64::try_from(builder.metadata().file_metadata().num_rows()).ok()
}

impl ItemSource for ParquetSource {
    fn next_item(&mut self) -> Option<SourceItem> {
        loop {
            if let Some(b) = &self.batch {
                if self.row < b.num_rows() {
                    let record = row_json(b, self.row);
                    self.row += 1;
                    self.n += 1;
                    let position = Position {
                        line: self.n,
                        byte: 0,
                    };
                    return Some((self.to_item)(&record, self.n - 1, position));
                }
            }
            match self.batches.next()? {
                Ok(b) => {
                    self.batch = Some(b);
                    self.row = 0;
                }
                Err(e) => {
                    self.error = Some(std::io::Error::other(format!(
                        "{}: corrupt Parquet data after row {}: {e}",
                        self.path, self.n
                    )));
                    return None;
                }
            }
        }
    }

    fn take_error(&mut self) -> Option<std::io::Error> {
        self.error.take()
    }
}

/// One row as a JSON object of its scalar columns.
fn row_json(b: &RecordBatch, row: usize) -> Value {
    let mut m = Map::new();
    for (field, col) in b.schema().fields().iter().zip(b.columns()) {
        m.insert(field.name().clone(), cell(col, row));
    }
    Value::Object(m)
}

fn cell(col: &Arc<dyn Array>, row: usize) -> Value {
    if col.is_null(row) {
        return Value::Null;
    }
    let a = col.as_any();
    macro_rules! try_as {
        ($t:ty, $f:expr) => {
            if let Some(x) = a.downcast_ref::<$t>() {
                return $f(x.value(row));
            }
        };
    }
    try_as!(StringArray, |v: &str| Value::String(v.to_string()));
    try_as!(LargeStringArray, |v: &str| Value::String(v.to_string()));
    try_as!(StringViewArray, |v: &str| Value::String(v.to_string()));
    try_as!(Int64Array, |v: i64| Value::from(v));
    try_as!(Int32Array, |v: i32| Value::from(v));
    try_as!(Int16Array, |v: i16| Value::from(v));
    try_as!(Int8Array, |v: i8| Value::from(v));
    try_as!(UInt64Array, |v: u64| Value::from(v));
    try_as!(UInt32Array, |v: u32| Value::from(v));
    try_as!(UInt16Array, |v: u16| Value::from(v));
    try_as!(UInt8Array, |v: u8| Value::from(v));
    try_as!(Float64Array, |v: f64| Value::from(v));
    try_as!(Float32Array, |v: f32| Value::from(f64::from(v)));
    try_as!(BooleanArray, |v: bool| Value::Bool(v));
    Value::Null
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::ItemId;
    use arrow_schema::{DataType, Field, Schema};
    use parquet::arrow::ArrowWriter;

    #[test]
    fn rows_become_items_by_column_with_ids_and_kept_fields() {
        let dir = std::env::temp_dir().join(format!("pq-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("in.parquet");
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("title", DataType::Utf8, true),
            Field::new("text", DataType::LargeUtf8, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(vec![10, 11, 12])),
                Arc::new(StringArray::from(vec![Some("A"), None, Some("C")])),
                Arc::new(LargeStringArray::from(vec![
                    Some("alpha"),
                    Some("beta"),
                    None,
                ])),
            ],
        )
        .unwrap();
        let mut w = ArrowWriter::try_new(File::create(&path).unwrap(), schema, None).unwrap();
        w.write(&batch).unwrap();
        w.close().unwrap();
        let to_item: fn() -> RowToItem = || {
            Box::new(|row: &Value, n: u64, position: Position| SourceItem {
                id: ItemId::Str(format!("{n}:{}", row["id"])),
                text: row["text"].as_str().map(String::from).ok_or_else(|| {
                    crate::error::ItemError::new(crate::error::ItemErrorKind::Parse, "null")
                }),
                position: Some(position),
                extra: row.as_object().cloned(),
            })
        };
        let p = path.to_str().unwrap();
        let cols = Some(vec!["id".to_string(), "text".to_string()]);
        let mut src = ParquetSource::open(p, cols, to_item()).unwrap();
        let items: Vec<SourceItem> = std::iter::from_fn(|| src.next_item()).collect();
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].id.to_string(), "0:10");
        assert_eq!(items[1].text.as_deref(), Ok("beta"));
        assert_eq!(items[1].position.unwrap().line, 2);
        assert!(items[2].text.is_err(), "a null text is an item error");
        let only_asked = items[0].extra.as_ref().unwrap();
        assert!(
            !only_asked.contains_key("title"),
            "unasked columns are not read"
        );
        let e = ParquetSource::open(p, Some(vec!["body".into()]), to_item())
            .err()
            .unwrap();
        assert!(e.to_string().contains("no column \"body\""), "{e}");
        std::fs::write(dir.join("bad.parquet"), b"not parquet").unwrap();
        let bad = dir.join("bad.parquet");
        let e = ParquetSource::open(bad.to_str().unwrap(), None, to_item())
            .err()
            .unwrap();
        assert!(e.to_string().contains("not a readable Parquet file"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
