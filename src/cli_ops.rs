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

#[derive(Debug, Subcommand)]
pub enum TicketsCommand {
    /// Tickets, newest first.
    List {
        /// received or unsupported.
        #[arg(long)]
        status: Option<String>,
        /// A request type id.
        #[arg(long = "type")]
        request_type: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One ticket: what was received, and its whole timeline.
    Show { reference: String },
    /// Send the acknowledgement again (the per-address and per-domain caps still apply).
    ResendAck {
        reference: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeliveriesCommand {
    /// Deliveries, dead ones first.
    List {
        /// Only dead ones.
        #[arg(long)]
        dead: bool,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Queue a dead or skipped delivery again.
    Retry {
        id: i64,
        #[arg(long)]
        reason: String,
    },
}

pub async fn tickets_cmd(json: bool, settings: &Settings, command: TicketsCommand) -> ExitCode {
    let store = match startup::open_store(settings).await {
        Ok(s) => s,
        Err(e) => return fail(json, &format!("{e:#}")),
    };
    match command {
        TicketsCommand::List {
            status,
            request_type,
            limit,
        } => {
            if status
                .as_deref()
                .is_some_and(|s| !matches!(s, "received" | "unsupported"))
            {
                return fail(json, "--status must be received or unsupported");
            }
            if request_type
                .as_deref()
                .is_some_and(|t| crate::domain::RequestType::from_id(t).is_none())
            {
                return fail(
                    json,
                    "--type must be account, billing, product, security or availability",
                );
            }
            match store
                .list_tickets(status.as_deref(), request_type.as_deref(), limit.clamp(1, 10_000))
                .await
            {
                Ok(tickets) if json => {
                    let lines: Vec<_> = tickets
                        .iter()
                        .map(|t| {
                            serde_json::json!({
                                "reference": t.reference, "created_at": t.created_at, "type": t.filed_type.id(),
                                "status": if t.unsupported.is_some() { "unsupported" } else { "received" },
                                "needs_triage": t.needs_triage,
                                "issue_url": t.github_issue.as_ref().map(|i| i.url.clone()),
                            })
                        })
                        .collect();
                    println!("{}", serde_json::json!({ "ok": true, "tickets": lines }));
                    ExitCode::SUCCESS
                }
                Ok(tickets) => {
                    for t in tickets {
                        println!(
                            "{:<14} {}  {:<12} {:<11} {}{}",
                            t.reference,
                            t.created_at.format("%Y-%m-%d %H:%M"),
                            t.filed_type.id(),
                            if t.unsupported.is_some() {
                                "unsupported"
                            } else {
                                "received"
                            },
                            t.github_issue
                                .as_ref()
                                .map(|i| i.url.as_str())
                                .unwrap_or("not filed yet"),
                            if t.needs_triage { "  (needs triage)" } else { "" }
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(json, &format!("{e}")),
            }
        }
        TicketsCommand::ResendAck { reference, reason: why } => {
            let why = match reason(&why) {
                Ok(r) => r,
                Err(e) => return fail(json, &e),
            };
            let ticket = match store.ticket_by_reference(reference.trim()).await {
                Ok(Some(t)) => t,
                Ok(None) => return fail(json, &format!("no ticket {reference}")),
                Err(e) => return fail(json, &format!("{e}")),
            };
            let audit = AuditEntry {
                at: Utc::now(),
                actor: local_actor(),
                action: "ticket.resend_ack".to_owned(),
                target: ticket.reference.clone(),
                reason: why,
                detail: None,
            };
            match store.queue_ack(ticket.id, &audit).await {
                Ok(id) => {
                    if json {
                        println!("{}", serde_json::json!({ "ok": true, "delivery": id }));
                    } else {
                        println!("acknowledgement queued again as delivery {id}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fail(json, &format!("{e}")),
            }
        }
        TicketsCommand::Show { reference } => {
            let ticket = match store.ticket_by_reference(reference.trim()).await {
                Ok(Some(t)) => t,
                Ok(None) => return fail(json, &format!("no ticket {reference}")),
                Err(e) => return fail(json, &format!("{e}")),
            };
            let (deliveries, events) = match (
                store.deliveries_for_ticket(ticket.id).await,
                store.ticket_events(ticket.id).await,
            ) {
                (Ok(d), Ok(e)) => (d, e),
                (Err(e), _) | (_, Err(e)) => return fail(json, &format!("{e}")),
            };
            let steps = crate::ops::timeline(&ticket, &deliveries, &events);
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": true, "ticket": ticket, "timeline": steps })
                );
            } else {
                println!("{}  {} ({})", ticket.reference, ticket.filed_type.label(), ticket.email);
                println!("subject: {}", ticket.subject);
                for s in &steps {
                    println!(
                        "  {}  {:<16} {}",
                        s.at.format("%Y-%m-%d %H:%M:%S"),
                        s.what,
                        s.detail.as_deref().unwrap_or("")
                    );
                }
                for d in &deliveries {
                    println!(
                        "  delivery {:<6} {:<15} {:<8} attempts {}{}",
                        d.id,
                        d.kind.id(),
                        d.state,
                        d.attempts,
                        d.last_error.as_deref().map(|e| format!("  ({e})")).unwrap_or_default()
                    );
                }
            }
            ExitCode::SUCCESS
        }
    }
}

pub async fn deliveries_cmd(json: bool, settings: &Settings, command: DeliveriesCommand) -> ExitCode {
    let store = match startup::open_store(settings).await {
        Ok(s) => s,
        Err(e) => return fail(json, &format!("{e:#}")),
    };
    match command {
        DeliveriesCommand::List { dead, limit } => match store.list_deliveries(dead, limit.clamp(1, 10_000)).await {
            Ok(list) if json => {
                let rows: Vec<_> = list
                    .iter()
                    .map(|d| {
                        serde_json::json!({
                            "id": d.id, "ticket_id": d.ticket_id, "kind": d.kind.id(), "state": d.state,
                            "attempts": d.attempts, "run_at": d.run_at, "last_error": d.last_error,
                        })
                    })
                    .collect();
                println!("{}", serde_json::json!({ "ok": true, "deliveries": rows }));
                ExitCode::SUCCESS
            }
            Ok(list) => {
                for d in list {
                    println!(
                        "{:<6} ticket {:<6} {:<15} {:<8} attempts {:<3} next {}{}",
                        d.id,
                        d.ticket_id,
                        d.kind.id(),
                        d.state,
                        d.attempts,
                        d.run_at.format("%Y-%m-%d %H:%M:%S"),
                        d.last_error.map(|e| format!("  ({e})")).unwrap_or_default()
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(json, &format!("{e}")),
        },
        DeliveriesCommand::Retry { id, reason: why } => {
            let why = match reason(&why) {
                Ok(r) => r,
                Err(e) => return fail(json, &e),
            };
            let audit = AuditEntry {
                at: Utc::now(),
                actor: local_actor(),
                action: "delivery.retry".to_owned(),
                target: format!("delivery {id}"),
                reason: why,
                detail: None,
            };
            match store.retry_delivery(id, &audit).await {
                Ok(crate::store::RetryOutcome::Queued) => {
                    if json {
                        println!("{}", serde_json::json!({ "ok": true, "id": id, "state": "pending" }));
                    } else {
                        println!("delivery {id} is pending again; a running service picks it up");
                    }
                    ExitCode::SUCCESS
                }
                Ok(crate::store::RetryOutcome::NotFound) => fail(json, &format!("no delivery {id}")),
                Ok(crate::store::RetryOutcome::NotRetryable { state }) => fail(
                    json,
                    &format!("delivery {id} is {state}; only dead or skipped deliveries are retried"),
                ),
                Err(e) => fail(json, &format!("{e}")),
            }
        }
    }
}
