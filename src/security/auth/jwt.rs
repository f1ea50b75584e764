//! Bearer JWTs, verified against the keys of a JWKS file with a configured
//! issuer and audience. Only asymmetric algorithms are accepted (RS*, PS*,
//! ES256/ES384, EdDSA): the gateway holds public keys, never a secret that
//! could mint tokens. `exp` is required; `exp` and `nbf` allow
//! [`LEEWAY_SECS`] of clock skew. `iss` must be the configured issuer, as a
//! single string; `typ`, when present, `JWT` or `at+jwt`; a `crit` header is
//! refused (RFC 7515: the gateway understands no extension); with a maximum
//! lifetime, `exp` - `iat` must stay within it. The caller is the token's
//! `sub` (a string).

use std::collections::HashMap;

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{Jwk, JwkSet},
};
use serde::Deserialize;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 30;

/// The algorithms a token may be signed with.
const ASYMMETRIC: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// Who issues the tokens and whom they are for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The JWKS file (the issuer's public keys).
    pub jwks: std::path::PathBuf,
    /// The `iss` tokens must carry.
    pub issuer: String,
    /// The `aud` tokens must carry (one of).
    pub audience: String,
    /// The longest a token may be valid (`exp` - `iat`); none: any.
    pub max_lifetime: Option<std::time::Duration>,
}

/// The keys of a JWKS file, by key id.
pub struct Jwks {
    by_id: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    /// Keys without a `kid`, tried for tokens without one.
    anonymous: Vec<(DecodingKey, Option<Algorithm>)>,
}

impl Jwks {
    /// Parses a JWKS document.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let set: JwkSet =
            serde_json::from_slice(bytes).map_err(|e| format!("is not a JWKS document: {e}"))?;
        let mut keys = Self {
            by_id: HashMap::new(),
            anonymous: Vec::new(),
        };
        for (index, jwk) in set.keys.iter().enumerate() {
            let key = key(jwk).map_err(|e| format!("key {index}: {e}"))?;
            match &jwk.common.key_id {
                Some(kid) => {
                    keys.by_id.insert(kid.clone(), key);
                }
                None => keys.anonymous.push(key),
            }
        }
        if keys.by_id.is_empty() && keys.anonymous.is_empty() {
            return Err("holds no keys".to_owned());
        }
        Ok(keys)
    }

    /// Verifies `token` against `rules` and returns its subject, or why
    /// it is refused.
    pub fn verify(&self, token: &str, rules: &JwtSettings) -> Result<String, JwtRefusal> {
        let [_, payload, signature] = parts(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtRefusal::Header)?;
        if let Some(typ) = &header.typ
            && !TYPES.iter().any(|t| t.eq_ignore_ascii_case(typ))
        {
            return Err(JwtRefusal::Type(clip(typ)));
        }
        if let Some(crit) = &header.crit {
            // RFC 7515 4.1.11: a recipient that does not understand every
            // extension `crit` lists must refuse the token; this gateway
            // understands none (and the list may not be empty).
            return Err(JwtRefusal::Critical(clip(&crit.join(", "))));
        }
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(JwtRefusal::Algorithm(format!("{:?}", header.alg)));
        }
        if URL_SAFE_NO_PAD.decode(signature).is_err() {
            return Err(JwtRefusal::Signature);
        }
        if URL_SAFE_NO_PAD
            .decode(payload)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<serde_json::Map<_, _>>(&bytes).ok())
            .is_none()
        {
            return Err(JwtRefusal::Payload);
        }
        let candidates: Vec<&(DecodingKey, Option<Algorithm>)> = match &header.kid {
            Some(kid) => match self.by_id.get(kid) {
                Some(key) => vec![key],
                None => return Err(JwtRefusal::UnknownKey(kid.chars().take(64).collect())),
            },
            None if self.anonymous.is_empty() => return Err(JwtRefusal::NoKeyId),
            None => self.anonymous.iter().collect(),
        };
        let mut validation = Validation::new(header.alg);
        // `iss` and `sub` are checked below, for their types as well.
        validation.set_audience(&[&rules.audience]);
        validation.set_required_spec_claims(&["exp", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let mut refusal = JwtRefusal::Signature;
        for (key, alg) in candidates {
            if alg.is_some_and(|alg| alg != header.alg) {
                refusal = JwtRefusal::Algorithm(format!("{:?}", header.alg));
                continue;
            }
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) => return data.claims.subject(rules),
                Err(err) => refusal = JwtRefusal::from(err.kind()),
            }
        }
        Err(refusal)
    }
}

/// The `typ` header values a token may carry (RFC 7519 5.1, RFC 9068 2.1).
const TYPES: [&str; 4] = ["JWT", "at+jwt", "application/jwt", "application/at+jwt"];

/// The three dot-separated parts of a compact JWS.
fn parts(token: &str) -> Result<[&str; 3], JwtRefusal> {
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(signature), None) => Ok([header, payload, signature]),
        _ => Err(JwtRefusal::Malformed),
    }
}

/// A header value for a message: at most 64 characters.
fn clip(value: &str) -> String {
    value.chars().take(64).collect()
}

fn key(jwk: &Jwk) -> Result<(DecodingKey, Option<Algorithm>), String> {
    let alg = match &jwk.common.key_algorithm {
        Some(alg) => {
            let alg: Algorithm = alg
                .to_string()
                .parse()
                .map_err(|_| format!("algorithm {alg} cannot sign tokens"))?;
            if !ASYMMETRIC.contains(&alg) {
                return Err(format!("algorithm {alg:?} is not a public-key algorithm"));
            }
            Some(alg)
        }
        None => None,
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable: {e}"))?;
    Ok((key, alg))
}

/// The claims checked here rather than by `jsonwebtoken`, as JSON values so
/// that a claim of the wrong type gets its own message.
#[derive(Deserialize)]
struct Claims {
    sub: Option<serde_json::Value>,
    iss: Option<serde_json::Value>,
    exp: Option<serde_json::Value>,
    iat: Option<serde_json::Value>,
}

impl Claims {
    /// The subject, once `iss`, `sub` and the lifetime hold.
    fn subject(self, rules: &JwtSettings) -> Result<String, JwtRefusal> {
        use serde_json::Value;
        match self.iss {
            Some(Value::String(iss)) if iss == rules.issuer => {}
            Some(Value::String(_)) => return Err(JwtRefusal::Issuer),
            Some(_) => return Err(JwtRefusal::ClaimType("iss", "a string")),
            None => return Err(JwtRefusal::Claim("iss".to_owned())),
        }
        let sub = match self.sub {
            Some(Value::String(sub)) if sub.is_empty() => return Err(JwtRefusal::NoSubject),
            Some(Value::String(sub)) => sub,
            Some(_) => return Err(JwtRefusal::ClaimType("sub", "a string")),
            None => return Err(JwtRefusal::Claim("sub".to_owned())),
        };
        if let Some(max) = rules.max_lifetime {
            let exp = self.exp.as_ref().and_then(Value::as_u64).unwrap_or(0);
            let issued = match &self.iat {
                None => None,
                Some(iat) => Some(
                    iat.as_u64()
                        .ok_or(JwtRefusal::ClaimType("iat", "a number of seconds"))?,
                ),
            };
            // Without `iat`, what is left of its life counts.
            let from = issued.unwrap_or_else(now);
            let lifetime = exp.saturating_sub(from);
            if lifetime > max.as_secs() {
                return Err(JwtRefusal::Lifetime {
                    seconds: lifetime,
                    max: max.as_secs(),
                });
            }
        }
        Ok(sub)
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why a JWT was refused; each reads as a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtRefusal {
    /// Not three dot-separated parts.
    #[error("the bearer token is not a JWT (not three base64url parts separated by dots)")]
    Malformed,
    /// The first part is not a base64url JSON header.
    #[error("the JWT's header cannot be read (not base64url-encoded JSON with a known alg)")]
    Header,
    /// The second part is not a base64url JSON object.
    #[error("the JWT's payload cannot be read (not a base64url-encoded JSON object)")]
    Payload,
    /// A `typ` header of another kind of token.
    #[error("the JWT's typ {0:?} is not accepted (JWT or at+jwt)")]
    Type(String),
    /// A `crit` header: extensions the gateway must understand and does not.
    #[error("the JWT's crit header lists extensions this gateway does not understand: {0}")]
    Critical(String),
    /// Symmetric or unknown algorithm, or not the key's.
    #[error(
        "the JWT's algorithm {0} is not accepted (public-key algorithms of the JWKS keys only)"
    )]
    Algorithm(String),
    /// The `kid` is not in the JWKS.
    #[error("the JWT's key id {0:?} is not among the gateway's JWKS keys")]
    UnknownKey(String),
    /// No `kid`, and every key has one.
    #[error("the JWT names no key id (kid) and every JWKS key has one")]
    NoKeyId,
    /// The signature does not verify.
    #[error("the JWT's signature does not verify")]
    Signature,
    /// `exp` passed.
    #[error("the JWT expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("the JWT is not valid yet (nbf)")]
    NotYetValid,
    /// Another issuer.
    #[error("the JWT's issuer (iss) is not the one this gateway trusts")]
    Issuer,
    /// Another audience.
    #[error("the JWT's audience (aud) does not include this gateway")]
    Audience,
    /// A required claim is missing or malformed.
    #[error("the JWT lacks a valid {0} claim")]
    Claim(String),
    /// A claim of the wrong JSON type.
    #[error("the JWT's {0} claim must be {1}")]
    ClaimType(&'static str, &'static str),
    /// Valid for longer than the gateway accepts.
    #[error(
        "the JWT is valid for {seconds} s (exp - iat), more than this gateway accepts ({max} s, --jwt-max-lifetime)"
    )]
    Lifetime {
        /// Its lifetime.
        seconds: u64,
        /// The most accepted.
        max: u64,
    },
    /// `sub` is empty.
    #[error("the JWT's subject (sub) is empty")]
    NoSubject,
}

impl From<&ErrorKind> for JwtRefusal {
    fn from(kind: &ErrorKind) -> Self {
        match kind {
            ErrorKind::ExpiredSignature => Self::Expired,
            ErrorKind::ImmatureSignature => Self::NotYetValid,
            ErrorKind::InvalidIssuer => Self::Issuer,
            ErrorKind::InvalidAudience => Self::Audience,
            ErrorKind::InvalidAlgorithm => Self::Algorithm("of another key type".to_owned()),
            ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
                Self::Claim(claim.clone())
            }
            // The header and the signature's encoding were read before.
            ErrorKind::Base64(_) | ErrorKind::Json(_) | ErrorKind::Utf8(_) => Self::Payload,
            ErrorKind::InvalidToken => Self::Malformed,
            _ => Self::Signature,
        }
    }
}
