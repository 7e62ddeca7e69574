//! Responses in Proxmox VE's JSON envelope.
//!
//! Every answer is a JSON object with the result under `data` (`null` on
//! failure). Proxmox puts the error message into the HTTP reason phrase, and
//! parameter errors additionally under `errors`, keyed by parameter name.

use std::collections::BTreeMap;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, PRAGMA};
use hyper::StatusCode;
use serde_json::json;

/// The reason phrase of a parameter error, as Proxmox words it.
pub const PARAMETER_ERROR_REASON: &str = "Parameter verification failed.";

/// A failed request: status, reason phrase and, for parameter errors, the
/// message for each offending parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The reason phrase that replaces the status's canonical one.
    pub message: String,
    /// Messages by parameter name; empty unless the parameters were wrong.
    pub param_errors: BTreeMap<String, String>,
}

impl ApiError {
    /// An error with the given status and reason phrase.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            param_errors: BTreeMap::new(),
        }
    }

    /// 401 with the given reason phrase.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::UNAUTHORIZED, message)
    }

    /// 400 for one wrong or missing parameter.
    pub fn parameter(name: impl Into<String>, message: impl Into<String>) -> Self {
        let mut param_errors = BTreeMap::new();
        param_errors.insert(name.into(), message.into());
        ApiError::parameters(param_errors)
    }

    /// 400 for several wrong or missing parameters.
    pub fn parameters(param_errors: BTreeMap<String, String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: PARAMETER_ERROR_REASON.to_owned(),
            param_errors,
        }
    }

    /// 403 for a caller without the privileges.
    pub fn forbidden() -> Self {
        ApiError::new(StatusCode::FORBIDDEN, "Permission check failed")
    }

    /// 404-like failure for something that does not exist; Proxmox answers
    /// these with 500 and the message, which clients show.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// 500 with the message, for a request that was understood but failed.
    pub fn failed(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The message with the per-parameter errors, for a task log.
    pub fn message_with_params(&self) -> String {
        let mut text = self.message.clone();
        for (name, why) in &self.param_errors {
            text.push_str(&format!(" {name}: {why};"));
        }
        text
    }

    /// 501 for a method and path that no endpoint serves.
    pub fn not_implemented(method: &str, path: &str) -> Self {
        ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            format!("Method '{method} {path}' not implemented"),
        )
    }
}

/// A successful answer: the `data`, and for paged lists the `total`.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    /// What goes under `data`.
    pub data: serde_json::Value,
    /// The number of items in the whole list, for paged lists.
    pub total: Option<usize>,
    /// `data` already serialized, for large answers built from typed
    /// values without a `serde_json::Value` tree; replaces `data`.
    pub raw: Option<String>,
    /// The whole body, `{"data":…}`, already written; replaces the rest.
    pub body: Option<Bytes>,
}

impl From<serde_json::Value> for Reply {
    fn from(data: serde_json::Value) -> Self {
        Reply {
            data,
            total: None,
            raw: None,
            body: None,
        }
    }
}

impl Reply {
    /// A page of a longer list.
    pub fn page(data: serde_json::Value, total: usize) -> Self {
        Reply {
            data,
            total: Some(total),
            raw: None,
            body: None,
        }
    }

    /// An answer whose `data` is `value` serialized as it is.
    pub fn serialized(value: &impl serde::Serialize) -> Result<Self, ApiError> {
        let raw = serde_json::to_string(value)
            .map_err(|e| ApiError::failed(format!("cannot serialize the answer: {e}")))?;
        Ok(Reply {
            data: serde_json::Value::Null,
            total: None,
            raw: Some(raw),
            body: None,
        })
    }

    /// An answer whose whole body, envelope included, is `body`.
    pub fn body(body: Bytes) -> Self {
        Reply {
            data: serde_json::Value::Null,
            total: None,
            raw: None,
            body: Some(body),
        }
    }
}

/// What an endpoint answers: the `data` of a successful call or an error.
pub type ApiResult = Result<Reply, ApiError>;

/// The HTTP response type apid writes.
pub type HttpResponse = hyper::Response<Full<Bytes>>;

/// Turns an endpoint's result into an HTTP response in Proxmox's envelope.
pub fn to_http_response(result: ApiResult) -> HttpResponse {
    match result {
        Ok(Reply {
            body: Some(body), ..
        }) => json_response(StatusCode::OK, None, body),
        Ok(reply) => {
            let data = match reply.raw {
                Some(raw) => raw,
                None => reply.data.to_string(),
            };
            let mut body = String::with_capacity(data.len() + 32);
            body.push_str("{\"data\":");
            body.push_str(&data);
            if let Some(total) = reply.total {
                body.push_str(",\"total\":");
                body.push_str(&total.to_string());
            }
            body.push('}');
            json_response(StatusCode::OK, None, Bytes::from(body))
        }
        Err(error) => {
            let body = if error.param_errors.is_empty() {
                json!({ "data": null })
            } else {
                json!({ "data": null, "errors": error.param_errors })
            };
            json_response(
                error.status,
                Some(&error.message),
                Bytes::from(body.to_string()),
            )
        }
    }
}

fn json_response(status: StatusCode, reason: Option<&str>, body: Bytes) -> HttpResponse {
    let mut response = hyper::Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/json;charset=UTF-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=0"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    if let Some(reason) = reason {
        response.extensions_mut().insert(reason_phrase(reason));
    }
    response
}

/// A reason phrase from arbitrary text: bytes that HTTP does not allow in a
/// reason phrase become `?`, and overlong text is cut.
fn reason_phrase(text: &str) -> hyper::ext::ReasonPhrase {
    const MAX_LEN: usize = 200;
    let bytes: Vec<u8> = text
        .bytes()
        .take(MAX_LEN)
        .map(|b| {
            if b == b'\t' || (b' '..=b'~').contains(&b) {
                b
            } else {
                b'?'
            }
        })
        .collect();
    hyper::ext::ReasonPhrase::try_from(bytes)
        .unwrap_or_else(|_| hyper::ext::ReasonPhrase::from_static(b"Error"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn body_json(response: HttpResponse) -> serde_json::Value {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn success_is_wrapped_in_data() {
        let response = to_http_response(Ok(json!({"version": "8.2.0"}).into()));
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .is_none());
        assert_eq!(
            response.headers()[CONTENT_TYPE],
            "application/json;charset=UTF-8"
        );
        assert_eq!(
            body_json(response).await,
            json!({"data": {"version": "8.2.0"}})
        );
    }

    #[tokio::test]
    async fn error_sets_reason_and_null_data() {
        let response = to_http_response(Err(ApiError::unauthorized("No ticket")));
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .unwrap();
        assert_eq!(reason.as_bytes(), b"No ticket");
        assert_eq!(body_json(response).await, json!({"data": null}));
    }

    #[tokio::test]
    async fn parameter_error_lists_parameters() {
        let response = to_http_response(Err(ApiError::parameter(
            "username",
            "property is missing and it is not optional",
        )));
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let reason = response
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .unwrap();
        assert_eq!(reason.as_bytes(), PARAMETER_ERROR_REASON.as_bytes());
        assert_eq!(
            body_json(response).await,
            json!({"data": null, "errors": {"username": "property is missing and it is not optional"}})
        );
    }

    #[test]
    fn reason_phrase_is_sanitised() {
        let reason = reason_phrase("Method 'GET /\u{e9}\r\n' not implemented");
        assert_eq!(reason.as_bytes(), b"Method 'GET /????' not implemented");
    }
}
