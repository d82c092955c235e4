//! The load harness's identity provider: generates an RSA-2048 key, serves its public half as a JWKS at
//! `http://<listen>/jwks.json`, and writes an RS256 token for the measured caller, so that the load runs measure
//! jitgate verifying real issuer tokens (JWKS fetch, RS256 signature, the verified-token cache).
//!
//! `jwks --listen 127.0.0.1:19004 --token-out FILE [--issuer URL] [--audience AUD] [--sub alice]
//!       [--groups engineering] [--ttl-secs 3600] [--jwks-out FILE] [--checks-out DIR]`; prints `listening on <addr>`
//! once bound. `--jwks-out` also writes the JWKS document to a file (for a proxy configured with local keys);
//! `--checks-out` writes, beside the caller's token, the tokens a side-by-side run checks every proxy with before
//! timing it: `wrong-group` (the same caller outside the allowed group), `expired`, and `bad-signature`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rsa::pkcs1::EncodeRsaPrivateKey;
use rsa::traits::PublicKeyParts;
use tokio::net::TcpListener;

const KID: &str = "load-harness";

struct Args {
    listen: SocketAddr,
    token_out: PathBuf,
    issuer: String,
    audience: String,
    sub: String,
    groups: Vec<String>,
    ttl_secs: u64,
    jwks_out: Option<PathBuf>,
    checks_out: Option<PathBuf>,
}

/// The tokens of the checks before timing (see the module docs).
struct Checks {
    wrong_group: String,
    expired: String,
    bad_signature: String,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        listen: ([127, 0, 0, 1], 19004).into(),
        token_out: PathBuf::new(),
        issuer: "https://idp.load.test/".into(),
        audience: "jitgate-load".into(),
        sub: "alice".into(),
        groups: vec!["engineering".into()],
        ttl_secs: 3600,
        jwks_out: None,
        checks_out: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(k) = args.next() {
        let v = args.next().ok_or_else(|| format!("{k} needs a value"))?;
        match k.as_str() {
            "--listen" => a.listen = v.parse().map_err(|e| format!("--listen `{v}`: {e}"))?,
            "--token-out" => a.token_out = PathBuf::from(v),
            "--issuer" => a.issuer = v,
            "--audience" => a.audience = v,
            "--sub" => a.sub = v,
            "--groups" => a.groups = v.split(',').map(str::to_string).collect(),
            "--ttl-secs" => a.ttl_secs = v.parse().map_err(|e| format!("--ttl-secs `{v}`: {e}"))?,
            "--jwks-out" => a.jwks_out = Some(PathBuf::from(v)),
            "--checks-out" => a.checks_out = Some(PathBuf::from(v)),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if a.token_out.as_os_str().is_empty() {
        return Err("--token-out FILE is required".into());
    }
    Ok(a)
}

/// The key pair: the JWKS document, the token signed with the private half, and the tokens of the checks.
fn keys(a: &Args) -> Result<(Bytes, String, Checks), String> {
    let private =
        rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).map_err(|e| e.to_string())?;
    let public = private.to_public_key();
    let jwks = serde_json::json!({ "keys": [{
        "kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256",
        "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
        "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
    }]});
    let der = private.to_pkcs1_der().map_err(|e| e.to_string())?;
    let enc = EncodingKey::from_rsa_der(der.as_bytes());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let claims = serde_json::json!({
        "iss": a.issuer, "aud": a.audience, "sub": a.sub, "groups": a.groups,
        "iat": now, "nbf": now, "exp": now + a.ttl_secs,
    });
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.into());
    let token = jsonwebtoken::encode(&header, &claims, &enc).map_err(|e| e.to_string())?;
    let sign = |claims: serde_json::Value| {
        jsonwebtoken::encode(&header, &claims, &enc).map_err(|e| e.to_string())
    };
    let mut other = claims.clone();
    other["groups"] = serde_json::json!(["sales"]);
    let wrong_group = sign(other)?;
    let mut old = claims.clone();
    old["iat"] = serde_json::json!(now - 7200);
    old["nbf"] = serde_json::json!(now - 7200);
    old["exp"] = serde_json::json!(now - 3600);
    let expired = sign(old)?;
    // The caller's token with one byte of its signature changed (the first: every bit of it is significant).
    let (signed, signature) = token.rsplit_once('.').ok_or("a JWT without a signature")?;
    let flipped = match signature.as_bytes().first() {
        Some(b'A') => 'B',
        _ => 'A',
    };
    let bad_signature = format!("{signed}.{flipped}{}", signature.get(1..).unwrap_or(""));
    let checks = Checks {
        wrong_group,
        expired,
        bad_signature,
    };
    Ok((Bytes::from(jwks.to_string()), token, checks))
}

async fn answer(
    jwks: Arc<Bytes>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() != "/jwks.json" {
        let mut r = Response::new(Full::new(Bytes::from_static(b"not found")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return Ok(r);
    }
    let mut r = Response::new(Full::new(jwks.as_ref().clone()));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(r)
}

async fn serve(a: Args) -> Result<(), String> {
    let (jwks, token, checks) = keys(&a)?;
    let write = |path: &std::path::Path, text: &[u8]| {
        std::fs::write(path, text).map_err(|e| format!("writing {}: {e}", path.display()))
    };
    write(&a.token_out, token.as_bytes())?;
    if let Some(path) = &a.jwks_out {
        write(path, &jwks)?;
    }
    if let Some(dir) = &a.checks_out {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        write(&dir.join("wrong-group"), checks.wrong_group.as_bytes())?;
        write(&dir.join("expired"), checks.expired.as_bytes())?;
        write(&dir.join("bad-signature"), checks.bad_signature.as_bytes())?;
    }
    let listener = TcpListener::bind(a.listen)
        .await
        .map_err(|e| e.to_string())?;
    println!(
        "listening on {}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let jwks = Arc::new(jwks);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let jwks = jwks.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| answer(jwks.clone(), req));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn main() -> std::process::ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("jwks: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())
        .and_then(|rt| rt.block_on(serve(args)));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jwks: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
