//! Ops commands on the command line: `tokens create|list|revoke` and `audit`. Every command that
//! changes state needs `--reason`, names the local user as the actor and writes the audit log in
//! the same transaction as the change.

use std::process::ExitCode;

use clap::Subcommand;

use crate::audit::{check_reason, local_actor, AuditEntry};
use crate::config::Settings;
use crate::domain::{ClosedSet, Ticket};
use crate::ops::{ticket_filter_errors, TicketLine};
use crate::startup;
use crate::store::{Store, StoreError};
use crate::tokens::{generate_token, parse_scopes, scopes_to_string, valid_token_name};

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

/// An empty list says so on stderr (stdout stays empty for scripts).
fn nothing_listed(empty: bool, message: &str) {
    if empty {
        eprintln!("{message}");
    }
}

/// Reports a change that was made: `value` (with `"ok": true`) in JSON, else `text`.
fn done(json: bool, mut value: serde_json::Value, text: &str) -> ExitCode {
    if json {
        value["ok"] = true.into();
        println!("{value}");
    } else {
        println!("{text}");
    }
    ExitCode::SUCCESS
}

/// The audit entry for a change made on this machine, once its `--reason` says something.
fn change(action: &str, target: String, why: &str) -> Result<AuditEntry, String> {
    let reason = check_reason(why).map_err(|m| format!("--reason: {m}"))?;
    Ok(AuditEntry::new(local_actor(), action, target, reason))
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
            let token = generate_token();
            let scope_list = scopes_to_string(&scopes);
            let mut audit = match change("token.create", name.clone(), &why) {
                Ok(a) => a,
                Err(e) => return fail(json, &e),
            };
            audit.detail = Some(format!("scopes {scope_list}"));
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
            let audit = match change("token.revoke", name.clone(), &why) {
                Ok(a) => a,
                Err(e) => return fail(json, &e),
            };
            match store.revoke_token(&name, &audit).await {
                Ok(true) => done(
                    json,
                    serde_json::json!({ "revoked": name }),
                    &format!("token `{name}` revoked"),
                ),
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
            nothing_listed(entries.is_empty(), "the audit log is empty");
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

async fn find_ticket(store: &dyn Store, reference: &str) -> Result<Ticket, String> {
    match store.ticket_by_reference(reference.trim()).await {
        Ok(Some(t)) => Ok(t),
        Ok(None) => Err(format!("no ticket {reference}")),
        Err(e) => Err(e.to_string()),
    }
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
            let errors = ticket_filter_errors(status.as_deref(), request_type.as_deref());
            if let Some(e) = errors.first() {
                return fail(json, &format!("--{} {}", e.field, e.message));
            }
            match store
                .list_tickets(status.as_deref(), request_type.as_deref(), limit.clamp(1, 10_000))
                .await
            {
                Ok(tickets) if json => {
                    let lines: Vec<TicketLine> = tickets.iter().map(TicketLine::from).collect();
                    println!("{}", serde_json::json!({ "ok": true, "tickets": lines }));
                    ExitCode::SUCCESS
                }
                Ok(tickets) => {
                    nothing_listed(tickets.is_empty(), "no tickets match");
                    for t in tickets {
                        println!(
                            "{:<14} {}  {:<12} {:<11} {}{}",
                            t.reference,
                            t.created_at.format("%Y-%m-%d %H:%M"),
                            t.filed_type.id(),
                            t.status(),
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
            let ticket = match find_ticket(store.as_ref(), &reference).await {
                Ok(t) => t,
                Err(e) => return fail(json, &e),
            };
            let audit = match change("ticket.resend_ack", ticket.reference.clone(), &why) {
                Ok(a) => a,
                Err(e) => return fail(json, &e),
            };
            match store.queue_ack(ticket.id, &audit).await {
                Ok(id) => done(
                    json,
                    serde_json::json!({ "delivery": id }),
                    &format!("acknowledgement queued again as delivery {id}"),
                ),
                Err(e) => fail(json, &format!("{e}")),
            }
        }
        TicketsCommand::Show { reference } => {
            let ticket = match find_ticket(store.as_ref(), &reference).await {
                Ok(t) => t,
                Err(e) => return fail(json, &e),
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
                        d.note().map(|e| format!("  ({e})")).unwrap_or_default()
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
                println!("{}", serde_json::json!({ "ok": true, "deliveries": list }));
                ExitCode::SUCCESS
            }
            Ok(list) => {
                nothing_listed(
                    list.is_empty(),
                    if dead { "no dead deliveries" } else { "no deliveries" },
                );
                for d in list {
                    println!(
                        "{:<6} ticket {:<6} {:<15} {:<8} attempts {:<3} next {}{}",
                        d.id,
                        d.ticket_id,
                        d.kind.id(),
                        d.state,
                        d.attempts,
                        d.run_at.format("%Y-%m-%d %H:%M:%S"),
                        d.note().map(|e| format!("  ({e})")).unwrap_or_default()
                    );
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(json, &format!("{e}")),
        },
        DeliveriesCommand::Retry { id, reason: why } => {
            let audit = match change("delivery.retry", format!("delivery {id}"), &why) {
                Ok(a) => a,
                Err(e) => return fail(json, &e),
            };
            match store.retry_delivery(id, &audit).await {
                Ok(crate::store::queue::RetryOutcome::Queued) => done(
                    json,
                    serde_json::json!({ "id": id, "state": "pending" }),
                    &format!("delivery {id} is pending again; a running service picks it up"),
                ),
                Ok(crate::store::queue::RetryOutcome::NotFound) => fail(json, &format!("no delivery {id}")),
                Ok(crate::store::queue::RetryOutcome::NotRetryable { state }) => fail(
                    json,
                    &format!("delivery {id} is {state}; only dead or skipped deliveries are retried"),
                ),
                Err(e) => fail(json, &format!("{e}")),
            }
        }
    }
}
