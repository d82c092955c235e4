//! Bearer and JWT header parsing (`Authenticator::authenticate`): any `Authorization` value, and tokens with any
//! header and payload that carry a valid signature, give an identity or an error, never a panic; no expired token
//! passes. Two issuers trust one Ed25519 key: jitgate's own (`jitgate`, entity-reference principals, grant binding)
//! and an external one (`https://idp.fuzz.example`, JWKS served on loopback, NFC-and-fold principal ids).
//!
//! Input: a mode byte, then for mode 0 the header value as sent; otherwise `JOSE header JSON \n payload`, base64url
//! encoded and signed with the key (an empty JOSE header stands for `{"alg":"EdDSA","kid":<the key's kid>}`).
#![no_main]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jitgate_proxy::authenticate::{Authenticator, IssuerConfig, LocalIssuer};
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

/// The request time of every token (2025-06-15).
const NOW: i64 = 1_750_000_000;
/// The external issuer's leeway (its default).
const LEEWAY: i64 = 30;

struct Setup {
    runtime: tokio::runtime::Runtime,
    auth: Authenticator,
    key: EncodingKey,
    kid: String,
}

/// Serves `body` as `application/json` to every connection, on a loopback port of its own.
fn serve_jwks(body: String) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("jitgate-fuzz-bearer-{}", std::process::id()));
        let key_file = dir.join("local.key");
        let local = LocalIssuer::load_or_generate(&key_file, "jitgate", "jitgate")
            .unwrap_or_else(|e| panic!("local issuer: {e}"));
        let pem = std::fs::read(&key_file).unwrap_or_else(|e| panic!("key file: {e}"));
        let _ = std::fs::remove_dir_all(&dir);
        let key = EncodingKey::from_ed_pem(&pem).unwrap_or_else(|e| panic!("key: {e}"));
        let kid = local.kid().to_string();
        let port = serve_jwks(local.jwks().to_string());
        let external: IssuerConfig = serde_json::from_value(serde_json::json!({
            "issuer": "https://idp.fuzz.example",
            "audiences": ["api"],
            "jwks_url": format!("http://127.0.0.1:{port}/jwks"),
            "algorithms": ["EdDSA", "RS256", "ES256"],
            "principal_normalize": "nfc_fold",
            "max_token_lifetime_secs": 86400,
        }))
        .unwrap_or_else(|e| panic!("issuer config: {e}"));
        let auth = Authenticator::new(vec![external], Some(local))
            .unwrap_or_else(|e| panic!("authenticator: {e}"));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        Setup {
            runtime,
            auth,
            key,
            kid,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let s = setup();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let header = if mode == 0 {
        match std::str::from_utf8(rest) {
            Ok(h) => h.to_string(),
            Err(_) => return,
        }
    } else {
        let (jose, payload) = match rest.iter().position(|b| *b == b'\n') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (&[][..], rest),
        };
        let default_jose = format!(r#"{{"alg":"EdDSA","kid":"{}"}}"#, s.kid);
        let jose = if jose.is_empty() {
            default_jose.as_bytes()
        } else {
            jose
        };
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(jose),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let Ok(sig) = jsonwebtoken::crypto::sign(signed.as_bytes(), &s.key, Algorithm::EdDSA)
        else {
            return;
        };
        format!("Bearer {signed}.{sig}")
    };
    if let Ok(id) = s.runtime.block_on(s.auth.authenticate(Some(&header), NOW)) {
        assert!(
            id.expires_at.saturating_add(LEEWAY) > NOW,
            "an expired token passed: {id:?}"
        );
    }
});
