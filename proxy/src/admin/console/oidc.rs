//! The OpenID Connect relying party of the console: discovery, the authorization request (code flow with PKCE,
//! S256), the code exchange, and the checks of the ID token beyond what the authenticator verifies.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use sha2::Digest;
use tokio::sync::Mutex;

use crate::authenticate::Identity;
use crate::config::ConsoleConfig;

/// The provider's endpoints, from its discovery document.
#[derive(Debug, Clone, serde::Deserialize)]
pub(super) struct Endpoints {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
}

/// The relying party for `[console]`.
pub(super) struct Client {
    config: ConsoleConfig,
    http: reqwest::Client,
    endpoints: Mutex<Option<Endpoints>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the client secret.
        f.debug_struct("Client")
            .field("issuer", &self.config.issuer)
            .field("client_id", &self.config.client_id)
            .finish_non_exhaustive()
    }
}

fn enc(v: &str) -> String {
    utf8_percent_encode(v, NON_ALPHANUMERIC).to_string()
}

impl Client {
    pub(super) fn new(config: ConsoleConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Client {
            config,
            http,
            endpoints: Mutex::new(None),
        }
    }

    pub(super) fn issuer(&self) -> &str {
        &self.config.issuer
    }

    pub(super) fn config(&self) -> &ConsoleConfig {
        &self.config
    }

    /// The provider's endpoints (discovery at `<issuer>/.well-known/openid-configuration`, fetched once, and
    /// again after a failure).
    pub(super) async fn endpoints(&self) -> Result<Endpoints, String> {
        let mut cached = self.endpoints.lock().await;
        if let Some(e) = cached.as_ref() {
            return Ok(e.clone());
        }
        let url = format!(
            "{}/.well-known/openid-configuration",
            self.config.issuer.trim_end_matches('/')
        );
        let fail =
            |e: String| format!("the provider's discovery document ({url}) could not be read: {e}");
        let r = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        if !r.status().is_success() {
            return Err(fail(format!("status {}", r.status())));
        }
        let body = r.bytes().await.map_err(|e| fail(e.to_string()))?;
        let e: Endpoints = serde_json::from_slice(&body).map_err(|e| fail(e.to_string()))?;
        if e.issuer != self.config.issuer {
            return Err(fail(format!(
                "it names issuer `{}`, not `{}`",
                e.issuer, self.config.issuer
            )));
        }
        *cached = Some(e.clone());
        Ok(e)
    }

    /// Where to send the browser: the authorization endpoint with the code flow's parameters.
    pub(super) fn authorize_url(
        &self,
        e: &Endpoints,
        state: &str,
        nonce: &str,
        verifier: &str,
    ) -> String {
        let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
        let sep = if e.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        format!(
            "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope=openid%20profile%20email&state={}&nonce={}\
             &code_challenge={}&code_challenge_method=S256",
            e.authorization_endpoint,
            enc(&self.config.client_id),
            enc(&self.config.redirect_url),
            enc(state),
            enc(nonce),
            enc(&challenge),
        )
    }

    /// Exchanges `code` (with the PKCE `verifier`) for the ID token.
    pub(super) async fn exchange(&self, code: &str, verifier: &str) -> Result<String, String> {
        let e = self.endpoints().await?;
        let mut body = format!(
            "grant_type=authorization_code&code={}&redirect_uri={}&client_id={}&code_verifier={}",
            enc(code),
            enc(&self.config.redirect_url),
            enc(&self.config.client_id),
            enc(verifier)
        );
        if let Some(secret) = &self.config.client_secret {
            body.push_str("&client_secret=");
            body.push_str(&enc(secret));
        }
        let fail = |e: String| format!("the code could not be exchanged at the provider: {e}");
        let r = self
            .http
            .post(&e.token_endpoint)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| fail(e.to_string()))?;
        let status = r.status();
        let bytes = r.bytes().await.map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!(
                "status {status}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            )));
        }
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
        v.get("id_token")
            .and_then(|t| t.as_str())
            .map(str::to_string)
            .ok_or_else(|| fail("the answer has no `id_token`".into()))
    }

    /// What the authenticator does not check of an ID token it verified: that it is from this issuer, for this
    /// client, and of this sign-in (its `nonce`).
    pub(super) fn check_id_token(&self, id: &Identity, nonce: &str) -> Result<(), String> {
        if id.issuer != self.config.issuer {
            return Err(format!(
                "the ID token is from `{}`, not `{}`",
                id.issuer, self.config.issuer
            ));
        }
        let for_us = match id.claims.get("aud") {
            Some(serde_json::Value::String(a)) => *a == self.config.client_id,
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .any(|x| x.as_str() == Some(self.config.client_id.as_str())),
            _ => false,
        };
        if !for_us {
            return Err(format!(
                "the ID token is not for client `{}`",
                self.config.client_id
            ));
        }
        if id.claims.get("nonce").and_then(|n| n.as_str()) != Some(nonce) {
            return Err("the ID token's nonce is not this sign-in's".into());
        }
        if id.grant_id.is_some() {
            return Err("a grant-bound token cannot sign in".into());
        }
        Ok(())
    }
}
