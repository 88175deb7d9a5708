#![no_main]
// Body: llama_embedding::fuzzing::csv_reader (shared with the corpus replay in the test suite).
libfuzzer_sys::fuzz_target!(|data: &[u8]| llama_embedding::fuzzing::csv_reader(data));
