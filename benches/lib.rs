//! Criterion benches for llama-embedding: `cargo bench -p llama-embedding-benches` (see benches/*.rs).
