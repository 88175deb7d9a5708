//! Reading a request body: at most the server's byte limit (413 beyond it), parsed as a JSON
//! object, and the `input`/`inputs` field in the forms both APIs take: a string, an array of
//! strings, an array of token ids, or an array of arrays of token ids.

use axum::body::Body;
use http_body_util::BodyExt;
use serde_json::{Map, Value};

use super::service::Input;

/// Why a body was not read.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyError {
    TooLarge {
        limit: usize,
    },
    /// Not JSON, not an object, or a field of the wrong type.
    Invalid(String),
    /// The client went away while sending it.
    Incomplete(String),
}

impl BodyError {
    /// The reason's word in `te_request_failure{err=…}`.
    pub fn metric(&self) -> &'static str {
        match self {
            BodyError::TooLarge { .. } => "payload",
            BodyError::Invalid(_) => "validation",
            BodyError::Incomplete(_) => "cancelled",
        }
    }

    pub fn message(&self) -> String {
        match self {
            BodyError::TooLarge { limit } => {
                format!("the request body is larger than this server's limit of {limit} bytes")
            }
            BodyError::Invalid(m) => m.clone(),
            BodyError::Incomplete(m) => format!("the request body could not be read: {m}"),
        }
    }
}

/// A body over the limit is still read (and dropped) up to this many times the limit, so that
/// a client writing all of it before reading gets its 413 rather than a reset connection.
const DRAIN_FACTOR: usize = 8;

/// The body as a JSON object.
///
/// # Errors
/// A [`BodyError`].
pub async fn read_object(mut body: Body, limit: usize) -> Result<Map<String, Value>, BodyError> {
    let mut bytes = Vec::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Incomplete(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        seen += data.len();
        if seen <= limit {
            bytes.extend_from_slice(&data);
        } else if seen > limit.saturating_mul(DRAIN_FACTOR) {
            break;
        }
    }
    if seen > limit {
        return Err(BodyError::TooLarge { limit });
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(BodyError::Invalid(
            "the request body must be a JSON object".into(),
        )),
        Err(e) => Err(BodyError::Invalid(format!(
            "the request body is not JSON: {e}"
        ))),
    }
}

/// The inputs in `body[field]`.
///
/// # Errors
/// A message naming the field and what it must be.
pub fn inputs(body: &Map<String, Value>, field: &str) -> Result<Vec<Input>, String> {
    let shape = || {
        format!(
            "`{field}` must be a string, an array of strings, an array of token ids or an array of arrays of token ids"
        )
    };
    match body.get(field) {
        None => Err(format!("`{field}` is missing")),
        Some(Value::String(s)) => Ok(vec![Input::Text(s.clone())]),
        Some(Value::Array(a)) if a.is_empty() => Ok(Vec::new()),
        Some(Value::Array(a)) if a.iter().all(Value::is_number) => {
            Ok(vec![Input::Tokens(token_ids(a).ok_or_else(shape)?)])
        }
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(Input::Text(s.clone())),
                Value::Array(ids) => token_ids(ids).map(Input::Tokens).ok_or_else(shape),
                _ => Err(shape()),
            })
            .collect(),
        Some(_) => Err(shape()),
    }
}

fn token_ids(a: &[Value]) -> Option<Vec<i64>> {
    a.iter().map(Value::as_i64).collect()
}

/// An optional boolean field.
///
/// # Errors
/// A field that is there and not a boolean.
pub fn flag(body: &Map<String, Value>, field: &str) -> Result<Option<bool>, String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(format!("`{field}` must be true or false")),
    }
}

/// An optional string field.
///
/// # Errors
/// A field that is there and not a string.
pub fn text(body: &Map<String, Value>, field: &str) -> Result<Option<String>, String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("`{field}` must be a string")),
    }
}

/// An optional non-negative integer field.
///
/// # Errors
/// A field that is there and not one.
pub fn count(body: &Map<String, Value>, field: &str) -> Result<Option<usize>, String> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(|n| Some(n as usize))
            .ok_or_else(|| format!("`{field}` must be a positive integer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Vec<Input>, String> {
        inputs(v.as_object().unwrap(), "input")
    }

    #[test]
    fn every_input_form_and_its_errors() {
        let t = |s: &str| Input::Text(s.into());
        assert_eq!(parse(serde_json::json!({"input": "a"})), Ok(vec![t("a")]));
        assert_eq!(
            parse(serde_json::json!({"input": ["a", "b"]})),
            Ok(vec![t("a"), t("b")])
        );
        assert_eq!(
            parse(serde_json::json!({"input": [1, 2]})),
            Ok(vec![Input::Tokens(vec![1, 2])])
        );
        assert_eq!(
            parse(serde_json::json!({"input": [[1], "x"]})),
            Ok(vec![Input::Tokens(vec![1]), t("x")])
        );
        assert_eq!(parse(serde_json::json!({"input": []})), Ok(vec![]));
        assert!(parse(serde_json::json!({"input": [1.5]})).is_err());
        assert!(parse(serde_json::json!({"input": {"a": 1}}))
            .unwrap_err()
            .contains("`input` must be"));
        assert_eq!(
            parse(serde_json::json!({})),
            Err("`input` is missing".into())
        );
    }
}
