//! The benchmark set-up itself is tested: synthetic bundles must load and decide the measured request as intended
//! on both engines, and the load harness's upstream and pass-through proxy must really forward.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};

use jitgate_benches::Scenario;
use jitgate_engine::{Effect, EngineKind};

#[test]
fn synthetic_scenarios_load_and_allow_on_both_engines() {
    for engine in [EngineKind::Cedar, EngineKind::Rego] {
        for (grants, policies) in [(10, 10), (1_000, 100)] {
            // `build` itself checks the policy count, the index size, and an allow by payments-writer on alice's grant.
            let s = Scenario::build(engine, grants, policies)
                .unwrap_or_else(|e| panic!("{engine:?}: {e}"));
            assert_eq!(
                s.id(),
                format!("{}/grants={grants}/policies={policies}", engine.as_str())
            );
            let d = s.decide_once().unwrap();
            assert_eq!(d.effect, Effect::Allow, "{d:?}");
            assert_eq!(d.grants_used, ["alice-payments-writer"]);
        }
    }
}

/// With entity data (hierarchy, attributes, owners) the measured request is still the allow, and `build` checks that
/// the data policy denies a user of another organization: the data is loaded and read on both engines.
#[test]
fn scenarios_with_entity_data_load_and_read_the_data_on_both_engines() {
    for engine in [EngineKind::Cedar, EngineKind::Rego] {
        let s = Scenario::build_with_entities(engine, 100, 20, 1_000)
            .unwrap_or_else(|e| panic!("{engine:?}: {e}"));
        assert_eq!(
            s.id(),
            format!("{}/grants=100/policies=20/entities=1000", engine.as_str())
        );
        let d = s.decide_once().unwrap();
        assert_eq!(d.effect, Effect::Allow, "{d:?}");
        assert_eq!(d.policies, ["payments-writer"]);
    }
    assert_eq!(
        jitgate_benches::synth::Population::of(10_000).total(),
        10_000
    );
    assert_eq!(
        jitgate_benches::synth::Population::of(100_000).total(),
        100_000
    );
}

#[test]
fn too_few_policies_is_refused() {
    assert!(Scenario::build(EngineKind::Cedar, 10, 3).is_err());
}

/// A child process killed when dropped, with the address it printed after "listening on ".
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(bin: &str, args: &[&str]) -> Server {
    let mut child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{bin}: `{line}`"));
    let addr = addr.split_whitespace().next().unwrap().to_string();
    Server { child, addr }
}

fn get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: client.example\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn passthrough_forwards_to_the_upstream() {
    let upstream = spawn(
        env!("CARGO_BIN_EXE_upstream"),
        &["--listen", "127.0.0.1:0", "--threads", "1"],
    );
    let direct = get(&upstream.addr, "/payments");
    assert!(direct.starts_with("HTTP/1.1 200"), "{direct}");
    assert!(
        direct.ends_with(r#"{"ok":true,"service":"upstream"}"#),
        "{direct}"
    );

    let url = format!("http://{}", upstream.addr);
    let proxy = spawn(
        env!("CARGO_BIN_EXE_passthrough"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &url,
            "--threads",
            "1",
        ],
    );
    let via = get(&proxy.addr, "/payments?x=1");
    assert!(via.starts_with("HTTP/1.1 200"), "{via}");
    assert!(
        via.ends_with(r#"{"ok":true,"service":"upstream"}"#),
        "{via}"
    );

    // With the upstream gone the proxy answers 502 instead of hanging or dying.
    drop(upstream);
    let gone = get(&proxy.addr, "/payments");
    assert!(gone.starts_with("HTTP/1.1 502"), "{gone}");
}

/// `--auto` serves HTTP/2 in the clear beside HTTP/1.1, and `--tls-cert`/`--tls-key` serve both over TLS (ALPN), as
/// `sidebyside.sh --protocol` needs: each request reaches the upstream over the protocol asked for.
#[test]
fn passthrough_serves_h2c_and_tls_when_asked() {
    let upstream = spawn(
        env!("CARGO_BIN_EXE_upstream"),
        &["--listen", "127.0.0.1:0", "--threads", "1"],
    );
    let url = format!("http://{}", upstream.addr);
    let body = r#"{"ok":true,"service":"upstream"}"#;

    let auto = spawn(
        env!("CARGO_BIN_EXE_passthrough"),
        &["--listen", "127.0.0.1:0", "--upstream", &url, "--auto"],
    );
    let h2c = reqwest::blocking::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2c
        .get(format!("http://{}/payments", auto.addr))
        .send()
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().unwrap(), body);
    // HTTP/1.1 still works on the same port.
    assert!(get(&auto.addr, "/payments").starts_with("HTTP/1.1 200"));

    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let (cert_pem, key_pem) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_pem, key.cert.pem()).unwrap();
    std::fs::write(&key_pem, key.signing_key.serialize_pem()).unwrap();
    let tls = spawn(
        env!("CARGO_BIN_EXE_passthrough"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--upstream",
            &url,
            "--tls-cert",
            cert_pem.to_str().unwrap(),
            "--tls-key",
            key_pem.to_str().unwrap(),
        ],
    );
    let root = reqwest::Certificate::from_pem(key.cert.pem().as_bytes()).unwrap();
    for (h1_only, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let mut client = reqwest::blocking::Client::builder().add_root_certificate(root.clone());
        if h1_only {
            client = client.http1_only();
        }
        let r = client
            .build()
            .unwrap()
            .get(format!("https://{}/payments", tls.addr))
            .send()
            .unwrap();
        assert_eq!(r.version(), version);
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().unwrap(), body);
    }

    // Half a TLS configuration is refused with a message, not served in the clear.
    let out = Command::new(env!("CARGO_BIN_EXE_passthrough"))
        .args(["--tls-cert", cert_pem.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--tls-cert and --tls-key go together"),
        "{out:?}"
    );
}
