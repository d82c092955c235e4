//! jitgate's own token issuer: an Ed25519 key kept in a PKCS#8 PEM file (0600), minting short-lived tokens bound
//! to a grant. Verification goes through the same `authenticate` path as any other issuer.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use jitgate_engine::EntityRef;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::AuthError;

/// The claim carrying the grant a local token is bound to.
pub const GRANT_CLAIM: &str = "jitgate_grant";
/// The claim carrying the full entity reference of a local token's principal.
pub const PRINCIPAL_CLAIM: &str = "principal";

/// jitgate's own signing key and the issuer/audience its tokens carry.
#[derive(Clone)]
pub struct LocalIssuer {
    issuer: String,
    audience: String,
    kid: String,
    encoding: EncodingKey,
    public: [u8; 32],
}

impl std::fmt::Debug for LocalIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalIssuer")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl LocalIssuer {
    /// Checks the key file at `path` without creating it: `Ok(true)` when it holds an Ed25519 PKCS#8 PEM key,
    /// `Ok(false)` when it does not exist yet ([`LocalIssuer::load_or_generate`] would generate it), an error when
    /// it cannot be read or is not such a key.
    pub fn check_key_file(path: &Path) -> Result<bool, AuthError> {
        match fs::read_to_string(path) {
            Ok(pem) => load(path, &pem).map(|_| true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(AuthError::LocalKey(format!(
                "{}: cannot read: {e}",
                path.display()
            ))),
        }
    }

    /// Loads the Ed25519 key at `path`, or generates one and writes it there (PKCS#8 PEM, mode 0600, parent
    /// directories created). Two processes racing to create it end up with the same key.
    pub fn load_or_generate(path: &Path, issuer: &str, audience: &str) -> Result<Self, AuthError> {
        let shown = path.display();
        let key = match fs::read_to_string(path) {
            Ok(pem) => load(path, &pem)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = SigningKey::generate(&mut rand::rngs::OsRng);
                let pem = key
                    .to_pkcs8_pem(LineEnding::LF)
                    .map_err(|e| AuthError::LocalKey(format!("{shown}: cannot encode key: {e}")))?;
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    fs::create_dir_all(dir).map_err(|e| {
                        AuthError::LocalKey(format!(
                            "{}: cannot create directory: {e}",
                            dir.display()
                        ))
                    })?;
                }
                match fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                {
                    Ok(mut file) => {
                        file.write_all(pem.as_bytes())
                            .and_then(|()| file.sync_all())
                            .map_err(|e| {
                                AuthError::LocalKey(format!("{shown}: cannot write key: {e}"))
                            })?;
                        tracing::info!(path = %shown, "generated a new local signing key");
                        key
                    }
                    // Someone else created it between our read and our create: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let pem = fs::read_to_string(path).map_err(|e| {
                            AuthError::LocalKey(format!("{shown}: cannot read key: {e}"))
                        })?;
                        load(path, &pem)?
                    }
                    Err(e) => {
                        return Err(AuthError::LocalKey(format!(
                            "{shown}: cannot create key file: {e}"
                        )));
                    }
                }
            }
            Err(e) => {
                return Err(AuthError::LocalKey(format!(
                    "{shown}: cannot read key: {e}"
                )));
            }
        };
        Self::from_signing_key(&key, issuer, audience)
    }

    fn from_signing_key(key: &SigningKey, issuer: &str, audience: &str) -> Result<Self, AuthError> {
        let der = key
            .to_pkcs8_der()
            .map_err(|e| AuthError::LocalKey(format!("cannot encode key: {e}")))?;
        let public = key.verifying_key().to_bytes();
        Ok(Self {
            issuer: issuer.to_string(),
            audience: audience.to_string(),
            kid: thumbprint(&public),
            encoding: EncodingKey::from_ed_der(der.as_bytes()),
            public,
        })
    }

    /// The `iss` of the tokens it mints.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The `aud` of the tokens it mints.
    pub fn audience(&self) -> &str {
        &self.audience
    }

    /// The key id: the RFC 7638 thumbprint of the public key, so the same key always has the same id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub(crate) fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// Mints a token for `principal`, bound to `grant_id`, valid from `now` until `expires_at`. The holder's
    /// `groups` go in so that the forbids naming them still apply; the authorize stage never lets them permit a
    /// grant-bound token's request (see `authorize::decide_grant_bound`).
    pub fn mint(
        &self,
        principal: &EntityRef,
        groups: &[String],
        grant_id: &str,
        expires_at: i64,
        now: i64,
    ) -> Result<String, AuthError> {
        if expires_at <= now {
            return Err(AuthError::LocalKey(format!(
                "token would expire at {expires_at}, not after now ({now})"
            )));
        }
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let claims = json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": principal.id,
            PRINCIPAL_CLAIM: principal.to_string(),
            "groups": groups,
            GRANT_CLAIM: grant_id,
            "iat": now,
            "nbf": now,
            "exp": expires_at,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| AuthError::LocalKey(format!("cannot sign: {e}")))
    }

    /// Mints a session token for `principal` that is not bound to any grant (development and quickstart use):
    /// it proves identity only; elevated access still needs an active grant.
    pub fn mint_session(
        &self,
        principal: &EntityRef,
        groups: &[String],
        expires_at: i64,
        now: i64,
    ) -> Result<String, AuthError> {
        if expires_at <= now {
            return Err(AuthError::LocalKey(format!(
                "token would expire at {expires_at}, not after now ({now})"
            )));
        }
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let claims = json!({
            "iss": self.issuer,
            "aud": self.audience,
            "sub": principal.id,
            PRINCIPAL_CLAIM: principal.to_string(),
            "groups": groups,
            "iat": now,
            "nbf": now,
            "exp": expires_at,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .map_err(|e| AuthError::LocalKey(format!("cannot sign: {e}")))
    }

    /// The public key as a JWK set, for services that verify jitgate's tokens themselves.
    pub fn jwks(&self) -> serde_json::Value {
        json!({ "keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.public),
            "kid": self.kid,
            "alg": "EdDSA",
            "use": "sig",
        }]})
    }
}

fn load(path: &Path, pem: &str) -> Result<SigningKey, AuthError> {
    if let Ok(meta) = fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "local signing key is readable by others; chmod 600 it");
        }
    }
    SigningKey::from_pkcs8_pem(pem).map_err(|e| {
        AuthError::LocalKey(format!(
            "{}: not an Ed25519 PKCS#8 PEM private key: {e}",
            path.display()
        ))
    })
}

/// RFC 7638 JWK thumbprint of an Ed25519 public key (members in lexicographic order, no spaces).
fn thumbprint(public: &[u8; 32]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(public)
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}
