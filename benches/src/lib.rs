//! Shared set-up for jitgate's benchmarks: synthetic bundles of any size, a grant population, and one realistic
//! request decided through [`jitgate_engine::Authorizer`]. No timing lives here: criterion and the report tool time it.

pub mod scenario;
pub mod synth;

pub use scenario::{BenchError, Scenario};
