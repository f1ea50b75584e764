//! Bearer JWTs, verified against the keys of a JWKS file with a configured
//! issuer and audience. Only asymmetric algorithms are accepted (RS*, PS*,
//! ES256/ES384, EdDSA): the gateway holds public keys, never a secret that
//! could mint tokens. `exp` is required; `exp` and `nbf` allow
//! [`LEEWAY_SECS`] of clock skew. The caller is the token's `sub`.

use std::collections::HashMap;

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
}

/// The keys of a JWKS file, by key id.
pub struct Keys {
    by_id: HashMap<String, (DecodingKey, Option<Algorithm>)>,
    /// Keys without a `kid`, tried for tokens without one.
    anonymous: Vec<(DecodingKey, Option<Algorithm>)>,
}

impl Keys {
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

    /// Verifies `token` and returns its subject, or why it is refused.
    pub fn verify(&self, token: &str, issuer: &str, audience: &str) -> Result<String, JwtRefusal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtRefusal::Malformed)?;
        if !ASYMMETRIC.contains(&header.alg) {
            return Err(JwtRefusal::Algorithm(format!("{:?}", header.alg)));
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
        validation.set_issuer(&[issuer]);
        validation.set_audience(&[audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.validate_nbf = true;
        validation.leeway = LEEWAY_SECS;
        let mut refusal = JwtRefusal::Signature;
        for (key, alg) in candidates {
            if alg.is_some_and(|alg| alg != header.alg) {
                refusal = JwtRefusal::Algorithm(format!("{:?}", header.alg));
                continue;
            }
            match jsonwebtoken::decode::<Claims>(token, key, &validation) {
                Ok(data) if data.claims.sub.is_empty() => return Err(JwtRefusal::NoSubject),
                Ok(data) => return Ok(data.claims.sub),
                Err(err) => refusal = JwtRefusal::from(err.kind()),
            }
        }
        Err(refusal)
    }
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

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: String,
}

/// Why a JWT was refused; each reads as a message a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtRefusal {
    /// Not three base64url parts with a JSON header.
    #[error("the bearer token is not a well-formed JWT (its header cannot be read)")]
    Malformed,
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
            ErrorKind::InvalidToken
            | ErrorKind::Base64(_)
            | ErrorKind::Json(_)
            | ErrorKind::Utf8(_) => Self::Malformed,
            _ => Self::Signature,
        }
    }
}
