//! jitgate's decision core.
//!
//! Requests ([`request`]) are decided by a [`bundle::Bundle`] — Cedar or Rego policies behind one
//! [`backend::PolicyBackend`] trait — against the caller's active JIT [`grant`]s, which the policies see as entities.
//! The engine has no HTTP server and no async runtime in its API: the proxy and the tools drive it.

pub mod access;
pub mod authorize;
pub mod backend;
pub mod bundle;
pub mod cedar;
pub mod clock;
pub mod decision;
pub mod diag;
pub mod entity;
pub mod explain;
#[doc(hidden)]
pub mod fuzzing;
pub mod grant;
pub mod input;
pub mod lifecycle;
pub mod log;
pub mod manifest;
pub mod overlay;
pub mod postgres;
pub mod rego;
pub mod request;
pub mod routes;
pub mod sqlite;
pub mod store;
pub mod testing;

pub use authorize::Authorizer;
pub use bundle::Bundle;
pub use clock::{Clock, UnixTime};
pub use decision::{Decision, Effect, EngineKind, Evaluation};
pub use diag::{Diagnostic, Diagnostics};
pub use entity::EntityRef;
pub use explain::Explanation;
pub use grant::{Grant, GrantIndex, GrantStatus};
pub use input::DecisionInput;
pub use request::{AuthzRequest, Context, Principal, Resource};
