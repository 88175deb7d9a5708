//! `serve-load URL CLIENTS TEXTS_PER_REQUEST REQUESTS FILE`: a bounded load against an OpenAI
//! `/v1/embeddings` endpoint (ours or llama.cpp's `llama-server`). CLIENTS threads send
//! REQUESTS requests in all, each of TEXTS_PER_REQUEST consecutive lines of FILE, one request
//! at a time per client, on a kept-alive connection. Prints one JSON line: requests/s, texts/s,
//! p50/p99 latency in ms, failures.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: serve-load URL CLIENTS TEXTS_PER_REQUEST REQUESTS FILE");
        std::process::exit(2);
    }
    let url = format!("{}/v1/embeddings", args[1].trim_end_matches('/'));
    let clients: usize = args[2].parse().expect("CLIENTS");
    let per: usize = args[3].parse().expect("TEXTS_PER_REQUEST");
    let total: usize = args[4].parse().expect("REQUESTS");
    let lines: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(&args[5])
            .expect("FILE")
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_string)
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (url, lines, next, failures) =
                (url.clone(), lines.clone(), next.clone(), failures.clone());
            std::thread::spawn(move || client(&url, &lines, per, total, &next, &failures))
        })
        .collect();
    let mut latencies: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("client thread"))
        .collect();
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: f64| {
        let i = ((latencies.len() as f64 * p).ceil() as usize).clamp(1, latencies.len()) - 1;
        latencies[i].as_secs_f64() * 1000.0
    };
    let out = serde_json::json!({
        "clients": clients,
        "texts_per_request": per,
        "requests": latencies.len(),
        "seconds": seconds,
        "requests_per_s": latencies.len() as f64 / seconds,
        "texts_per_s": (latencies.len() * per) as f64 / seconds,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "failures": failures.load(Ordering::Relaxed),
    });
    println!("{out}");
}

/// One client: requests until `total` are taken; the latency of each that succeeded.
fn client(
    url: &str,
    lines: &[String],
    per: usize,
    total: usize,
    next: &AtomicUsize,
    failures: &AtomicUsize,
) -> Vec<Duration> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(600))
        .build();
    let mut out = Vec::new();
    loop {
        let n = next.fetch_add(1, Ordering::Relaxed);
        if n >= total {
            return out;
        }
        let texts: Vec<&str> = (0..per)
            .map(|k| lines[(n * per + k) % lines.len()].as_str())
            .collect();
        let body = serde_json::json!({"input": texts, "model": "m"}).to_string();
        let t = Instant::now();
        let ok = agent
            .post(url)
            .set("Content-Type", "application/json")
            .send_string(&body)
            .ok()
            .and_then(|r| r.into_string().ok())
            .is_some_and(|b| b.contains("\"embedding\""));
        if ok {
            out.push(t.elapsed());
        } else {
            failures.fetch_add(1, Ordering::Relaxed);
        }
    }
}
