//! `POST /embed`, text-embeddings-inference's shape: `inputs` (string, strings, token ids),
//! `normalize`, `truncate`, `prompt_name`; the answer is an array of vectors. Where TEI's
//! defaults would give other vectors than the batch run, the server's settings win: `truncate`
//! and `normalize` default to the server's (`embed` truncates and normalises by default).
//! Errors are `{"error": "...", "error_type": "Validation" | "Overloaded" | "Backend" | ...}`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::body::{self, BodyError};
use super::routes::{failure_status, retry_after};
use super::service::{EmbedRequest, Failure, Service};

const ROUTE: &str = "/embed";

/// The handler.
pub async fn embed(State(service): State<Arc<Service>>, request: Body) -> Response {
    service.metrics.request(ROUTE);
    let limit = service.limits().max_body_bytes;
    let parsed = match body::read_object(request, limit).await {
        Ok(b) => b,
        Err(e) => {
            service.metrics.failure(ROUTE, e.metric());
            let status = match e {
                BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                BodyError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                BodyError::Incomplete(_) => StatusCode::BAD_REQUEST,
            };
            return error(status, "Validation", &e.message());
        }
    };
    let request = match parse(&parsed) {
        Ok(r) => r,
        Err(m) => {
            service.metrics.failure(ROUTE, "validation");
            return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation", &m);
        }
    };
    match service.embed_counted(ROUTE, request).await {
        Ok(e) => (StatusCode::OK, axum::Json(e.vectors)).into_response(),
        Err(f) => failure(&f),
    }
}

fn parse(b: &Map<String, Value>) -> Result<EmbedRequest, String> {
    if let Some(d) = body::text(b, "truncation_direction")? {
        if !d.eq_ignore_ascii_case("right") {
            return Err(format!(
                "`truncation_direction` {d:?} is not served: texts keep their start (Right), as the batch run does"
            ));
        }
    }
    Ok(EmbedRequest {
        inputs: body::inputs(b, "inputs")?,
        truncate: body::flag(b, "truncate")?,
        normalize: body::flag(b, "normalize")?,
        prompt_name: body::text(b, "prompt_name")?,
    })
}

/// A failure in TEI's words: 422 Validation, 429 Overloaded, 503 on a timeout, 500 Backend.
pub fn failure(f: &Failure) -> Response {
    let (status, kind) = match f {
        Failure::Count { n: 0, .. } => (StatusCode::UNPROCESSABLE_ENTITY, "Empty"),
        Failure::Count { .. } | Failure::Input { .. } | Failure::UnknownPrompt { .. } => {
            (StatusCode::UNPROCESSABLE_ENTITY, "Validation")
        }
        Failure::Overloaded(_) | Failure::Timeout(_) => (failure_status(f), "Overloaded"),
        Failure::Backend(_) => (failure_status(f), "Backend"),
    };
    let mut r = error(status, kind, &f.message());
    retry_after(f, &mut r);
    r
}

/// TEI's error body.
pub fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": message, "error_type": kind})),
    )
        .into_response()
}
