//! llama-embedding: embed large text corpora locally with llama.cpp GGUF models, streaming,
//! in input order, with bounded memory.
//!
//! ```no_run
//! use std::sync::Arc;
//! use llama_embedding::{BatchConfig, BatchProcessor, EmbeddingModel, LoadOptions};
//!
//! let model = Arc::new(EmbeddingModel::load("model.gguf".as_ref(), &LoadOptions::default(), true)?);
//! let mut p = BatchProcessor::new(model, BatchConfig::default())?;
//! for outcome in p.process_texts(vec!["hello".into(), "world".into()])? {
//!     println!("{:?}", outcome.embedded().map(|r| &r.embedding[..4]));
//! }
//! # Ok::<(), llama_embedding::Error>(())
//! ```

pub mod batcher;
pub mod engine;
pub mod error;
#[doc(hidden)]
pub mod fixtures;
pub mod gguf;
pub mod import;
pub mod input;
pub mod item;
pub mod items;
pub mod job;
pub mod merge;
pub mod model;
pub mod npy;
pub mod parquet_sink;
pub mod processor;
pub mod reader;
pub mod resolve;
pub mod rundir;
pub mod sink;
pub mod stats;
pub mod store;
pub mod versions;

pub use error::{Error, ItemError, ItemErrorKind, Result};
pub use item::{EmbeddingResult, ItemFailure, ItemId, ItemOutcome, Position, SourceItem};
pub use model::{EmbedOptions, EmbeddingModel, LoadOptions, ModelFacts, Normalize, Pooling};
pub use processor::{BatchConfig, BatchProcessor, ErrorStrategy, Run};
pub use stats::{BatchStats, ProgressCallback, ProgressInfo, StatsCallback};
