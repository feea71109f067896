//! The HTML form's hidden token: when the form was rendered and a random nonce, signed with
//! HMAC-SHA256. The nonce is the form's idempotency key (a resubmitted form finds its ticket), the
//! time lets the abuse checks refuse forms filled too fast or kept too long.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

const VERSION: &str = "v1";
/// A form older than this is refused and rendered again.
pub const MAX_AGE_SECONDS: i64 = 24 * 3600;

/// Issues and checks form tokens with one key.
pub struct FormTokens {
    key: Vec<u8>,
}

/// A token whose signature checked out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    pub nonce: String,
    pub issued_at: DateTime<Utc>,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing")]
    Missing,
    #[error("malformed")]
    Malformed,
    #[error("bad signature")]
    BadSignature,
    #[error("expired")]
    Expired,
}

impl FormTokens {
    /// With no configured secret a random key is drawn: forms then survive only as long as the
    /// process, and several instances must share `server.form_secret`.
    pub fn new(secret: Option<&SecretString>) -> FormTokens {
        let key = match secret {
            Some(s) => s.expose_secret().as_bytes().to_vec(),
            None => {
                let mut k = vec![0u8; 32];
                rand::thread_rng().fill_bytes(&mut k);
                k
            }
        };
        FormTokens { key }
    }

    fn mac(&self, payload: &str) -> HmacSha256 {
        // HMAC takes a key of any length.
        let mut mac = HmacSha256::new_from_slice(&self.key).expect("HMAC accepts any key length");
        mac.update(payload.as_bytes());
        mac
    }

    pub fn issue(&self, now: DateTime<Utc>) -> String {
        let mut nonce = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut nonce);
        let payload = format!("{VERSION}.{}.{}", now.timestamp(), URL_SAFE_NO_PAD.encode(nonce));
        let tag = URL_SAFE_NO_PAD.encode(self.mac(&payload).finalize().into_bytes());
        format!("{payload}.{tag}")
    }

    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<VerifiedToken, TokenError> {
        if token.is_empty() {
            return Err(TokenError::Missing);
        }
        if token.len() > 200 {
            return Err(TokenError::Malformed);
        }
        let (payload, tag) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| TokenError::Malformed)?;
        // verify_slice compares in constant time.
        self.mac(payload)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        let mut parts = payload.split('.');
        let (Some(VERSION), Some(ts), Some(nonce), None) = (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let issued_at = ts
            .parse::<i64>()
            .ok()
            .and_then(|s| DateTime::<Utc>::from_timestamp(s, 0))
            .ok_or(TokenError::Malformed)?;
        let age = (now - issued_at).num_seconds();
        if !(-60..=MAX_AGE_SECONDS).contains(&age) {
            return Err(TokenError::Expired);
        }
        Ok(VerifiedToken {
            nonce: nonce.to_owned(),
            issued_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn an_issued_token_verifies_and_carries_its_time() {
        let t = FormTokens::new(None);
        let now = Utc::now();
        let token = t.issue(now);
        let v = t.verify(&token, now + Duration::seconds(30)).unwrap();
        assert_eq!(v.issued_at.timestamp(), now.timestamp());
        assert_ne!(t.verify(&t.issue(now), now).unwrap().nonce, v.nonce);
    }

    #[test]
    fn tampered_foreign_old_and_garbled_tokens_are_refused() {
        let secret = SecretString::from("s3cret");
        let t = FormTokens::new(Some(&secret));
        let now = Utc::now();
        let token = t.issue(now);
        let other = FormTokens::new(Some(&SecretString::from("other")));
        assert_eq!(other.verify(&token, now), Err(TokenError::BadSignature));
        let shifted = token.replacen(&now.timestamp().to_string(), &(now.timestamp() + 100).to_string(), 1);
        assert_eq!(t.verify(&shifted, now), Err(TokenError::BadSignature));
        assert_eq!(t.verify(&token, now + Duration::days(2)), Err(TokenError::Expired));
        assert_eq!(t.verify("", now), Err(TokenError::Missing));
        assert_eq!(t.verify("nonsense", now), Err(TokenError::Malformed));
        assert_eq!(t.verify("a.b.c.!!", now), Err(TokenError::Malformed));
        // Same secret, another process: still valid (several instances share the secret).
        assert!(FormTokens::new(Some(&secret)).verify(&token, now).is_ok());
    }
}
