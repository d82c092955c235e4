//! The shipped example config and the config JSON Schema: the example loads with `Config::load` and validates
//! against the schema, a config using every key is accepted by both, and bad configs are refused by both.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use jitgate_proxy::config::{Acknowledge, Config, OnFull, RawConfig, TrailingSlash};
use serde_json::Value;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn validator() -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_slice(&std::fs::read(repo("schemas/config.schema.json")).unwrap())
            .unwrap();
    jsonschema::validator_for(&schema).unwrap()
}

fn schema_errors(toml_text: &str) -> Vec<String> {
    let instance: Value = toml::from_str(toml_text).unwrap();
    validator()
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path))
        .collect()
}

#[test]
fn example_config_loads_and_matches_the_schema() {
    let path = repo("schemas/examples/jitgate.example.toml");
    let config = Config::load(&path).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert!(config.bundle_path.join("bundle.toml").is_file());
    assert_eq!(config.log_on_full, OnFull::Wait);
    assert_eq!(config.log_acknowledge, Acknowledge::Commit);
    assert_eq!(config.trailing_slash, TrailingSlash::Strip);
    assert_eq!(config.issuers.len(), 1);
    assert_eq!(config.issuers[0].algorithms, vec!["RS256", "ES256"]);
    assert_eq!(config.upstreams.len(), 2);
    assert_eq!(config.upstreams["billing"].prefix, "/api");
    assert!(config.tls.is_none());
    assert!(config.local_issuer.is_some());
    assert_eq!(
        config.log_retain,
        Some(std::time::Duration::from_secs(365 * 86_400))
    );
    assert_eq!(
        config.log_prune_interval,
        std::time::Duration::from_secs(3600)
    );

    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(schema_errors(&text), Vec::<String>::new());
}

#[test]
fn every_key_is_known_to_both_the_loader_and_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    for f in ["server.pem", "server.key", "ca.pem", "token"] {
        std::fs::write(dir.path().join(f), "x").unwrap();
    }
    let bundle = repo("policies/quickstart-cedar");
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_connections = 10
max_header_bytes = 8192
max_body_bytes = 1024
header_timeout = "1s"
idle_timeout = "30s"
request_timeout = "2s"
shutdown_grace = "3s"
trusted_proxies = ["10.0.0.0/8", "192.168.1.1"]
trailing_slash = "keep"
context_headers = ["X-Request-Id"]
[server.tls]
cert = "server.pem"
key = "server.key"
client_ca = "ca.pem"
require_client_cert = true
client_principal_type = "Service"
[server.tls.workload_groups]
"spiffe://x/ci" = ["ci"]
[admin]
listen = "127.0.0.1:0"
max_connections = 16
header_timeout = "4s"
[admin.tls]
cert = "server.pem"
key = "server.key"
[bundle]
path = "{bundle}"
watch = false
[store]
path = "s.db"
[log]
path = "d.db"
queue_capacity = 5
on_full = "fail_closed"
acknowledge = "journal"
redact = ["claims.email"]
jsonl = "stdout"
retain = "90d"
prune_interval = "15m"
anchor_key = "keys/anchor.key"
anchors = "anchors.jsonl"
anchor_interval = "30s"
anchor_records = 500
replica = "proxy-1"
[hold]
wait = "1s"
max_body_bytes = 4096
approval_ttl = "10m"
[[issuers]]
issuer = "https://idp"
audiences = ["a"]
jwks_url = "https://idp/jwks"
algorithms = ["ES256"]
principal_claim = "email"
groups_claim = "roles"
groups_type = "Team"
principal_attrs = {{ job = "job_title", region = "/address/region" }}
principal_type = "Person"
leeway_secs = 0
refresh_min_interval_secs = 5
[local_issuer]
key_file = "k.pem"
issuer = "jg"
audience = "jg"
[upstreams.payments]
url = "http://127.0.0.1:9000/v1"
connect_timeout = "1s"
timeout = "5s"
[upstreams.payments.credential]
header = "X-Api-Key"
value_file = "token"
prefix = "Key "
[telemetry]
log_format = "json"
otlp_endpoint = "http://127.0.0.1:4318/"
otlp_protocol = "grpc"
service_name = "edge"
trust_incoming = true
sample_ratio = 0.25
"#,
        bundle = bundle.display().to_string().replace('\\', "/")
    );
    let file = dir.path().join("jitgate.toml");
    std::fs::write(&file, &text).unwrap();
    let config = Config::load(&file).unwrap_or_else(|d| panic!("{d}"));
    assert_eq!(config.log_on_full, OnFull::FailClosed);
    let traces = &config.telemetry.traces;
    assert_eq!(
        traces.otlp_endpoint.as_deref(),
        Some("http://127.0.0.1:4318")
    );
    assert_eq!(
        traces.otlp_protocol,
        Some(jitgate_proxy::telemetry::OtlpProtocol::Grpc)
    );
    assert_eq!(traces.service_name.as_deref(), Some("edge"));
    assert!(traces.trust_incoming && config.telemetry.json_logs);
    assert_eq!(traces.sample_ratio, Some(0.25));
    assert_eq!(config.log_acknowledge, Acknowledge::Journal);
    assert_eq!(config.trailing_slash, TrailingSlash::Keep);
    assert!(config.admin_listen.is_some());
    let admin_tls = config.admin_tls.clone().unwrap();
    assert!(admin_tls.cert.ends_with("server.pem") && admin_tls.client_ca.is_none());
    assert_eq!(config.context_headers, vec!["x-request-id"]);
    assert_eq!(config.idle_timeout, std::time::Duration::from_secs(30));
    assert_eq!(config.admin_max_connections, 16);
    assert_eq!(
        config.admin_header_timeout,
        std::time::Duration::from_secs(4)
    );
    assert_eq!(
        config.log_retain,
        Some(std::time::Duration::from_secs(90 * 86_400))
    );
    assert_eq!(
        config.log_prune_interval,
        std::time::Duration::from_secs(15 * 60)
    );
    let anchor = config.log_anchor.clone().unwrap();
    assert!(anchor.key.ends_with("keys/anchor.key") && anchor.file.ends_with("anchors.jsonl"));
    assert_eq!(anchor.every, std::time::Duration::from_secs(30));
    assert_eq!(
        (anchor.every_records, anchor.replica.as_str()),
        (500, "proxy-1")
    );
    assert_eq!(config.hold.wait, std::time::Duration::from_secs(1));
    assert_eq!(config.hold.max_body_bytes, 4096);
    assert_eq!(
        config.hold.approval_ttl,
        std::time::Duration::from_secs(600)
    );
    let tls = config.tls.unwrap();
    assert!(tls.require_client_cert);
    assert_eq!(tls.workload_groups["spiffe://x/ci"], vec!["ci"]);
    let cred = config.upstreams["payments"].credential.clone().unwrap();
    assert_eq!(cred.0.as_str(), "x-api-key");
    assert_eq!(cred.1, "Key x");
    assert_eq!(schema_errors(&text), Vec::<String>::new());
}

/// The smallest valid config: `[bundle] path` naming the Cedar quickstart (2 lines).
fn bundle_base() -> String {
    let bundle = repo("policies/quickstart-cedar")
        .display()
        .to_string()
        .replace('\\', "/");
    format!("[bundle]\npath = \"{bundle}\"\n")
}

#[test]
fn bad_configs_are_refused_by_both_the_loader_and_the_schema() {
    let dir = tempfile::tempdir().unwrap();
    let base = bundle_base();
    // (extra TOML, a piece of the loader's message)
    let cases = [
        (
            "[server]\nlisne = \"127.0.0.1:1\"\n",
            "unknown field `lisne`",
        ),
        ("[log]\non_full = \"drop\"\n", "log.on_full"),
        ("[log]\nacknowledge = \"later\"\n", "log.acknowledge"),
        ("[log]\nqueue_capacity = 0\n", "log.queue_capacity"),
        ("[log]\nretain = \"forever\"\n", "log.retain"),
        (
            "[log]\nretain = \"30d\"\nprune_interval = \"soon\"\n",
            "log.prune_interval",
        ),
        ("[log]\nprune_interval = \"1h\"\n", "log.prune_interval"),
        (
            "[server]\ntrailing_slash = \"maybe\"\n",
            "server.trailing_slash",
        ),
        (
            "[[issuers]]\nissuer = \"https://i\"\naudiences = [\"a\"]\njwks_url = \"https://i/k\"\nalgorithms = [\"HS256\"]\n",
            "issuers[0].algorithms",
        ),
        ("[upstreams.p]\nurl = \"ftp://h\"\n", "upstreams.p.url"),
        (
            "[upstreams.p]\nurl = \"http://h\"\n[upstreams.p.credential]\nheader = \"x\"\nvalue_env = \"A\"\nvalue_file = \"b\"\n",
            "upstreams.p.credential",
        ),
        (
            "[server.tls]\ncert = \"c\"\nkey = \"k\"\nrequire_client_cert = true\n",
            "server.tls.require_client_cert",
        ),
        ("[admin]\nmax_connections = 0\n", "admin.max_connections"),
        (
            "[admin]\nheader_timeout = \"soon\"\n",
            "admin.header_timeout",
        ),
        ("[server]\nidle_timeout = \"idle\"\n", "server.idle_timeout"),
        (
            "[telemetry]\notlp_endpoint = \"collector:4318\"\n",
            "telemetry.otlp_endpoint",
        ),
        (
            "[telemetry]\notlp_protocol = \"http/json\"\n",
            "telemetry.otlp_protocol",
        ),
        (
            "[telemetry]\nsample_ratio = 1.5\n",
            "telemetry.sample_ratio",
        ),
    ];
    for (i, (extra, expected)) in cases.iter().enumerate() {
        let text = format!("{base}{extra}");
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, &text).unwrap();
        let err = Config::load(&file).unwrap_err().to_string();
        assert!(err.contains(expected), "{extra}: loader said {err}");
        assert!(
            err.contains(&file.display().to_string()),
            "the file is named: {err}"
        );
        assert!(
            !schema_errors(&text).is_empty(),
            "{extra}: the schema accepted it"
        );
    }
    // Values the schema cannot judge (it only knows a duration starts with a digit): the loader still names the
    // key, and does not start retention on them.
    for (extra, expected) in [
        (
            "[log]\nretain = \"0s\"\n",
            "log.retain: `0s` must be at least 1s",
        ),
        (
            "[log]\nretain = \"12 parsecs\"\n",
            "log.retain: `12 parsecs` is not a duration",
        ),
        (
            "[log]\nretain = \"1d\"\nprune_interval = \"500ms\"\n",
            "log.prune_interval: `500ms` must be at least 1s",
        ),
    ] {
        let file = dir.path().join("bad-retain.toml");
        std::fs::write(&file, format!("{base}{extra}")).unwrap();
        let err = Config::load(&file).unwrap_err().to_string();
        assert!(err.contains(expected), "{extra}: loader said {err}");
    }

    // Keys the schema cannot relate: HTTPS for an admin listener that is off; a missing admin certificate; a hold
    // that outwaits the whole request.
    for (extra, expected) in [
        (
            "[server]\nrequest_timeout = \"10s\"\n",
            "hold.wait: `30s` must be shorter than server.request_timeout (`10s`)",
        ),
        (
            "[admin]\nlisten = \"\"\n[admin.tls]\ncert = \"c\"\nkey = \"k\"\n",
            "admin.tls: the admin listener is disabled",
        ),
        (
            "[admin.tls]\ncert = \"no-such.pem\"\nkey = \"no-such.key\"\n",
            "admin.tls.cert: `",
        ),
    ] {
        let file = dir.path().join("bad-admin.toml");
        std::fs::write(&file, format!("{base}{extra}")).unwrap();
        let err = Config::load(&file).unwrap_err().to_string();
        assert!(err.contains(expected), "{extra}: loader said {err}");
    }
    // One replica has one id: `[log] replica` is a deprecated alias of `[cluster] replica`; both, disagreeing, is
    // refused; either alone names the replica and its anchors.
    let file = dir.path().join("two-ids.toml");
    std::fs::write(
        &file,
        format!("{base}[log]\nreplica = \"a\"\n[cluster]\nreplica = \"b\"\n"),
    )
    .unwrap();
    let err = Config::load(&file).unwrap_err().to_string();
    assert!(
        err.contains("cluster.replica: `b`, but the deprecated `[log] replica` says `a`"),
        "{err}"
    );
    for (extra, want) in [
        ("[log]\nreplica = \"a\"\nanchor_key = \"k.key\"\n", "a"),
        (
            "[log]\nreplica = \"b\"\nanchor_key = \"k.key\"\n[cluster]\nreplica = \"b\"\n",
            "b",
        ),
        (
            "[log]\nanchor_key = \"k.key\"\n[cluster]\nreplica = \"c\"\n",
            "c",
        ),
    ] {
        std::fs::write(&file, format!("{base}{extra}")).unwrap();
        let c = Config::load(&file).unwrap_or_else(|d| panic!("{extra}: {d}"));
        assert_eq!(c.replica, want, "{extra}");
        assert_eq!(c.log_anchor.unwrap().replica, want, "{extra}");
    }
    let file = dir.path().join("admin-off.toml");
    std::fs::write(&file, format!("{base}[admin]\nlisten = \"\"\n")).unwrap();
    assert!(Config::load(&file).unwrap().admin_listen.is_none());

    // Sanity: the base alone is fine for both.
    let _: RawConfig = toml::from_str(&base).unwrap();
    assert_eq!(schema_errors(&base), Vec::<String>::new());
}

/// A value that parses but does not make sense is reported at its own line, as a TOML syntax error is; a key that
/// is missing is reported at the table that should hold it.
#[test]
fn semantic_config_errors_name_the_line_of_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let base = bundle_base();
    // (extra TOML after the 2 lines of `base`, the line reported, a piece of the message)
    for (extra, line, expected) in [
        (
            "[log]\nqueue_capacity = 0\n",
            4,
            "log.queue_capacity: must be at least 1",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:8080\"\n\ntrailing_slash = \"maybe\"\n",
            6,
            "server.trailing_slash: `maybe`",
        ),
        (
            "[server]\ntrusted_proxies = [\"10.0.0.0/8\", \"nope\"]\n",
            4,
            "server.trusted_proxies[1]: `nope` is not an IP or CIDR",
        ),
        (
            "[upstreams.\"api.v1\"]\nurl = \"ftp://h\"\n",
            4,
            "upstreams.api.v1.url",
        ),
        (
            "[[issuers]]\nissuer = \"https://a\"\naudiences = [\"a\"]\njwks_url = \"https://a/k\"\n\
             algorithms = [\"RS256\"]\n[[issuers]]\nissuer = \"https://b\"\naudiences = [\"a\"]\njwks_url = \"https://b/k\"\n\
             algorithms = [\"HS256\"]\n",
            12,
            "issuers[1].algorithms",
        ),
        // `client_ca` is not written: the table that should hold it.
        (
            "[server.tls]\ncert = \"c\"\nkey = \"k\"\nrequire_client_cert = true\n",
            6,
            "server.tls.require_client_cert: needs `client_ca`",
        ),
        // Certificates and tokens may not name principals of one type.
        (
            "[server.tls]\ncert = \"c\"\nkey = \"k\"\nclient_ca = \"ca\"\nclient_principal_type = \"User\"\n\n\
             [[issuers]]\nissuer = \"https://a\"\naudiences = [\"a\"]\njwks_url = \"https://a/k\"\nalgorithms = [\"RS256\"]\n",
            7,
            "server.tls.client_principal_type: `User` is also the principal type of issuers[0]",
        ),
        // A zero timeout would fail every request at once.
        (
            "[server]\nrequest_timeout = \"0s\"\n",
            4,
            "server.request_timeout: `0s` must be longer than 0s",
        ),
        (
            "[upstreams.u]\nurl = \"http://127.0.0.1:1\"\ntimeout = \"0ms\"\n",
            5,
            "upstreams.u.timeout: `0ms` must be longer than 0s",
        ),
        // Headers the upstream never gets as the client sent them: the policies would decide on a claim.
        (
            "[server]\ncontext_headers = [\"x-tenant\", \"X-Forwarded-For\"]\n",
            4,
            "server.context_headers[1]: `X-Forwarded-For` is set or removed by jitgate",
        ),
        (
            "[server]\ncontext_headers = [\"x_jitgate_principal\"]\n",
            4,
            "server.context_headers[0]: `x_jitgate_principal` is set or removed by jitgate",
        ),
        (
            "[server]\ncontext_headers = [\"host\"]\n",
            4,
            "server.context_headers[0]: `host` never reaches the upstream as the client sent it",
        ),
        (
            "[server]\ncontext_headers = [\"bad header\"]\n",
            4,
            "server.context_headers[0]: `bad header` is not a header name",
        ),
        // A bound header the resend alone carries would make every approval unusable.
        (
            "[hold]\nbind_headers = [\"x-change-ticket\", \"X_Jitgate_Approval\"]\n",
            4,
            "hold.bind_headers[1]: `X_Jitgate_Approval` names the approval on the resend only",
        ),
        (
            "[hold]\nbind_headers = [\"bad header\"]\n",
            4,
            "hold.bind_headers[0]: `bad header` is not a header name",
        ),
    ] {
        let text = format!("{base}{extra}");
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, &text).unwrap();
        let err = Config::load(&file).unwrap_err().to_string();
        assert!(
            err.contains(&format!("{}:{line}:", file.display())),
            "{text}\nexpected line {line}; the loader said {err}"
        );
        assert!(err.contains(expected), "{text}\nthe loader said {err}");
    }
    assert_eq!(schema_errors(&base), Vec::<String>::new());
}
