//! A caller's name from its client certificate: its SPIFFE ID (the single
//! `spiffe://` URI SAN) when present, else its first DNS SAN, else its
//! subject CN.

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
        return Ok(dns.to_owned());
    }
    cert.subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .filter(|cn| !cn.is_empty())
        .map(str::to_owned)
        .ok_or(IdentityError::Nameless)
}
