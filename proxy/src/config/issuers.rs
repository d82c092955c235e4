//! `[[issuers]]` and `[local_issuer]`: who may vouch for callers. An issuer's own settings are checked by
//! [`crate::authenticate::validate_issuers`]; here, what they must not share with certificate principals.

use std::path::PathBuf;

use serde::Deserialize;

use super::problems::Problems;
use super::server::TlsConfig;
use crate::authenticate::IssuerConfig;

/// `[local_issuer]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLocalIssuer {
    /// PKCS#8 PEM Ed25519 key; generated (0600) when missing.
    pub key_file: PathBuf,
    /// The `iss` of minted tokens.
    #[serde(default = "default_local_iss")]
    pub issuer: String,
    /// The `aud` of minted tokens.
    #[serde(default = "default_local_iss")]
    pub audience: String,
}

fn default_local_iss() -> String {
    "jitgate".into()
}

/// Validates `[[issuers]]` against each other and against the data plane's client certificates (`tls`).
pub(crate) fn check(issuers: &[IssuerConfig], tls: Option<&TlsConfig>, p: &mut Problems<'_>) {
    if let Err(problems) = crate::authenticate::validate_issuers(issuers) {
        for problem in problems {
            p.err(&problem.path, problem.message);
        }
    }
    // Client certificates name principals too: their type must not be an issuer's, or a SAN `alice` would be the
    // issuer's alice.
    if let Some(t) = tls.filter(|t| t.client_ca.is_some()) {
        if let Some((i, _)) = issuers
            .iter()
            .enumerate()
            .find(|(_, c)| c.principal_type == t.client_principal_type)
        {
            p.err(
                "server.tls.client_principal_type",
                format!(
                    "`{}` is also the principal type of issuers[{i}]: a certificate's SAN would be that issuer's \
                     principal of the same id; give certificates their own type (the default is `Workload`)",
                    t.client_principal_type
                ),
            );
        }
    }
}

/// `[local_issuer]` with its key file resolved.
pub(crate) fn local_issuer(
    raw: Option<RawLocalIssuer>,
    p: &Problems<'_>,
) -> Option<RawLocalIssuer> {
    raw.map(|mut l| {
        l.key_file = p.resolve(&l.key_file);
        l
    })
}
