//! `hf:OWNER/REPO/FILE.gguf` through the hf-hub cache (a pre-filled cache directory stands in
//! for the hub, which cannot be reached here), and the offline failure's message.

mod common;

use llama_embedding::resolve;

#[test]
fn hub_specs_resolve_from_a_prefilled_cache_and_fail_with_the_alternatives() {
    let dir = common::temp_dir("hub");
    let cache = dir.join("hub");
    let snap = cache.join("models--owner--embedder/snapshots/0123456789abcdef");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(cache.join("models--owner--embedder/refs")).unwrap();
    std::fs::write(
        cache.join("models--owner--embedder/refs/main"),
        "0123456789abcdef",
    )
    .unwrap();
    let tiny = llama_embedding::fixtures::write_tiny_bert(&dir.join("tiny")).unwrap();
    std::fs::copy(&tiny, snap.join("model.gguf")).unwrap();
    std::env::set_var("HF_HUB_CACHE", &cache);
    std::env::set_var("HF_HUB_OFFLINE", "1");

    let r = resolve::resolve_model(Some("hf:owner/embedder/model.gguf"), false).unwrap();
    assert_eq!(r.path, snap.join("model.gguf"));
    let m = llama_embedding::EmbeddingModel::load(&r.path, &Default::default(), true).unwrap();
    assert_eq!(m.dimensions(), 32);

    let err = resolve::resolve_model(Some("hf:owner/embedder/other.gguf"), false)
        .unwrap_err()
        .to_string();
    for needle in [
        "not in the hf-hub cache",
        "HF_HUB_OFFLINE",
        "--model PATH.gguf",
        "llama-embed model obtain",
    ] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
    // Online but unreachable (a closed local port as the hub).
    std::env::remove_var("HF_HUB_OFFLINE");
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9");
    let err = resolve::resolve_model(Some("hf:owner/embedder/other.gguf"), false)
        .unwrap_err()
        .to_string();
    assert!(err.contains("could not be reached"), "{err}");
}
