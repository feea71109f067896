//! The ops commands on the command line: `tokens`, `tickets`, `deliveries` and `audit`, over the
//! ops service ([`crate::ops::Ops`]) the ops API uses too. The store is opened once per command.
//! Every command that changes state needs `--reason`, names the local user as the actor, and
//! writes the audit log in the same transaction as the change.

use std::process::ExitCode;

use clap::Subcommand;

use crate::audit::local_actor;
use crate::config::Settings;
use crate::domain::ClosedSet;
use crate::ops::{Limit, Ops, OpsError, TicketFilter, TicketLine};
use crate::startup;
use crate::tokens::scopes_to_string;

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
        /// 1 to 500 (default 50).
        #[arg(long)]
        limit: Option<i64>,
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
        /// 1 to 500 (default 50).
        #[arg(long)]
        limit: Option<i64>,
    },
    /// Queue a dead or skipped delivery again.
    Retry {
        id: i64,
        #[arg(long)]
        reason: String,
    },
}

/// One ops command.
pub enum OpsCommand {
    Tokens(TokensCommand),
    Tickets(TicketsCommand),
    Deliveries(DeliveriesCommand),
    Audit { limit: Option<i64> },
}

fn fail(json: bool, message: &str) -> ExitCode {
    if json {
        println!("{}", serde_json::json!({ "ok": false, "error": message }));
    } else {
        eprintln!("intake: {message}");
    }
    ExitCode::FAILURE
}

/// What went wrong, in the command line's words: a field is its option (`--limit …`).
fn failed(json: bool, e: OpsError) -> ExitCode {
    let message = match e {
        OpsError::Invalid(errors) => errors
            .iter()
            .map(|e| format!("--{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        OpsError::Store(e) => format!(
            "{e}: {}",
            std::error::Error::source(&e)
                .map(ToString::to_string)
                .unwrap_or_default()
        ),
        other => other.to_string(),
    };
    fail(json, &message)
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

/// Runs one ops command on the configured database.
pub async fn run(json: bool, settings: &Settings, command: OpsCommand) -> ExitCode {
    let ops = match startup::open_store(settings).await {
        Ok(store) => Ops::new(store, None),
        Err(e) => return fail(json, &format!("{e:#}")),
    };
    let result = match command {
        OpsCommand::Tokens(c) => tokens(json, &ops, c).await,
        OpsCommand::Tickets(c) => tickets(json, &ops, c).await,
        OpsCommand::Deliveries(c) => deliveries(json, &ops, c).await,
        OpsCommand::Audit { limit } => audit(json, &ops, limit).await,
    };
    result.unwrap_or_else(|e| failed(json, e))
}

fn limit(asked: Option<i64>) -> Result<Limit, OpsError> {
    Limit::parse(asked).map_err(|e| OpsError::Invalid(vec![e]))
}

async fn tokens(json: bool, ops: &Ops, command: TokensCommand) -> Result<ExitCode, OpsError> {
    Ok(match command {
        TokensCommand::Create { name, scopes, reason } => {
            let created = ops.create_token(&name, &scopes, local_actor(), &reason).await?;
            let scope_list = scopes_to_string(&created.scopes);
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": true, "name": created.name, "scopes": created.scopes, "token": created.token })
                );
            } else {
                println!("{}", created.token);
                eprintln!("token `{name}` created with scopes {scope_list}; it is shown only this once");
            }
            ExitCode::SUCCESS
        }
        TokensCommand::List => {
            let tokens = ops.tokens().await?;
            if json {
                println!("{}", serde_json::json!({ "ok": true, "tokens": tokens }));
            } else {
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
            }
            ExitCode::SUCCESS
        }
        TokensCommand::Revoke { name, reason } => {
            ops.revoke_token(&name, local_actor(), &reason).await?;
            done(
                json,
                serde_json::json!({ "revoked": name }),
                &format!("token `{name}` revoked"),
            )
        }
    })
}

async fn audit(json: bool, ops: &Ops, asked: Option<i64>) -> Result<ExitCode, OpsError> {
    let entries = ops.audit_log(limit(asked)?).await?;
    if json {
        println!("{}", serde_json::json!({ "ok": true, "entries": entries }));
        return Ok(ExitCode::SUCCESS);
    }
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
    Ok(ExitCode::SUCCESS)
}

async fn tickets(json: bool, ops: &Ops, command: TicketsCommand) -> Result<ExitCode, OpsError> {
    Ok(match command {
        TicketsCommand::List {
            status,
            request_type,
            limit,
        } => {
            let filter =
                TicketFilter::parse(status.as_deref(), request_type.as_deref(), limit).map_err(OpsError::Invalid)?;
            let tickets = ops.tickets(&filter).await?;
            if json {
                let lines: Vec<TicketLine> = tickets.iter().map(TicketLine::from).collect();
                println!("{}", serde_json::json!({ "ok": true, "tickets": lines }));
                return Ok(ExitCode::SUCCESS);
            }
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
        TicketsCommand::ResendAck { reference, reason } => {
            let id = ops.resend_ack(&reference, local_actor(), &reason).await?;
            done(
                json,
                serde_json::json!({ "delivery": id }),
                &format!("acknowledgement queued again as delivery {id}"),
            )
        }
        TicketsCommand::Show { reference } => {
            let view = ops.ticket(&reference).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "ok": true, "ticket": view.ticket, "timeline": view.timeline })
                );
                return Ok(ExitCode::SUCCESS);
            }
            let ticket = &view.ticket;
            println!("{}  {} ({})", ticket.reference, ticket.filed_type.label(), ticket.email);
            println!("subject: {}", ticket.subject);
            for s in &view.timeline {
                println!(
                    "  {}  {:<16} {}",
                    s.at.format("%Y-%m-%d %H:%M:%S"),
                    s.what,
                    s.detail.as_deref().unwrap_or("")
                );
            }
            for d in &view.deliveries {
                println!(
                    "  delivery {:<6} {:<15} {:<8} attempts {}{}",
                    d.id,
                    d.kind.id(),
                    d.state,
                    d.attempts,
                    d.note().map(|e| format!("  ({e})")).unwrap_or_default()
                );
            }
            ExitCode::SUCCESS
        }
    })
}

async fn deliveries(json: bool, ops: &Ops, command: DeliveriesCommand) -> Result<ExitCode, OpsError> {
    Ok(match command {
        DeliveriesCommand::List { dead, limit: asked } => {
            let list = ops.deliveries(dead, limit(asked)?).await?;
            if json {
                println!("{}", serde_json::json!({ "ok": true, "deliveries": list }));
                return Ok(ExitCode::SUCCESS);
            }
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
        DeliveriesCommand::Retry { id, reason } => {
            ops.retry_delivery(id, local_actor(), &reason).await?;
            done(
                json,
                serde_json::json!({ "id": id, "state": "pending" }),
                &format!("delivery {id} is pending again; a running service picks it up"),
            )
        }
    })
}
