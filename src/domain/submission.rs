use serde::Serialize;
use sha2::{Digest, Sha256};
use validator::ValidateEmail;

use super::text::{clean_multi_line, clean_single_line};
use super::RequestType;

use crate::domain::ClosedSet;

/// One problem with one field, shown beside the field on the form and listed in problem details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        FieldError {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

/// What arrived, before any checks: the same for the JSON API and the HTML form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RawSubmission {
    pub name: Option<String>,
    pub email: Option<String>,
    #[serde(rename = "type")]
    pub request_type: Option<String>,
    pub subject: Option<String>,
    pub message: Option<String>,
    pub account: Option<String>,
    pub page_url: Option<String>,
}

/// A submission that passed every check, normalised (NFC, no control characters in single-line
/// fields, `\n` line ends in the message).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Submission {
    pub name: String,
    pub email: String,
    pub request_type: RequestType,
    pub subject: String,
    pub message: String,
    pub account: Option<String>,
    pub page_url: Option<String>,
}

/// Limits from docs/http-api.md, in characters (Unicode scalar values).
pub const NAME_MAX: usize = 100;
pub const EMAIL_MAX: usize = 254;
pub const SUBJECT_MAX: usize = 150;
pub const MESSAGE_MIN: usize = 10;
pub const MESSAGE_MAX: usize = 10_000;
pub const ACCOUNT_MAX: usize = 200;
pub const PAGE_URL_MAX: usize = 2_000;

fn optional(s: Option<&str>) -> Option<&str> {
    s.filter(|v| !v.trim().is_empty())
}

/// The address as the service keeps it, when it is one the mailer can send to: the domain in its
/// ASCII form (UTS-46: `ｅxample.com` and `EXAMPLE.com` are `example.com`, `münchen.de` is
/// `xn--mnchen-3ya.de`), so that the caps and limits count one mailbox once and no relay needs
/// SMTPUTF8 for the domain; a domain name with a dot, not an address literal (`a@[127.0.0.1]`),
/// an IP address or a bare host (`root@localhost`), which would aim the relay at a host of the
/// sender's choosing; and an address both the validator and lettre accept (lettre refuses `a..b@`
/// and `.a@`, which the validator lets through).
fn normalize_email(cleaned: &str) -> Option<String> {
    let (local, domain) = cleaned.rsplit_once('@')?;
    if domain.starts_with('[') || domain.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let domain = idna::domain_to_ascii(domain).ok()?;
    if !domain.contains('.') || domain.ends_with('.') || domain.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let email = format!("{local}@{domain}");
    let valid = email.chars().count() <= EMAIL_MAX
        && !email.contains(' ')
        && email.validate_email()
        && email.parse::<lettre::Address>().is_ok();
    valid.then_some(email)
}

impl RawSubmission {
    /// The customer's address, cleaned as it would be stored, when it is a valid one (the
    /// per-address rate limit counts submissions before the other fields are checked).
    pub fn valid_email(&self) -> Option<String> {
        normalize_email(&clean_single_line(self.email.as_deref()?))
    }

    /// Checks every field and reports every problem at once.
    pub fn validate(&self) -> Result<Submission, Vec<FieldError>> {
        let mut errors = Vec::new();

        let name = clean_single_line(self.name.as_deref().unwrap_or(""));
        if name.is_empty() {
            errors.push(FieldError::new("name", "Please enter your name."));
        } else if name.chars().count() > NAME_MAX {
            errors.push(FieldError::new(
                "name",
                format!("Please shorten your name to at most {NAME_MAX} characters."),
            ));
        }

        let typed = clean_single_line(self.email.as_deref().unwrap_or(""));
        let email = normalize_email(&typed).unwrap_or_default();
        if typed.is_empty() {
            errors.push(FieldError::new(
                "email",
                "Please enter your email address so we can answer you.",
            ));
        } else if email.is_empty() {
            errors.push(FieldError::new(
                "email",
                "This does not look like an email address (for example name@example.com).",
            ));
        }

        let type_id = self.request_type.as_deref().map(str::trim).unwrap_or("");
        let request_type = RequestType::parse(type_id);
        if request_type.is_none() {
            let msg = if type_id.is_empty() {
                "Please choose what your request is about.".to_owned()
            } else {
                "Please choose one of: account, billing, product, security, availability.".to_owned()
            };
            errors.push(FieldError::new("type", msg));
        }

        let subject = clean_single_line(self.subject.as_deref().unwrap_or(""));
        if subject.is_empty() {
            errors.push(FieldError::new("subject", "Please enter a subject."));
        } else if subject.chars().count() > SUBJECT_MAX {
            errors.push(FieldError::new(
                "subject",
                format!("Please shorten the subject to at most {SUBJECT_MAX} characters."),
            ));
        }

        let message = clean_multi_line(self.message.as_deref().unwrap_or(""));
        let message_len = message.chars().count();
        if message.is_empty() {
            errors.push(FieldError::new("message", "Please describe your request."));
        } else if message_len < MESSAGE_MIN {
            errors.push(FieldError::new(
                "message",
                format!("Please describe your request in at least {MESSAGE_MIN} characters."),
            ));
        } else if message_len > MESSAGE_MAX {
            errors.push(FieldError::new(
                "message",
                format!("Please shorten the message to at most {MESSAGE_MAX} characters (it has {message_len})."),
            ));
        }

        let account = optional(self.account.as_deref()).map(clean_single_line);
        if account.as_ref().is_some_and(|a| a.chars().count() > ACCOUNT_MAX) {
            errors.push(FieldError::new(
                "account",
                format!("Please shorten the account to at most {ACCOUNT_MAX} characters."),
            ));
        }

        let page_url = optional(self.page_url.as_deref()).map(|u| u.trim().to_owned());
        if let Some(u) = &page_url {
            if u.chars().count() > PAGE_URL_MAX {
                errors.push(FieldError::new(
                    "page_url",
                    format!("Please shorten the address to at most {PAGE_URL_MAX} characters."),
                ));
            } else if u.chars().any(|c| c.is_whitespace() || super::is_invisible(c)) {
                // The URL parser drops tabs and line breaks and keeps other controls; an address
                // with either is not one a browser shows, and it would be stored as sent.
                errors.push(FieldError::new(
                    "page_url",
                    "Please enter the web address without spaces, line breaks or control characters.",
                ));
            } else {
                let ok = url::Url::parse(u).is_ok_and(|p| matches!(p.scheme(), "http" | "https") && p.host().is_some());
                if !ok {
                    errors.push(FieldError::new(
                        "page_url",
                        "Please enter a web address starting with http:// or https://.",
                    ));
                }
            }
        }

        match (errors.is_empty(), request_type) {
            (true, Some(request_type)) => Ok(Submission {
                name,
                email,
                request_type,
                subject,
                message,
                account,
                page_url,
            }),
            _ => Err(errors),
        }
    }
}

impl Submission {
    /// A digest of the normalised content: the same key with the same content is a repeat, with
    /// other content a conflict.
    pub fn content_hash(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.name.as_str(),
            self.email.as_str(),
            self.request_type.id(),
            self.subject.as_str(),
            self.message.as_str(),
            self.account.as_deref().unwrap_or(""),
            self.page_url.as_deref().unwrap_or(""),
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex(&h.finalize())
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// A client's `Idempotency-Key` (or the form token's nonce), namespaced by where it came from so a
/// form token can never collide with an API key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX: usize = 200;

    /// An API client's key: 1 to 200 visible ASCII characters.
    pub fn from_api(key: &str) -> Result<IdempotencyKey, String> {
        if key.is_empty() || key.len() > Self::MAX {
            return Err(format!("must be 1 to {} characters", Self::MAX));
        }
        if !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("must be visible ASCII characters without spaces".to_owned());
        }
        Ok(IdempotencyKey(format!("api:{key}")))
    }

    /// The nonce of a verified form token.
    pub fn from_form_nonce(nonce: &str) -> IdempotencyKey {
        IdempotencyKey(format!("form:{nonce}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> RawSubmission {
        RawSubmission {
            name: Some("Ada Lovelace".into()),
            email: Some("ada@example.com".into()),
            request_type: Some("billing".into()),
            subject: Some("Invoice".into()),
            message: Some("My invoice shows the wrong VAT number.".into()),
            account: None,
            page_url: None,
        }
    }

    #[test]
    fn a_valid_submission_passes() {
        let s = valid().validate().unwrap();
        assert_eq!(s.request_type, RequestType::Billing);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errs = RawSubmission::default().validate().unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "email", "type", "subject", "message"]);
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let mut raw = valid();
        raw.name = Some("é".repeat(NAME_MAX));
        assert!(raw.validate().is_ok());
        raw.name = Some("é".repeat(NAME_MAX + 1));
        assert_eq!(raw.validate().unwrap_err()[0].field, "name");
    }

    #[test]
    fn unsupported_reasons_and_unknown_types_are_not_types() {
        for t in ["custom_debugging", "Billing", "other", ""] {
            let mut raw = valid();
            raw.request_type = Some(t.into());
            assert_eq!(raw.validate().unwrap_err()[0].field, "type", "{t}");
        }
    }

    #[test]
    fn bad_emails_and_urls_are_refused() {
        for e in [
            "ada",
            "ada@",
            "@example.com",
            "ada example@example.com",
            "ada@exa mple.com",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a@[127.0.0.1]",
            "a@[IPv6:::1]",
            "a@10.0.0.5",
            "root@localhost",
        ] {
            let mut raw = valid();
            raw.email = Some(e.into());
            assert_eq!(raw.validate().unwrap_err()[0].field, "email", "{e:?}");
        }
        for u in [
            "javascript:alert(1)",
            "ftp://example.com",
            "example.com/page",
            "http://",
            "https://example.com/a\u{0}b",
            "https://example.com/a\nEmail: mallory@example.com",
            "https://example.com/a\rb",
            "https://example.com/a b",
            "https://example.com/\u{202E}gpj.exe",
            "https://example.com/\u{7f}",
        ] {
            let mut raw = valid();
            raw.page_url = Some(u.into());
            assert_eq!(raw.validate().unwrap_err()[0].field, "page_url", "{u}");
        }
    }

    #[test]
    fn a_domain_is_kept_in_one_ascii_spelling() {
        for (typed, kept) in [
            ("Ada@EXAMPLE.com", "Ada@example.com"),
            ("victim@\u{FF45}xample.com", "victim@example.com"),
            ("victim@e\u{FF58}ample.com", "victim@example.com"),
            ("ada@münchen.de", "ada@xn--mnchen-3ya.de"),
        ] {
            let mut raw = valid();
            raw.email = Some(typed.into());
            assert_eq!(raw.validate().unwrap().email, kept, "{typed}");
            assert_eq!(raw.valid_email().as_deref(), Some(kept));
        }
    }

    #[test]
    fn the_content_hash_changes_with_any_field() {
        let a = valid().validate().unwrap();
        let mut b = a.clone();
        b.account = Some("acct-1".into());
        assert_ne!(a.content_hash(), b.content_hash());
        assert_eq!(a.content_hash(), valid().validate().unwrap().content_hash());
    }

    #[test]
    fn idempotency_keys_are_bounded_and_namespaced() {
        assert_eq!(IdempotencyKey::from_api("abc").unwrap().as_str(), "api:abc");
        assert!(IdempotencyKey::from_api("").is_err());
        assert!(IdempotencyKey::from_api("a b").is_err());
        assert!(IdempotencyKey::from_api(&"k".repeat(201)).is_err());
        assert_ne!(
            IdempotencyKey::from_form_nonce("abc"),
            IdempotencyKey::from_api("abc").unwrap()
        );
    }
}
