//! Ops tokens: what a person or a program presents to the ops API.
//!
//! A token is `itk_<id>_<secret>`: the id (12 hex characters) finds the row, the secret (32 random
//! bytes, base64url) is stored only as its SHA-256 and compared in constant time. The token is
//! shown once, when it is created.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::Serialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// See tickets, deliveries and the audit log.
    Read,
    /// Change state: retry deliveries, resend acknowledgements.
    Ops,
    /// Read `/metrics`.
    Metrics,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Ops, Scope::Metrics];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Ops => "ops",
            Scope::Metrics => "metrics",
        }
    }
}

impl FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s.trim())
            .ok_or_else(|| format!("unknown scope `{}`; use read, ops or metrics", s.trim()))
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A comma-separated list of scopes, sorted and without repeats; at least one.
pub fn parse_scopes(list: &str) -> Result<Vec<Scope>, String> {
    let mut scopes = list
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(Scope::from_str)
        .collect::<Result<Vec<_>, _>>()?;
    scopes.sort();
    scopes.dedup();
    if scopes.is_empty() {
        return Err("give at least one scope: read, ops or metrics".to_owned());
    }
    Ok(scopes)
}

pub fn scopes_to_string(scopes: &[Scope]) -> String {
    scopes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

/// A token name: 1–64 characters of letters, digits, `.`, `_`, `-` (it appears in the audit log).
pub fn valid_token_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A freshly drawn token: what to show once, and what to store.
pub struct NewToken {
    pub token: String,
    pub token_id: String,
    pub secret_hash: String,
}

pub fn generate_token() -> NewToken {
    let mut id = [0u8; 6];
    let mut secret = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut id);
    rand::thread_rng().fill_bytes(&mut secret);
    let token_id = hex::encode(id);
    let secret = URL_SAFE_NO_PAD.encode(secret);
    NewToken {
        token: format!("itk_{token_id}_{secret}"),
        secret_hash: hash_secret(&secret),
        token_id,
    }
}

fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// The id and secret of a presented token, if it has the shape of one.
pub fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("itk_")?;
    let (id, secret) = rest.split_once('_')?;
    (id.len() == 12 && id.bytes().all(|b| b.is_ascii_hexdigit()) && (1..=100).contains(&secret.len()))
        .then_some((id, secret))
}

/// Whether `secret` is the one whose hash was stored, compared in constant time.
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    let presented = hash_secret(secret);
    presented.as_bytes().ct_eq(stored_hash.as_bytes()).into()
}

/// A token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A live token found by its id, to be checked against the presented secret.
#[derive(Debug, Clone)]
pub struct StoredToken {
    pub name: String,
    pub scopes: Vec<Scope>,
    pub secret_hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_against_its_stored_hash_only() {
        let t = generate_token();
        let (id, secret) = split_token(&t.token).unwrap();
        assert_eq!(id, t.token_id);
        assert!(secret_matches(secret, &t.secret_hash));
        assert!(!secret_matches("not-it", &t.secret_hash));
        let other = generate_token();
        assert_ne!(other.token, t.token);
        assert!(!secret_matches(secret, &other.secret_hash));
        for bad in [
            "",
            "itk_",
            "itk_abc_def",
            "Bearer x",
            "itk_zzzzzzzzzzzz_x",
            &t.token[1..],
        ] {
            assert!(split_token(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn scopes_parse_sorted_once_and_refuse_unknown_ones() {
        assert_eq!(
            parse_scopes("metrics, read,read").unwrap(),
            [Scope::Read, Scope::Metrics]
        );
        assert!(parse_scopes("read,admin").unwrap_err().contains("admin"));
        assert!(parse_scopes(" , ").is_err());
        assert_eq!(scopes_to_string(&[Scope::Read, Scope::Ops]), "read,ops");
        assert!(valid_token_name("alice-laptop.2"));
        assert!(!valid_token_name("alice laptop"));
        assert!(!valid_token_name(""));
    }
}
