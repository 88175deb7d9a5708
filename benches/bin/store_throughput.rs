//! Store throughput on synthetic vectors (no model): N rows of D dimensions written through
//! the same sinks `llama-embed embed --store` uses, one checkpoint every 1,024 rows, then
//! top-10 searches. PostgreSQL runs on a throwaway server (as the tests do).
//!
//! `cargo run --release -p llama-embedding-benches --bin store-throughput -- [N] [D]`

use std::time::Instant;

use llama_embedding::fixtures::TempPostgres;
use llama_embedding::store::{self, StoreModel, StoreSpec};
use llama_embedding::{EmbeddingResult, ItemId};

fn rows(n: usize, dims: usize) -> Vec<EmbeddingResult> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|i| {
            let mut v: Vec<f32> = (0..dims)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
                })
                .collect();
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            v.iter_mut().for_each(|a| *a /= norm);
            EmbeddingResult {
                index: i as u64,
                id: ItemId::Num(i as u64),
                embedding: v,
                n_tokens: 16,
                truncated: false,
                n_chars: 64,
                extra: None,
                text: Some(format!("synthetic item {i}")),
                chunk: None,
                key: None,
            }
        })
        .collect()
}

fn measure(name: &str, spec: &StoreSpec, data: &[EmbeddingResult], dims: usize) {
    let model = StoreModel {
        model_sha256: "synthetic".into(),
        model_path: "synthetic.gguf".into(),
        dims,
        settings: serde_json::json!({}),
    };
    let t = Instant::now();
    let mut sink = store::open_store_sink(spec, &model, None).expect("open");
    for chunk in data.chunks(256) {
        sink.write_batch(chunk).expect("write");
        if chunk[0].index % 1024 == 768 {
            sink.flush().expect("flush");
        }
    }
    sink.flush().expect("flush");
    let load = t.elapsed().as_secs_f64();
    let t = Instant::now();
    sink.finish(&serde_json::Value::Null).expect("finish");
    let index = t.elapsed().as_secs_f64();
    drop(sink);
    let queries = 20;
    let t = Instant::now();
    let mut found = 0;
    for q in data.iter().step_by(data.len() / queries).take(queries) {
        let hits = store::search(spec, &model, &q.embedding, 10, false).expect("search");
        found += usize::from(hits[0].id == q.id.to_string());
    }
    let search_ms = t.elapsed().as_secs_f64() * 1000.0 / queries as f64;
    // Uniform random vectors are the hardest case for an approximate index; real embeddings
    // cluster. Recall here is a floor, not a forecast.
    println!(
        "{name:<10} {:>8} rows x {dims}: load {:>7.0} rows/s ({load:.2} s), index/finish {index:.2} s, \
         top-10 search {search_ms:.1} ms per query (connection included), self found first {found}/{queries}",
        data.len(),
        data.len() as f64 / load
    );
}

fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map_or(10_000, |a| a.parse().expect("N"));
    let dims: usize = args.next().map_or(384, |a| a.parse().expect("D"));
    let data = rows(n, dims);
    let dir = std::env::temp_dir().join(format!("store-throughput-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    measure(
        "sqlite",
        &StoreSpec::Sqlite {
            path: dir.join("s.db"),
        },
        &data,
        dims,
    );
    if let Some(pg) = TempPostgres::start("store-throughput") {
        std::env::set_var("PGPASSWORD", &pg.password);
        let spec = StoreSpec::parse(&format!("{}?table=bench", pg.url()), None).expect("spec");
        measure("postgres", &spec, &data, dims);
        let mut c = postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=llama password={} dbname=postgres",
                pg.port, pg.password
            ),
            postgres::NoTls,
        )
        .expect("connect");
        let t = Instant::now();
        let plan = c
            .query(
                "EXPLAIN ANALYZE SELECT id FROM bench ORDER BY embedding <=> (SELECT embedding FROM bench LIMIT 1) LIMIT 10",
                &[],
            )
            .expect("explain");
        println!(
            "postgres plan ({:.1} ms with planning):",
            t.elapsed().as_secs_f64() * 1000.0
        );
        for r in &plan {
            println!("  {}", r.get::<_, String>(0));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
