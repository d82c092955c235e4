//! jitgate's data plane and control API.
//!
//! One request flows through the stages `accept (TLS) -> admit -> authenticate -> map -> authorize -> [hold] ->
//! forward -> respond -> log`; each stage is a module named after its verb. Start-up is two steps:
//! [`prepare::prepare`] checks a validated [`config::Config`] without side effects (`jitgate check` stops there),
//! and [`run::run`] opens the store and the log, binds the listeners and starts the background tasks.

pub mod access;
pub mod admin;
pub mod admit;
pub mod authenticate;
pub mod authorize;
pub mod config;
pub mod decision_log;
pub mod demo;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod hold;
pub mod listener;
pub mod map;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod prepare;
pub mod quickstart;
pub mod reload;
pub mod respond;
pub mod retention;
pub mod run;
pub mod server;
pub mod shadow;
pub mod state;
pub mod telemetry;
pub mod tls;
pub mod trace;
