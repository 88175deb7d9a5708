//! The engine: a long-lived [`Engine`] of context threads that embeds batches of token
//! sequences, whatever asks (a run's pipeline, `search`, `bench`, a server).
//!
//! - `mode.rs`: the [`EngineMode`]s and the numbers llama.cpp's limits impose on a batch;
//! - `context.rs`: [`EmbeddingContext`], one llama.cpp context on one thread;
//! - `backend.rs`: the [`Backend`] trait (tokenise, make a context), implemented by
//!   [`crate::EmbeddingModel`] and by the test-only [`FakeBackend`] (`fake.rs`);
//! - `pool.rs`: [`Engine`], the threads and their bounded request queue.

mod backend;
mod context;
mod fake;
mod mode;
mod pool;

pub use backend::{Backend, Context, Pools};
pub use context::{ContextShape, EmbeddingContext};
pub use fake::FakeBackend;
pub use mode::{
    aligned_len_to, context_tokens, valid_align, EngineMode, FLASH_TILE, LLAMA_MAX_SEQ, TOKEN_ALIGN,
};
pub use pool::{Engine, Reply};

pub use crate::vectors::{cosine, l2_normalize};
