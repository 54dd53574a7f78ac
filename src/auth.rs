//! Short-lived signed tokens: HS256 JSON Web Tokens carrying a tenant, the
//! topics and subscription modes it may use, whether it may ingest, and an
//! expiry.
//!
//! [`Keys`] holds the signing secrets by key id (`kid`), several at once, so
//! keys rotate without a gap: add the new key, sign with it, remove the old
//! one once its tokens have expired. Verification is pure Rust (RustCrypto
//! `hmac` + `sha2`, wasm-safe) and compares signatures in constant time;
//! the clock is the caller's `now`.
//!
//! ```
//! use edgestream::auth::{Claims, Keys, Mode};
//! use edgestream::time::{Span, Timestamp};
//!
//! let mut keys = Keys::new();
//! keys.add("k1", b"a secret of at least thirty-two bytes!!")?;
//! let now: Timestamp = "2026-11-28T04:00:00Z".parse()?;
//! let claims = Claims::new("acme", now.saturating_add(Span::from_mins(15)))
//!     .topics(["metrics"])
//!     .modes([Mode::Deltas]);
//! let token = keys.sign("k1", &claims)?;
//!
//! let verified = keys.verify(&token, now)?;
//! assert_eq!(verified.tenant, "acme");
//! assert!(verified.allows("metrics", Mode::Deltas));
//! assert!(!verified.allows("metrics", Mode::Full));
//! assert!(keys.verify(&token, now.saturating_add(Span::from_hours(1))).is_err()); // expired
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::time::{Span, Timestamp};

/// The longest token [`Keys::verify`] reads.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;

/// The shortest secret [`Keys::add`] accepts: 256 bits, as RFC 7518 asks
/// of HS256 keys.
pub const MIN_SECRET_LEN: usize = 32;

/// How a subscriber receives a topic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Raw (possibly sampled) events.
    Full,
    /// Tile deltas, with a snapshot on join and on a gap.
    Deltas,
    /// Window results.
    Aggregates,
}

impl Mode {
    /// The mode's name: `full`, `deltas`, `aggregates`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Deltas => "deltas",
            Mode::Aggregates => "aggregates",
        }
    }
}

impl core::str::FromStr for Mode {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Mode, AuthError> {
        match s {
            "full" => Ok(Mode::Full),
            "deltas" => Ok(Mode::Deltas),
            "aggregates" => Ok(Mode::Aggregates),
            _ => Err(AuthError::Malformed(format!("unknown mode {s:?}"))),
        }
    }
}

/// What a token grants. Other registered claims (`sub`, `iss`, `aud`, …)
/// may be present and are ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Claims {
    /// The tenant whose data the bearer may read (and write, with `ingest`).
    pub tenant: String,
    /// Topics the bearer may subscribe to; `*` is every topic of the tenant.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Modes the bearer may subscribe in; empty is every mode.
    #[serde(default)]
    pub modes: Vec<Mode>,
    /// Whether the bearer may ingest events for the tenant.
    #[serde(default)]
    pub ingest: bool,
    /// Expiry, in seconds since the epoch.
    pub exp: i64,
    /// Not before, in seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Issued at, in seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
}

impl Claims {
    /// Claims for `tenant` that expire at `exp` (rounded down to the
    /// second), granting nothing else yet.
    pub fn new(tenant: impl Into<String>, exp: Timestamp) -> Self {
        Claims {
            tenant: tenant.into(),
            topics: Vec::new(),
            modes: Vec::new(),
            ingest: false,
            exp: exp.as_nanos().div_euclid(1_000_000_000),
            nbf: None,
            iat: None,
        }
    }

    /// Grants these topics (`*` for all).
    pub fn topics(mut self, topics: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// Restricts the modes.
    pub fn modes(mut self, modes: impl IntoIterator<Item = Mode>) -> Self {
        self.modes = modes.into_iter().collect();
        self
    }

    /// Grants ingest.
    pub fn ingest(mut self) -> Self {
        self.ingest = true;
        self
    }

    /// Whether the bearer may subscribe to `topic` in `mode`.
    pub fn allows(&self, topic: &str, mode: Mode) -> bool {
        self.topics.iter().any(|t| t == "*" || t == topic) && (self.modes.is_empty() || self.modes.contains(&mode))
    }
}

/// Why a token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not three base64url parts of JSON, or JSON without the required
    /// claims.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("the token is longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// An algorithm other than HS256 (`none` included).
    #[error("algorithm {0:?} is not accepted (only HS256)")]
    Algorithm(String),
    /// A key id this verifier does not hold, or no key id while it holds
    /// several keys.
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    /// The signature does not match.
    #[error("bad signature")]
    Signature,
    /// Past its expiry.
    #[error("expired at {exp} (epoch seconds)")]
    Expired {
        /// The `exp` claim.
        exp: i64,
    },
    /// Before its `nbf` claim.
    #[error("not valid before {nbf} (epoch seconds)")]
    NotYetValid {
        /// The `nbf` claim.
        nbf: i64,
    },
    /// A secret shorter than [`MIN_SECRET_LEN`], or an empty key id.
    #[error("invalid key: {0}")]
    Key(String),
    /// The token is valid but does not grant what was asked (another
    /// tenant's data, a topic or mode it lacks, ingest): HTTP 403, where
    /// the others are 401.
    #[error("the token does not grant {asked}")]
    Forbidden {
        /// What was asked.
        asked: String,
    },
}

impl AuthError {
    /// A short stable name of the reason, for audit logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthError::Malformed(_) => "malformed",
            AuthError::TooLong => "too_long",
            AuthError::Algorithm(_) => "algorithm",
            AuthError::UnknownKey(_) => "unknown_key",
            AuthError::Signature => "signature",
            AuthError::Expired { .. } => "expired",
            AuthError::NotYetValid { .. } => "not_yet_valid",
            AuthError::Key(_) => "key",
            AuthError::Forbidden { .. } => "forbidden",
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    typ: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kid: Option<String>,
}

/// Signing secrets by key id, and a leeway for clock skew.
#[derive(Clone, Default)]
pub struct Keys {
    keys: BTreeMap<String, Vec<u8>>,
    leeway: Span,
}

impl core::fmt::Debug for Keys {
    /// Key ids only: secrets never reach a log.
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Keys")
            .field("kids", &self.keys.keys().collect::<Vec<_>>())
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl Keys {
    /// No keys: every token is refused.
    pub fn new() -> Self {
        Keys::default()
    }

    /// Tolerates this much clock skew on `exp` and `nbf`.
    pub fn with_leeway(mut self, leeway: Span) -> Self {
        self.leeway = leeway.max(Span::ZERO);
        self
    }

    /// Adds (or replaces) the secret of key `kid`.
    pub fn add(&mut self, kid: impl Into<String>, secret: &[u8]) -> Result<(), AuthError> {
        let kid = kid.into();
        if kid.is_empty() {
            return Err(AuthError::Key("the key id is empty".into()));
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(AuthError::Key(format!("the secret of {kid:?} is shorter than {MIN_SECRET_LEN} bytes")));
        }
        self.keys.insert(kid, secret.to_vec());
        Ok(())
    }

    /// Removes key `kid`; its tokens are refused from now on.
    pub fn remove(&mut self, kid: &str) -> bool {
        self.keys.remove(kid).is_some()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// A token for `claims`, signed with key `kid` (named in its header).
    pub fn sign(&self, kid: &str, claims: &Claims) -> Result<String, AuthError> {
        let secret = self.keys.get(kid).ok_or_else(|| AuthError::UnknownKey(kid.to_owned()))?;
        let header = Header { alg: "HS256".into(), typ: Some("JWT".into()), kid: Some(kid.to_owned()) };
        let json = |e: serde_json::Error| AuthError::Malformed(e.to_string());
        let mut token = Vec::new();
        crate::base64::encode_url(&serde_json::to_vec(&header).map_err(json)?, &mut token);
        token.push(b'.');
        crate::base64::encode_url(&serde_json::to_vec(claims).map_err(json)?, &mut token);
        let signature = mac(secret, &token).map(|m| m.finalize().into_bytes())?;
        token.push(b'.');
        crate::base64::encode_url(&signature, &mut token);
        String::from_utf8(token).map_err(|e| AuthError::Malformed(e.to_string()))
    }

    /// The claims of `token` if it is an HS256 token signed by one of the
    /// keys (the one its `kid` names; without a `kid`, the only key held),
    /// valid at `now` (± the leeway).
    pub fn verify(&self, token: &str, now: Timestamp) -> Result<Claims, AuthError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::TooLong);
        }
        let malformed = |m: &str| AuthError::Malformed(m.to_owned());
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed("a token has three parts separated by dots"));
        };
        let mut bytes = Vec::new();
        crate::base64::decode_url(header.as_bytes(), &mut bytes)
            .ok_or_else(|| malformed("the header is not base64url"))?;
        let header: Header =
            serde_json::from_slice(&bytes).map_err(|e| AuthError::Malformed(format!("header: {e}")))?;
        if header.alg != "HS256" {
            return Err(AuthError::Algorithm(header.alg));
        }
        let secret = match &header.kid {
            Some(kid) => self.keys.get(kid).ok_or_else(|| AuthError::UnknownKey(kid.clone()))?,
            None => match (self.keys.len(), self.keys.values().next()) {
                (1, Some(only)) => only,
                _ => return Err(AuthError::UnknownKey(String::new())),
            },
        };
        let mut given = Vec::new();
        crate::base64::decode_url(signature.as_bytes(), &mut given)
            .ok_or_else(|| malformed("the signature is not base64url"))?;
        let signed_len = header_len(token, signature.len());
        let signed = token.as_bytes().get(..signed_len).ok_or_else(|| malformed("truncated"))?;
        // Constant-time comparison.
        mac(secret, signed)?.verify_slice(&given).map_err(|_| AuthError::Signature)?;
        crate::base64::decode_url(payload.as_bytes(), &mut bytes)
            .ok_or_else(|| malformed("the claims are not base64url"))?;
        let claims: Claims =
            serde_json::from_slice(&bytes).map_err(|e| AuthError::Malformed(format!("claims: {e}")))?;
        let now_secs = now.as_nanos().div_euclid(1_000_000_000);
        let leeway = self.leeway.as_nanos() / 1_000_000_000;
        if now_secs >= claims.exp.saturating_add(leeway) {
            return Err(AuthError::Expired { exp: claims.exp });
        }
        if let Some(nbf) = claims.nbf
            && now_secs.saturating_add(leeway) < nbf
        {
            return Err(AuthError::NotYetValid { nbf });
        }
        Ok(claims)
    }
}

/// Bytes of `token` before its last dot, given the signature's length.
fn header_len(token: &str, signature_len: usize) -> usize {
    token.len().saturating_sub(signature_len).saturating_sub(1)
}

fn mac(secret: &[u8], data: &[u8]) -> Result<Hmac<Sha256>, AuthError> {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret).map_err(|e| AuthError::Key(e.to_string()))?;
    mac.update(data);
    Ok(mac)
}
