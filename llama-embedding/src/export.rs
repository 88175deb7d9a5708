//! `llama-embed export STORE -o FILE`: a store's rows (id, content key, vector, and the kept
//! text as a `text` field before the kept fields) in id order (bytewise, the same in SQLite and PostgreSQL) to any output format, so a
//! store can be checked, compared with another store byte for byte, copied or moved. Rows are
//! read and written in batches: memory does not grow with the store.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::item::{EmbeddingResult, ItemId};
use crate::sink::{open_sink, Dtype, OutputFormat, RowShape};
use crate::store::{self, StoreModel, StoreSpec};

const BATCH: usize = 1000;

/// One stored row, as the sinks take it (`id` a string, the chunk fields among `fields`).
fn row(
    index: u64,
    id: String,
    key: Option<String>,
    text: Option<String>,
    fields: Option<&str>,
    n_tokens: i64,
    embedding: Vec<f32>,
) -> EmbeddingResult {
    // The kept text is a field named `text` (before the kept fields), so an export can be
    // embedded again with the default --text-field.
    let mut extra = serde_json::Map::new();
    if let Some(t) = &text {
        extra.insert("text".into(), Value::String(t.clone()));
    }
    if let Some(Value::Object(m)) = fields.and_then(|f| serde_json::from_str::<Value>(f).ok()) {
        for (k, v) in m {
            extra.entry(k).or_insert(v);
        }
    }
    let extra = (!extra.is_empty()).then_some(extra);
    EmbeddingResult {
        index,
        id: ItemId::Str(id),
        n_chars: text.as_deref().map_or(0, |t| t.chars().count()),
        embedding,
        n_tokens: usize::try_from(n_tokens).unwrap_or(0),
        truncated: false,
        extra,
        text,
        chunk: None,
        key,
    }
}

/// Calls `each` with the store's rows in id order, [`BATCH`] at a time; returns the row count.
///
/// # Errors
/// The store's errors, or those of `each`.
pub fn rows(
    spec: &StoreSpec,
    model: &StoreModel,
    each: &mut dyn FnMut(&[EmbeddingResult]) -> std::io::Result<()>,
) -> Result<u64> {
    match spec {
        StoreSpec::Sqlite { path } => sqlite_rows(path, each),
        StoreSpec::Postgres { url, table } => pg_rows(url, table, &model.model_sha256, each),
    }
}

fn sqlite_rows(
    path: &Path,
    each: &mut dyn FnMut(&[EmbeddingResult]) -> std::io::Result<()>,
) -> Result<u64> {
    let conn = store::sqlite_connect(path)?;
    let err = |e: rusqlite::Error| Error::Config(format!("{}: {e}", path.display()));
    let mut stmt = conn
        .prepare(
            "SELECT i.id, i.key, i.text, i.fields, i.n_tokens, v.embedding
             FROM items i JOIN vec_items v ON v.rowid = i.rowid ORDER BY i.id",
        )
        .map_err(err)?;
    let mut q = stmt.query([]).map_err(err)?;
    let mut batch = Vec::with_capacity(BATCH);
    let mut n = 0u64;
    while let Some(r) = q.next().map_err(err)? {
        let blob: Vec<u8> = r.get(5).map_err(err)?;
        let fields: Option<String> = r.get(3).map_err(err)?;
        batch.push(row(
            n,
            r.get(0).map_err(err)?,
            r.get(1).map_err(err)?,
            r.get(2).map_err(err)?,
            fields.as_deref(),
            r.get(4).map_err(err)?,
            store::vector_from_bytes(&blob),
        ));
        n += 1;
        if batch.len() == BATCH {
            each(&batch).map_err(|e| Error::io(path, e))?;
            batch.clear();
        }
    }
    if !batch.is_empty() {
        each(&batch).map_err(|e| Error::io(path, e))?;
    }
    Ok(n)
}

fn pg_rows(
    url: &str,
    table: &str,
    model: &str,
    each: &mut dyn FnMut(&[EmbeddingResult]) -> std::io::Result<()>,
) -> Result<u64> {
    let mut client = store::pg_client(url, table)?;
    let err = |e: postgres::Error| Error::Config(format!("{url}: {e}"));
    let mut tx = client.transaction().map_err(err)?;
    let query = format!(
        "SELECT id, key, text, fields::text, n_tokens, embedding FROM {} WHERE model = $1
         ORDER BY id COLLATE \"C\"",
        store::quote_ident(table)
    );
    let portal = tx.bind(query.as_str(), &[&model]).map_err(err)?;
    let mut n = 0u64;
    loop {
        let got = tx.query_portal(&portal, BATCH as i32).map_err(err)?;
        if got.is_empty() {
            break;
        }
        let batch: Vec<EmbeddingResult> = got
            .iter()
            .enumerate()
            .map(|(k, r)| {
                let v: pgvector::Vector = r.get(5);
                let fields: Option<String> = r.get(3);
                row(
                    n + k as u64,
                    r.get(0),
                    r.get(1),
                    r.get(2),
                    fields.as_deref(),
                    i64::from(r.get::<_, i32>(4)),
                    v.to_vec(),
                )
            })
            .collect();
        n += batch.len() as u64;
        each(&batch).map_err(|e| Error::Config(format!("writing the export: {e}")))?;
    }
    tx.commit().map_err(err)?;
    Ok(n)
}

/// Writes the store's rows to `out` in `format` (default: from its extension); returns the
/// row count.
///
/// # Errors
/// A store that cannot be read, an unknown format, write errors.
pub fn export(
    spec: &StoreSpec,
    out: &Path,
    format: Option<OutputFormat>,
    dtype: Dtype,
) -> Result<u64> {
    let model = store::store_model(spec, None)?;
    let format = format
        .or_else(|| OutputFormat::from_path(out))
        .ok_or_else(|| {
            Error::Config(format!(
                "{}: give --format (jsonl, json, csv, npy or parquet) or one of those extensions",
                out.display()
            ))
        })?;
    let dir = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let name = out
        .file_name()
        .ok_or_else(|| Error::Config(format!("{}: not a file name", out.display())))?
        .to_string_lossy()
        .into_owned();
    let shape = RowShape {
        dims: model.dims,
        dtype,
        chunked: false,
    };
    let about = json!({"store": spec.display(), "model_sha256": model.model_sha256});
    let mut sink =
        open_sink(format, &dir, &name, shape, &about, None).map_err(|e| Error::io(out, e))?;
    let n = rows(spec, &model, &mut |batch| sink.write_batch(batch))?;
    let io = |e| Error::io(out, e);
    sink.flush().map_err(io)?;
    sink.finish(&json!({"rows": n})).map_err(io)?;
    sink.cleanup().map_err(io)?;
    Ok(n)
}
