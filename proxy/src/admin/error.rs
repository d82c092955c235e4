//! The one error answer of the admin API, JSON `{"error", "message"[, "field"]}`, and the one map from the access
//! service's errors to it: 400 bad input (naming the field), 401, 403, 404, 409, 500.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use jitgate_engine::authorize::EntityError;
use jitgate_engine::lifecycle::LifecycleError;
use serde_json::{Value, json};

use crate::access::{AccessError, CallerError};

/// An admin API error as JSON `{"error", "message"[, "field"]}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
}

impl ApiError {
    /// An error without a field.
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
        }
    }

    /// A 400 for a request body that does not parse, from the parser's `message`; `field` is the body field it
    /// names (an unknown, missing or mistyped field), when it names one.
    pub(crate) fn bad_body(message: &str) -> Self {
        // serde names the field for unknown or mistyped fields; keep its words.
        let field = message
            .split('`')
            .nth(1)
            .filter(|_| message.contains("field"))
            .map(str::to_string);
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: format!("request body: {message}"),
            field,
        }
    }

    /// The HTTP status.
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }

    /// The message, for people.
    pub(crate) fn message(&self) -> &str {
        &self.message
    }

    /// A 400 naming the bad `field` (a body field or query parameter).
    pub(crate) fn bad_field(field: &str, message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: "bad_request",
            message: format!("{field}: {}", message.into()),
            field: Some(field.to_string()),
        }
    }

    /// A 400 for a query string that does not parse, with the parser's words.
    pub(crate) fn bad_query(message: String) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// Names `field` as the bad one (a body path the parser pointed at).
    pub(crate) fn with_field(mut self, field: String) -> Self {
        self.field = Some(field);
        self
    }

    /// The 500 of a task that failed (it panicked or was cancelled).
    pub(crate) fn task_failed(what: &str, e: &tokio::task::JoinError) -> Self {
        tracing::error!(error = %e, task = what, "admin task failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the {what} task failed: {e}"),
        )
    }

    /// A 500 with `message`.
    fn internal(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.code, "message": self.message });
        if let (Some(f), Some(o)) = (self.field, body.as_object_mut()) {
            o.insert("field".into(), Value::String(f));
        }
        let mut response = (self.status, axum::Json(body)).into_response();
        // RFC 6750: a 401 says how to authenticate, as the data plane's do.
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer realm=\"jitgate\""),
            );
        }
        response
    }
}

impl From<CallerError> for ApiError {
    fn from(e: CallerError) -> Self {
        let message = e.to_string();
        match e {
            CallerError::Unauthenticated(_) | CallerError::GrantEnded => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
            }
            CallerError::GrantBound(_) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            CallerError::Task(_) => ApiError::internal(message),
        }
    }
}

impl From<AccessError> for ApiError {
    fn from(e: AccessError) -> Self {
        let message = e.to_string();
        match e {
            AccessError::Lifecycle(e) => ApiError::from(e),
            AccessError::NotYours => ApiError::new(StatusCode::FORBIDDEN, "forbidden", message),
            AccessError::BadInput { field, .. } => ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad_request",
                message,
                field: Some(field.to_string()),
            },
            AccessError::NoIssuer => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            AccessError::Duplicate { .. } => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            AccessError::Mint(_) | AccessError::Task(_) => ApiError::internal(message),
            AccessError::Entities(EntityError::Invalid(_)) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
            }
            AccessError::Entities(EntityError::NoStore) => {
                ApiError::new(StatusCode::CONFLICT, "conflict", message)
            }
            AccessError::Entities(e) => {
                tracing::error!(error = %e, "entity store error");
                ApiError::internal("internal error; the entity data was not changed")
            }
        }
    }
}

impl From<LifecycleError> for ApiError {
    fn from(e: LifecycleError) -> Self {
        let message = e.to_string();
        match e {
            LifecycleError::BadInput { field, .. } => ApiError {
                status: StatusCode::BAD_REQUEST,
                code: "bad_request",
                message,
                field: Some(field),
            },
            LifecycleError::Forbidden { .. } => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
            }
            LifecycleError::NotFound(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            }
            LifecycleError::Conflict(_) => ApiError::new(StatusCode::CONFLICT, "conflict", message),
            other => {
                tracing::error!(error = %other, "lifecycle store error");
                ApiError::internal(
                    "internal error; nothing was changed or the change is on disk (check the request)",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_error_answers_with_its_status_code_and_field() {
        let cases: Vec<(ApiError, u16, &str, &str, Option<&str>)> = vec![
            (
                CallerError::GrantEnded.into(),
                401,
                "unauthenticated",
                "the token's grant is no longer active",
                None,
            ),
            (
                CallerError::GrantBound("g1".into()).into(),
                403,
                "forbidden",
                "a token bound to grant g1 works on the data plane only; call the admin API with your own token",
                None,
            ),
            (
                AccessError::NotYours.into(),
                403,
                "forbidden",
                "listRequests denied: not your request and no policy allows listing others'",
                None,
            ),
            (
                AccessError::NoIssuer.into(),
                409,
                "conflict",
                "no [local_issuer] is configured; jitgate cannot mint tokens",
                None,
            ),
            (
                AccessError::BadInput {
                    field: "ttl",
                    reason: "too short".into(),
                }
                .into(),
                400,
                "bad_request",
                "ttl: too short",
                Some("ttl"),
            ),
            (
                AccessError::from(LifecycleError::NotFound("grant `g1`".into())).into(),
                404,
                "not_found",
                "grant `g1` not found",
                None,
            ),
            (
                AccessError::from(LifecycleError::Conflict("already approved".into())).into(),
                409,
                "conflict",
                "already approved",
                None,
            ),
        ];
        for (e, status, code, message, field) in cases {
            assert_eq!(e.status.as_u16(), status, "{e:?}");
            assert_eq!(e.code, code, "{e:?}");
            assert_eq!(e.message, message, "{e:?}");
            assert_eq!(e.field.as_deref(), field, "{e:?}");
        }
    }
}
