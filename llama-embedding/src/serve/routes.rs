//! The router: the two embedding APIs (`openai.rs`, `tei.rs`), `GET /health`, `GET /info`,
//! `GET /metrics`, and `POST /search` when the server was started with a store. Anything else is
//! a JSON 404.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use super::body;
use super::service::{EmbedRequest, Failure, Input, Service};
use super::{openai, tei};

/// Every route, over one [`Service`].
pub fn router(service: Arc<Service>) -> Router {
    Router::new()
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/embed", post(tei::embed))
        .route("/search", post(search))
        .route("/health", get(health))
        .route("/info", get(info))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(service)
}

/// The status of a failure both APIs answer alike.
pub fn failure_status(f: &Failure) -> StatusCode {
    match f {
        Failure::Count { .. } | Failure::Input { .. } | Failure::UnknownPrompt { .. } => {
            StatusCode::UNPROCESSABLE_ENTITY
        }
        Failure::Overloaded(_) => StatusCode::TOO_MANY_REQUESTS,
        Failure::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
        Failure::Backend(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `Retry-After: 1` on an overloaded or timed-out answer.
pub fn retry_after(f: &Failure, r: &mut Response) {
    if matches!(f, Failure::Overloaded(_) | Failure::Timeout(_)) {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
}

async fn health(State(service): State<Arc<Service>>) -> Response {
    service.metrics.request("/health");
    // Answering at all means the engine threads were made; the queue tells the load.
    service.metrics.success("/health");
    (
        StatusCode::OK,
        axum::Json(json!({"status": "ok", "queue": service.queue_size()})),
    )
        .into_response()
}

async fn info(State(service): State<Arc<Service>>) -> Response {
    (StatusCode::OK, axum::Json(service.info.clone())).into_response()
}

async fn metrics(State(service): State<Arc<Service>>) -> Response {
    let body = service.metrics.encode();
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn not_found() -> Response {
    tei::error(StatusCode::NOT_FOUND, "NotFound", "no such route")
}

const SEARCH: &str = "/search";

/// `POST /search {"query": "...", "k": 10, "exact": false, "prompt_name": null}`: the query
/// embedded with the server's settings (checked against the store's at start; `prompt_name`
/// for a query prompt), then the store's `k` nearest rows (as `llama-embed search --json`).
async fn search(State(service): State<Arc<Service>>, request: Body) -> Response {
    service.metrics.request(SEARCH);
    let Some(store) = &service.store else {
        service.metrics.failure(SEARCH, "validation");
        return tei::error(
            StatusCode::NOT_FOUND,
            "Validation",
            "this server has no store: start it with --store SPEC",
        );
    };
    let refuse = |m: String| {
        service.metrics.failure(SEARCH, "validation");
        tei::error(StatusCode::UNPROCESSABLE_ENTITY, "Validation", &m)
    };
    let b = match body::read_object(request, service.limits().max_body_bytes).await {
        Ok(b) => b,
        Err(e) => return refuse(e.message()),
    };
    let query = match body::text(&b, "query") {
        Ok(Some(q)) => q,
        Ok(None) => return refuse("`query` is missing".into()),
        Err(m) => return refuse(m),
    };
    let k = match body::count(&b, "k") {
        Ok(k) => k.unwrap_or(10),
        Err(m) => return refuse(m),
    };
    if k == 0 || k > 4096 {
        return refuse("`k` must be between 1 and 4096".into());
    }
    let exact = matches!(body::flag(&b, "exact"), Ok(Some(true)));
    let prompt_name = match body::text(&b, "prompt_name") {
        Ok(p) => p,
        Err(m) => return refuse(m),
    };
    let request = EmbedRequest {
        inputs: vec![Input::Text(query)],
        prompt_name,
        ..EmbedRequest::default()
    };
    let vector = match service.embed(request).await {
        Ok(mut e) => e.vectors.remove(0),
        Err(f) => {
            service.metrics.failure(SEARCH, f.metric());
            return tei::failure(&f);
        }
    };
    let (spec, model) = (store.spec.clone(), store.model.clone());
    let hits =
        tokio::task::spawn_blocking(move || crate::store::search(&spec, &model, &vector, k, exact))
            .await;
    match hits {
        Ok(Ok(hits)) => {
            service.metrics.success(SEARCH);
            (StatusCode::OK, axum::Json(hits)).into_response()
        }
        Ok(Err(e)) => {
            service.metrics.failure(SEARCH, "store");
            tei::error(StatusCode::INTERNAL_SERVER_ERROR, "Backend", &e.to_string())
        }
        Err(e) => {
            service.metrics.failure(SEARCH, "store");
            tei::error(StatusCode::INTERNAL_SERVER_ERROR, "Backend", &e.to_string())
        }
    }
}
