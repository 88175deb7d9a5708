//! `llama-embed serve` on 127.0.0.1 with a real HTTP client (ureq) and the real model: the
//! vectors it returns are the bits `embed` writes, whatever the concurrency; its refusals have
//! the APIs' own shapes and are counted in /metrics; a client that goes away is dropped; load
//! and SIGTERM.

mod util;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

/// A running `llama-embed serve`, killed when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let mut child = util::bin()
            .args(["serve", "--port", "0"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("serve exited before listening")
                .unwrap();
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().unwrap().to_string();
            }
        };
        // Keep draining stderr so the server never blocks on it.
        std::thread::spawn(move || for _ in lines {});
        Server { child, url }
    }

    fn addr(&self) -> String {
        self.url.trim_start_matches("http://").to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(300))
        .build()
}

/// POSTs `body`; the status, the Retry-After header and the JSON answer.
fn post(agent: &ureq::Agent, url: &str, body: &str) -> (u16, Option<String>, Value) {
    let answer = agent
        .post(url)
        .set("Content-Type", "application/json")
        .send_string(body);
    let r = match answer {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("POST {url}: {e}"),
    };
    let status = r.status();
    let retry = r.header("Retry-After").map(str::to_string);
    let text = r.into_string().unwrap();
    (
        status,
        retry,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn get(url: &str) -> String {
    agent().get(url).call().unwrap().into_string().unwrap()
}

/// The value of one metric line (`name{labels} value`), 0 when absent.
fn metric(server: &Server, line_start: &str) -> f64 {
    get(&format!("{}/metrics", server.url))
        .lines()
        .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
        .map_or(0.0, |l| l.rsplit(' ').next().unwrap().parse().unwrap())
}

/// The sum of a metric over all its labels.
fn metric_sum(server: &Server, name: &str) -> f64 {
    get(&format!("{}/metrics", server.url))
        .lines()
        .filter(|l| {
            l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{' | b' '))
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "waited too long for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The 2000 docstrings and the vectors `embed` wrote for them with the default settings (npy:
/// the f32 bits), made once per test binary.
struct Reference {
    model: PathBuf,
    lines: Vec<String>,
    rows: Vec<Vec<f32>>,
}

fn reference() -> Option<&'static Reference> {
    static R: OnceLock<Option<Reference>> = OnceLock::new();
    R.get_or_init(|| {
        let model = util::minilm("serve")?;
        let src = util::shared_dir().join("reference/docstrings-2000.txt");
        let dir = util::temp("serve-reference");
        let out = dir.join("out.npy");
        let o = util::run(&mut util::embed_args(&model, &src, &out, &dir.join("run")));
        assert!(o.status.success(), "{}", util::stderr(&o));
        let npy = llama_embedding::npy::read(&out).unwrap();
        let lines: Vec<String> = std::fs::read_to_string(&src)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        assert_eq!((npy.rows, lines.len()), (2000, 2000));
        let rows = (0..npy.rows).map(|i| npy.row_f32(i)).collect();
        Some(Reference { model, lines, rows })
    })
    .as_ref()
}

fn model_arg(r: &Reference) -> String {
    r.model.to_string_lossy().into_owned()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The vectors of an OpenAI answer, float or base64.
fn openai_vectors(answer: &Value) -> Vec<Vec<f32>> {
    answer["data"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, d)| {
            assert_eq!(d["index"], i);
            match &d["embedding"] {
                Value::String(b) => base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .unwrap()
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect(),
                v => floats(v),
            }
        })
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Sends lines `range` in one request, alternating the APIs and encodings by request number,
/// and checks every vector against the reference bits; returns the texts checked.
fn check_request(
    agent: &ureq::Agent,
    url: &str,
    r: &Reference,
    n: usize,
    lines: std::ops::Range<usize>,
) -> usize {
    let texts = &r.lines[lines.clone()];
    let vectors = match n % 3 {
        0 | 1 => {
            let format = if n.is_multiple_of(3) {
                "float"
            } else {
                "base64"
            };
            let body = json!({"input": texts, "model": "m", "encoding_format": format});
            let (status, _, answer) =
                post(agent, &format!("{url}/v1/embeddings"), &body.to_string());
            assert_eq!(status, 200, "{answer}");
            assert_eq!(answer["model"], "m");
            assert!(answer["usage"]["prompt_tokens"].as_u64().unwrap() >= 2 * texts.len() as u64);
            openai_vectors(&answer)
        }
        _ => {
            let body = json!({"inputs": texts});
            let (status, _, answer) = post(agent, &format!("{url}/embed"), &body.to_string());
            assert_eq!(status, 200, "{answer}");
            answer.as_array().unwrap().iter().map(floats).collect()
        }
    };
    assert_eq!(vectors.len(), texts.len());
    for (i, v) in lines.zip(&vectors) {
        assert_eq!(bits(v), bits(&r.rows[i]), "docstring {i} (request {n})");
    }
    vectors.len()
}

/// `clients` threads take requests of `per_request` lines from a shared counter until all 2000
/// lines are sent; returns the texts checked.
fn drive(url: &str, r: &'static Reference, clients: usize, per_request: usize) -> usize {
    let next = Arc::new(AtomicUsize::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (next, url) = (next.clone(), url.to_string());
            std::thread::spawn(move || {
                let agent = agent();
                let mut checked = 0;
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    let start = n * per_request;
                    if start >= r.lines.len() {
                        return checked;
                    }
                    let end = (start + per_request).min(r.lines.len());
                    checked += check_request(&agent, &url, r, n, start..end);
                }
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

#[test]
fn served_vectors_are_the_bits_embed_wrote_at_1_7_and_64_clients() {
    let Some(r) = reference() else { return };
    let server = Server::start(&["-m", &model_arg(r)]);
    for (clients, per_request) in [(1, 32), (7, 5), (64, 1)] {
        let before = metric(&server, "te_batch_next_size_count");
        assert_eq!(
            drive(&server.url, r, clients, per_request),
            2000,
            "{clients} clients"
        );
        let decodes = metric(&server, "te_batch_next_size_count") - before;
        eprintln!("{clients} clients x {per_request} texts: {decodes} decodes for 2000 texts");
        // One text per request: texts of different requests shared decodes.
        assert!(clients < 64 || decodes < 2000.0, "{decodes} decodes");
    }
    assert_eq!(metric_sum(&server, "te_request_failure_total"), 0.0);
}

#[test]
fn bounded_load_from_32_clients_fails_nothing_below_the_queue_limit() {
    let Some(r) = reference() else { return };
    // 32 clients x at most 16 texts never exceed the queue of 512.
    let server = Server::start(&["-m", &model_arg(r), "--max-queue", "512"]);
    let url = server.url.clone();
    let threads: Vec<_> = (0..32)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent = agent();
                let mut checked = 0;
                for k in 0..12 {
                    let n = c * 12 + k;
                    let size = 1 + (n * 7919) % 16;
                    let start = (n * 104_729) % (r.lines.len() - size);
                    checked += check_request(&agent, &url, r, n, start..start + size);
                }
                checked
            })
        })
        .collect();
    let checked: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    let want: usize = (0..32 * 12).map(|n| 1 + (n * 7919) % 16).sum();
    assert_eq!(checked, want);
    assert_eq!(metric_sum(&server, "te_request_failure_total"), 0.0);
    assert_eq!(
        metric(&server, r#"te_request_success_total{route="/embed"}"#),
        128.0
    );
}

/// Texts of about 300 tokens: a request of 64 of them keeps the engine busy for seconds.
fn long_texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            format!(
                "request text {i}: {}",
                "several words of filler text ".repeat(60)
            )
        })
        .collect()
}

#[test]
fn refusals_have_each_apis_shape_and_are_counted() {
    let Some(r) = reference() else { return };
    // One engine thread of one CPU thread: 64 long texts keep it busy for several seconds,
    // wide enough a window for the full-queue checks on a loaded machine.
    let server = Server::start(&[
        "-m",
        &model_arg(r),
        "--workers",
        "1",
        "--threads",
        "1",
        "--max-inputs",
        "64",
        "--max-queue",
        "64",
        "--max-body-bytes",
        "300000",
    ]);
    let (a, url) = (agent(), server.url.clone());
    let openai = format!("{url}/v1/embeddings");
    let tei = format!("{url}/embed");

    let huge = json!({"input": ["x".repeat(400_000)]}).to_string();
    let (s, _, e) = post(&a, &openai, &huge);
    assert_eq!(s, 413);
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("300000 bytes"),
        "{e}"
    );
    let (s, _, e) = post(&a, &tei, &huge.replace("\"input\"", "\"inputs\""));
    assert_eq!(
        (s, e["error_type"].as_str()),
        (413, Some("Validation")),
        "{e}"
    );

    let too_long = json!({"inputs": ["short", "word ".repeat(600)], "truncate": false});
    let (s, _, e) = post(&a, &tei, &too_long.to_string());
    assert_eq!(s, 422, "{e}");
    assert!(e["error"].as_str().unwrap().starts_with("input 1: "), "{e}");
    let (s, _, e) = post(&a, &tei, &json!({"inputs": vec!["a"; 65]}).to_string());
    assert_eq!(
        (s, e["error_type"].as_str()),
        (422, Some("Validation")),
        "{e}"
    );
    let (s, _, e) = post(
        &a,
        &openai,
        &json!({"input": "a", "dimensions": 128}).to_string(),
    );
    assert_eq!(
        (s, e["error"]["param"].as_str()),
        (400, Some("dimensions")),
        "{e}"
    );
    let (s, _, e) = post(
        &a,
        &openai,
        &json!({"input": "a", "encoding_format": "int8"}).to_string(),
    );
    assert_eq!(s, 400, "{e}");
    let (s, _, e) = post(&a, &openai, "{not json");
    assert_eq!(
        (s, e["error"]["type"].as_str()),
        (400, Some("invalid_request_error")),
        "{e}"
    );
    let (s, _, e) = post(
        &a,
        &openai,
        &json!({"input": "a", "dimensions": 384}).to_string(),
    );
    assert_eq!(s, 200, "{e}");
    let (s, _, e) = post(&a, &format!("{url}/nowhere"), "{}");
    assert_eq!(
        (s, e["error_type"].as_str()),
        (404, Some("NotFound")),
        "{e}"
    );

    // A full queue: 64 long texts are waiting or running, and 64 more cannot all be queued
    // until every one of them is done (the queue frees a text as its decode ends): refused
    // with Retry-After.
    let more = vec!["one more"; 64];
    let busy = {
        let tei = tei.clone();
        std::thread::spawn(move || {
            post(
                &agent(),
                &tei,
                &json!({"inputs": long_texts(64)}).to_string(),
            )
        })
    };
    wait_for("the queue to fill", || {
        serde_json::from_str::<Value>(&get(&format!("{url}/health"))).unwrap()["queue"]
            .as_u64()
            .unwrap()
            > 0
    });
    let (s, retry, e) = post(&a, &tei, &json!({"inputs": more}).to_string());
    assert_eq!(
        (s, retry.as_deref(), e["error_type"].as_str()),
        (429, Some("1"), Some("Overloaded")),
        "{e}"
    );
    let (s, _, e) = post(&a, &openai, &json!({"input": more}).to_string());
    assert_eq!(
        (s, e["error"]["type"].as_str()),
        (429, Some("rate_limit_error")),
        "{e}"
    );
    let (s, _, done) = busy.join().unwrap();
    assert_eq!((s, done.as_array().map(Vec::len)), (200, Some(64)));
    let (s, _, _) = post(&a, &tei, &json!({"inputs": "one more"}).to_string());
    assert_eq!(s, 200);

    // A client that sends 64 long texts and goes away: they are dropped, the server stays up.
    let before = metric(&server, "te_batch_next_size_sum");
    let body = json!({"inputs": long_texts(64)}).to_string();
    let mut sock = TcpStream::connect(server.addr()).unwrap();
    write!(
        sock,
        "POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    wait_for("the queue to fill", || {
        metric(&server, "te_queue_size") > 0.0
    });
    drop(sock);
    wait_for("the dropped texts", || {
        metric(&server, "te_request_cancelled_texts_total") > 0.0
    });
    assert_eq!(metric(&server, "te_request_cancelled_total"), 1.0);
    wait_for("an empty queue", || metric(&server, "te_queue_size") == 0.0);
    let decoded = metric(&server, "te_batch_next_size_sum") - before;
    assert!(decoded < 64.0, "{decoded} of the 64 texts decoded");
    assert!(check_request(&a, &url, r, 0, 0..3) == 3);

    let m = |route: &str, err: &str| {
        metric(
            &server,
            &format!(r#"te_request_failure_total{{route="{route}",err="{err}"}}"#),
        )
    };
    assert_eq!(m("/v1/embeddings", "payload"), 1.0);
    assert_eq!(m("/embed", "payload"), 1.0);
    assert_eq!(m("/embed", "validation"), 2.0);
    assert_eq!(m("/v1/embeddings", "validation"), 3.0);
    assert_eq!(m("/embed", "overloaded"), 1.0);
    assert_eq!(m("/v1/embeddings", "overloaded"), 1.0);
}

#[test]
fn sigterm_finishes_open_requests_refuses_new_ones_and_exits_0() {
    let Some(r) = reference() else { return };
    let mut server = Server::start(&["-m", &model_arg(r)]);
    let url = server.url.clone();
    let big = {
        let tei = format!("{url}/embed");
        std::thread::spawn(move || {
            post(
                &agent(),
                &tei,
                &json!({"inputs": long_texts(48)}).to_string(),
            )
        })
    };
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let url = url.clone();
            std::thread::spawn(move || {
                // Requests until the server is gone: every answer is a correct 200.
                let agent = agent();
                let mut answered = 0;
                for n in 0.. {
                    let start = (c * 500 + n * 4) % 1996;
                    let body = json!({"inputs": &r.lines[start..start + 4]}).to_string();
                    match agent.post(&format!("{url}/embed")).send_string(&body) {
                        Ok(resp) => {
                            let v: Value =
                                serde_json::from_str(&resp.into_string().unwrap()).unwrap();
                            for (k, row) in v.as_array().unwrap().iter().enumerate() {
                                assert_eq!(bits(&floats(row)), bits(&r.rows[start + k]));
                            }
                            answered += 1;
                        }
                        Err(ureq::Error::Status(s, _)) => panic!("status {s} during shutdown"),
                        Err(ureq::Error::Transport(_)) => return answered,
                    }
                }
                answered
            })
        })
        .collect();
    // The clients hold at most 16 texts: 24 waiting means the long request is queued.
    wait_for("the long request to queue", || {
        serde_json::from_str::<Value>(&get(&format!("{url}/health"))).unwrap()["queue"]
            .as_u64()
            .unwrap()
            >= 24
    });
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let (s, _, v) = big.join().unwrap();
    assert_eq!(
        (s, v.as_array().map(Vec::len)),
        (200, Some(48)),
        "the open request"
    );
    let answered: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    assert!(answered > 0);
    let start = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "serve did not exit"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(
        TcpStream::connect(server.addr()).is_err(),
        "still accepting"
    );
}

#[test]
fn like_a_run_and_search_its_store() {
    let Some(r) = reference() else { return };
    let dir = util::temp("serve-like");
    let input = dir.join("in.txt");
    std::fs::write(&input, r.lines[..60].join("\n") + "\n").unwrap();
    let run = dir.join("run");
    let out = dir.join("out.jsonl");
    let o = util::run(util::embed_args(&r.model, &input, &out, &run).args([
        "--store",
        "sqlite",
        "--store-text",
        "--prefix",
        "doc: ",
    ]));
    assert!(o.status.success(), "{}", util::stderr(&o));
    let rows = util::jsonl(&out);
    let run_arg = run.to_string_lossy().into_owned();

    let refused = util::run(util::bin().args(["serve", "--like", &run_arg, "--prefix", "x"]));
    assert_eq!(refused.status.code(), Some(2), "{}", util::stderr(&refused));

    let server = Server::start(&["--like", &run_arg, "--store", &run_arg]);
    let info: Value = serde_json::from_str(&get(&format!("{}/info", server.url))).unwrap();
    assert_eq!(info["vector_settings"]["embed"]["prefix"], "doc: ");
    assert_eq!(info["model_sha256"], rows_model_sha(&run));
    // The run's prefix is the server's: a text served is its row in the run.
    let body = json!({"input": [&r.lines[5], &r.lines[9]]}).to_string();
    let (s, _, answer) = post(&agent(), &format!("{}/v1/embeddings", server.url), &body);
    assert_eq!(s, 200);
    let got = openai_vectors(&answer);
    assert_eq!(bits(&got[0]), bits(&util::vector(&rows[5])));
    assert_eq!(bits(&got[1]), bits(&util::vector(&rows[9])));

    let query = &r.lines[7];
    let body = json!({"query": query, "k": 3}).to_string();
    let (s, _, hits) = post(&agent(), &format!("{}/search", server.url), &body);
    assert_eq!(s, 200, "{hits}");
    let cli = util::run(util::bin().args([
        "search", &run_arg, query, "-k", "3", "--json", "--prefix", "doc: ",
    ]));
    assert!(cli.status.success(), "{}", util::stderr(&cli));
    let want: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(hits, want);
    assert_eq!(hits[0]["id"], "7");
    assert!(hits[0]["distance"].as_f64().unwrap() < 1e-6);
}

fn rows_model_sha(run: &Path) -> String {
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("metadata.json")).unwrap()).unwrap();
    m["vectors"]["model_sha256"].as_str().unwrap().to_string()
}

#[test]
fn a_request_past_its_timeout_is_answered_503_and_its_texts_dropped() {
    let Some(r) = reference() else { return };
    let server = Server::start(&["-m", &model_arg(r), "--request-timeout-ms", "300"]);
    let tei = format!("{}/embed", server.url);
    let (s, retry, e) = post(
        &agent(),
        &tei,
        &json!({"inputs": long_texts(64)}).to_string(),
    );
    assert_eq!(
        (s, retry.as_deref(), e["error_type"].as_str()),
        (503, Some("1"), Some("Overloaded")),
        "{e}"
    );
    assert!(
        e["error"].as_str().unwrap().contains("longer than 0.3 s"),
        "{e}"
    );
    let timeout = r#"te_request_failure_total{route="/embed",err="timeout"}"#;
    assert_eq!(metric(&server, timeout), 1.0);
    assert_eq!(metric(&server, "te_request_cancelled_total"), 1.0);
    wait_for("an empty queue", || metric(&server, "te_queue_size") == 0.0);
    assert!(
        metric(&server, "te_batch_next_size_sum") < 64.0,
        "the timed-out texts ran"
    );
    assert_eq!(check_request(&agent(), &server.url, r, 2, 0..2), 2);
}

/// The vector `embed` writes for `text` with `flags`, on `model`.
fn embedded(model: &Path, text: &str, flags: &[&str], dir: &Path, name: &str) -> Vec<f32> {
    let input = dir.join(format!("{name}.txt"));
    std::fs::write(&input, format!("{text}\n")).unwrap();
    let out = dir.join(format!("{name}.jsonl"));
    let o = util::run(
        util::embed_args(model, &input, &out, &dir.join(format!("run-{name}"))).args(flags),
    );
    assert!(o.status.success(), "{}", util::stderr(&o));
    util::vector(&util::jsonl(&out)[0])
}

#[test]
fn a_model_with_prompts_is_served_with_its_query_prompt_and_its_named_prompts() {
    let dir = util::temp("serve-prompts");
    let model = llama_embedding::fixtures::write_tiny_gemma(&dir.join("m")).unwrap();
    let text = "the quick brown fox";
    let as_query = embedded(&model, text, &["--prompt", "query"], &dir, "q");
    let as_document = embedded(&model, text, &[], &dir, "d");
    assert_ne!(bits(&as_query), bits(&as_document));

    let server = Server::start(&["-m", &model.to_string_lossy()]);
    let info: Value = serde_json::from_str(&get(&format!("{}/info", server.url))).unwrap();
    assert_eq!(
        info["vector_settings"]["embed"]["prefix"],
        "task: search result | query: "
    );
    assert_eq!(info["prompts"]["document"], "title: none | text: ");
    // No prompt asked for: the model's query prompt, as `search` uses.
    let body = json!({"input": [text]}).to_string();
    let (s, _, answer) = post(&agent(), &format!("{}/v1/embeddings", server.url), &body);
    assert_eq!(s, 200, "{answer}");
    assert_eq!(bits(&openai_vectors(&answer)[0]), bits(&as_query));
    // TEI's prompt_name picks the model's document prompt: the vector `embed` wrote.
    let body = json!({"inputs": [text], "prompt_name": "document"}).to_string();
    let (s, _, answer) = post(&agent(), &format!("{}/embed", server.url), &body);
    assert_eq!(s, 200, "{answer}");
    assert_eq!(bits(&floats(&answer[0])), bits(&as_document));
    // An unknown name is TEI's validation error, naming what the model has.
    let body = json!({"inputs": [text], "prompt_name": "poem"}).to_string();
    let (s, _, answer) = post(&agent(), &format!("{}/embed", server.url), &body);
    assert_eq!(s, 422, "{answer}");
    assert_eq!(answer["error_type"], "Validation", "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("document"),
        "{answer}"
    );
}
