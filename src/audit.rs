//! The append-only audit log: every state change by a person (a token created or revoked, a
//! delivery retried, an acknowledgement resent) with who did it and why.

use chrono::{DateTime, Utc};
use serde::Serialize;

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
    fn the_local_actor_is_never_anonymous() {
        let actor = local_actor();
        assert!(actor.starts_with("cli:") && actor.len() > 4, "{actor}");
        assert!(
            process_user().is_some_and(|u| !u.is_empty()),
            "the process's own user is found"
        );
    }
}
