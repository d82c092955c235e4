//! Entry points for the fuzz targets in `tools/fuzz` (not a stable API): private parsing steps of the admit stage,
//! reached with exactly the inputs a request would give them.

use http::{HeaderValue, Request, Uri, header};

/// The admit stage's host (see [`crate::admit::Admitted::host`]) for a request whose target is `target` and whose
/// `Host` header values are `hosts`, in order. `None` when `http` itself would not carry such a request (a target
/// that is not a URI, a header value with bytes a header cannot hold): hyper refuses those before admit runs.
pub fn request_host(target: &[u8], hosts: &[&[u8]]) -> Option<Result<Option<String>, String>> {
    let uri = Uri::try_from(target).ok()?;
    let mut req = Request::new(());
    *req.uri_mut() = uri;
    for h in hosts {
        let v = HeaderValue::from_bytes(h).ok()?;
        req.headers_mut().append(header::HOST, v);
    }
    Some(crate::admit::request_host(&req))
}
