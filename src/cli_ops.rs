//! Ops commands on the command line: `tokens create|list|revoke` and `audit`. Every command that
//! changes state needs `--reason`, names the local user as the actor and writes the audit log in
//! the same transaction as the change.

use std::process::ExitCode;

use chrono::Utc;
use clap::Subcommand;

use crate::config::Settings;
use crate::ops::{generate_token, local_actor, parse_scopes, scopes_to_string, valid_token_name, AuditEntry};
use crate::startup;
use crate::store::StoreError;

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a token and print it once (only its hash is stored).
    Create {
        #[arg(long)]
        name: String,
        /// Comma-separated: read, ops, metrics.
        #[arg(long)]
        scopes: String,
        /// Why the token is made (kept in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// List tokens, live and revoked (never their secrets).
    List,
    /// Revoke the live token with this name.
    Revoke {
        name: String,
        #[arg(long)]
        reason: String,
    },
}

fn fail(json: bool, message: &str) -> ExitCode {
    if json {
        println!("{}", serde_json::json!({ "ok": false, "error": message }));
    } else {
        eprintln!("intake: {message}");
    }
    ExitCode::FAILURE
}

/// A reason is required for every change, and must say something.
fn reason(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() || t.chars().count() > 500 {
        return Err("--reason must say why, in at most 500 characters".to_owned());
    }
    Ok(t.to_owned())
}

pub async fn tokens(json: bool, settings: &Settings, command: TokensCommand) -> ExitCode {
    let store = match startup::open_store(settings).await {
        Ok(s) => s,
        Err(e) => return fail(json, &format!("{e:#}")),
    };
    match command {
        TokensCommand::Create {
            name,
            scopes,
            reason: why,
        } => {
            if !valid_token_name(&name) {
                return fail(
                    json,
                    "--name must be 1 to 64 characters: letters, digits, '.', '_', '-'",
                );
            }
            let scopes = match parse_scopes(&scopes) {
                Ok(s) => s,
                Err(e) => return fail(json, &format!("--scopes: {e}")),
            };
            let why = match reason(&why) {
                Ok(r) => r,
                Err(e) => return fail(json, &e),
            };
            let token = generate_token();
            let scope_list = scopes_to_string(&scopes);
            let audit = AuditEntry {
                at: Utc::now(),
                actor: local_actor(),
                action: "token.create".to_owned(),
                target: name.clone(),
                reason: why,
                detail: Some(format!("scopes {scope_list}")),
            };
            match store
                .create_token(&name, &token.token_id, &token.secret_hash, &scope_list, &audit)
                .await
            {
                Ok(()) if json => {
                    println!(
                        "{}",
                        serde_json::json!({ "ok": true, "name": name, "scopes": scopes, "token": token.token })
                    );
                    ExitCode::SUCCESS
                }
                Ok(()) => {
                    println!("{}", token.token);
                    eprintln!("token `{name}` created with scopes {scope_list}; it is shown only this once");
                    ExitCode::SUCCESS
                }
                Err(StoreError::Conflict(m)) => fail(json, &m),
                Err(e) => fail(json, &format!("{e}")),
            }
        }
        TokensCommand::List => match store.list_tokens().await {
            Ok(tokens) if json => {
                println!("{}", serde_json::json!({ "ok": true, "tokens": tokens }));
                ExitCode::SUCCESS
            }
            Ok(tokens) => {
                println!("{:<24} {:<20} {:<20} {:<20} state", "name", "scopes", "created", "by");
                for t in tokens {
                    let state = match t.revoked_at {
                        Some(at) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
                        None => "live".to_owned(),
                    };
                    println!(
                        "{:<24} {:<20} {:<20} {:<20} {state}",
                        t.name,
                        scopes_to_string(&t.scopes),
                        t.created_at.format("%Y-%m-%d %H:%M"),
                        t.created_by
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(json, &format!("{e}")),
        },
        TokensCommand::Revoke { name, reason: why } => {
            let why = match reason(&why) {
                Ok(r) => r,
                Err(e) => return fail(json, &e),
            };
            let audit = AuditEntry {
                at: Utc::now(),
                actor: local_actor(),
                action: "token.revoke".to_owned(),
                target: name.clone(),
                reason: why,
                detail: None,
            };
            match store.revoke_token(&name, &audit).await {
                Ok(true) => {
                    if json {
                        println!("{}", serde_json::json!({ "ok": true, "revoked": name }));
                    } else {
                        println!("token `{name}` revoked");
                    }
                    ExitCode::SUCCESS
                }
                Ok(false) => fail(json, &format!("there is no live token named `{name}`")),
                Err(e) => fail(json, &format!("{e}")),
            }
        }
    }
}

pub async fn audit(json: bool, settings: &Settings, limit: i64) -> ExitCode {
    let store = match startup::open_store(settings).await {
        Ok(s) => s,
        Err(e) => return fail(json, &format!("{e:#}")),
    };
    match store.audit_log(limit.clamp(1, 10_000)).await {
        Ok(entries) if json => {
            println!("{}", serde_json::json!({ "ok": true, "entries": entries }));
            ExitCode::SUCCESS
        }
        Ok(entries) => {
            for e in entries {
                println!(
                    "{}  {:<20} {:<18} {:<24} reason: {}{}",
                    e.at.format("%Y-%m-%d %H:%M:%S"),
                    e.actor,
                    e.action,
                    e.target,
                    e.reason,
                    e.detail.map(|d| format!(" ({d})")).unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(json, &format!("{e}")),
    }
}
