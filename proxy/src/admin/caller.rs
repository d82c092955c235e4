//! The one way an admin handler finds its caller: an extractor that hands the bearer token and how the call arrived
//! to the access service, which authenticates and logs a refusal; the rejection is the service's error as JSON.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;

use super::error::ApiError;
use crate::access::{AccessService, CallInfo, Caller};

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    AccessService: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Without ConnectInfo (a router served without it) the peer is unknown: 0.0.0.0 matches no allow-list.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
        let header = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let call = CallInfo {
            client: peer.ip().to_canonical().to_string(),
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or("").to_string(),
            host: header(header::HOST),
        };
        // A console session stands in for the bearer token (see `console::session_layer`): same caller, same
        // policies.
        if let Some(s) = parts.extensions.get::<super::console::SessionIdentity>() {
            return Ok(AccessService::from_ref(state).session_caller(s.identity.clone(), call));
        }
        AccessService::from_ref(state)
            .authenticate(header(header::AUTHORIZATION), call)
            .await
            .map_err(ApiError::from)
    }
}
