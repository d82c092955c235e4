//! jitgate's data plane and control API: listeners, TLS, authentication, routing, forwarding, holds, the admin API
//! and hot reload. Each request stage lives in a module named after its verb (see the design's stage list).

pub mod authenticate;
