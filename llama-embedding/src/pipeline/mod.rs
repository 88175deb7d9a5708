//! The pipeline of a run, one stage per file, joined by bounded channels:
//!
//! ```text
//! read.rs ──items──▶ tokenize.rs ──batches──▶ embed.rs ══▶ Engine threads ──segments──▶ run.rs
//!  (ItemSource)      (Segment, batcher.rs)     (Dispatch)    (crate::engine)            (order.rs)
//! ```
//!
//! - `config.rs`: [`BatchConfig`], what a run asks for; `plan.rs`: the shape it gets;
//! - `processor.rs`: [`BatchProcessor`], which keeps the [`crate::engine::Engine`] between runs
//!   and starts the stages;
//! - `tokenize.rs`: items into [`Segment`](tokenize::Segment)s `{ item, part, tokens }` (one
//!   per item, or one per chunk with `--chunk-tokens`: `crate::chunk`), packed by the pure
//!   `batcher.rs`;
//! - `embed.rs`: batches to the engine, replies to outcomes;
//! - `order.rs`: the pure [`Reorder`](order::Reorder) by `(item, part)`; `document.rs`: a
//!   chunked item's document vector (`--doc-vector mean`);
//! - `run.rs`: [`Run`], the iterator of outcomes in input order, with stats, memory checks and
//!   progress; `flow.rs`: the messages and the watermark that bounds how far the reader runs
//!   ahead (two windows), so memory does not grow with the input.

pub mod batcher;
mod config;
mod document;
mod embed;
mod flow;
pub mod order;
mod plan;
mod processor;
mod read;
mod run;
mod tokenize;

pub use config::{default_workers, BatchConfig, ErrorStrategy};
pub use plan::{plan, Plan};
pub use processor::BatchProcessor;
pub use run::Run;
