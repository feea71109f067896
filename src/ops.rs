//! Ops tokens and the audit log (SPEC section 7).
//!
//! A token is `itk_<id>_<secret>`: the id (12 hex characters) finds the row, the secret (32 random
//! bytes, base64url) is stored only as its SHA-256 and compared in constant time. The token is
//! shown once, when it is created. Every state change by a person (a token created or revoked, a
//! delivery retried) lands in the append-only audit log with who did it and why.

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

/// One line of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    pub at: DateTime<Utc>,
    /// `token:<name>` or `cli:<user>`.
    pub actor: String,
    pub action: String,
    pub target: String,
    pub reason: String,
    pub detail: Option<String>,
}

impl AuditEntry {
    /// A change made now by `actor`, for `reason`.
    pub fn new(actor: String, action: &str, target: String, reason: String) -> AuditEntry {
        AuditEntry {
            at: Utc::now(),
            actor,
            action: action.to_owned(),
            target,
            reason,
            detail: None,
        }
    }
}

/// Why a `reason` for a change is refused: it must say something, in at most 500 characters.
pub fn check_reason(text: &str) -> Result<String, &'static str> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > 500 {
        return Err("say why, in at most 500 characters");
    }
    Ok(t.to_owned())
}

/// A ticket as the ops lists show it: no customer text.
#[derive(Debug, Serialize)]
pub struct TicketLine<'a> {
    pub reference: &'a str,
    pub created_at: DateTime<Utc>,
    #[serde(rename = "type")]
    pub request_type: &'static str,
    pub status: &'static str,
    pub needs_triage: bool,
    pub issue_url: Option<&'a str>,
}

impl<'a> From<&'a crate::store::Ticket> for TicketLine<'a> {
    fn from(t: &'a crate::store::Ticket) -> Self {
        TicketLine {
            reference: &t.reference,
            created_at: t.created_at,
            request_type: t.filed_type.id(),
            status: t.status(),
            needs_triage: t.needs_triage,
            issue_url: t.github_issue.as_ref().map(|i| i.url.as_str()),
        }
    }
}

/// The ticket list's filters: what is wrong with them, per field.
pub fn ticket_filter_errors(status: Option<&str>, request_type: Option<&str>) -> Vec<crate::domain::FieldError> {
    use crate::domain::{FieldError, RequestType};
    let mut errors = Vec::new();
    if status.is_some_and(|s| !matches!(s, "received" | "unsupported")) {
        errors.push(FieldError::new("status", "must be received or unsupported"));
    }
    if request_type.is_some_and(|t| RequestType::from_id(t).is_none()) {
        errors.push(FieldError::new(
            "type",
            "must be account, billing, product, security or availability",
        ));
    }
    errors
}

/// Who runs a command on this machine, for the audit log: the login name from the environment
/// (`SUDO_USER` first, so `sudo intake …` names the person), else the process's user looked up in
/// `/etc/passwd`, else its numeric uid — never an anonymous entry.
pub fn local_actor() -> String {
    let from_env = ["SUDO_USER", "USER", "LOGNAME"]
        .into_iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()));
    let user = from_env.or_else(process_user).unwrap_or_else(|| "unknown".to_owned());
    format!("cli:{user}")
}

/// The real uid of this process and its name (Linux: `/proc/self/status` and `/etc/passwd`).
fn process_user() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .to_owned();
    let name = std::fs::read_to_string("/etc/passwd").ok().and_then(|passwd| {
        passwd.lines().find_map(|l| {
            let mut f = l.split(':');
            let (name, _, id) = (f.next()?, f.next()?, f.next()?);
            (id == uid).then(|| name.to_owned())
        })
    });
    Some(name.unwrap_or_else(|| format!("uid-{uid}")))
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

    #[test]
    fn the_local_actor_is_never_anonymous() {
        let actor = local_actor();
        assert!(actor.starts_with("cli:") && actor.len() > 4, "{actor}");
        assert!(
            process_user().is_some_and(|u| !u.is_empty()),
            "the process's own user is found"
        );
    }
}

/// One step in a ticket's life, for `tickets show` and `GET /api/v1/tickets/{ref}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TimelineEntry {
    pub at: DateTime<Utc>,
    pub what: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Received, classified, acknowledged, filed, closed, reopened, followed up, and what failed or
/// was skipped, in time order.
pub fn timeline(
    ticket: &crate::store::Ticket,
    deliveries: &[crate::store::Delivery],
    events: &[crate::store::TicketEvent],
) -> Vec<TimelineEntry> {
    use crate::store::{IssueAction, JobKind};
    let entry = |at, what, detail: Option<String>| TimelineEntry { at, what, detail };
    let mut out = vec![
        entry(
            ticket.created_at,
            "received",
            Some(format!(
                "through the {}",
                match ticket.channel {
                    crate::store::Channel::Api => "API",
                    crate::store::Channel::Form => "help form",
                }
            )),
        ),
        entry(ticket.created_at, "classified", {
            let mut d = format!("filed as {}", ticket.filed_type.id());
            if ticket.picked_type != ticket.filed_type {
                d.push_str(&format!(" (picked {})", ticket.picked_type.id()));
            }
            if let Some(u) = ticket.unsupported {
                d.push_str(&format!("; unsupported: {}", u.id()));
            }
            if ticket.needs_triage {
                d.push_str("; needs triage");
            }
            if let Some(band) = crate::classify::band_of(&ticket.signals) {
                d.push_str(&format!("; band {}", band.id()));
            }
            let rules: Vec<&str> = crate::classify::fired_rules(&ticket.signals)
                .map(|s| s.rule.as_str())
                .collect();
            if !rules.is_empty() {
                d.push_str(&format!("; rules {}", rules.join(", ")));
            }
            let scores = crate::classify::model_scores(&ticket.signals, 2);
            if !scores.is_empty() {
                d.push_str(&format!("; model {}", scores.join(" ")));
            }
            Some(d)
        }),
    ];
    for d in deliveries {
        let at = d.done_at.unwrap_or(d.run_at);
        match (d.kind, d.state.as_str()) {
            (JobKind::AckEmail, "done") => out.push(entry(at, "acknowledged", None)),
            (JobKind::GithubIssue, "done") => {
                out.push(entry(at, "filed", ticket.github_issue.as_ref().map(|i| i.url.clone())))
            }
            (JobKind::FollowupEmail, "done") => out.push(entry(at, "followed up", None)),
            (_, state @ ("dead" | "skipped")) => out.push(entry(
                at,
                if state == "dead" {
                    "delivery failed"
                } else {
                    "delivery skipped"
                },
                Some(format!(
                    "{} #{}: {}",
                    d.kind.id(),
                    d.id,
                    d.last_error.as_deref().unwrap_or("")
                )),
            )),
            _ => {}
        }
    }
    for e in events {
        out.push(match e.action {
            IssueAction::Closed => entry(
                e.at,
                "closed",
                Some(e.state_reason.clone().unwrap_or("completed".into())),
            ),
            IssueAction::Reopened => entry(e.at, "reopened", None),
        });
    }
    out.sort_by_key(|e| e.at);
    out
}
