//! Why the access service refused or failed: one error for finding the caller, one for the commands. Front ends map
//! these to their own answers (the admin API to status codes); nothing here knows of HTTP.

use jitgate_engine::lifecycle::LifecycleError;

use crate::authenticate::AuthError;

/// Why a caller could not be established ([`super::AccessService::authenticate`]). Every refusal is already in the
/// decision log when this is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallerError {
    /// No valid credential (a 401 in the admin API); shows only the caller-safe message of the cause.
    #[error("{}", .0.public_message())]
    Unauthenticated(#[source] AuthError),
    /// A grant-bound token whose grant is no longer active (401).
    #[error("the token's grant is no longer active")]
    GrantEnded,
    /// A grant-bound token, which proves identity on the data plane only (403).
    #[error(
        "a token bound to grant {0} works on the data plane only; call the admin API with your own token"
    )]
    GrantBound(String),
    /// The task finding the caller failed (it panicked or was cancelled).
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}

/// Why an access command failed. A refusal by the policies is already in the decision log when this is returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// The lifecycle refused (bad input, policy, unknown id, invalid transition) or its store failed.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// Someone else's request, shown only to callers the policies allow to `listRequests`.
    #[error("listRequests denied: not your request and no policy allows listing others'")]
    NotYours,
    /// A command input that is not valid: the field and why.
    #[error("{field}: {reason}")]
    BadInput {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The caller already has this very request pending (same role, scope, duration, reason, ticket, start).
    #[error(
        "you already have this request pending (role `{role}` on `{scope}`, same duration and reason): {id}; it waits for approval (see `jitgate request show {id}`)"
    )]
    Duplicate {
        /// The pending request.
        id: String,
        /// Its role.
        role: String,
        /// Its scope.
        scope: String,
    },
    /// A token was asked for but no `[local_issuer]` is configured.
    #[error("no [local_issuer] is configured; jitgate cannot mint tokens")]
    NoIssuer,
    /// The token could not be signed.
    #[error(transparent)]
    Mint(AuthError),
    /// A change of the store's entity data was refused or failed.
    #[error(transparent)]
    Entities(#[from] jitgate_engine::authorize::EntityError),
    /// The task running the command failed (it panicked or was cancelled).
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
}
