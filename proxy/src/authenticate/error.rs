//! Why authentication failed: a detailed reason for the log, a caller-safe one for the response.
//! The token itself never appears in either.

/// Why a request could not be authenticated. Every variant is a deny (fail closed).
///
/// `Display` gives the detailed reason for logs; [`AuthError::public_message`] and
/// [`AuthError::www_authenticate`] give what may be shown to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization` header, or not a bearer credential.
    #[error("no bearer token")]
    Missing,
    /// The header or the token is not a well-formed bearer JWT.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token's `iss` is not a configured issuer.
    #[error("unknown issuer: {0}")]
    UnknownIssuer(String),
    /// No key of the issuer matches the token's `kid` (after a JWKS refresh, or while refreshes are rate-limited).
    #[error("no key `{kid}` for issuer `{issuer}`")]
    UnknownKey {
        /// The issuer whose key set was searched.
        issuer: String,
        /// The `kid` from the token header (empty when the header had none).
        kid: String,
    },
    /// The header `alg` is not in the issuer's allow-list, or does not fit the key it names.
    #[error("algorithm not allowed: {0}")]
    AlgorithmNotAllowed(String),
    /// The signature does not verify with the issuer's key.
    #[error("bad signature: {0}")]
    BadSignature(String),
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired at {exp} (now {now}, leeway {leeway}s)")]
    Expired {
        /// The token's `exp`.
        exp: i64,
        /// The time of the request.
        now: i64,
        /// The issuer's leeway in seconds.
        leeway: u64,
    },
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not valid before {nbf} (now {now}, leeway {leeway}s)")]
    NotYetValid {
        /// The token's `nbf`.
        nbf: i64,
        /// The time of the request.
        now: i64,
        /// The issuer's leeway in seconds.
        leeway: u64,
    },
    /// The token lives longer (`exp - iat`, or `exp - now` without `iat`) than its issuer's
    /// `max_token_lifetime_secs` allows.
    #[error("token lifetime of {lifetime}s exceeds the issuer's max_token_lifetime_secs of {max}s")]
    LifetimeTooLong {
        /// The token's lifetime in seconds.
        lifetime: i64,
        /// The issuer's maximum in seconds.
        max: u64,
    },
    /// `aud` names none of the issuer's configured audiences (or is absent).
    #[error("wrong audience: {0}")]
    WrongAudience(String),
    /// A required claim is absent.
    #[error("missing claim `{0}`")]
    MissingClaim(String),
    /// A claim is present but has the wrong type or value.
    #[error("invalid claim: {0}")]
    InvalidClaim(String),
    /// The issuer's key set could not be fetched (and no usable cached key exists).
    #[error("issuer keys unavailable: {0}")]
    JwksUnavailable(String),
    /// The authenticator's configuration is invalid.
    #[error("authentication config: {0}")]
    Config(String),
    /// jitgate's own signing key could not be loaded, created or used.
    #[error("local issuer: {0}")]
    LocalKey(String),
}

impl AuthError {
    /// A short reason that is safe to show to the caller: no token, no claim values, no key ids, no URLs.
    pub fn public_message(&self) -> &'static str {
        match self {
            AuthError::Missing => "a bearer token is required",
            AuthError::Malformed(_) => "the token is malformed",
            AuthError::UnknownIssuer(_) => "the token issuer is not trusted",
            AuthError::UnknownKey { .. } => "the token signing key is unknown",
            AuthError::AlgorithmNotAllowed(_) => "the token algorithm is not allowed",
            AuthError::BadSignature(_) => "the token signature is invalid",
            AuthError::Expired { .. } => "the token has expired",
            AuthError::NotYetValid { .. } => "the token is not valid yet",
            AuthError::LifetimeTooLong { .. } => "the token lifetime is longer than allowed",
            AuthError::WrongAudience(_) => "the token is not meant for this service",
            AuthError::MissingClaim(_) => "the token lacks a required claim",
            AuthError::InvalidClaim(_) => "the token has an invalid claim",
            AuthError::JwksUnavailable(_) => "the token cannot be verified right now",
            AuthError::Config(_) | AuthError::LocalKey(_) => "authentication is misconfigured",
        }
    }

    /// The RFC 6750 `WWW-Authenticate` challenge for a 401 response.
    ///
    /// Without a credential the challenge carries no error code (RFC 6750 section 3.1); otherwise it is
    /// `invalid_token` with [`AuthError::public_message`] as the description (which never contains a quote).
    pub fn www_authenticate(&self) -> String {
        match self {
            AuthError::Missing => "Bearer realm=\"jitgate\"".to_string(),
            other => format!(
                "Bearer realm=\"jitgate\", error=\"invalid_token\", error_description=\"{}\"",
                other.public_message()
            ),
        }
    }
}
