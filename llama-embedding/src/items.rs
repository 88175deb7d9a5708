//! Per-item state of a run (`items.db`, SQLite, seed 002's completion tracking): for each item
//! its position in the run's stream (`seq`), id, state (`done`, `failed` with the reason,
//! `pending`), attempts and when it last changed.
//!
//! The checkpoint stays the one source of truth of what is final; the database follows it:
//! the rows of a checkpoint interval are committed (one transaction, `synchronous=FULL`)
//! after the outputs they describe are durable and before the checkpoint that covers them is
//! written. A kill between the two leaves rows the checkpoint does not cover: readers ignore
//! rows at or past the checkpoint's `items_done` ([`ItemCounts`] takes it as an argument) and
//! a resume turns them back into `pending` ([`ItemsDb::reconcile`]) before redoing them, so the
//! database is right whenever the run is killed. `attempts` counts every recorded outcome,
//! those of a killed interval included.

use std::path::Path;

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::item::ItemOutcome;

pub const ITEMS_DB: &str = "items.db";

/// The state of one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemState {
    Pending,
    Done,
    Failed,
}

impl ItemState {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemState::Pending => "pending",
            ItemState::Done => "done",
            ItemState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> ItemState {
        match s {
            "done" => ItemState::Done,
            "failed" => ItemState::Failed,
            _ => ItemState::Pending,
        }
    }
}

/// One item's row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ItemRow {
    /// Position in the run's stream of items (after selection): input order.
    pub seq: u64,
    pub id: String,
    pub state: ItemState,
    /// Why it failed, or why it is pending again (`runs reset`).
    pub error: Option<String>,
    pub error_type: Option<String>,
    pub attempts: u32,
    pub updated_at: String,
    /// Chunks the item was embedded as, in a chunked run (`--chunk-tokens`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_chunks: Option<u32>,
}

impl ItemRow {
    /// The row of an outcome (attempts are counted by the database).
    pub fn of(outcome: &ItemOutcome) -> ItemRow {
        let (state, error, error_type) = match outcome {
            ItemOutcome::Embedded(_) => (ItemState::Done, None, None),
            ItemOutcome::Failed(f) => (
                ItemState::Failed,
                Some(f.error.message.clone()),
                Some(f.error.kind.as_str().to_string()),
            ),
        };
        ItemRow {
            seq: outcome.index(),
            id: outcome.item_id().to_string(),
            state,
            error,
            error_type,
            attempts: 1,
            updated_at: String::new(),
            n_chunks: outcome
                .embedded()
                .and_then(|r| r.chunk.as_ref())
                .map(|c| c.n_chunks),
        }
    }
}

/// Counts of the rows a checkpoint covers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ItemCounts {
    pub done: u64,
    pub failed: u64,
    /// Covered items marked for redoing (`runs reset`).
    pub pending: u64,
}

/// SQLite errors are I/O errors of the database file (a full disk among them).
fn sql(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::io(path, std::io::Error::other(e.to_string()))
}

/// The writable database of a run.
pub struct ItemsDb {
    conn: Connection,
    path: std::path::PathBuf,
}

impl ItemsDb {
    /// Opens (creating) `DIR/items.db`.
    ///
    /// # Errors
    /// SQLite errors, with the path.
    pub fn open(dir: &Path) -> Result<ItemsDb> {
        let path = dir.join(ITEMS_DB);
        let conn = Connection::open(&path).map_err(sql(&path))?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=FULL;
             PRAGMA busy_timeout=10000;
             CREATE TABLE IF NOT EXISTS items (
                 seq INTEGER PRIMARY KEY,
                 id TEXT NOT NULL,
                 state TEXT NOT NULL CHECK (state IN ('pending', 'done', 'failed')),
                 error TEXT,
                 error_type TEXT,
                 attempts INTEGER NOT NULL DEFAULT 0,
                 updated_at TEXT NOT NULL,
                 n_chunks INTEGER
             );
             CREATE INDEX IF NOT EXISTS items_by_id ON items(id);",
        )
        .map_err(sql(&path))?;
        // Databases made before chunking have no n_chunks column: add it.
        if !has_n_chunks(&conn) {
            conn.execute_batch("ALTER TABLE items ADD COLUMN n_chunks INTEGER")
                .map_err(sql(&path))?;
        }
        Ok(ItemsDb { conn, path })
    }

    /// Records outcomes (one transaction); a row already there gets the new state and one
    /// more attempt.
    ///
    /// # Errors
    /// SQLite errors (a full disk among them).
    pub fn record(&mut self, rows: &[ItemRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let now = crate::rundir::now();
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(sql(&path))?;
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO items (seq, id, state, error, error_type, attempts, updated_at,
                         n_chunks)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(seq) DO UPDATE SET id = excluded.id, state = excluded.state,
                         error = excluded.error, error_type = excluded.error_type,
                         attempts = items.attempts + excluded.attempts,
                         updated_at = excluded.updated_at, n_chunks = excluded.n_chunks",
                )
                .map_err(sql(&path))?;
            for r in rows {
                st.execute(params![
                    r.seq as i64,
                    r.id,
                    r.state.as_str(),
                    r.error,
                    r.error_type,
                    i64::from(r.attempts),
                    if r.updated_at.is_empty() {
                        &now
                    } else {
                        &r.updated_at
                    },
                    r.n_chunks
                ])
                .map_err(sql(&path))?;
            }
        }
        tx.commit().map_err(sql(&path))
    }

    /// Makes the rows the checkpoint does not cover `pending` again (a resume redoes them).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn reconcile(&mut self, items_done: u64) -> Result<u64> {
        let n = self
            .conn
            .execute(
                "UPDATE items SET state = 'pending', error = NULL, error_type = NULL
                 WHERE seq >= ?1 AND state != 'pending'",
                params![items_done as i64],
            )
            .map_err(sql(&self.path))?;
        Ok(n as u64)
    }

    /// Marks covered items with these ids `pending` (to be redone by `runs rerun`). Returns
    /// the ids found.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn reset(&mut self, ids: &[String], items_done: u64) -> Result<Vec<String>> {
        let now = crate::rundir::now();
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(sql(&path))?;
        let mut found = Vec::new();
        {
            let mut st = tx
                .prepare_cached(
                    "UPDATE items SET state = 'pending', error = 'reset by the user',
                         error_type = 'reset', updated_at = ?3
                     WHERE id = ?1 AND seq < ?2",
                )
                .map_err(sql(&path))?;
            for id in ids {
                if st
                    .execute(params![id, items_done as i64, now])
                    .map_err(sql(&path))?
                    > 0
                {
                    found.push(id.clone());
                }
            }
        }
        tx.commit().map_err(sql(&path))?;
        Ok(found)
    }
}

fn open_read(dir: &Path) -> Result<Option<Connection>> {
    let path = dir.join(ITEMS_DB);
    if !path.is_file() {
        return Ok(None);
    }
    let conn = Connection::open_with_flags(
        &path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql(&path))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sql(&path))?;
    Ok(Some(conn))
}

/// Whether the table has the `n_chunks` column (databases made before chunking lack it).
fn has_n_chunks(conn: &Connection) -> bool {
    conn.prepare("SELECT n_chunks FROM items LIMIT 0").is_ok()
}

/// The columns [`row_of`] reads, `n_chunks` as NULL where the table lacks it.
fn row_columns(conn: &Connection) -> &'static str {
    if has_n_chunks(conn) {
        "seq, id, state, error, error_type, attempts, updated_at, n_chunks"
    } else {
        "seq, id, state, error, error_type, attempts, updated_at, NULL"
    }
}

/// An [`ItemRow`] from `SELECT` [`row_columns`].
fn row_of(r: &rusqlite::Row<'_>) -> rusqlite::Result<ItemRow> {
    Ok(ItemRow {
        seq: r.get::<_, i64>(0)? as u64,
        id: r.get(1)?,
        state: ItemState::parse(&r.get::<_, String>(2)?),
        error: r.get(3)?,
        error_type: r.get(4)?,
        attempts: r.get::<_, i64>(5)? as u32,
        updated_at: r.get(6)?,
        n_chunks: r.get::<_, Option<i64>>(7)?.map(|n| n as u32),
    })
}

/// Counts of the rows a checkpoint with `items_done` covers; `None` for runs without an
/// items database (made before it existed).
///
/// # Errors
/// SQLite errors.
pub fn counts(dir: &Path, items_done: u64) -> Result<Option<ItemCounts>> {
    let Some(conn) = open_read(dir)? else {
        return Ok(None);
    };
    let path = dir.join(ITEMS_DB);
    let mut st = conn
        .prepare("SELECT state, count(*) FROM items WHERE seq < ?1 GROUP BY state")
        .map_err(sql(&path))?;
    let mut c = ItemCounts::default();
    let rows = st
        .query_map(params![items_done as i64], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?))
        })
        .map_err(sql(&path))?;
    for row in rows {
        let (state, n) = row.map_err(sql(&path))?;
        match ItemState::parse(&state) {
            ItemState::Done => c.done = n as u64,
            ItemState::Failed => c.failed = n as u64,
            ItemState::Pending => c.pending = n as u64,
        }
    }
    Ok(Some(c))
}

/// The covered rows in `states` (all states when empty), in input order.
///
/// # Errors
/// SQLite errors.
pub fn rows(dir: &Path, items_done: u64, states: &[ItemState]) -> Result<Vec<ItemRow>> {
    let Some(conn) = open_read(dir)? else {
        return Ok(Vec::new());
    };
    let path = dir.join(ITEMS_DB);
    let query = format!(
        "SELECT {} FROM items WHERE seq < ?1 ORDER BY seq",
        row_columns(&conn)
    );
    let mut st = conn.prepare(&query).map_err(sql(&path))?;
    let it = st
        .query_map(params![items_done as i64], row_of)
        .map_err(sql(&path))?;
    let mut out = Vec::new();
    for row in it {
        let row = row.map_err(sql(&path))?;
        if states.is_empty() || states.contains(&row.state) {
            out.push(row);
        }
    }
    Ok(out)
}

/// One row by id (the first in input order).
///
/// # Errors
/// SQLite errors.
pub fn find(dir: &Path, id: &str) -> Result<Option<ItemRow>> {
    let Some(conn) = open_read(dir)? else {
        return Ok(None);
    };
    let path = dir.join(ITEMS_DB);
    let query = format!(
        "SELECT {} FROM items WHERE id = ?1 ORDER BY seq LIMIT 1",
        row_columns(&conn)
    );
    conn.query_row(&query, params![id], row_of)
        .optional()
        .map_err(sql(&path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(seq: u64, state: ItemState) -> ItemRow {
        ItemRow {
            seq,
            id: format!("id{seq}"),
            state,
            error: (state == ItemState::Failed).then(|| "empty".into()),
            error_type: None,
            attempts: 1,
            updated_at: String::new(),
            n_chunks: None,
        }
    }

    #[test]
    fn rows_past_the_checkpoint_are_ignored_then_redone() {
        let dir = std::env::temp_dir().join(format!("items-db-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut db = ItemsDb::open(&dir).unwrap();
        db.record(&(0..10).map(|i| row(i, ItemState::Done)).collect::<Vec<_>>())
            .unwrap();
        db.record(&[row(10, ItemState::Failed), row(11, ItemState::Done)])
            .unwrap();
        // The checkpoint covers 10 items: a kill came after the rows of 10 and 11.
        let c = counts(&dir, 10).unwrap().unwrap();
        assert_eq!(
            c,
            ItemCounts {
                done: 10,
                failed: 0,
                pending: 0
            }
        );
        assert_eq!(db.reconcile(10).unwrap(), 2);
        db.record(&[row(10, ItemState::Done), row(11, ItemState::Done)])
            .unwrap();
        let c = counts(&dir, 12).unwrap().unwrap();
        assert_eq!(
            c,
            ItemCounts {
                done: 12,
                failed: 0,
                pending: 0
            }
        );
        let r = find(&dir, "id10").unwrap().unwrap();
        assert_eq!((r.state, r.attempts), (ItemState::Done, 2));
        assert_eq!(
            db.reset(&["id3".into(), "nope".into()], 12).unwrap(),
            vec!["id3".to_string()]
        );
        let pending = rows(&dir, 12, &[ItemState::Pending]).unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].error_type.as_deref(), Some("reset"));
    }
}
