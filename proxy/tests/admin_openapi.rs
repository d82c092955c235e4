//! Keeps `schemas/admin-api.openapi.json` honest: the document lists exactly the (method, path) pairs that the admin
//! router serves (read from the `.route(` calls of proxy/src/admin/mod.rs and proxy/src/admin/access.rs, and checked
//! against the live listener: every documented pair is routed, every other method on a documented path is a 405),
//! and live answers of the real proxy — success and error alike — match the document's response schemas, status
//! codes and media types. Loopback only; every call is bounded by a client timeout.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod lifecycle_common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use jitgate_engine::Clock;
use lifecycle_common::{Env, T0};
use serde_json::{Value, json};

/// Where the document is taken to live, so that its relative `$ref`s resolve as they do on disk.
const DOC_URI: &str = "https://example.invalid/jitgate/schemas/admin-api.openapi.json";

/// The admin router's source, scanned for its routes.
const ADMIN_SRC: &str = include_str!("../src/admin/mod.rs");
/// The access router's source, merged into the admin router.
const LIFECYCLE_SRC: &str = include_str!("../src/admin/access.rs");
/// The approver console's router, merged into the admin router: HTML pages under `/ui`, which the document (the
/// JSON API) does not describe; everything it routes must stay under `/ui`.
const CONSOLE_SRC: &str = include_str!("../src/admin/console/mod.rs");

/// The HTTP methods an OpenAPI path item may hold, as the keys it uses.
const OPENAPI_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A placeholder for `{id}` in live calls: well-formed, never an existing request or grant.
const NO_SUCH_ID: &str = "00000000-0000-7000-8000-000000000000";

fn repo(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn read_json(rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(repo(rel)).unwrap())
        .unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

fn doc() -> Value {
    read_json("schemas/admin-api.openapi.json")
}

// ---------------------------------------------------------------------------------------------------------------
// The routes in the source

/// `src` without `//` comments (string literals kept whole, so `"http://..."` survives).
fn strip_comments(src: &str) -> String {
    let mut out = String::with_capacity(src.len());
    let mut chars = src.chars().peekable();
    let mut in_str = false;
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                }
                '"' => in_str = false,
                _ => {}
            }
        } else if c == '"' {
            in_str = true;
            out.push(c);
        } else if c == '/' && chars.peek() == Some(&'/') {
            for n in chars.by_ref() {
                if n == '\n' {
                    out.push('\n');
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The text from `open` (an index of `(` or `{`) to its matching close, exclusive of both; string-aware.
fn balanced(src: &str, open: usize) -> &str {
    let bytes = src.as_bytes();
    let (o, c) = match bytes[open] {
        b'(' => (b'(', b')'),
        b'{' => (b'{', b'}'),
        other => panic!("not an opening bracket: {}", other as char),
    };
    let mut depth = 0usize;
    let mut in_str = false;
    let mut i = open;
    while i < bytes.len() {
        let b = bytes[i];
        if in_str {
            if b == b'\\' {
                i += 1;
            } else if b == b'"' {
                in_str = false;
            }
        } else if b == b'"' {
            in_str = true;
        } else if b == o {
            depth += 1;
        } else if b == c {
            depth -= 1;
            if depth == 0 {
                return &src[open + 1..i];
            }
        }
        i += 1;
    }
    panic!("unbalanced bracket at byte {open}");
}

/// The body of `pub fn router(` in `src` (comments stripped).
fn router_body(src: &str) -> String {
    let src = strip_comments(src);
    let start = src.find("fn router(").expect("a `fn router(` function");
    let brace = start + src[start..].find('{').unwrap();
    balanced(&src, brace).to_string()
}

/// Identifiers directly followed by `(` in `expr`, in order.
fn calls(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut ident = String::new();
    let mut in_str = false;
    let mut spaced = false;
    let mut prev = ' ';
    for c in expr.chars() {
        if in_str {
            if c == '"' && prev != '\\' {
                in_str = false;
            }
            prev = c;
            continue;
        }
        if c == '"' {
            in_str = true;
            ident.clear();
        } else if c.is_ascii_alphanumeric() || c == '_' {
            if spaced {
                ident.clear();
            }
            spaced = false;
            ident.push(c);
        } else if c.is_whitespace() {
            // `get (x)` is still a call of `get`; `a b(` is a call of `b`.
            spaced = true;
        } else {
            spaced = false;
            if c == '(' && !ident.is_empty() {
                out.push(std::mem::take(&mut ident));
            }
            ident.clear();
        }
        prev = c;
    }
    out
}

/// The (METHOD, path) pairs of every `.route(path, method_router)` in one router body. Anything this scan does not
/// understand fails the test, so a route cannot slip in unseen.
fn scan_routes(body: &str, file: &str) -> BTreeSet<(String, String)> {
    // The JSON 404 for paths the API does not have serves no route of its own; any other fallback is refused below.
    let body = body.replace(".fallback(unknown_route)", "");
    let body = body.as_str();
    for banned in [
        ".nest(",
        ".nest_service(",
        ".route_service(",
        ".fallback(",
        ".fallback_service(",
    ] {
        assert!(
            !body.contains(banned),
            "{file}: `{banned}` adds routes this test cannot read; document them and teach scan_routes"
        );
    }
    let mut out = BTreeSet::new();
    let mut rest = body;
    while let Some(at) = rest.find(".route(") {
        let open = at + ".route(".len() - 1;
        let args = balanced(rest, open);
        let args_trim = args.trim_start();
        assert!(
            args_trim.starts_with('"'),
            "{file}: a .route( whose path is not a string literal: {args}"
        );
        let lit_end = 1 + args_trim[1..].find('"').unwrap();
        let path = &args_trim[1..lit_end];
        let method_router = args_trim[lit_end + 1..]
            .trim_start()
            .strip_prefix(',')
            .unwrap_or_else(|| panic!("{file}: .route(\"{path}\" without a method router"));
        let mut methods = 0;
        for call in calls(method_router) {
            match call.as_str() {
                "get" | "post" | "put" | "delete" | "patch" | "head" | "options" | "trace" => {
                    out.insert((call.to_uppercase(), path.to_string()));
                    methods += 1;
                }
                other => panic!(
                    "{file}: .route(\"{path}\", ...) calls `{other}(`, which this test does not understand \
                     (any/on/services match methods it cannot list); document the route and teach scan_routes"
                ),
            }
        }
        assert!(methods > 0, "{file}: .route(\"{path}\") with no method");
        rest = &rest[open + args.len() + 2..];
    }
    out
}

/// Every (METHOD, path) the admin listener serves, read from the source.
fn served_routes() -> BTreeSet<(String, String)> {
    let admin = router_body(ADMIN_SRC);
    let lifecycle = router_body(LIFECYCLE_SRC);
    // Every `.route(` of each file is inside its router() (none hide in another function).
    for (name, src, body) in [
        ("admin/mod.rs", ADMIN_SRC, &admin),
        ("admin/access.rs", LIFECYCLE_SRC, &lifecycle),
    ] {
        assert_eq!(
            strip_comments(src).matches(".route(").count(),
            body.matches(".route(").count(),
            "{name}: routes outside router(); document them and teach this test"
        );
    }
    // The admin router merges exactly the access router; the access router merges nothing.
    let merges: Vec<String> = admin
        .match_indices(".merge(")
        .map(|(at, m)| {
            balanced(&admin, at + m.len() - 1)
                .split_whitespace()
                .collect()
        })
        .collect();
    assert_eq!(
        merges,
        vec![
            "access::router(proxy.access.clone())".to_string(),
            "console::router(console.clone())".to_string()
        ],
        "admin/mod.rs merges another router; scan it here too"
    );
    // The console's pages are no part of the JSON API, and none of them may hide an API route.
    let console = router_body(CONSOLE_SRC);
    assert_eq!(
        strip_comments(CONSOLE_SRC).matches(".route(").count(),
        console.matches(".route(").count(),
        "admin/console/mod.rs: routes outside router(); document them and teach this test"
    );
    assert!(
        !console.contains(".merge("),
        "admin/console/mod.rs merges a router"
    );
    let pages = scan_routes(&console, "admin/console/mod.rs");
    assert!(
        pages.len() >= 5,
        "the console's routes were read: {pages:?}"
    );
    for (method, path) in &pages {
        assert!(
            path == "/ui" || path.starts_with("/ui/"),
            "the console routes {method} {path}, outside /ui: an API route belongs in the document"
        );
    }
    assert!(
        !lifecycle.contains(".merge("),
        "admin/access.rs merges a router"
    );
    let mut all = scan_routes(&admin, "admin/mod.rs");
    all.extend(scan_routes(&lifecycle, "admin/access.rs"));
    all
}

/// Every (METHOD, path) the document describes.
fn documented_routes(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (key, _) in item.as_object().unwrap() {
            if OPENAPI_METHODS.contains(&key.as_str()) {
                out.insert((key.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

#[test]
fn the_route_scan_understands_the_router_shapes_in_use() {
    let body = r#"
        Router::new()
            .route("/a", get(a)) // .route("/commented", get(x))
            .route("/b/{id}", get(b).post(c).delete(d))
            .route("/c", axum::routing::post(e))
    "#;
    let got = scan_routes(&strip_comments(body), "test");
    let want: BTreeSet<(String, String)> = [
        ("GET", "/a"),
        ("GET", "/b/{id}"),
        ("POST", "/b/{id}"),
        ("DELETE", "/b/{id}"),
        ("POST", "/c"),
    ]
    .into_iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(got, want);
    let any = std::panic::catch_unwind(|| scan_routes(r#".route("/x", any(h))"#, "test"));
    assert!(any.is_err(), "`any(` must not pass unseen");
}

#[test]
fn the_document_lists_exactly_the_routes_the_router_serves() {
    let doc = doc();
    let served = served_routes();
    let documented = documented_routes(&doc);
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let not_served: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty() && not_served.is_empty(),
        "served but not in schemas/admin-api.openapi.json: {undocumented:?}; documented but not served: {not_served:?}"
    );
    // The issue's list, as a floor under the scan itself.
    for (m, p) in [
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/v1/status"),
        ("POST", "/v1/reload"),
        ("GET", "/v1/shadow"),
        ("POST", "/v1/shadow"),
        ("DELETE", "/v1/shadow"),
        ("GET", "/v1/decisions"),
        ("POST", "/v1/requests"),
        ("GET", "/v1/requests"),
        ("GET", "/v1/requests/{id}"),
        ("POST", "/v1/requests/{id}/approve"),
        ("POST", "/v1/requests/{id}/deny"),
        ("GET", "/v1/grants"),
        ("POST", "/v1/grants/{id}/revoke"),
        ("POST", "/v1/grants/{id}/drop"),
        ("POST", "/v1/grants/{id}/token"),
    ] {
        assert!(
            served.contains(&(m.to_string(), p.to_string())),
            "the scan missed {m} {p}"
        );
    }
}

#[test]
fn the_document_is_well_formed_and_every_schema_compiles() {
    let doc = doc();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["security"], json!([{ "bearer": [] }]));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"],
        json!({
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": doc["components"]["securitySchemes"]["bearer"]["description"],
        })
    );
    // The decision-record schema is referenced, not copied: its $id is where the relative $ref points.
    let record = read_json("schemas/decision-record.schema.json");
    assert_eq!(
        doc["components"]["schemas"]["DecisionRecord"]["$ref"],
        "decision-record.schema.json"
    );
    assert_eq!(
        record["$id"].as_str().unwrap(),
        DOC_URI.replace("admin-api.openapi.json", "decision-record.schema.json")
    );

    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let template_params: BTreeSet<String> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(str::to_string)
            .collect();
        for (method, op) in item.as_object().unwrap() {
            let what = format!("{} {path}", method.to_uppercase());
            let id = op["operationId"]
                .as_str()
                .unwrap_or_else(|| panic!("{what}: operationId"));
            assert!(
                ids.insert(id.to_string()),
                "{what}: duplicate operationId {id}"
            );
            let declared: BTreeSet<String> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .map(|p| {
                            assert_eq!(p["required"], true, "{what}: path parameters are required");
                            p["name"].as_str().unwrap().to_string()
                        })
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(declared, template_params, "{what}: path parameters");
            let responses = op["responses"].as_object().unwrap();
            if path.starts_with("/v1/") {
                assert!(
                    op.get("security").is_none(),
                    "{what}: /v1 calls need the bearer token"
                );
                assert!(responses.contains_key("401"), "{what}: documents its 401");
                assert!(responses.contains_key("403"), "{what}: documents its 403");
            } else {
                assert_eq!(op["security"], json!([]), "{what}: probes need no token");
            }
            for (status, _) in responses {
                for (media, schema_ptr) in response_schemas(&doc, method, path, status) {
                    if media == "application/json" {
                        validator(&schema_ptr);
                    }
                }
            }
            if let Some(body) = op.get("requestBody") {
                let s = &body["content"]["application/json"]["schema"];
                assert!(s.is_object(), "{what}: a JSON request body");
                let ptr = format!(
                    "/paths/{}/{method}/requestBody/content/application~1json/schema",
                    escape(path)
                );
                validator(&ptr);
            }
        }
    }
}

#[test]
fn every_v1_error_is_documented_as_an_api_error() {
    let doc = doc();
    for (path, item) in doc["paths"].as_object().unwrap() {
        if !path.starts_with("/v1/") {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            for (status, _) in op["responses"].as_object().unwrap() {
                let code: u16 = status.parse().unwrap();
                // 422 of reload and shadow is a result (ReloadAttempt, DiagnosticList), not an error.
                if code < 400 || code == 422 {
                    continue;
                }
                let what = format!("{} {path} -> {status}", method.to_uppercase());
                let schemas = response_schemas(&doc, method, path, status);
                let media: Vec<&str> = schemas.iter().map(|(m, _)| m.as_str()).collect();
                assert_eq!(media, ["application/json"], "{what}: JSON only");
                let schema = doc.pointer(&schemas[0].1).unwrap();
                assert_eq!(
                    schema,
                    &json!({ "$ref": "#/components/schemas/ApiError" }),
                    "{what}: one error shape"
                );
            }
        }
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    assert!(
        !schemas.contains_key("ShadowError"),
        "no second error shape"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Validation against the document

/// A JSON Pointer token, escaped.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A JSON Pointer made safe for a URI fragment.
fn fragment(pointer: &str) -> String {
    let mut out = String::new();
    for b in pointer.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A validator for the schema at `pointer` inside the document, with the document's own and external `$ref`s
/// resolvable; formats are checked too.
fn validator(pointer: &str) -> jsonschema::Validator {
    let doc = doc();
    let record = read_json("schemas/decision-record.schema.json");
    let record_uri = record["$id"].as_str().unwrap().to_string();
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .should_validate_formats(true)
        .with_resource(DOC_URI, jsonschema::Resource::from_contents(doc).unwrap())
        .with_resource(
            record_uri,
            jsonschema::Resource::from_contents(record).unwrap(),
        )
        .build(&json!({ "$ref": format!("{DOC_URI}#{}", fragment(pointer)) }))
        .unwrap_or_else(|e| panic!("the schema at {pointer} does not compile: {e}"))
}

/// The (media type, JSON Pointer of its schema) pairs of response `status` of `method path`, following a
/// `#/components/responses/...` reference.
fn response_schemas(doc: &Value, method: &str, path: &str, status: &str) -> Vec<(String, String)> {
    let mut ptr = format!("/paths/{}/{method}/responses/{status}", escape(path));
    let mut resp = doc.pointer(&ptr).unwrap_or_else(|| panic!("no {ptr}"));
    if let Some(r) = resp.get("$ref").and_then(Value::as_str) {
        ptr = r.strip_prefix('#').unwrap().to_string();
        resp = doc.pointer(&ptr).unwrap_or_else(|| panic!("dangling {r}"));
    }
    let content = resp["content"]
        .as_object()
        .unwrap_or_else(|| panic!("{ptr}: no content"));
    content
        .keys()
        .map(|media| {
            (
                media.clone(),
                format!("{ptr}/content/{}/schema", escape(media)),
            )
        })
        .collect()
}

/// One live answer.
struct Answer {
    status: u16,
    content_type: String,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or(Value::Null)
    }
}

/// The media type without parameters, lowercase.
fn essence(media: &str) -> String {
    media
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Checks `answer` to `method template` against the document: the status is documented for the operation, the
/// media type is one it names, and a JSON body matches its schema. Returns the JSON body.
fn conforms(doc: &Value, method: &str, template: &str, answer: &Answer) -> Value {
    let what = format!("{} {template} -> {}", method.to_uppercase(), answer.status);
    let op = &doc["paths"][template][method];
    assert!(op.is_object(), "{what}: not in the document");
    let status = answer.status.to_string();
    assert!(
        op["responses"].get(&status).is_some(),
        "{what}: status not documented; body: {}",
        answer.text
    );
    let schemas = response_schemas(doc, method, template, &status);
    let got = essence(&answer.content_type);
    let Some((media, ptr)) = schemas.iter().find(|(m, _)| essence(m) == got) else {
        panic!(
            "{what}: content-type `{}` is not among {:?}",
            answer.content_type,
            schemas.iter().map(|(m, _)| m).collect::<Vec<_>>()
        );
    };
    if media != "application/json" {
        return Value::Null;
    }
    let body: Value = serde_json::from_str(&answer.text)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {}", answer.text));
    let v = validator(ptr);
    let errors: Vec<String> = v
        .iter_errors(&body)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{what}: the answer does not match {ptr}:\n{}\n{body:#}",
        errors.join("\n")
    );
    body
}

// ---------------------------------------------------------------------------------------------------------------
// The live proxy

struct Live {
    env: Env,
    http: reqwest::Client,
    doc: Value,
}

impl Live {
    async fn start(dir: &Path) -> Live {
        let env = Env::start(dir, Clock::frozen(T0), |_| {}).await;
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Live {
            env,
            http,
            doc: doc(),
        }
    }

    /// `method url` with an optional bearer token and JSON body.
    async fn raw(
        &self,
        method: &str,
        path: &str,
        who: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let m = reqwest::Method::from_bytes(method.to_ascii_uppercase().as_bytes()).unwrap();
        let mut req = self.http.request(m, self.env.admin(path));
        if let Some(w) = who {
            req = req.bearer_auth(self.env.token(w));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = r.status().as_u16();
        let content_type = r
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = r.text().await.unwrap();
        Answer {
            status,
            content_type,
            text,
        }
    }

    /// Calls `method path` (an instance of `template`) and checks the answer against the document; asserts the
    /// status is `want`. Returns the JSON body.
    async fn call(
        &self,
        method: &str,
        template: &str,
        path: &str,
        who: Option<&str>,
        body: Option<Value>,
        want: u16,
    ) -> Value {
        let a = self.raw(method, path, who, body).await;
        assert_eq!(a.status, want, "{method} {path}: {}", a.text);
        conforms(&self.doc, &method.to_ascii_lowercase(), template, &a)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_documented_route_is_routed_and_no_other_method_is() {
    let dir = tempfile::tempdir().unwrap();
    let live = Live::start(dir.path()).await;
    let documented = documented_routes(&live.doc);
    let api_error = validator("/components/schemas/ApiError");
    let is_api_error = |a: &Answer, what: &str| {
        let body = a.json();
        let problems: Vec<String> = api_error
            .iter_errors(&body)
            .map(|e| e.to_string())
            .collect();
        assert!(
            problems.is_empty(),
            "{what}: {body} is not an ApiError: {problems:?}"
        );
    };
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        let concrete = path.replace("{id}", NO_SUCH_ID);
        for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            let a = live.raw(method, &concrete, None, None).await;
            if documented.contains(&(method.to_string(), path.clone())) {
                // Routed: protected calls answer 401 before anything else, probes answer as documented.
                if path.starts_with("/v1/") {
                    assert_eq!(a.status, 401, "{method} {concrete}: {}", a.text);
                    assert_eq!(a.json()["error"], "unauthenticated");
                } else {
                    assert_eq!(a.status, 200, "{method} {concrete}: {}", a.text);
                }
                conforms(&live.doc, &method.to_ascii_lowercase(), path, &a);
            } else {
                assert_eq!(
                    a.status, 405,
                    "{method} {concrete} is not documented, so it must not be served: {}",
                    a.text
                );
                is_api_error(&a, &format!("{method} {concrete}"));
            }
        }
    }
    // The fallbacks and the body limit answer with the one documented error shape and codes too.
    let a = live.raw("GET", "/v1/nope", None, None).await;
    assert_eq!(a.status, 404);
    is_api_error(&a, "GET /v1/nope");
    let huge = json!({ "reason": "x".repeat(3 << 20) });
    let a = live
        .raw("POST", "/v1/requests", Some("alice"), Some(huge))
        .await;
    assert_eq!(a.status, 413, "{}", a.text);
    is_api_error(&a, "POST /v1/requests with 3 MiB");
    live.env.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_answers_match_the_document() {
    let dir = tempfile::tempdir().unwrap();
    let live = Live::start(dir.path()).await;
    let l = &live;

    // Probes.
    l.call("get", "/healthz", "/healthz", None, None, 200).await;
    l.call("get", "/readyz", "/readyz", None, None, 200).await;
    let m = l.raw("GET", "/metrics", None, None).await;
    assert_eq!(m.content_type, "text/plain; version=0.0.4");
    conforms(&l.doc, "get", "/metrics", &m);

    // The lifecycle: alice asks, cannot approve her own request, bob approves.
    let created = l
        .call(
            "post",
            "/v1/requests",
            "/v1/requests",
            Some("alice"),
            Some(json!({
                "role": "payments-writer",
                "scope": "Service::\"payments\"",
                "duration": "30m",
                "reason": "INC-4211",
                "ticket": "INC-4211",
            })),
            201,
        )
        .await;
    assert_eq!(created["request"]["state"], "pending");
    let id = created["request"]["id"].as_str().unwrap().to_string();
    let one = format!("/v1/requests/{id}");
    let shown = l
        .call("get", "/v1/requests/{id}", &one, Some("alice"), None, 200)
        .await;
    assert_eq!(shown["request"], created["request"]);
    l.call(
        "get",
        "/v1/requests/{id}",
        &format!("/v1/requests/{NO_SUCH_ID}"),
        Some("alice"),
        None,
        404,
    )
    .await;
    let listed = l
        .call(
            "get",
            "/v1/requests",
            "/v1/requests?state=pending&limit=10",
            Some("alice"),
            None,
            200,
        )
        .await;
    assert_eq!(listed["requests"][0]["id"], id.as_str());
    let bad = l
        .call(
            "post",
            "/v1/requests",
            "/v1/requests",
            Some("alice"),
            Some(json!({"role": "payments-writer", "scope": "Service::\"payments\"", "duration": "soon"})),
            400,
        )
        .await;
    assert_eq!(bad["field"], "duration", "{bad}");
    let approve = format!("/v1/requests/{id}/approve");
    let own = l
        .call(
            "post",
            "/v1/requests/{id}/approve",
            &approve,
            Some("alice"),
            None,
            403,
        )
        .await;
    assert_eq!(own["error"], "forbidden");
    let approved = l
        .call(
            "post",
            "/v1/requests/{id}/approve",
            &approve,
            Some("bob"),
            Some(json!({"comment": "ok"})),
            200,
        )
        .await;
    assert_eq!(approved["request"]["state"], "approved");
    let again = l
        .call(
            "post",
            "/v1/requests/{id}/approve",
            &approve,
            Some("bob"),
            Some(json!({})),
            409,
        )
        .await;
    assert_eq!(again["error"], "conflict");
    let gid = approved["grant"]["id"].as_str().unwrap().to_string();
    l.call("get", "/v1/requests/{id}", &one, Some("alice"), None, 200)
        .await;

    // Deny another request.
    let second = l
        .call(
            "post",
            "/v1/requests",
            "/v1/requests",
            Some("alice"),
            Some(json!({"role": "refund-once", "scope": "Payment::\"p-1\"", "duration": "20m"})),
            201,
        )
        .await;
    let denied = l
        .call(
            "post",
            "/v1/requests/{id}/deny",
            &format!(
                "/v1/requests/{}/deny",
                second["request"]["id"].as_str().unwrap()
            ),
            Some("bob"),
            Some(json!({"comment": "no ticket"})),
            200,
        )
        .await;
    assert_eq!(denied["request"]["state"], "denied");

    // The grant: listed, used on the data plane, a token minted for it, revoked.
    let grants = l
        .call("get", "/v1/grants", "/v1/grants", Some("alice"), None, 200)
        .await;
    assert_eq!(grants["grants"][0]["id"], gid.as_str());
    l.call(
        "get",
        "/v1/grants",
        "/v1/grants?all=true",
        Some("mallory"),
        None,
        403,
    )
    .await;
    let used = l
        .http
        .post(l.env.data("/payments"))
        .bearer_auth(l.env.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(used.status().as_u16(), 200, "the grant lets alice write");
    let token = l
        .call(
            "post",
            "/v1/grants/{id}/token",
            &format!("/v1/grants/{gid}/token"),
            Some("alice"),
            Some(json!({"ttl": "10m"})),
            200,
        )
        .await;
    assert_eq!(token["expires_at"], T0 + 600);
    let revoke = format!("/v1/grants/{gid}/revoke");
    let revoked = l
        .call(
            "post",
            "/v1/grants/{id}/revoke",
            &revoke,
            Some("bob"),
            None,
            200,
        )
        .await;
    assert_eq!(revoked["grant"]["status"], "revoked");
    l.call(
        "post",
        "/v1/grants/{id}/revoke",
        &revoke,
        Some("bob"),
        None,
        409,
    )
    .await;
    l.call(
        "post",
        "/v1/grants/{id}/drop",
        &format!("/v1/grants/{NO_SUCH_ID}/drop"),
        Some("alice"),
        None,
        404,
    )
    .await;

    // Operating jitgate (sam is an SRE).
    let status = l
        .call("get", "/v1/status", "/v1/status", Some("sam"), None, 200)
        .await;
    assert_eq!(status["bundle"]["name"], "quickstart-cedar");
    l.call("get", "/v1/status", "/v1/status", Some("alice"), None, 403)
        .await;
    let reload = l
        .call("post", "/v1/reload", "/v1/reload", Some("sam"), None, 200)
        .await;
    assert_eq!(reload["outcome"], "unchanged");
    l.call("get", "/v1/shadow", "/v1/shadow", Some("sam"), None, 200)
        .await;
    // Entity data: the quickstart bundle permits no `writeEntities` / `readEntities`, so even an SRE is refused,
    // with the one error shape (tests/entity_data.rs covers the answers of a bundle that permits them).
    for (method, body) in [
        ("get", None),
        ("put", Some(json!([]))),
        ("delete", Some(json!(["Doc::\"x\""]))),
    ] {
        let refused = l
            .call(
                method,
                "/v1/entities",
                "/v1/entities",
                Some("sam"),
                body,
                403,
            )
            .await;
        assert_eq!(refused["error"], "forbidden", "{refused}");
    }
    // Shadow errors are ApiError bodies like every other error (the schema rejects any other shape).
    let none = l
        .call("delete", "/v1/shadow", "/v1/shadow", Some("sam"), None, 404)
        .await;
    assert_eq!(none["error"], "not_found", "{none}");
    let bad = l
        .call(
            "post",
            "/v1/shadow",
            "/v1/shadow",
            Some("sam"),
            Some(json!({"dir": "x"})),
            400,
        )
        .await;
    assert_eq!(
        (bad["error"].as_str(), bad["field"].as_str()),
        (Some("bad_request"), Some("dir")),
        "{bad}"
    );
    let untyped = l
        .call("post", "/v1/shadow", "/v1/shadow", Some("sam"), None, 400)
        .await;
    assert_eq!(untyped["error"], "bad_request", "{untyped}");
    assert!(
        untyped["message"]
            .as_str()
            .unwrap()
            .contains("Content-Type"),
        "{untyped}"
    );
    let missing = dir.path().join("no-such-bundle");
    l.call(
        "post",
        "/v1/shadow",
        "/v1/shadow",
        Some("sam"),
        Some(json!({"path": missing})),
        422,
    )
    .await;
    let bundle = repo("policies/quickstart-cedar");
    let candidate = l
        .call(
            "post",
            "/v1/shadow",
            "/v1/shadow",
            Some("sam"),
            Some(json!({"path": bundle})),
            200,
        )
        .await;
    let shadow = l
        .call("get", "/v1/shadow", "/v1/shadow", Some("sam"), None, 200)
        .await;
    assert_eq!(shadow["candidate"], candidate);
    l.call("delete", "/v1/shadow", "/v1/shadow", Some("sam"), None, 200)
        .await;

    // The decision log, as compliance reads it: lifecycle events and the decision the grant allowed.
    let page = l
        .call(
            "get",
            "/v1/decisions",
            "/v1/decisions",
            Some("erin"),
            None,
            200,
        )
        .await;
    let records = page["records"].as_array().unwrap();
    let actions: BTreeMap<&str, usize> = records.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r["action"].as_str().unwrap()).or_default() += 1;
        m
    });
    for a in [
        "lifecycle.created",
        "lifecycle.approved",
        "lifecycle.denied",
        "lifecycle.revoked",
    ] {
        assert!(actions.contains_key(a), "{a} is logged: {actions:?}");
    }
    assert!(
        records
            .iter()
            .any(|r| r["kind"] == "decision" && r["grants_used"] == json!([gid])),
        "the allowed write names its grant"
    );
    let paged = l
        .call(
            "get",
            "/v1/decisions",
            "/v1/decisions?kind=lifecycle&limit=1",
            Some("erin"),
            None,
            200,
        )
        .await;
    assert!(paged["next"].is_i64(), "{paged}");
    let bad = l
        .call(
            "get",
            "/v1/decisions",
            "/v1/decisions?limit=0",
            Some("erin"),
            None,
            400,
        )
        .await;
    assert_eq!(bad["field"], "limit");
    l.call(
        "get",
        "/v1/decisions",
        "/v1/decisions",
        Some("alice"),
        None,
        403,
    )
    .await;

    live.env.running.shutdown().await;
}

/// The document's `EntityRef` is exactly the printed form: every entity reference jitgate prints (ids with quotes,
/// backslashes, newlines, any script) matches it, and text the parser refuses (an unescaped quote, a bad escape, a
/// type that is not an identifier path) does not. The pattern once used `".*"`, which no id with a newline matched,
/// so an answer naming one did not conform; schemathesis (tools/ci/schemathesis.sh) reads it to make `requester`.
#[test]
fn the_entity_ref_schema_is_the_printed_form() {
    let schema = validator("/components/schemas/EntityRef");
    for (ty, id) in [
        ("User", "alice"),
        ("User", "say \"hi\""),
        ("Workload", "back\\slash"),
        ("Payment", "line\nbreak"),
        ("Ns::Database", "prod-eu"),
        ("User", "ærin 名前"),
        ("User", ""),
    ] {
        let printed = jitgate_engine::EntityRef::new(ty, id).to_string();
        assert_eq!(
            printed.parse::<jitgate_engine::EntityRef>().unwrap(),
            jitgate_engine::EntityRef::new(ty, id)
        );
        assert!(
            schema.is_valid(&json!(printed)),
            "{printed:?} is printed but does not match"
        );
    }
    for text in [
        "User::\"a\"b\"",
        "User::\"a\\\"",
        "User::\"a\\x\"",
        "a b::\"x\"",
        "User:\"x\"",
        "::\"x\"",
    ] {
        assert!(
            text.parse::<jitgate_engine::EntityRef>().is_err(),
            "{text:?} parses"
        );
        assert!(
            !schema.is_valid(&json!(text)),
            "{text:?} matches but is refused"
        );
    }
}

/// schemathesis (tools/ci/schemathesis.sh) found `POST /v1/requests` answering 409 once the caller has the most
/// pending requests allowed (`[store] max_pending_per_principal`), a status the document did not list.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_over_the_pending_cap_is_a_documented_409() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::start(dir.path(), Clock::frozen(T0), |raw| {
        raw.store.max_pending_per_principal = 1;
    })
    .await;
    let live = Live {
        env,
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
        doc: doc(),
    };
    let ask = |duration: &str| {
        json!({
            "role": "payments-writer",
            "scope": "Service::\"payments\"",
            "duration": duration,
            "reason": "INC-4211",
        })
    };
    live.call(
        "post",
        "/v1/requests",
        "/v1/requests",
        Some("alice"),
        Some(ask("30m")),
        201,
    )
    .await;
    let refused = live
        .call(
            "post",
            "/v1/requests",
            "/v1/requests",
            Some("alice"),
            Some(ask("20m")),
            409,
        )
        .await;
    assert_eq!(refused["error"], "conflict", "{refused}");
    live.env.running.shutdown().await;
}
