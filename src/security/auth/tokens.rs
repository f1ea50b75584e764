//! Opaque bearer tokens: a file of token hashes and the callers they name.
//!
//! One line per token: the SHA-256 of the token in hex (optionally written
//! `sha256:<hex>`), whitespace, and the caller's name; `#` starts a
//! comment. The file never holds a token itself, and a presented token is
//! hashed and compared with every entry in constant time, so neither the
//! file nor response times give a token away.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Token hashes and the callers they name.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], String)>,
}

impl Tokens {
    /// Parses a tokens file.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "is not UTF-8 text".to_owned())?;
        let mut entries = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let bad = |what: &str| format!("line {}: {what}", number + 1);
            let mut fields = line.split_whitespace();
            let hash = fields.next().unwrap_or_default();
            let hash = hash.strip_prefix("sha256:").unwrap_or(hash);
            let caller = fields.next().ok_or_else(|| {
                bad("expected `<sha256 of the token, hex> <caller name>`; the caller name is missing")
            })?;
            if fields.next().is_some() {
                return Err(bad(
                    "expected two fields: `<sha256 of the token, hex> <caller name>`",
                ));
            }
            let digest = hex32(hash).ok_or_else(|| {
                bad("the first field must be the token's SHA-256 in hex (64 characters), not the token")
            })?;
            entries.push((digest, caller.to_owned()));
        }
        Ok(Self { entries })
    }

    /// The caller `token` names, if any.
    pub fn caller(&self, token: &str) -> Option<&str> {
        let presented: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every entry is compared, whichever matches.
        let mut found = None;
        for (digest, caller) in &self.entries {
            if bool::from(digest.ct_eq(&presented)) {
                found = Some(caller.as_str());
            }
        }
        found
    }

    /// How many tokens the file holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file holds no token.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

fn hex32(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn a_token_names_the_caller_its_hash_is_listed_for() {
        let file = format!(
            "# deploy pipeline\n{} pipeline\nsha256:{}   dashboard # read-only\n",
            sha("s3cret-one"),
            sha("s3cret-two")
        );
        let tokens = Tokens::parse(file.as_bytes()).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.caller("s3cret-one"), Some("pipeline"));
        assert_eq!(tokens.caller("s3cret-two"), Some("dashboard"));
        assert_eq!(tokens.caller("s3cret-three"), None);
        assert_eq!(
            tokens.caller(&sha("s3cret-one")),
            None,
            "the hash is not the token"
        );
    }

    #[test]
    fn a_file_holding_tokens_instead_of_hashes_is_refused_with_its_line() {
        let err = Tokens::parse(b"\n\nplain-token pipeline\n").unwrap_err();
        assert!(err.starts_with("line 3:"), "{err}");
        assert!(err.contains("SHA-256"), "{err}");
        let err = Tokens::parse(format!("{}\n", sha("x")).as_bytes()).unwrap_err();
        assert!(err.contains("caller name is missing"), "{err}");
    }
}
