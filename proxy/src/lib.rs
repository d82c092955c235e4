//! jitgate's data plane and control API.
//!
//! One request flows through the stages `accept (TLS) -> admit -> authenticate -> map -> authorize -> [hold] ->
//! forward -> respond -> log`; each stage is a module named after its verb. [`state::start`] assembles the proxy
//! from a validated [`config::Config`] and binds its listeners.

pub mod access;
pub mod admin;
pub mod admit;
pub mod authenticate;
pub mod config;
pub mod decision_log;
pub mod demo;
pub mod forward;
pub mod hold;
pub mod metrics;
pub mod notify;
pub mod pipeline;
pub mod quickstart;
pub mod reload;
pub mod respond;
pub mod retention;
pub mod server;
pub mod shadow;
pub mod state;
pub mod tls;
