//! `llama-embed serve`: the exact vectors of a batch run, online, behind OpenAI's and
//! text-embeddings-inference's HTTP APIs (axum on tokio).
//!
//! - `service.rs`: [`Service`], validation, tokenising and waiting, API-agnostic;
//! - `queue.rs`: [`Queue`], batching across requests in front of the [`crate::engine::Engine`];
//! - `body.rs`: reading a body under the byte limit, the input forms;
//! - `openai.rs`, `tei.rs`: the two APIs' requests, answers and error shapes;
//! - `routes.rs`: the router, `/health`, `/info`, `/metrics`, `/search`;
//! - `metrics.rs`: [`Metrics`], Prometheus text.
//!
//! [`start`] plans the engine exactly as a run with the same [`BatchConfig`] would, so a text
//! served gets the bits `llama-embed embed` writes for it (the exact mode: any batch, any
//! request mix). [`serve`] runs until its shutdown future resolves, then stops accepting,
//! finishes the requests it holds (up to a grace period) and returns.

mod body;
mod metrics;
mod openai;
mod queue;
mod routes;
mod service;
mod tei;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

pub use metrics::Metrics;
pub use openai::encode_base64;
pub use queue::{Full, Queue, QueueConfig};
pub use routes::router;
pub use service::{EmbedRequest, Embedded, Failure, Input, Limits, SearchStore, Service};

use crate::error::Result;
use crate::model::EmbeddingModel;
use crate::pipeline::BatchConfig;
use crate::store::{self, StoreSpec};

/// What `serve` runs with.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The vector settings and engine plan, as for a run.
    pub batch: BatchConfig,
    pub limits: Limits,
    /// `prompt_name` → the text put before an input.
    pub prompts: BTreeMap<String, String>,
    /// The store `POST /search` searches.
    pub store: Option<StoreSpec>,
    /// How the model was named (echoed as `model`) and where it came from.
    pub model_name: String,
    pub model_source: String,
}

/// Starts the engine and the queue for `config` and checks the store against the settings.
///
/// # Errors
/// The plan's and engine's errors; a store made with another model or other settings.
pub fn start(model: Arc<EmbeddingModel>, config: &ServeConfig) -> Result<Arc<Service>> {
    let settings = crate::job::vector_settings(&model, &config.batch)?;
    let search = match &config.store {
        Some(spec) => {
            let stored = store::store_model(spec, Some(&settings.model_sha256))?;
            store::check_settings(
                &spec.display(),
                &stored.settings,
                &store::store_settings(&settings),
            )?;
            Some(SearchStore {
                spec: spec.clone(),
                model: stored,
            })
        }
        None => None,
    };
    let mut service = Service::start(
        model.clone(),
        &config.batch,
        config.limits,
        config.prompts.clone(),
    )?;
    service.info = json!({
        "model_id": config.model_name,
        "model_path": model.path(),
        "model_source": config.model_source,
        "model_sha256": settings.model_sha256,
        "architecture": model.facts().architecture,
        "dimensions": service.dimensions(),
        "max_input_length": service.max_tokens(),
        "max_client_batch_size": config.limits.max_inputs,
        "vector_settings": settings,
        "prompts": config.prompts,
        "limits": config.limits,
        "store": config.store.as_ref().map(StoreSpec::display),
        "version": env!("CARGO_PKG_VERSION"),
    });
    service.store = search;
    service.model_name = config.model_name.clone();
    Ok(Arc::new(service))
}

/// How [`serve`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Every request it held was answered.
    Drained,
    /// The grace period ran out with requests still open.
    GraceExpired,
}

/// Serves `service` on `listener` until `shutdown` resolves; then stops accepting and waits up
/// to `grace` for the open requests.
///
/// # Errors
/// The listener's errors.
pub async fn serve(
    service: Arc<Service>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<Stopped> {
    let signalled = Arc::new(tokio::sync::Notify::new());
    let notify = signalled.clone();
    let server = axum::serve(listener, router(service)).with_graceful_shutdown(async move {
        shutdown.await;
        notify.notify_one();
    });
    let server = std::future::IntoFuture::into_future(server);
    tokio::select! {
        r = server => r.map(|()| Stopped::Drained),
        () = async { signalled.notified().await; tokio::time::sleep(grace).await } => {
            Ok(Stopped::GraceExpired)
        }
    }
}
