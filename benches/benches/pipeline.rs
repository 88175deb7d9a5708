//! Model-free benches (fast, for regressions): the batcher, the readers, the sinks.

use std::hint::black_box;
use std::io::Write;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use llama_embedding::input::{open_input, InputFormat, InputSpec, Selection};
use llama_embedding::item::{EmbeddingResult, ItemId};
use llama_embedding::pipeline::batcher::{pack, Batcher, Packable, TokenBudget};
use llama_embedding::sink::{open_sink, Dtype, OutputFormat, RowShape};

#[derive(Clone)]
struct It(u64, usize);
impl Packable for It {
    fn n_tokens(&self) -> usize {
        self.1
    }
    fn index(&self) -> u64 {
        self.0
    }
}

fn batcher(c: &mut Criterion) {
    let items: Vec<It> = (0..100_000u64)
        .map(|i| It(i, 8 + (i as usize * 37) % 120))
        .collect();
    let mut g = c.benchmark_group("batcher");
    g.throughput(Throughput::Elements(items.len() as u64));
    g.bench_function("windowed_sorted_100k", |b| {
        b.iter(|| {
            let mut bt = Batcher::new(
                TokenBudget {
                    tokens: 512,
                    sequences: 32,
                },
                256,
                true,
            );
            let mut n = 0;
            for it in items.iter().cloned() {
                n += bt.push(it).len();
            }
            n += bt.flush().len();
            black_box(n)
        })
    });
    g.bench_function("pack_in_order_100k", |b| {
        b.iter(|| {
            black_box(
                pack(
                    items.clone(),
                    TokenBudget {
                        tokens: 512,
                        sequences: 32,
                    },
                )
                .len(),
            )
        })
    });
    g.finish();
}

fn readers(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("bench-readers-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let n = 50_000u64;
    let txt = dir.join("in.txt");
    let jsonl = dir.join("in.jsonl");
    let csv = dir.join("in.csv");
    {
        let mut t = std::io::BufWriter::new(std::fs::File::create(&txt).unwrap());
        let mut j = std::io::BufWriter::new(std::fs::File::create(&jsonl).unwrap());
        let mut c = std::io::BufWriter::new(std::fs::File::create(&csv).unwrap());
        writeln!(c, "id,text").unwrap();
        for i in 0..n {
            let text =
                format!("Item {i}: the quick brown fox jumps over the lazy dog, again and again.");
            writeln!(t, "{text}").unwrap();
            writeln!(
                j,
                "{}",
                serde_json::json!({"id": format!("doc-{i}"), "meta": {"n": i}, "text": text})
            )
            .unwrap();
            writeln!(c, "doc-{i},\"{text}\"").unwrap();
        }
    }
    let mut g = c.benchmark_group("readers");
    g.throughput(Throughput::Elements(n));
    g.sample_size(20);
    for (name, path, format) in [
        ("text", &txt, InputFormat::Text),
        ("jsonl", &jsonl, InputFormat::Jsonl),
        ("csv", &csv, InputFormat::Csv),
    ] {
        let spec = InputSpec {
            format,
            id_field: (format != InputFormat::Text).then(|| "id".to_string()),
            ..InputSpec::default()
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut src =
                    open_input(path.to_str().unwrap(), &spec, &Selection::default()).unwrap();
                let mut k = 0;
                while let Some(it) = src.next_item() {
                    k += it.text.map_or(0, |t| t.len());
                }
                black_box(k)
            })
        });
    }
    g.finish();
}

fn sinks(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("bench-sinks-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let results: Vec<EmbeddingResult> = (0..2_000u64)
        .map(|i| EmbeddingResult {
            index: i,
            id: ItemId::Num(i),
            embedding: (0..384)
                .map(|d| ((i * 31 + d) % 1000) as f32 / 1000.0 - 0.5)
                .collect(),
            n_tokens: 20,
            truncated: false,
            n_chars: 100,
            extra: None,
            text: None,
            chunk: None,
            key: None,
        })
        .collect();
    let mut g = c.benchmark_group("sinks_2000x384");
    g.throughput(Throughput::Elements(results.len() as u64));
    g.sample_size(20);
    for format in [
        OutputFormat::Jsonl,
        OutputFormat::Csv,
        OutputFormat::Npy,
        OutputFormat::Json,
    ] {
        g.bench_function(format.extension(), |b| {
            b.iter(|| {
                let name = format!("out.{}", format.extension());
                let mut s = open_sink(
                    format,
                    &dir,
                    &name,
                    RowShape {
                        dims: 384,
                        dtype: Dtype::F32,
                        chunked: false,
                    },
                    &serde_json::json!({}),
                    None,
                )
                .unwrap();
                for chunk in results.chunks(256) {
                    s.write_batch(chunk).unwrap();
                }
                s.finish(&serde_json::json!({})).unwrap();
                black_box(s.flush().unwrap())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, batcher, readers, sinks);
criterion_main!(benches);
