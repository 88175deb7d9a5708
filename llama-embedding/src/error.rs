//! The library's errors: [`Error`] for what stops an operation, [`ItemError`] for what goes
//! wrong with one input item (recorded, counted, and the run goes on).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// What stopped an operation. Variants name the stage and carry the data a user needs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("model file {path} does not exist")]
    ModelNotFound { path: PathBuf },
    #[error(transparent)]
    InvalidModel(#[from] crate::gguf::GgufError),
    #[error(
        "{path} is a {architecture} model, which has no embedding pooling; pass --pooling mean|cls|last \
         to embed with it anyway, or use an embedding model"
    )]
    NotEmbeddingModel { path: PathBuf, architecture: String },
    /// A GGUF that would give wrong vectors or abort llama.cpp ([`crate::presets`]).
    #[error("{path} is refused: {reason}")]
    ModelRefused { path: PathBuf, reason: String },
    #[error("llama.cpp could not load {path}: {reason}")]
    ModelLoad { path: PathBuf, reason: String },
    /// No CPU kernel variant can be used, or the one asked for cannot.
    #[error("{0}")]
    Kernels(String),
    #[error("could not create a llama.cpp context ({reason})")]
    Context { reason: String },
    #[error("{0}")]
    Resolve(String),
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("llama.cpp failed to decode a batch of {sequences} texts / {tokens} tokens: {reason}")]
    Decode {
        sequences: usize,
        tokens: usize,
        reason: String,
    },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        /// In the message (not a `source`: chained printing would repeat it).
        error: std::io::Error,
    },
    #[error(transparent)]
    Import(#[from] crate::import::ImportError),
    #[error("stopped after {failed} failed item(s) (limit {limit}); last: {last}")]
    ErrorLimit {
        failed: u64,
        limit: u64,
        last: ItemError,
    },
    #[error(
        "memory limit reached: resident memory is {in_use_mb} MB, the limit is {limit_mb} MB \
         ({detail})"
    )]
    MemoryLimit {
        in_use_mb: u64,
        limit_mb: u64,
        detail: String,
    },
    #[error("an engine thread stopped unexpectedly: {0}")]
    Worker(String),
    #[error("cancelled")]
    Cancelled,
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            error: source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The kind of a per-item failure; stable strings for error files and scripts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ItemErrorKind {
    /// The line or field is not valid UTF-8.
    InvalidUtf8,
    /// Nothing to embed (empty after trimming the line end).
    Empty,
    /// More tokens than `max_tokens` and truncation is off.
    TooLong,
    /// The input record could not be parsed (JSON, CSV, missing field).
    Parse,
    /// The text contains a NUL byte, which llama.cpp's tokenizer cannot take.
    #[serde(rename = "nul_byte", alias = "nul")]
    Nul,
    /// The engine failed on this item's batch.
    Engine,
    /// A file of a directory input that is not text (a NUL byte, or not UTF-8): skipped.
    Binary,
}

impl ItemErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ItemErrorKind::InvalidUtf8 => "invalid_utf8",
            ItemErrorKind::Empty => "empty",
            ItemErrorKind::TooLong => "too_long",
            ItemErrorKind::Parse => "parse",
            ItemErrorKind::Nul => "nul_byte",
            ItemErrorKind::Engine => "engine",
            ItemErrorKind::Binary => "binary",
        }
    }
}

/// Why one item could not be embedded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct ItemError {
    pub kind: ItemErrorKind,
    pub message: String,
}

impl ItemError {
    pub fn new(kind: ItemErrorKind, message: impl Into<String>) -> Self {
        ItemError {
            kind,
            message: message.into(),
        }
    }
}
