//! `llama-embed bench --models A,B,…`: the bench sweep for each model in turn (each into
//! OUT/NAME/), then one table per model: weight types, the best tokens/s, and the fidelity of
//! its vectors, so a user sees speed against fidelity per weight type on their CPU.

use std::sync::Arc;

use anyhow::{Context, Result};
use llama_embedding::engine::cosine;
use llama_embedding::import::ImportType;
use llama_embedding::{BatchConfig, BatchProcessor, EmbeddingModel};

use crate::args::BenchArgs;
use crate::bench::{bench_one, load_texts};
use crate::exit::EXIT_OK;

/// One model's line of the comparison.
struct Line {
    name: String,
    file_type: String,
    tokens_per_second: Option<f64>,
    min_cosine: Option<f64>,
}

/// `load` loads a model by its spec (the command's model flags applied).
pub fn bench_models(
    a: BenchArgs,
    base: BatchConfig,
    load: impl Fn(&str) -> Result<Arc<EmbeddingModel>>,
) -> Result<u8> {
    let (texts, _) = load_texts(&a)?;
    let reference = match &a.reference {
        Some(p) => Some(
            llama_embedding::npy::read(p).with_context(|| format!("reading {}", p.display()))?,
        ),
        None => None,
    };
    let mut lines = Vec::new();
    let mut first: Option<Vec<Vec<f32>>> = None;
    for spec in &a.models {
        let model = load(spec)?;
        let name = model
            .path()
            .file_stem()
            .map_or_else(|| spec.clone(), |s| s.to_string_lossy().into_owned());
        let mut one = a.clone();
        one.out = a.out.join(&name);
        let (code, best) = bench_one(&one, model.clone(), base.clone())?;
        let vectors = embed_all(&model, &base, &texts)?;
        let min_cosine = match (&reference, &first) {
            (Some(r), _) => Some(min_of(
                (0..vectors.len()).map(|i| cosine(&vectors[i], &r.row_f32(i))),
            )),
            (None, Some(f)) => Some(min_of(vectors.iter().zip(f).map(|(v, f)| cosine(v, f)))),
            (None, None) => None,
        };
        first.get_or_insert(vectors);
        lines.push(Line {
            name,
            file_type: file_type(&model),
            tokens_per_second: best,
            min_cosine,
        });
        if code != EXIT_OK {
            break; // interrupted: keep what finished
        }
    }
    print_lines(&lines, a.reference.is_some());
    Ok(EXIT_OK)
}

fn embed_all(
    model: &Arc<EmbeddingModel>,
    base: &BatchConfig,
    texts: &[String],
) -> Result<Vec<Vec<f32>>> {
    let mut p = BatchProcessor::new(model.clone(), base.clone())?;
    p.process_texts(texts.to_vec())?
        .into_iter()
        .map(|o| {
            o.into_embedded()
                .map(|r| r.embedding)
                .ok_or_else(|| anyhow::anyhow!("a text failed to embed"))
        })
        .collect()
}

fn min_of(it: impl Iterator<Item = f64>) -> f64 {
    it.fold(f64::INFINITY, f64::min)
}

/// The weight type of the model's matrices, from its GGUF `general.file_type`.
fn file_type(model: &EmbeddingModel) -> String {
    let ft = llama_embedding::gguf::GgufFile::read(model.path())
        .ok()
        .and_then(|g| g.get("general.file_type").and_then(|v| v.as_u64()));
    match ft {
        Some(n) => ImportType::from_file_type(n).map_or(format!("type {n}"), |t| t.to_string()),
        None => "?".into(),
    }
}

fn print_lines(lines: &[Line], against_reference: bool) {
    let what = if against_reference {
        "min cosine vs --reference"
    } else {
        "min cosine vs the first model"
    };
    println!(
        "\n{:<32} {:>6} {:>12}  {what}",
        "model", "type", "best tok/s"
    );
    for l in lines {
        let tps = l
            .tokens_per_second
            .map_or("-".into(), |t| format!("{t:.0}"));
        let cos = l.min_cosine.map_or("-".into(), |c| format!("{c:.7}"));
        println!("{:<32} {:>6} {tps:>12}  {cos}", l.name, l.file_type);
    }
}
