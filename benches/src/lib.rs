//! Criterion benches for llama-embedding; see benches/benches/.
