//! Vector stores that runs stream into and `llama-embed search` queries:
//!
//! - `sqlite:PATH.db`: SQLite with the sqlite-vec extension (compiled in, nothing to install).
//!   `items` holds id, text, kept fields and the model; `vec_items` (a `vec0` table, cosine
//!   distance) holds the vectors under the same rowid. One transaction per written batch;
//!   ids are upserted, so a resumed or repeated run never duplicates a row.
//! - `postgres://USER@HOST:PORT/DB?table=NAME`: PostgreSQL with pgvector. Rows are binary
//!   COPYed into a session staging table and upserted into the target by (id, model) at each
//!   checkpoint, in one transaction; the HNSW (cosine) index is built when the run finishes,
//!   not before the load. The password comes from `PGPASSWORD` or the `.pgpass` file.
//!
//! Each store remembers the model (sha256, path) and the settings its vectors were made with,
//! so a search embeds the query the same way and a different model is refused.

use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::item::EmbeddingResult;
use crate::sink::{Sink, SinkState};

/// Where vectors go: parsed from `--store`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StoreSpec {
    Sqlite {
        path: PathBuf,
    },
    Postgres {
        /// The connection URL without the `table` parameter and without any password.
        url: String,
        table: String,
    },
}

/// The file name of the SQLite store when `--store` names no path: `RUN_DIR/store.db`.
pub const DEFAULT_SQLITE_NAME: &str = "store.db";

impl StoreSpec {
    /// Parses `sqlite:PATH`, `sqlite` (the default path in `run_dir`) or
    /// `postgres://…?table=NAME` (`postgresql://` too).
    ///
    /// # Errors
    /// [`Error::Config`] naming what is wrong.
    pub fn parse(s: &str, run_dir: Option<&Path>) -> Result<Self> {
        if s == "sqlite" || s == "sqlite:" {
            let dir = run_dir.ok_or_else(|| {
                Error::Config("`--store sqlite` needs a path here: sqlite:PATH.db".into())
            })?;
            return Ok(StoreSpec::Sqlite {
                path: dir.join(DEFAULT_SQLITE_NAME),
            });
        }
        if let Some(path) = s.strip_prefix("sqlite:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            return Ok(StoreSpec::Sqlite {
                path: PathBuf::from(path),
            });
        }
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            let (base, query) = s.split_once('?').unwrap_or((s, ""));
            let mut table = None;
            let mut rest = Vec::new();
            for kv in query.split('&').filter(|p| !p.is_empty()) {
                match kv.split_once('=') {
                    Some(("table", v)) => table = Some(v.to_string()),
                    _ => rest.push(kv),
                }
            }
            let table = table.ok_or_else(|| {
                Error::Config(format!(
                    "{}: name the table: postgres://USER@HOST:PORT/DB?table=NAME",
                    redact(s)
                ))
            })?;
            validate_table(&table)?;
            let url = if rest.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", rest.join("&"))
            };
            let url = strip_password(&url);
            return Ok(StoreSpec::Postgres { url, table });
        }
        Err(Error::Config(format!(
            "unknown store {:?}: use sqlite:PATH.db or postgres://USER@HOST:PORT/DB?table=NAME",
            redact(s)
        )))
    }

    /// The spec as a user writes it (never with a password).
    pub fn display(&self) -> String {
        match self {
            StoreSpec::Sqlite { path } => format!("sqlite:{}", path.display()),
            StoreSpec::Postgres { url, table } => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}table={table}")
            }
        }
    }
}

/// `postgres://u:secret@h/db` -> `postgres://u@h/db`.
fn strip_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.split_once('@') {
        Some(x) => x,
        None => return url.to_string(),
    };
    let user = auth.split_once(':').map_or(auth, |(u, _)| u);
    format!("{scheme}://{user}@{host}")
}

fn redact(s: &str) -> String {
    strip_password(s)
}

/// Table names: letters, digits and `_`, starting with a letter or `_`, at most 48 bytes
/// (the store adds suffixes for its side table and index within PostgreSQL's 63).
///
/// # Errors
/// [`Error::Config`] with the rule.
pub fn validate_table(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "table name {name:?} is not allowed: use letters, digits and _, starting with a letter or _, at most 48 characters"
        )))
    }
}

/// What a store records about the vectors in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreModel {
    pub model_sha256: String,
    pub model_path: PathBuf,
    pub dims: usize,
    /// The run's vector settings (pooling, normalisation, prefix, max tokens), as JSON.
    pub settings: Value,
}

/// The settings a store records: those that make a vector (not the batch plan), and the CPU
/// kernels (vectors differ in the last bits from one kernel variant to another).
pub fn store_settings(v: &crate::settings::VectorSettings) -> Value {
    let mut s = serde_json::json!({
        "embed": v.embed,
        "pooling": v.pooling,
        "max_tokens": v.max_tokens,
    });
    if let Some(k) = &v.cpu_kernels {
        s["cpu_kernels"] = Value::String(k.clone());
    }
    s
}

/// `settings` without the CPU kernels.
fn without_kernels(settings: &Value) -> Value {
    let mut v = settings.clone();
    if let Some(o) = v.as_object_mut() {
        o.remove("cpu_kernels");
    }
    v
}

/// Whether a store's recorded settings take vectors made with `now`. A store written before
/// the kernels were recorded takes vectors from any kernels (it cannot tell which it holds).
pub fn settings_compatible(stored: &Value, now: &Value) -> bool {
    stored == now || (stored.get("cpu_kernels").is_none() && *stored == without_kernels(now))
}

/// Whether `place`'s recorded settings `stored` take vectors made with `now`.
///
/// # Errors
/// [`Error::Kernels`] or [`Error::Config`] saying what differs.
pub fn check_settings(place: &str, stored: &Value, now: &Value) -> Result<()> {
    if settings_compatible(stored, now) {
        Ok(())
    } else {
        Err(settings_refusal(place, stored, now))
    }
}

/// Why a store refuses vectors made with `now` (its recorded settings are `stored`).
fn settings_refusal(place: &str, stored: &Value, now: &Value) -> Error {
    let name = |v: &Value| {
        v["cpu_kernels"]
            .as_str()
            .unwrap_or("unrecorded")
            .to_string()
    };
    let (was, is) = (name(stored), name(now));
    if was != is && without_kernels(stored) == without_kernels(now) {
        return Error::Kernels(format!(
            "{place} holds vectors made with the {was} CPU kernels and this run uses the {is} \
             kernels (vectors differ in their last bits between kernel variants); run with \
             LLAMA_EMBED_CPU_VARIANT={was} to add to it, or store this run elsewhere"
        ));
    }
    Error::Config(format!(
        "{place} holds vectors made with other settings ({}); store this run elsewhere",
        differences(stored, now).join(", ")
    ))
}

/// The settings that differ, as `name: THERE there, HERE here` (`embed.*` by its own names).
fn differences(stored: &Value, now: &Value) -> Vec<String> {
    let flat = |v: &Value| -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for (k, x) in v.as_object().into_iter().flatten() {
            match x.as_object() {
                Some(inner) => out.extend(inner.iter().map(|(k2, y)| (k2.clone(), y.clone()))),
                None => out.push((k.clone(), x.clone())),
            }
        }
        out
    };
    let (there, here) = (flat(stored), flat(now));
    let get = |list: &[(String, Value)], k: &str| {
        list.iter()
            .find(|(n, _)| n == k)
            .map_or(Value::Null, |(_, v)| v.clone())
    };
    let mut names: Vec<&String> = there.iter().chain(&here).map(|(k, _)| k).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|k| get(&there, k) != get(&here, k))
        .map(|k| format!("{k}: {} there, {} here", get(&there, k), get(&here, k)))
        .collect()
}

/// One search hit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Hit {
    pub rank: usize,
    pub id: String,
    /// Cosine distance (1 - cosine similarity).
    pub distance: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fields: Option<Value>,
}

fn store_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn vector_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A vector stored by [`vector_bytes`] (`export.rs`, `store_keys.rs` read them back).
pub(crate) fn vector_from_bytes(blob: &[u8]) -> Vec<f32> {
    blob.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// The row's kept fields, and for a chunk its `parent_id`, `chunk`, `n_chunks` and spans.
fn fields_value(r: &EmbeddingResult) -> Option<Value> {
    let Some(c) = &r.chunk else {
        return r.extra.clone().map(Value::Object);
    };
    let mut m = r.extra.clone().unwrap_or_default();
    if let Value::Object(chunk) = serde_json::to_value(c).expect("json") {
        m.extend(chunk);
    }
    Some(Value::Object(m))
}

fn fields_json(r: &EmbeddingResult) -> Option<String> {
    fields_value(r).map(|v| v.to_string())
}

/// For each row that completes a chunked item: the ids its item's rows may still have from
/// an earlier write with more chunks (`<parent>#n_chunks`, `#n_chunks+1`, …), to delete until
/// the first that is absent (chunk ids are contiguous).
fn stale_chunk_ids(r: &EmbeddingResult) -> Option<impl Iterator<Item = String> + '_> {
    let c = r.chunk.as_ref().filter(|c| c.chunk + 1 == c.n_chunks)?;
    Some((c.n_chunks..).map(move |k| format!("{}#{k}", c.parent_id)))
}

/// Opens a store for writing vectors of `model`, creating it when needed.
///
/// # Errors
/// Connection or schema errors, or a store that holds another model's vectors.
pub fn open_store_sink(
    spec: &StoreSpec,
    model: &StoreModel,
    state: Option<&SinkState>,
) -> Result<Box<dyn Sink>> {
    Ok(match spec {
        StoreSpec::Sqlite { path } => Box::new(SqliteStore::open_for_write(path, model, state)?),
        StoreSpec::Postgres { url, table } => {
            Box::new(PgStore::open_for_write(url, table, model, state)?)
        }
    })
}

/// Reads which model a store's vectors were made with. For PostgreSQL tables holding
/// several models, `want` (a sha256) picks one; without it the table must hold exactly one.
///
/// # Errors
/// A missing or empty store, or an ambiguous/mismatching model.
pub fn store_model(spec: &StoreSpec, want: Option<&str>) -> Result<StoreModel> {
    match spec {
        StoreSpec::Sqlite { path } => {
            let conn = SqliteStore::connect(path, false)?;
            let m = SqliteStore::read_model(&conn, path)?.ok_or_else(|| {
                Error::Config(format!(
                    "{}: not a llama-embed store (no model recorded)",
                    path.display()
                ))
            })?;
            if let Some(w) = want {
                if w != m.model_sha256 {
                    return Err(Error::Config(format!(
                        "{} holds vectors of the model with sha256 {}, not {w}: search it with that model",
                        path.display(),
                        m.model_sha256
                    )));
                }
            }
            Ok(m)
        }
        StoreSpec::Postgres { url, table } => PgStore::read_model(url, table, want),
    }
}

/// An existing SQLite store, for reading (`export.rs`).
///
/// # Errors
/// A missing file or SQLite errors.
pub(crate) fn sqlite_connect(path: &Path) -> Result<rusqlite::Connection> {
    SqliteStore::connect(path, false)
}

/// A PostgreSQL client for `table`'s store, for reading (`export.rs`).
///
/// # Errors
/// A table name that is not one, or the connection's errors.
pub(crate) fn pg_client(url: &str, table: &str) -> Result<postgres::Client> {
    validate_table(table)?;
    pg_connect(url)
}

/// Stores made before content keys (issue 19) get the `key` column (NULL for their rows,
/// which no key matches).
fn add_sqlite_key_column(conn: &rusqlite::Connection) -> rusqlite::Result<()> {
    let has: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('items') WHERE name = 'key')",
        [],
        |r| r.get(0),
    )?;
    if !has {
        conn.execute_batch("ALTER TABLE items ADD COLUMN key TEXT")?;
    }
    Ok(())
}

/// The `k` nearest stored items to `query` (a vector made with the store's model).
/// `exact` forces a full scan in PostgreSQL (the HNSW index is approximate); SQLite always
/// scans exactly.
///
/// # Errors
/// Connection or query errors, or a vector of the wrong dimension.
pub fn search(
    spec: &StoreSpec,
    model: &StoreModel,
    query: &[f32],
    k: usize,
    exact: bool,
) -> Result<Vec<Hit>> {
    if query.len() != model.dims {
        return Err(Error::Config(format!(
            "query vector has {} dimensions, the store {}",
            query.len(),
            model.dims
        )));
    }
    match spec {
        StoreSpec::Sqlite { path } => SqliteStore::search(path, query, k),
        StoreSpec::Postgres { url, table } => {
            PgStore::search(url, table, &model.model_sha256, query, k, exact)
        }
    }
}

// ---------------------------------------------------------------------------------------
// SQLite + sqlite-vec

fn register_sqlite_vec() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        type Init = unsafe extern "C" fn(
            *mut rusqlite::ffi::sqlite3,
            *mut *mut std::os::raw::c_char,
            *const rusqlite::ffi::sqlite3_api_routines,
        ) -> std::os::raw::c_int;
        // SAFETY: sqlite3_vec_init is sqlite-vec's extension entry point, which has the
        // signature SQLite's auto-extension mechanism calls; the crate declares it without
        // arguments, hence the transmute (the pattern sqlite-vec documents).
        unsafe {
            let init =
                std::mem::transmute::<*const (), Init>(sqlite_vec::sqlite3_vec_init as *const ());
            rusqlite::ffi::sqlite3_auto_extension(Some(init));
        }
    });
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> Error + '_ {
    move |e| Error::Config(format!("{}: {e}", path.display()))
}

/// The SQLite + sqlite-vec store.
pub struct SqliteStore {
    conn: rusqlite::Connection,
    path: PathBuf,
    model_sha256: String,
    rows: u64,
}

impl SqliteStore {
    fn connect(path: &Path, create: bool) -> Result<rusqlite::Connection> {
        use rusqlite::OpenFlags;
        register_sqlite_vec();
        if !create && !path.exists() {
            return Err(Error::Config(format!("{} does not exist", path.display())));
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if create {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let conn = rusqlite::Connection::open_with_flags(path, flags).map_err(sql_err(path))?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(sql_err(path))?;
        // WAL: readers (search) do not block the writer; FULL: a committed batch survives a
        // power loss, so a checkpoint never claims rows that are gone.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql_err(path))?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql_err(path))?;
        Ok(conn)
    }

    fn read_model(conn: &rusqlite::Connection, path: &Path) -> Result<Option<StoreModel>> {
        let exists: bool = conn
            .query_row(
                "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'llama_embed_store'",
                [],
                |r| r.get(0),
            )
            .map_err(sql_err(path))?;
        if !exists {
            return Ok(None);
        }
        let json: Option<String> = conn
            .query_row(
                "SELECT value FROM llama_embed_store WHERE key = 'model'",
                [],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(sql_err(path))?;
        json.map(|j| {
            serde_json::from_str(&j).map_err(|e| {
                Error::Config(format!("{}: damaged model record: {e}", path.display()))
            })
        })
        .transpose()
    }

    /// Opens (creating) the store for a run with `model`.
    ///
    /// # Errors
    /// SQLite errors, or a store made with another model or dimension.
    pub fn open_for_write(
        path: &Path,
        model: &StoreModel,
        state: Option<&SinkState>,
    ) -> Result<Self> {
        let conn = Self::connect(path, true)?;
        let err = sql_err(path);
        match Self::read_model(&conn, path)? {
            Some(m) if m.model_sha256 != model.model_sha256 || m.dims != model.dims => {
                return Err(Error::Config(format!(
                    "{} holds vectors of another model (sha256 {}, {} dimensions); \
                     store this run elsewhere",
                    path.display(),
                    m.model_sha256,
                    m.dims
                )));
            }
            Some(m) if !settings_compatible(&m.settings, &model.settings) => {
                return Err(settings_refusal(
                    &path.display().to_string(),
                    &m.settings,
                    &model.settings,
                ));
            }
            Some(_) => add_sqlite_key_column(&conn).map_err(&err)?,
            None => {
                conn.execute_batch(&format!(
                    "BEGIN;
                     CREATE TABLE llama_embed_store (key TEXT PRIMARY KEY, value TEXT NOT NULL);
                     CREATE TABLE items (
                         rowid INTEGER PRIMARY KEY,
                         id TEXT NOT NULL UNIQUE,
                         text TEXT,
                         fields TEXT,
                         n_tokens INTEGER NOT NULL,
                         model_sha256 TEXT NOT NULL,
                         key TEXT
                     );
                     CREATE VIRTUAL TABLE vec_items USING vec0(
                         embedding float[{}] distance_metric=cosine
                     );",
                    model.dims
                ))
                .map_err(&err)?;
                conn.execute(
                    "INSERT INTO llama_embed_store (key, value) VALUES ('model', ?1)",
                    [serde_json::to_string(model).expect("json")],
                )
                .map_err(&err)?;
                conn.execute_batch("COMMIT").map_err(&err)?;
            }
        }
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
            model_sha256: model.model_sha256.clone(),
            rows: state.map_or(0, |s| s.rows),
        })
    }

    fn write(&mut self, items: &[EmbeddingResult]) -> rusqlite::Result<()> {
        use rusqlite::OptionalExtension;
        let tx = self.conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO items (id, text, fields, n_tokens, model_sha256, key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (id) DO UPDATE SET text = excluded.text, fields = excluded.fields,
                     n_tokens = excluded.n_tokens, model_sha256 = excluded.model_sha256,
                     key = excluded.key
                 RETURNING rowid",
            )?;
            let mut delete = tx.prepare_cached("DELETE FROM vec_items WHERE rowid = ?1")?;
            let mut insert =
                tx.prepare_cached("INSERT INTO vec_items (rowid, embedding) VALUES (?1, ?2)")?;
            for r in items {
                let rowid: i64 = upsert.query_row(
                    rusqlite::params![
                        r.id.to_string(),
                        r.text,
                        fields_json(r),
                        r.n_tokens as i64,
                        self.model_sha256,
                        r.key
                    ],
                    |row| row.get(0),
                )?;
                delete.execute([rowid])?;
                insert.execute(rusqlite::params![rowid, vector_bytes(&r.embedding)])?;
            }
            let mut stale = tx.prepare_cached("DELETE FROM items WHERE id = ?1 RETURNING rowid")?;
            for ids in items.iter().filter_map(stale_chunk_ids) {
                for id in ids {
                    let gone: Option<i64> = stale.query_row([id], |row| row.get(0)).optional()?;
                    match gone {
                        Some(rowid) => delete.execute([rowid])?,
                        None => break,
                    };
                }
            }
        }
        tx.commit()
    }

    fn search(path: &Path, query: &[f32], k: usize) -> Result<Vec<Hit>> {
        let conn = Self::connect(path, false)?;
        let mut stmt = conn
            .prepare(
                "WITH knn AS (
                     SELECT rowid, distance FROM vec_items WHERE embedding MATCH ?1 AND k = ?2
                 )
                 SELECT items.id, knn.distance, items.text, items.fields
                 FROM knn JOIN items ON items.rowid = knn.rowid
                 ORDER BY knn.distance, items.id",
            )
            .map_err(sql_err(path))?;
        let rows = stmt
            .query_map(rusqlite::params![vector_bytes(query), k as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, f64>(1)?,
                    r.get::<_, Option<String>>(2)?,
                    r.get::<_, Option<String>>(3)?,
                ))
            })
            .map_err(sql_err(path))?;
        let mut hits = Vec::new();
        for (i, row) in rows.enumerate() {
            let (id, distance, text, fields) = row.map_err(sql_err(path))?;
            hits.push(Hit {
                rank: i + 1,
                id,
                distance,
                text,
                fields: fields.and_then(|f| serde_json::from_str(&f).ok()),
            });
        }
        Ok(hits)
    }

    /// Rows in the store.
    ///
    /// # Errors
    /// SQLite errors.
    pub fn count(path: &Path) -> Result<u64> {
        let conn = Self::connect(path, false)?;
        conn.query_row("SELECT count(*) FROM items", [], |r| r.get::<_, i64>(0))
            .map(|n| n as u64)
            .map_err(sql_err(path))
    }
}

impl Sink for SqliteStore {
    fn write_batch(&mut self, items: &[EmbeddingResult]) -> io::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.write(items)
            .map_err(|e| store_err(format!("{}: {e}", self.path.display())))?;
        self.rows += items.len() as u64;
        Ok(())
    }
    fn flush(&mut self) -> io::Result<SinkState> {
        // Every batch was committed with synchronous=FULL.
        Ok(SinkState {
            rows: self.rows,
            files: Vec::new(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL + pgvector

pub(crate) fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Finds the password for `config` in `PGPASSWORD` or the `.pgpass` file (`PGPASSFILE`, or
/// `~/.pgpass`), as libpq does.
fn pg_password(config: &postgres::Config) -> Option<Vec<u8>> {
    if let Ok(p) = std::env::var("PGPASSWORD") {
        return Some(p.into_bytes());
    }
    let file = std::env::var_os("PGPASSFILE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".pgpass")))?;
    let text = std::fs::read_to_string(file).ok()?;
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(h)) => h.clone(),
        Some(postgres::config::Host::Unix(_)) | None => "localhost".into(),
    };
    let port = config
        .get_ports()
        .first()
        .copied()
        .unwrap_or(5432)
        .to_string();
    let db = config.get_dbname().unwrap_or_default().to_string();
    let user = config.get_user().unwrap_or_default().to_string();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() != 5 {
            continue;
        }
        let m = |pat: &str, v: &str| pat == "*" || pat == v;
        if m(&fields[0], &host)
            && m(&fields[1], &port)
            && m(&fields[2], &db)
            && m(&fields[3], &user)
        {
            return Some(fields[4].clone().into_bytes());
        }
    }
    None
}

/// Splits a `.pgpass` line on unescaped `:` (`\:` and `\\` are escapes).
fn split_pgpass(line: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut().expect("field").push(n);
                }
            }
            ':' => out.push(String::new()),
            c => out.last_mut().expect("field").push(c),
        }
    }
    out
}

fn pg_connect(url: &str) -> Result<postgres::Client> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|e| Error::Config(format!("{url}: {e}")))?;
    if config.get_password().is_none() {
        if let Some(p) = pg_password(&config) {
            config.password(p);
        }
    }
    if config.get_user().is_none() {
        if let Ok(u) = std::env::var("USER") {
            config.user(&u);
        }
    }
    config.application_name("llama-embed");
    config
        .connect(postgres::NoTls)
        .map_err(|e| Error::Config(format!("cannot connect to {url}: {}", pg_reason(&e))))
}

fn pg_reason(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.hint() {
            Some(h) => format!("{} ({h})", db.message()),
            None => db.message().to_string(),
        },
        None => {
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s = format!("{s}: {inner}");
                src = inner.source();
            }
            s
        }
    }
}

fn pg_err(what: &str) -> impl Fn(postgres::Error) -> Error + '_ {
    move |e| Error::Config(format!("{what}: {}", pg_reason(&e)))
}

/// The PostgreSQL + pgvector store.
pub struct PgStore {
    client: postgres::Client,
    table: String,
    model_sha256: String,
    vector_type: postgres::types::Type,
    /// Rows COPYed into the staging table since the last upsert.
    staged: u64,
    rows: u64,
    /// The table was empty when the run began: the index is built at the end.
    index_at_finish: bool,
    /// Chunked items completed since the last upsert: (parent id, chunks), whose rows past
    /// the last chunk are deleted (an earlier write of the item had more).
    ended: Vec<(String, u32)>,
}

/// Serialises schema changes between processes writing the same table (shards).
fn lock_key(table: &str) -> i64 {
    let mut h: i64 = 0x6c6c_616d_6165_6d62;
    for b in table.bytes() {
        h = h.wrapping_mul(31).wrapping_add(i64::from(b));
    }
    h
}

impl PgStore {
    fn models_table(table: &str) -> String {
        format!("{table}_llama_embed_models")
    }

    fn ensure_extension(client: &mut postgres::Client, url: &str) -> Result<()> {
        let have: bool = client
            .query_one(
                "SELECT count(*) > 0 FROM pg_extension WHERE extname = 'vector'",
                &[],
            )
            .map_err(pg_err(url))?
            .get(0);
        if have {
            return Ok(());
        }
        client
            .batch_execute("CREATE EXTENSION IF NOT EXISTS vector")
            .map_err(|e| {
                Error::Config(format!(
                    "{url}: the pgvector extension is not enabled and could not be created ({}). \
                     Install pgvector on the server (scripts/postgres-setup does it on Debian) and \
                     run, as a user allowed to: CREATE EXTENSION vector;",
                    pg_reason(&e)
                ))
            })
    }

    fn vector_type(client: &mut postgres::Client, url: &str) -> Result<postgres::types::Type> {
        let row = client
            .query_one(
                "SELECT t.oid, n.nspname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
                 WHERE t.typname = 'vector' LIMIT 1",
                &[],
            )
            .map_err(pg_err(url))?;
        Ok(postgres::types::Type::new(
            "vector".into(),
            row.get(0),
            postgres::types::Kind::Simple,
            row.get(1),
        ))
    }

    /// Opens (creating) the table for a run with `model`.
    ///
    /// # Errors
    /// Connection, permission or schema errors, or a table of another dimension.
    pub fn open_for_write(
        url: &str,
        table: &str,
        model: &StoreModel,
        state: Option<&SinkState>,
    ) -> Result<Self> {
        validate_table(table)?;
        let mut client = pg_connect(url)?;
        let e = pg_err(url);
        client
            .execute("SELECT pg_advisory_lock($1)", &[&lock_key(table)])
            .map_err(&e)?;
        let setup = (|| -> Result<bool> {
            Self::ensure_extension(&mut client, url)?;
            let t = quote_ident(table);
            let mt = quote_ident(&Self::models_table(table));
            let exists: bool = client
                .query_one("SELECT to_regclass($1) IS NOT NULL", &[&t])
                .map_err(&e)?
                .get(0);
            if exists {
                let dims: Option<i32> = client
                    .query_opt(
                        "SELECT atttypmod FROM pg_attribute
                         WHERE attrelid = to_regclass($1) AND attname = 'embedding'",
                        &[&t],
                    )
                    .map_err(&e)?
                    .map(|r| r.get(0));
                if dims != Some(model.dims as i32) {
                    return Err(Error::Config(format!(
                        "{url}: table {table} is not a llama-embed table of {} dimensions \
                         (its embedding column: {dims:?}); choose another ?table=",
                        model.dims
                    )));
                }
                // Tables made before content keys (issue 19) get the column.
                client
                    .batch_execute(&format!(
                        "ALTER TABLE {t} ADD COLUMN IF NOT EXISTS key text"
                    ))
                    .map_err(&e)?;
            } else {
                client
                    .batch_execute(&format!(
                        "CREATE TABLE {t} (
                             id text NOT NULL,
                             model text NOT NULL,
                             embedding vector({}) NOT NULL,
                             text text,
                             fields jsonb,
                             n_tokens integer NOT NULL,
                             updated_at timestamptz NOT NULL DEFAULT now(),
                             key text,
                             PRIMARY KEY (id, model)
                         )",
                        model.dims
                    ))
                    .map_err(&e)?;
            }
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {mt} (
                         model text PRIMARY KEY,
                         model_path text NOT NULL,
                         dims integer NOT NULL,
                         settings jsonb NOT NULL
                     )"
                ))
                .map_err(&e)?;
            let row = client
                .query_opt(
                    &format!("SELECT settings::text FROM {mt} WHERE model = $1"),
                    &[&model.model_sha256],
                )
                .map_err(&e)?;
            match row {
                Some(r) => {
                    let stored: Value =
                        serde_json::from_str(r.get::<_, &str>(0)).unwrap_or(Value::Null);
                    if !settings_compatible(&stored, &model.settings) {
                        return Err(settings_refusal(
                            &format!("{url}: table {table}"),
                            &stored,
                            &model.settings,
                        ));
                    }
                }
                None => {
                    client
                        .execute(
                            &format!(
                                "INSERT INTO {mt} (model, model_path, dims, settings)
                                 VALUES ($1, $2, $3, $4::text::jsonb)"
                            ),
                            &[
                                &model.model_sha256,
                                &model.model_path.to_string_lossy().as_ref(),
                                &(model.dims as i32),
                                &model.settings.to_string(),
                            ],
                        )
                        .map_err(&e)?;
                }
            }
            let empty: bool = client
                .query_one(&format!("SELECT NOT EXISTS (SELECT 1 FROM {t})"), &[])
                .map_err(&e)?
                .get(0);
            Ok(empty)
        })();
        let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&lock_key(table)]);
        let empty = setup?;
        client
            .batch_execute(&format!(
                "CREATE TEMP TABLE llama_embed_staging (
                     seq bigserial,
                     id text NOT NULL,
                     embedding vector({}) NOT NULL,
                     text text,
                     fields jsonb,
                     n_tokens integer NOT NULL,
                     key text
                 )",
                model.dims
            ))
            .map_err(&e)?;
        let vector_type = Self::vector_type(&mut client, url)?;
        Ok(PgStore {
            client,
            table: table.to_string(),
            model_sha256: model.model_sha256.clone(),
            vector_type,
            staged: 0,
            rows: state.map_or(0, |s| s.rows),
            index_at_finish: empty,
            ended: Vec::new(),
        })
    }

    fn copy(&mut self, items: &[EmbeddingResult]) -> std::result::Result<(), postgres::Error> {
        use postgres::binary_copy::BinaryCopyInWriter;
        use postgres::types::Type;
        let sink = self.client.copy_in(
            "COPY llama_embed_staging (id, embedding, text, fields, n_tokens, key) FROM STDIN (FORMAT binary)",
        )?;
        let types = [
            Type::TEXT,
            self.vector_type.clone(),
            Type::TEXT,
            Type::JSONB,
            Type::INT4,
            Type::TEXT,
        ];
        let mut w = BinaryCopyInWriter::new(sink, &types);
        for r in items {
            let id = r.id.to_string();
            let v = pgvector::Vector::from(r.embedding.clone());
            let fields: Option<Value> = fields_value(r);
            let n = r.n_tokens as i32;
            w.write(&[&id, &v, &r.text, &fields, &n, &r.key])?;
        }
        w.finish()?;
        for r in items {
            if let Some(c) = r.chunk.as_ref().filter(|_| stale_chunk_ids(r).is_some()) {
                self.ended.push((c.parent_id.to_string(), c.n_chunks));
            }
        }
        Ok(())
    }

    /// Moves the staged rows into the table (last occurrence of an id wins), in one
    /// transaction.
    fn upsert(&mut self) -> std::result::Result<(), postgres::Error> {
        let t = quote_ident(&self.table);
        let mut tx = self.client.transaction()?;
        tx.execute(
            &format!(
                "INSERT INTO {t} (id, model, embedding, text, fields, n_tokens, key)
                 SELECT DISTINCT ON (id) id, $1, embedding, text, fields, n_tokens, key
                 FROM llama_embed_staging ORDER BY id, seq DESC
                 ON CONFLICT (id, model) DO UPDATE SET embedding = excluded.embedding,
                     text = excluded.text, fields = excluded.fields,
                     n_tokens = excluded.n_tokens, key = excluded.key, updated_at = now()"
            ),
            &[&self.model_sha256],
        )?;
        tx.batch_execute("TRUNCATE llama_embed_staging")?;
        let delete = format!("DELETE FROM {t} WHERE id = $1 AND model = $2");
        for (parent, n) in std::mem::take(&mut self.ended) {
            for k in n.. {
                let id = format!("{parent}#{k}");
                if tx.execute(&delete, &[&id, &self.model_sha256])? == 0 {
                    break;
                }
            }
        }
        tx.commit()
    }

    fn read_model(url: &str, table: &str, want: Option<&str>) -> Result<StoreModel> {
        validate_table(table)?;
        let mut client = pg_connect(url)?;
        let mt = quote_ident(&Self::models_table(table));
        let exists: bool = client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&mt])
            .map_err(pg_err(url))?
            .get(0);
        if !exists {
            return Err(Error::Config(format!(
                "{url}: table {table} is not a llama-embed store (no {} table)",
                Self::models_table(table)
            )));
        }
        let rows = client
            .query(
                &format!("SELECT model, model_path, dims, settings::text FROM {mt} ORDER BY model"),
                &[],
            )
            .map_err(pg_err(url))?;
        let models: Vec<StoreModel> = rows
            .iter()
            .map(|r| StoreModel {
                model_sha256: r.get(0),
                model_path: PathBuf::from(r.get::<_, String>(1)),
                dims: r.get::<_, i32>(2) as usize,
                settings: serde_json::from_str(r.get::<_, &str>(3)).unwrap_or(Value::Null),
            })
            .collect();
        let list = || {
            models
                .iter()
                .map(|m| format!("{} ({})", m.model_sha256, m.model_path.display()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match want {
            Some(w) => models
                .iter()
                .find(|m| m.model_sha256 == w)
                .cloned()
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{url}: table {table} has no vectors of the model with sha256 {w}; it holds: {}",
                        list()
                    ))
                }),
            None => match models.as_slice() {
                [m] => Ok(m.clone()),
                [] => Err(Error::Config(format!("{url}: table {table} is empty"))),
                _ => Err(Error::Config(format!(
                    "{url}: table {table} holds vectors of several models ({}); pick one with --model",
                    list()
                ))),
            },
        }
    }

    fn search(
        url: &str,
        table: &str,
        model: &str,
        query: &[f32],
        k: usize,
        exact: bool,
    ) -> Result<Vec<Hit>> {
        let mut client = pg_connect(url)?;
        let e = pg_err(url);
        let t = quote_ident(table);
        let mut tx = client.transaction().map_err(&e)?;
        if exact {
            tx.batch_execute("SET LOCAL enable_indexscan = off")
                .map_err(&e)?;
        } else {
            // The index is approximate: look wider than k (pgvector's default is 40).
            tx.batch_execute(&format!(
                "SET LOCAL hnsw.ef_search = {}",
                (4 * k).clamp(40, 1000)
            ))
            .map_err(&e)?;
        }
        let v = pgvector::Vector::from(query.to_vec());
        let rows = tx
            .query(
                &format!(
                    // The inner ORDER BY is the index's own order (a second key would
                    // turn the index off); ties are ordered by id outside.
                    "SELECT id, distance, text, fields FROM (
                         SELECT id, (embedding <=> $1)::float8 AS distance, text, fields::text
                         FROM {t} WHERE model = $2 ORDER BY embedding <=> $1 LIMIT $3
                     ) nearest ORDER BY distance, id"
                ),
                &[&v, &model, &(k as i64)],
            )
            .map_err(&e)?;
        Ok(rows
            .iter()
            .enumerate()
            .map(|(i, r)| Hit {
                rank: i + 1,
                id: r.get(0),
                distance: r.get(1),
                text: r.get(2),
                fields: r
                    .get::<_, Option<&str>>(3)
                    .and_then(|f| serde_json::from_str(f).ok()),
            })
            .collect())
    }

    /// Rows of `model` in the table.
    ///
    /// # Errors
    /// Connection or query errors.
    pub fn count(url: &str, table: &str, model: &str) -> Result<u64> {
        validate_table(table)?;
        let mut client = pg_connect(url)?;
        let n: i64 = client
            .query_one(
                &format!(
                    "SELECT count(*) FROM {} WHERE model = $1",
                    quote_ident(table)
                ),
                &[&model],
            )
            .map_err(pg_err(url))?
            .get(0);
        Ok(n as u64)
    }
}

impl Sink for PgStore {
    fn write_batch(&mut self, items: &[EmbeddingResult]) -> io::Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        self.copy(items)
            .map_err(|e| store_err(format!("postgres table {}: {}", self.table, pg_reason(&e))))?;
        self.staged += items.len() as u64;
        self.rows += items.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> io::Result<SinkState> {
        if self.staged > 0 {
            self.upsert().map_err(|e| {
                store_err(format!("postgres table {}: {}", self.table, pg_reason(&e)))
            })?;
            self.staged = 0;
        }
        Ok(SinkState {
            rows: self.rows,
            files: Vec::new(),
        })
    }

    fn finish(&mut self, _summary: &Value) -> io::Result<()> {
        self.flush()?;
        // Built after the load: inserting into an indexed table is far slower.
        if self.index_at_finish {
            let t = quote_ident(&self.table);
            let idx = quote_ident(&format!("{}_embedding_hnsw", self.table));
            self.client
                .execute("SELECT pg_advisory_lock($1)", &[&lock_key(&self.table)])
                .map_err(|e| store_err(pg_reason(&e)))?;
            // HNSW builds far faster when the graph fits in maintenance_work_mem (the 64 MB
            // default does not hold 100k x 384).
            let r = self.client.batch_execute(&format!(
                "SET maintenance_work_mem = '1GB';
                 CREATE INDEX IF NOT EXISTS {idx} ON {t} USING hnsw (embedding vector_cosine_ops);
                 RESET maintenance_work_mem"
            ));
            let _ = self
                .client
                .execute("SELECT pg_advisory_unlock($1)", &[&lock_key(&self.table)]);
            r.map_err(|e| {
                store_err(format!(
                    "postgres table {}: building the index: {}",
                    self.table,
                    pg_reason(&e)
                ))
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_take_their_own_kernels_and_old_stores_take_any() {
        let s = |k: Option<&str>, pooling: &str| {
            let mut v = serde_json::json!({"embed": {}, "pooling": pooling, "max_tokens": 256});
            if let Some(k) = k {
                v["cpu_kernels"] = Value::String(k.into());
            }
            v
        };
        assert!(settings_compatible(
            &s(Some("zen4"), "mean"),
            &s(Some("zen4"), "mean")
        ));
        assert!(
            settings_compatible(&s(None, "mean"), &s(Some("zen4"), "mean")),
            "0.1 store"
        );
        assert!(!settings_compatible(
            &s(Some("zen4"), "mean"),
            &s(Some("haswell"), "mean")
        ));
        assert!(!settings_compatible(
            &s(None, "mean"),
            &s(Some("zen4"), "cls")
        ));
        let kernels = settings_refusal("db", &s(Some("zen4"), "mean"), &s(Some("haswell"), "mean"));
        assert!(kernels
            .to_string()
            .contains("the zen4 CPU kernels and this run uses the haswell"));
        // Other settings differ too: the message is about the settings, not the kernels.
        let other = settings_refusal("db", &s(Some("zen4"), "mean"), &s(Some("haswell"), "cls"));
        assert!(other.to_string().contains("other settings"), "{other}");
    }

    #[test]
    fn specs_parse_and_never_keep_passwords() {
        assert_eq!(
            StoreSpec::parse("sqlite:/tmp/x.db", None).unwrap(),
            StoreSpec::Sqlite {
                path: "/tmp/x.db".into()
            }
        );
        assert_eq!(
            StoreSpec::parse("sqlite", Some(Path::new("run"))).unwrap(),
            StoreSpec::Sqlite {
                path: "run/store.db".into()
            }
        );
        let pg = StoreSpec::parse(
            "postgres://me:secret@127.0.0.1:5433/db?table=docs&sslmode=disable",
            None,
        )
        .unwrap();
        assert_eq!(
            pg,
            StoreSpec::Postgres {
                url: "postgres://me@127.0.0.1:5433/db?sslmode=disable".into(),
                table: "docs".into()
            }
        );
        assert!(!pg.display().contains("secret"));
        assert_eq!(
            pg.display(),
            "postgres://me@127.0.0.1:5433/db?sslmode=disable&table=docs"
        );
        for bad in ["docs; DROP TABLE x", "a\"b", "1abc", "", &"x".repeat(49)] {
            let url = format!("postgres://me@h/db?table={bad}");
            assert!(StoreSpec::parse(&url, None).is_err(), "{bad}");
        }
        let e = StoreSpec::parse("postgres://me:pw@h/db", None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("table=NAME") && !e.contains("pw"), "{e}");
        assert!(StoreSpec::parse("redis://x", None).is_err());
    }

    #[test]
    fn pgpass_lines_split_on_unescaped_colons() {
        assert_eq!(
            split_pgpass(r"localhost:5432:db:me:pa\:ss\\w"),
            ["localhost", "5432", "db", "me", r"pa:ss\w"]
        );
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("docs"), "\"docs\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
