//! respond: the one place where refusals and failures become HTTP responses.
//! The status comes from where the problem came from: the caller (4xx), the upstream (502/504), or us (500/503).

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::BoxBody};

/// The body type of every response the proxy produces.
pub type ProxyBody = BoxBody<Bytes, BoxError>;
/// A boxed error for bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request was not forwarded, or failed on the way.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No or bad credential.
    #[error("unauthenticated: {message}")]
    Unauthenticated {
        /// Caller-safe reason.
        message: String,
        /// The `WWW-Authenticate` challenge.
        challenge: String,
    },
    /// A policy denied it.
    #[error("denied")]
    Denied {
        /// Caller-visible reason.
        reason: String,
    },
    /// No route matches.
    #[error("no route")]
    Unmatched,
    /// The path was refused by normalization.
    #[error("bad path: {0}")]
    BadPath(String),
    /// A request jitgate will not decide on: conflicting hosts, an unreadable credential or forwarding header, a
    /// context header sent twice. The message says which.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A method jitgate never forwards (`CONNECT`, `TRACE`).
    #[error("method not allowed: {0}")]
    MethodNotAllowed(String),
    /// The body is over the limit.
    #[error("body too large")]
    BodyTooLarge,
    /// Held for approval (the approval id).
    #[error("held for approval")]
    Held {
        /// The pending approval's id.
        approval_id: String,
        /// How the caller can follow up.
        message: String,
    },
    /// No upstream configured for the route's service, or it could not be reached.
    #[error("upstream unavailable: {0}")]
    UpstreamUnavailable(String),
    /// The upstream did not answer in time.
    #[error("upstream timeout")]
    UpstreamTimeout,
    /// The decision log could not take the record (fail-closed) or failed.
    #[error("decision log unavailable: {0}")]
    LogUnavailable(String),
    /// Anything else on our side.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Refusal {
    /// The HTTP status for this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Refusal::Denied { .. } => StatusCode::FORBIDDEN,
            Refusal::Unmatched => StatusCode::NOT_FOUND,
            Refusal::BadPath(_) | Refusal::BadRequest(_) => StatusCode::BAD_REQUEST,
            Refusal::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Held { .. } => StatusCode::ACCEPTED,
            Refusal::UpstreamUnavailable(_) => StatusCode::BAD_GATEWAY,
            Refusal::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Refusal::LogUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Unauthenticated { .. } => "unauthenticated",
            Refusal::Denied { .. } => "denied",
            Refusal::Unmatched => "no_route",
            Refusal::BadPath(_) => "bad_path",
            Refusal::BadRequest(_) => "bad_request",
            Refusal::MethodNotAllowed(_) => "method_not_allowed",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::Held { .. } => "approval_required",
            Refusal::UpstreamUnavailable(_) => "upstream_unavailable",
            Refusal::UpstreamTimeout => "upstream_timeout",
            Refusal::LogUnavailable(_) => "log_unavailable",
            Refusal::Internal(_) => "internal",
        }
    }

    /// What the caller may be told (never internals of the upstream or our errors).
    fn public_message(&self) -> String {
        match self {
            Refusal::Unauthenticated { message, .. } => message.clone(),
            Refusal::Denied { reason } => reason.clone(),
            Refusal::Unmatched => "no route matches this request".into(),
            Refusal::BadPath(m) | Refusal::BadRequest(m) | Refusal::MethodNotAllowed(m) => {
                m.clone()
            }
            Refusal::BodyTooLarge => "request body is larger than allowed".into(),
            Refusal::Held { message, .. } => message.clone(),
            Refusal::UpstreamUnavailable(_) => "the upstream service is unavailable".into(),
            Refusal::UpstreamTimeout => "the upstream service did not answer in time".into(),
            Refusal::LogUnavailable(_) => "the decision log is unavailable; request refused".into(),
            Refusal::Internal(_) => "internal error".into(),
        }
    }

    /// The response: JSON `{"error", "message", "decision_id"[, "approval_id"]}`.
    pub fn into_response(self, decision_id: &str) -> Response<ProxyBody> {
        let mut body = serde_json::json!({
            "error": self.code(),
            "message": self.public_message(),
            "decision_id": decision_id,
        });
        if let (Refusal::Held { approval_id, .. }, Some(obj)) = (&self, body.as_object_mut()) {
            obj.insert(
                "approval_id".into(),
                serde_json::Value::String(approval_id.clone()),
            );
        }
        let mut resp = json_response(self.status(), &body);
        if let Refusal::Unauthenticated { challenge, .. } = &self {
            if let Ok(v) = HeaderValue::from_str(challenge) {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if let Ok(v) = HeaderValue::from_str(decision_id) {
            resp.headers_mut().insert("x-jitgate-decision-id", v);
        }
        if matches!(self, Refusal::BodyTooLarge) {
            // The body is left unread, so the connection cannot carry another request (RFC 9112, section 9.6).
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// A JSON response with the given status.
pub fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<ProxyBody> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A complete body from bytes.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}
