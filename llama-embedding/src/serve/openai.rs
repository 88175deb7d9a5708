//! `POST /v1/embeddings`, OpenAI's shape: `input` (string, strings, token ids), `model` (echoed),
//! `encoding_format` (`float` or `base64`: the f32 vector's little-endian bytes), `dimensions`
//! (only the model's own: no model here declares Matryoshka sizes yet, and a size it was not
//! trained for is refused, never ignored), `user` (ignored). Errors are
//! `{"error": {"message", "type", "param", "code"}}`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::body::{self, BodyError};
use super::routes::{failure_status, retry_after};
use super::service::{EmbedRequest, Embedded, Failure, Service};

const ROUTE: &str = "/v1/embeddings";

/// The handler.
pub async fn embeddings(State(service): State<Arc<Service>>, request: Body) -> Response {
    service.metrics.request(ROUTE);
    let limit = service.limits().max_body_bytes;
    let parsed = match body::read_object(request, limit).await {
        Ok(b) => b,
        Err(e) => {
            service.metrics.failure(ROUTE, e.metric());
            return body_error(&e);
        }
    };
    let (request, options) = match parse(&parsed, service.dimensions()) {
        Ok(r) => r,
        Err((status, param, message)) => {
            service.metrics.failure(ROUTE, "validation");
            return error(status, "invalid_request_error", Some(param), &message);
        }
    };
    match service.embed_counted(ROUTE, request).await {
        Ok(e) => {
            let model = options.model.unwrap_or_else(|| service.model_name.clone());
            let answer = response(&e, &model, options.base64);
            (StatusCode::OK, axum::Json(answer)).into_response()
        }
        Err(f) => failure(&f),
    }
}

/// What the response needs from the request besides the inputs.
struct Options {
    model: Option<String>,
    base64: bool,
}

type Refusal = (StatusCode, &'static str, String);

fn parse(b: &Map<String, Value>, dims: usize) -> Result<(EmbedRequest, Options), Refusal> {
    let bad = |param, m: String| (StatusCode::BAD_REQUEST, param, m);
    let inputs = body::inputs(b, "input").map_err(|m| bad("input", m))?;
    let model = body::text(b, "model").map_err(|m| bad("model", m))?;
    let base64 = match body::text(b, "encoding_format").map_err(|m| bad("encoding_format", m))? {
        None => false,
        Some(f) if f == "float" => false,
        Some(f) if f == "base64" => true,
        Some(f) => {
            return Err(bad(
                "encoding_format",
                format!("`encoding_format` must be \"float\" or \"base64\", not {f:?}"),
            ))
        }
    };
    match body::count(b, "dimensions").map_err(|m| bad("dimensions", m))? {
        Some(d) if d != dims => {
            return Err(bad(
                "dimensions",
                format!(
                    "this model gives {dims} dimensions and declares no smaller (Matryoshka) sizes; `dimensions` {d} cannot be served"
                ),
            ))
        }
        _ => {}
    }
    let request = EmbedRequest {
        inputs,
        ..EmbedRequest::default()
    };
    Ok((request, Options { model, base64 }))
}

fn response(e: &Embedded, model: &str, base64: bool) -> Value {
    let data: Vec<Value> = e
        .vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                Value::String(encode_base64(v))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": e.tokens, "total_tokens": e.tokens},
    })
}

/// A vector as OpenAI's base64: its f32 values' little-endian bytes.
pub fn encode_base64(v: &[f32]) -> String {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn failure(f: &Failure) -> Response {
    let status = match f {
        // OpenAI answers a bad input (too long included) with 400.
        Failure::Count { .. } | Failure::Input { .. } | Failure::UnknownPrompt { .. } => {
            StatusCode::BAD_REQUEST
        }
        other => failure_status(other),
    };
    let kind = match status.as_u16() {
        429 => "rate_limit_error",
        s if s >= 500 => "server_error",
        _ => "invalid_request_error",
    };
    let param = matches!(f, Failure::Input { .. } | Failure::Count { .. }).then_some("input");
    let mut r = error(status, kind, param, &f.message());
    retry_after(f, &mut r);
    r
}

fn body_error(e: &BodyError) -> Response {
    let status = match e {
        BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        BodyError::Invalid(_) | BodyError::Incomplete(_) => StatusCode::BAD_REQUEST,
    };
    error(status, "invalid_request_error", None, &e.message())
}

fn error(status: StatusCode, kind: &str, param: Option<&str>, message: &str) -> Response {
    let body =
        json!({"error": {"message": message, "type": kind, "param": param, "code": Value::Null}});
    (status, axum::Json(body)).into_response()
}
