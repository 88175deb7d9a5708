//! [`Service`]: what every route shares. It validates and tokenises a request's inputs exactly
//! as `llama-embed embed` does (same options, same truncation), queues them whole or not at all
//! ([`super::queue::Queue`]), waits for their vectors with the request's timeout and normalises
//! them with the run's own function, so a text gets the bits a batch run writes. The API shapes
//! (OpenAI, TEI) live in their own files; this one knows none of them.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use llama_cpp_2::token::LlamaToken;

use super::metrics::Metrics;
use super::queue::{Done, Full, Queue, QueueConfig};
use crate::engine::{Backend, Engine};
use crate::error::{ItemErrorKind, Result};
use crate::model::{EmbedOptions, Normalize};
use crate::pipeline::batcher::TokenBudget;
use crate::pipeline::{plan, BatchConfig};
use crate::store::{StoreModel, StoreSpec};
use crate::vectors::l2_normalize;

/// One input of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    Text(String),
    /// Token ids, embedded as given (the model's special tokens included, if wanted).
    Tokens(Vec<i64>),
}

/// A request, whatever API it came from.
#[derive(Debug, Clone, Default)]
pub struct EmbedRequest {
    pub inputs: Vec<Input>,
    /// `Some(false)`: an input over the token limit is refused; `None`: the server's setting.
    pub truncate: Option<bool>,
    /// `None`: the server's setting.
    pub normalize: Option<bool>,
    /// A named prompt in place of the server's prefix.
    pub prompt_name: Option<String>,
}

/// Vectors, in input order, and the tokens embedded.
#[derive(Debug, Clone, PartialEq)]
pub struct Embedded {
    pub vectors: Vec<Vec<f32>>,
    pub tokens: usize,
}

/// Why a request got no vectors.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// No inputs, or more than the server takes in one request.
    Count {
        n: usize,
        max: usize,
    },
    /// Input `index` cannot be embedded (empty, a NUL byte, too long, a bad token id).
    Input {
        index: usize,
        kind: ItemErrorKind,
        message: String,
    },
    UnknownPrompt {
        name: String,
        known: Vec<String>,
    },
    Overloaded(Full),
    Timeout(Duration),
    Backend(String),
}

impl Failure {
    /// The reason's word in `te_request_failure{err=…}`.
    pub fn metric(&self) -> &'static str {
        match self {
            Failure::Count { .. } | Failure::Input { .. } | Failure::UnknownPrompt { .. } => {
                "validation"
            }
            Failure::Overloaded(_) => "overloaded",
            Failure::Timeout(_) => "timeout",
            Failure::Backend(_) => "backend",
        }
    }

    /// What a client reads.
    pub fn message(&self) -> String {
        match self {
            Failure::Count { n: 0, .. } => "the request has no inputs".into(),
            Failure::Count { n, max } => {
                format!("the request has {n} inputs; this server takes at most {max} per request")
            }
            Failure::Input { index, message, .. } => format!("input {index}: {message}"),
            Failure::UnknownPrompt { name, known } if known.is_empty() => {
                format!(
                    "no prompt named {name:?}: this server has no named prompts (--named-prompt)"
                )
            }
            Failure::UnknownPrompt { name, known } => {
                format!(
                    "no prompt named {name:?}; the server has {}",
                    known.join(", ")
                )
            }
            Failure::Overloaded(f) => format!(
                "the queue is full ({} of {} texts waiting); retry later",
                f.waiting, f.capacity
            ),
            Failure::Timeout(t) => format!("the request took longer than {} s", t.as_secs_f64()),
            Failure::Backend(e) => format!("the engine failed: {e}"),
        }
    }
}

/// The server's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Limits {
    /// Bytes in one request body.
    pub max_body_bytes: usize,
    /// Inputs in one request.
    pub max_inputs: usize,
    /// Texts waiting at once (all requests).
    pub max_queue: usize,
    pub request_timeout_ms: u64,
    /// Longest a decode keeps filling while the engine is busy.
    pub batch_wait_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 2 * 1024 * 1024,
            max_inputs: 512,
            max_queue: 4096,
            request_timeout_ms: 60_000,
            batch_wait_ms: 5,
        }
    }
}

/// A store `POST /search` searches, with what it recorded of its model.
pub struct SearchStore {
    pub spec: StoreSpec,
    pub model: StoreModel,
}

/// The shared state of the server; see the module docs.
pub struct Service {
    backend: Arc<dyn Backend>,
    options: EmbedOptions,
    max_tokens: usize,
    prompts: BTreeMap<String, String>,
    limits: Limits,
    queue: Queue,
    pub metrics: Arc<Metrics>,
    /// `GET /info`'s body.
    pub info: serde_json::Value,
    pub store: Option<SearchStore>,
    /// The name `model` is echoed with when a request names none.
    pub model_name: String,
}

impl Service {
    /// Plans the engine for `config` exactly as a run of it would (same shape, threads and
    /// budget) and starts it and the queue.
    ///
    /// # Errors
    /// The plan's and the engine's errors.
    pub fn start(
        backend: Arc<dyn Backend>,
        config: &BatchConfig,
        limits: Limits,
        prompts: BTreeMap<String, String>,
    ) -> Result<Self> {
        let plan = plan(backend.as_ref(), config, None)?;
        let mut shape = plan.shape.clone();
        // Normalised per request (TEI's `normalize`), with the same function the context uses.
        shape.normalize = Normalize::None;
        let engine = Arc::new(Engine::start(backend.clone(), shape, plan.workers)?);
        let metrics = Arc::new(Metrics::new());
        let queue = Queue::start(
            engine,
            QueueConfig {
                capacity: limits.max_queue,
                budget: TokenBudget {
                    tokens: plan.budget,
                    sequences: config.batch_size,
                },
                max_wait: Duration::from_millis(limits.batch_wait_ms),
            },
            metrics.clone(),
        )
        .map_err(|e| crate::Error::Worker(format!("cannot start the queue thread: {e}")))?;
        Ok(Service {
            backend,
            options: config.embed.clone(),
            max_tokens: plan.max_tokens,
            prompts,
            limits,
            queue,
            metrics,
            info: serde_json::Value::Null,
            store: None,
            model_name: String::new(),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The length of the vectors it returns (after `--dimensions`).
    pub fn dimensions(&self) -> usize {
        self.options.output_dimensions(self.backend.dimensions())
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    pub fn prompts(&self) -> &BTreeMap<String, String> {
        &self.prompts
    }

    /// Texts waiting or running.
    pub fn queue_size(&self) -> usize {
        self.queue.waiting()
    }

    /// [`Service::embed`], counted in the metrics under `route` (success and duration, or the
    /// failure's reason).
    ///
    /// # Errors
    /// As [`Service::embed`].
    pub async fn embed_counted(
        &self,
        route: &str,
        request: EmbedRequest,
    ) -> std::result::Result<Embedded, Failure> {
        let started = Instant::now();
        let answer = self.embed(request).await;
        match &answer {
            Ok(_) => {
                self.metrics.success(route);
                let took = started.elapsed().as_secs_f64();
                self.metrics.request_duration.observe(took);
            }
            Err(f) => self.metrics.failure(route, f.metric()),
        }
        answer
    }

    /// Embeds a request's inputs; see the module docs. Dropping the future (the client went
    /// away) drops its texts still waiting.
    ///
    /// # Errors
    /// A [`Failure`] saying why.
    pub async fn embed(&self, request: EmbedRequest) -> std::result::Result<Embedded, Failure> {
        let n = request.inputs.len();
        if n == 0 || n > self.limits.max_inputs {
            return Err(Failure::Count {
                n,
                max: self.limits.max_inputs,
            });
        }
        let started = Instant::now();
        let sequences = self.tokenize(&request)?;
        self.metrics
            .tokenization_duration
            .observe(started.elapsed().as_secs_f64());
        let tokens = sequences.iter().map(Vec::len).sum();
        for s in &sequences {
            self.metrics.input_length.observe(s.len() as f64);
        }
        let flag = Arc::new(AtomicBool::new(false));
        let replies = self
            .queue
            .submit(sequences, &flag)
            .map_err(Failure::Overloaded)?;
        let mut cancel = CancelOnDrop {
            flag,
            metrics: self.metrics.clone(),
            answered: false,
        };
        let timeout = Duration::from_millis(self.limits.request_timeout_ms);
        let done = tokio::time::timeout(timeout, async {
            let mut done = Vec::with_capacity(replies.len());
            for r in replies {
                done.push(r.await);
            }
            done
        })
        .await
        .map_err(|_| Failure::Timeout(timeout))?;
        cancel.answered = true;
        let normalize = request.normalize.map_or(self.options.normalize, |n| {
            if n {
                Normalize::L2
            } else {
                Normalize::None
            }
        });
        let vectors = self.collect(done, normalize)?;
        Ok(Embedded { vectors, tokens })
    }

    /// Each input's token sequence, or the first input that cannot be embedded.
    fn tokenize(
        &self,
        request: &EmbedRequest,
    ) -> std::result::Result<Vec<Vec<LlamaToken>>, Failure> {
        let mut options = self.options.clone();
        if let Some(t) = request.truncate {
            options.truncate = t;
        }
        if let Some(name) = &request.prompt_name {
            let prompt = self
                .prompts
                .get(name)
                .ok_or_else(|| Failure::UnknownPrompt {
                    name: name.clone(),
                    known: self.prompts.keys().cloned().collect(),
                })?;
            options.prefix = Some(prompt.clone());
        }
        request
            .inputs
            .iter()
            .enumerate()
            .map(|(index, input)| match input {
                Input::Text(t) => self
                    .backend
                    .tokenize(t, &options, self.max_tokens)
                    .map(|t| t.tokens)
                    .map_err(|e| Failure::Input {
                        index,
                        kind: e.kind,
                        message: e.message,
                    }),
                Input::Tokens(ids) => self.check_tokens(index, ids),
            })
            .collect()
    }

    /// Token ids given by the client: in the vocabulary, 1 to max-tokens of them.
    fn check_tokens(
        &self,
        index: usize,
        ids: &[i64],
    ) -> std::result::Result<Vec<LlamaToken>, Failure> {
        let fail = |kind, message: String| Failure::Input {
            index,
            kind,
            message,
        };
        if ids.is_empty() {
            return Err(fail(ItemErrorKind::Empty, "no tokens".into()));
        }
        if ids.len() > self.max_tokens {
            return Err(fail(
                ItemErrorKind::TooLong,
                format!("{} tokens; the limit is {}", ids.len(), self.max_tokens),
            ));
        }
        let n_vocab = self.backend.n_vocab() as i64;
        match ids.iter().position(|&t| !(0..n_vocab).contains(&t)) {
            Some(at) => Err(fail(
                ItemErrorKind::Parse,
                format!(
                    "token {} at {at} is not in the vocabulary (0..{n_vocab})",
                    ids[at]
                ),
            )),
            None => Ok(ids.iter().map(|&t| LlamaToken(t as i32)).collect()),
        }
    }

    /// The vectors of a request's texts, normalised as asked; records its times.
    fn collect(
        &self,
        done: Vec<std::result::Result<Done, tokio::sync::oneshot::error::RecvError>>,
        normalize: Normalize,
    ) -> std::result::Result<Vec<Vec<f32>>, Failure> {
        let (mut queue, mut inference) = (Duration::ZERO, Duration::ZERO);
        let mut vectors = Vec::with_capacity(done.len());
        for d in done {
            let d = d.map_err(|_| Failure::Backend("the engine stopped".into()))?;
            queue = queue.max(d.queue_time);
            inference = inference.max(d.inference_time);
            let mut v = d.vector.map_err(Failure::Backend)?;
            if normalize == Normalize::L2 {
                l2_normalize(&mut v);
            }
            vectors.push(v);
        }
        self.metrics.queue_duration.observe(queue.as_secs_f64());
        self.metrics
            .inference_duration
            .observe(inference.as_secs_f64());
        Ok(vectors)
    }
}

/// Sets the request's cancel flag when its future is dropped (the client went away) or it
/// timed out: its texts still queued are then skipped.
struct CancelOnDrop {
    flag: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    answered: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.answered {
            self.flag.store(true, Ordering::Relaxed);
            self.metrics.cancelled_requests.inc();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::FakeBackend;

    fn service(fake: &Arc<FakeBackend>, limits: Limits) -> Arc<Service> {
        let config = BatchConfig::default().with_workers(2).with_progress(false);
        let prompts = BTreeMap::from([("query".to_string(), "query: ".to_string())]);
        Arc::new(Service::start(fake.clone(), &config, limits, prompts).unwrap())
    }

    fn texts(i: usize) -> Vec<Input> {
        (0..=i % 5)
            .map(|k| Input::Text(format!("text {i} {k} {}", "w ".repeat((i * 7 + k) % 40))))
            .collect()
    }

    fn request(inputs: Vec<Input>) -> EmbedRequest {
        EmbedRequest {
            inputs,
            ..EmbedRequest::default()
        }
    }

    /// Texts sharing decodes across 60 concurrent requests get the bits they get alone, and
    /// the fake's own vector for their tokens.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_requests_get_the_vectors_of_texts_served_alone() {
        let fake = Arc::new(FakeBackend::new(16, 512));
        let s = service(&fake, Limits::default());
        let tasks: Vec<_> = (0..60)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move { s.embed(request(texts(i))).await.unwrap() })
            })
            .collect();
        for (i, t) in tasks.into_iter().enumerate() {
            let got = t.await.unwrap();
            for (input, v) in texts(i).into_iter().zip(&got.vectors) {
                let alone = s.embed(request(vec![input.clone()])).await.unwrap();
                assert_eq!(bits(&alone.vectors[0]), bits(v), "request {i}");
                let Input::Text(t) = input else {
                    unreachable!()
                };
                let tokens = fake
                    .tokenize(&t, &EmbedOptions::default(), 512)
                    .unwrap()
                    .tokens;
                let mut want = fake.vector_of(&tokens);
                l2_normalize(&mut want);
                assert_eq!(bits(&want), bits(v), "request {i}: {t:?}");
            }
        }
        let batched = s.metrics.encode();
        assert!(batched.contains("te_queue_size 0"), "{batched}");
    }

    #[tokio::test]
    async fn refusals_name_the_input_and_the_reason() {
        let fake = Arc::new(FakeBackend::new(8, 16));
        let limits = Limits {
            max_inputs: 3,
            ..Limits::default()
        };
        let s = service(&fake, limits);
        let err = |r: EmbedRequest| {
            let s = s.clone();
            async move { s.embed(r).await.unwrap_err() }
        };
        assert_eq!(err(request(vec![])).await, Failure::Count { n: 0, max: 3 });
        let four = vec![Input::Text("a".into()); 4];
        assert_eq!(err(request(four)).await, Failure::Count { n: 4, max: 3 });
        let blank = vec![Input::Text("a".into()), Input::Text("  ".into())];
        assert!(matches!(
            err(request(blank)).await,
            Failure::Input {
                index: 1,
                kind: ItemErrorKind::Empty,
                ..
            }
        ));
        let long = Input::Text("w ".repeat(40));
        let strict = EmbedRequest {
            truncate: Some(false),
            ..request(vec![long.clone()])
        };
        assert!(matches!(
            err(strict).await,
            Failure::Input {
                kind: ItemErrorKind::TooLong,
                ..
            }
        ));
        assert_eq!(s.embed(request(vec![long])).await.unwrap().tokens, 16);
        let bad = vec![Input::Tokens(vec![1, 5, 100_000])];
        let e = err(request(bad)).await;
        assert!(e.message().contains("token 100000 at 2"), "{}", e.message());
        let unknown = EmbedRequest {
            prompt_name: Some("doc".into()),
            ..request(vec![Input::Text("a".into())])
        };
        assert!(err(unknown)
            .await
            .message()
            .contains("the server has query"));
    }

    /// A named prompt is the prefix; token ids are embedded as given.
    #[tokio::test]
    async fn prompts_and_token_inputs() {
        let fake = Arc::new(FakeBackend::new(8, 64));
        let s = service(&fake, Limits::default());
        let named = EmbedRequest {
            prompt_name: Some("query".into()),
            ..request(vec![Input::Text("hello there".into())])
        };
        let by_name = s.embed(named).await.unwrap();
        let by_text = s
            .embed(request(vec![Input::Text("query: hello there".into())]))
            .await;
        assert_eq!(
            bits(&by_name.vectors[0]),
            bits(&by_text.unwrap().vectors[0])
        );
        let tokens = fake
            .tokenize("hello there", &EmbedOptions::default(), 64)
            .unwrap();
        let ids = tokens.tokens.iter().map(|t| i64::from(t.0)).collect();
        let by_ids = s.embed(request(vec![Input::Tokens(ids)])).await.unwrap();
        let by_text = s
            .embed(request(vec![Input::Text("hello there".into())]))
            .await;
        assert_eq!(bits(&by_ids.vectors[0]), bits(&by_text.unwrap().vectors[0]));
        let raw = EmbedRequest {
            normalize: Some(false),
            ..request(vec![Input::Text("hello there".into())])
        };
        let raw = s.embed(raw).await.unwrap();
        assert_eq!(bits(&raw.vectors[0]), bits(&fake.vector_of(&tokens.tokens)));
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }
}
