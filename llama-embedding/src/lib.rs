//! llama-embedding: embed large text corpora locally with llama.cpp GGUF models, streaming,
//! in input order, with bounded memory.
//!
//! ```no_run
//! # #[cfg(feature = "engine")]
//! # fn main() -> Result<(), llama_embedding::Error> {
//! use std::sync::Arc;
//! use llama_embedding::{BatchConfig, BatchProcessor, EmbeddingModel, LoadOptions};
//!
//! let model = Arc::new(EmbeddingModel::load("model.gguf".as_ref(), &LoadOptions::default(), true)?);
//! let mut p = BatchProcessor::new(model, BatchConfig::default())?;
//! for outcome in p.process_texts(vec!["hello".into(), "world".into()])? {
//!     println!("{:?}", outcome.embedded().map(|r| &r.embedding[..4]));
//! }
//! # Ok(())
//! # }
//! # #[cfg(not(feature = "engine"))]
//! # fn main() {}
//! ```

pub mod chunk;
#[cfg(feature = "engine")]
pub mod embeddinggemma;
#[cfg(feature = "engine")]
pub mod engine;
pub mod error;
#[cfg(feature = "engine")]
pub mod export;
pub mod files;
#[cfg(feature = "engine")]
#[doc(hidden)]
pub mod fixtures;
#[doc(hidden)]
pub mod fuzzing;
pub mod gguf;
pub mod import;
pub mod input;
pub mod item;
pub mod items;
#[cfg(feature = "engine")]
pub mod job;
#[cfg(feature = "engine")]
pub mod kernels;
pub mod key;
#[cfg(feature = "engine")]
pub mod merge;
#[cfg(feature = "engine")]
pub mod model;
pub mod npy;
#[cfg(feature = "parquet")]
pub mod parquet_input;
#[cfg(feature = "engine")]
pub mod pipeline;
pub mod presets;
pub mod reader;
#[cfg(feature = "engine")]
pub mod resolve;
pub mod rundir;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "engine")]
pub mod settings;
pub mod sink;
pub mod skip;
pub mod stats;
#[cfg(feature = "engine")]
pub mod store;
#[cfg(feature = "engine")]
pub mod store_keys;
#[cfg(feature = "engine")]
pub mod sync;
pub mod tiny_bert;
#[doc(hidden)]
pub mod tiny_gemma;
#[doc(hidden)]
pub mod tiny_qwen3;
#[cfg(feature = "engine")]
pub mod vectors;
#[cfg(feature = "engine")]
pub mod versions;

#[cfg(feature = "engine")]
pub use engine::EngineMode;
pub use error::{Error, ItemError, ItemErrorKind, Result};
pub use item::{EmbeddingResult, ItemFailure, ItemId, ItemOutcome, Position, SourceItem};
#[cfg(feature = "engine")]
pub use model::{EmbedOptions, EmbeddingModel, LoadOptions, ModelFacts, Normalize, Pooling};
#[cfg(feature = "engine")]
pub use pipeline::{BatchConfig, BatchProcessor, ErrorStrategy, Run};
pub use stats::{BatchStats, ProgressCallback, ProgressInfo, StatsCallback};
