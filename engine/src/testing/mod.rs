//! Policy unit tests: suite files (fixtures, a frozen clock, JIT grants, expected decisions) run against bundles.
//! Parsing is [`suite`], evaluation [`runner`], output [`report`]; the `jitgate` command and `cargo test` drive them.

pub mod suite;
