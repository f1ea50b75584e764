//! Callers' names, which say where they came from, and a caller's name
//! from its client certificate.
//!
//! Every authenticated caller's name starts with its kind, so no
//! credential of one kind can take the name (and the grants) of another:
//!
//! | kind | name | from |
//! |---|---|---|
//! | SPIFFE ID | `spiffe://<trust domain>/<path>` | a certificate's single `spiffe://` URI SAN |
//! | DNS name | `dns:<name>` | a certificate's first DNS SAN, without a SPIFFE ID |
//! | common name | `cn:<CN>` | a certificate's subject CN, without either SAN |
//! | token | `token:<name>` | the tokens file's entry |
//! | JWT | `jwt:<sub>` | a JWT's `sub`, from the one issuer configured |
//!
//! A CN that spells a SPIFFE ID stays a CN (`cn:spiffe://…`).

use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

/// Why a verified certificate names no caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// The certificate could not be parsed (rustls verified it, so this
    /// is a certificate no caller should have).
    #[error("the client certificate cannot be read: {0}")]
    Unreadable(String),
    /// A SPIFFE certificate carries exactly one SPIFFE ID.
    #[error("the client certificate carries {0} spiffe:// URIs; a SPIFFE ID must be the only one")]
    SeveralSpiffeIds(usize),
    /// Nothing names the caller.
    #[error("the client certificate names no caller: no spiffe:// URI SAN, DNS SAN or subject CN")]
    Nameless,
}

/// The prefixes of caller names, one per kind.
pub const KINDS: [&str; 5] = [SPIFFE, DNS, CN, TOKEN, JWT];
const SPIFFE: &str = "spiffe://";
const DNS: &str = "dns:";
const CN: &str = "cn:";
const TOKEN: &str = "token:";
const JWT: &str = "jwt:";

/// The name of a tokens-file caller.
pub fn token(name: &str) -> String {
    format!("{TOKEN}{name}")
}

/// The name of a JWT's subject.
pub fn jwt(sub: &str) -> String {
    format!("{JWT}{sub}")
}

/// The prefix of the kind a caller name says it is (one of [`KINDS`]), if
/// it says one.
pub fn kind_of(name: &str) -> Option<&'static str> {
    KINDS.into_iter().find(|prefix| name.starts_with(prefix))
}

/// The caller a client certificate (DER) names.
pub fn of_certificate(der: &[u8]) -> Result<String, IdentityError> {
    let (_, cert) =
        X509Certificate::from_der(der).map_err(|e| IdentityError::Unreadable(e.to_string()))?;
    let names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san.value.general_names.clone(),
        Ok(None) => Vec::new(),
        Err(err) => return Err(IdentityError::Unreadable(err.to_string())),
    };
    let spiffe: Vec<&str> = names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
            _ => None,
        })
        .collect();
    match spiffe.as_slice() {
        [id] => return Ok((*id).to_owned()),
        [] => {}
        several => return Err(IdentityError::SeveralSpiffeIds(several.len())),
    }
    let dns = names.iter().find_map(|name| match name {
        GeneralName::DNSName(dns) => Some(*dns),
        _ => None,
    });
    if let Some(dns) = dns {
        return Ok(format!("{DNS}{dns}"));
    }
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .map(|cn| format!("{CN}{cn}"))
        .ok_or(IdentityError::Nameless)
}
