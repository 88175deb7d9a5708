//! What `sync` asks of a store by content key (issue 19): each id's key, a vector (and its
//! token count) by key, and deleting ids. Both stores; the rows are those of one model.

use std::collections::HashMap;

use crate::error::{Error, Result};
use crate::store::{self, StoreSpec};

/// Each stored id's content key (`None` for rows written before keys existed).
///
/// # Errors
/// The store's errors.
pub fn id_keys(spec: &StoreSpec, model: &str) -> Result<HashMap<String, Option<String>>> {
    match spec {
        StoreSpec::Sqlite { path } => {
            let conn = store::sqlite_connect(path)?;
            let err = |e: rusqlite::Error| Error::Config(format!("{}: {e}", path.display()));
            let mut stmt = conn.prepare("SELECT id, key FROM items").map_err(err)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(err)?;
            rows.collect::<rusqlite::Result<_>>().map_err(err)
        }
        StoreSpec::Postgres { url, table } => {
            let mut client = store::pg_client(url, table)?;
            let q = format!(
                "SELECT id, key FROM {} WHERE model = $1",
                store::quote_ident(table)
            );
            let rows = client
                .query(q.as_str(), &[&model])
                .map_err(|e| Error::Config(format!("{url}: {e}")))?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        }
    }
}

/// A stored vector with content key `key`, and its token count; `None` when no row has it.
pub struct KeyLookup {
    inner: Lookup,
}

enum Lookup {
    Sqlite(rusqlite::Connection, std::path::PathBuf),
    Postgres(Box<postgres::Client>, String, String, String),
}

impl KeyLookup {
    /// # Errors
    /// The store's errors.
    pub fn open(spec: &StoreSpec, model: &str) -> Result<Self> {
        let inner = match spec {
            StoreSpec::Sqlite { path } => {
                Lookup::Sqlite(store::sqlite_connect(path)?, path.clone())
            }
            StoreSpec::Postgres { url, table } => Lookup::Postgres(
                Box::new(store::pg_client(url, table)?),
                url.clone(),
                store::quote_ident(table),
                model.to_string(),
            ),
        };
        Ok(KeyLookup { inner })
    }

    /// # Errors
    /// The store's errors.
    pub fn get(&mut self, key: &str) -> Result<Option<(Vec<f32>, usize)>> {
        match &mut self.inner {
            Lookup::Sqlite(conn, path) => {
                use rusqlite::OptionalExtension;
                let err = |e: rusqlite::Error| Error::Config(format!("{}: {e}", path.display()));
                let mut stmt = conn
                    .prepare_cached(
                        "SELECT i.n_tokens, v.embedding FROM items i
                         JOIN vec_items v ON v.rowid = i.rowid WHERE i.key = ?1 LIMIT 1",
                    )
                    .map_err(err)?;
                let row: Option<(i64, Vec<u8>)> = stmt
                    .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                    .optional()
                    .map_err(err)?;
                Ok(row.map(|(n, blob)| {
                    let v = store::vector_from_bytes(&blob);
                    (v, usize::try_from(n).unwrap_or(0))
                }))
            }
            Lookup::Postgres(client, url, table, model) => {
                let q = format!(
                    "SELECT n_tokens, embedding FROM {table} WHERE model = $1 AND key = $2 LIMIT 1"
                );
                let row = client
                    .query_opt(q.as_str(), &[&*model, &key])
                    .map_err(|e| Error::Config(format!("{url}: {e}")))?;
                Ok(row.map(|r| {
                    let v: pgvector::Vector = r.get(1);
                    (v.to_vec(), usize::try_from(r.get::<_, i32>(0)).unwrap_or(0))
                }))
            }
        }
    }
}

/// Deletes the rows of `ids` (and their vectors); returns how many were there.
///
/// # Errors
/// The store's errors.
pub fn delete_ids(spec: &StoreSpec, model: &str, ids: &[String]) -> Result<u64> {
    match spec {
        StoreSpec::Sqlite { path } => {
            let mut conn = store::sqlite_connect(path)?;
            let err = |e: rusqlite::Error| Error::Config(format!("{}: {e}", path.display()));
            let tx = conn.transaction().map_err(err)?;
            let mut n = 0;
            {
                let mut row = tx
                    .prepare("DELETE FROM items WHERE id = ?1 RETURNING rowid")
                    .map_err(err)?;
                let mut vec = tx
                    .prepare("DELETE FROM vec_items WHERE rowid = ?1")
                    .map_err(err)?;
                for id in ids {
                    let rowids: Vec<i64> = row
                        .query_map([id], |r| r.get(0))
                        .map_err(err)?
                        .collect::<rusqlite::Result<_>>()
                        .map_err(err)?;
                    for r in rowids {
                        vec.execute([r]).map_err(err)?;
                        n += 1;
                    }
                }
            }
            tx.commit().map_err(err)?;
            Ok(n)
        }
        StoreSpec::Postgres { url, table } => {
            let mut client = store::pg_client(url, table)?;
            let err = |e: postgres::Error| Error::Config(format!("{url}: {e}"));
            let q = format!(
                "DELETE FROM {} WHERE model = $1 AND id = ANY($2)",
                store::quote_ident(table)
            );
            let n = client.execute(q.as_str(), &[&model, &ids]).map_err(err)?;
            Ok(n)
        }
    }
}
