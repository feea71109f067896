//! The command line: `serve`, `migrate`, `check`, and the ops commands (`cli_ops`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::classify::Classifier;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::cli_ops::{self, DeliveriesCommand, TicketsCommand, TokensCommand};
use crate::config::{EmailTransport, Settings, Source};
use crate::email::Mailer;
use crate::github::GithubClient;
use crate::startup;

#[derive(Debug, Parser)]
#[command(
    name = "intake",
    version,
    about = "Help form to support record, acknowledgement and GitHub issue."
)]
pub struct Cli {
    /// Configuration file (TOML); else INTAKE_CONFIG, else ./intake.toml when present.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (applies pending migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Check the configuration and the live connections, and print a report.
    Check,
    /// Ops tokens for the HTTP API.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Support tickets.
    #[command(subcommand)]
    Tickets(TicketsCommand),
    /// Delivery jobs (emails, GitHub issues).
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// The audit log, newest first.
    Audit {
        /// How many entries.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Debug, Serialize)]
struct CheckLine {
    name: &'static str,
    ok: bool,
    detail: String,
}

/// Runs one command; the exit code says whether it worked.
pub async fn run(cli: Cli, settings: Settings, source: Source) -> ExitCode {
    match cli.command {
        Command::Serve => match startup::serve(settings).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = ?e, "intake stopped");
                eprintln!("intake: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Migrate => match startup::open_store(&settings).await {
            Ok(store) => {
                print_result(
                    cli.json,
                    "migrations",
                    true,
                    &format!("{} database is up to date", store.backend()),
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                print_result(cli.json, "migrations", false, &format!("{e:#}"));
                ExitCode::FAILURE
            }
        },
        Command::Check => check(cli.json, &settings, &source).await,
        Command::Tokens(command) => cli_ops::tokens(cli.json, &settings, command).await,
        Command::Tickets(command) => cli_ops::tickets_cmd(cli.json, &settings, command).await,
        Command::Deliveries(command) => cli_ops::deliveries_cmd(cli.json, &settings, command).await,
        Command::Audit { limit } => cli_ops::audit(cli.json, &settings, limit).await,
    }
}

fn print_result(json: bool, name: &str, ok: bool, detail: &str) {
    if json {
        println!("{}", serde_json::json!({ "name": name, "ok": ok, "detail": detail }));
    } else if ok {
        println!("{name}: {detail}");
    } else {
        eprintln!("{name}: FAILED: {detail}");
    }
}

async fn check(json: bool, settings: &Settings, source: &Source) -> ExitCode {
    let mut lines = Vec::new();
    lines.push(CheckLine {
        name: "configuration",
        ok: true,
        detail: match source {
            Source::File(p) => format!("read from {}", p.display()),
            Source::Defaults => "embedded defaults (no file)".to_owned(),
        },
    });
    lines.push(match Classifier::load(settings.classify.rules_file.as_deref()) {
        Ok(c) => CheckLine {
            name: "rules",
            ok: true,
            detail: format!(
                "{} categorisation rules from {}",
                c.rule_count(),
                settings
                    .classify
                    .rules_file
                    .as_ref()
                    .map_or("the shipped file".to_owned(), |p| p.display().to_string())
            ),
        },
        Err(e) => CheckLine {
            name: "rules",
            ok: false,
            detail: e.to_string(),
        },
    });
    lines.push(match startup::open_store(settings).await {
        Ok(store) => match store.ping().await {
            Ok(()) => CheckLine {
                name: "database",
                ok: true,
                detail: format!("{} reachable, migrations applied", store.backend()),
            },
            Err(e) => CheckLine {
                name: "database",
                ok: false,
                detail: e.to_string(),
            },
        },
        Err(e) => CheckLine {
            name: "database",
            ok: false,
            detail: format!("{e:#}"),
        },
    });
    lines.push(check_email(settings).await);
    lines.extend(check_github(settings).await);
    let ok = lines.iter().all(|l| l.ok);
    if json {
        println!("{}", serde_json::json!({ "ok": ok, "checks": lines }));
    } else {
        for l in &lines {
            println!("{:<14} {:<6} {}", l.name, if l.ok { "ok" } else { "FAILED" }, l.detail);
        }
        println!("{}", if ok { "all checks passed" } else { "some checks failed" });
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn check_email(settings: &Settings) -> CheckLine {
    let line = |ok, detail| CheckLine {
        name: "email",
        ok,
        detail,
    };
    let mailer = match Mailer::from_settings(&settings.email) {
        Ok(m) => m,
        Err(e) => return line(false, format!("{e:#}")),
    };
    match settings.email.transport {
        EmailTransport::File => line(
            true,
            format!("file transport, writing to {}", settings.email.file_dir.display()),
        ),
        EmailTransport::Smtp => match mailer.test_connection().await {
            Ok(()) => line(true, "SMTP server reached; it answered the handshake".to_owned()),
            Err(e) => line(false, e.message),
        },
    }
}

/// The token and every route: can the token see the repository, and is it private? A security
/// route to a public repository fails the check, since such tickets would wait forever.
async fn check_github(settings: &Settings) -> Vec<CheckLine> {
    let gh = &settings.github;
    let Some(token) = gh.token.clone().filter(|t| !t.expose_secret().is_empty()) else {
        return vec![CheckLine {
            name: "github",
            // Unconfigured filing is a choice, not a failure: jobs wait.
            ok: true,
            detail: "not configured (github.token is not set); filing jobs wait in the outbox".to_owned(),
        }];
    };
    if gh.routes.is_empty() {
        return vec![CheckLine {
            name: "github",
            ok: true,
            detail: "not configured (no github.routes); filing jobs wait in the outbox".to_owned(),
        }];
    }
    let client = match GithubClient::new(gh.api_url.as_str(), token, Duration::from_secs(gh.timeout_seconds)) {
        Ok(c) => c,
        Err(e) => {
            return vec![CheckLine {
                name: "github",
                ok: false,
                detail: format!("{e:#}"),
            }]
        }
    };
    let mut lines = Vec::new();
    for (ty, route) in &gh.routes {
        let line = match client.is_private(&route.repo).await {
            Ok(true) => CheckLine {
                name: "github",
                ok: true,
                detail: format!("{ty} → {} (private)", route.repo),
            },
            Ok(false) if ty == "security" => CheckLine {
                name: "github",
                ok: false,
                detail: format!(
                    "{ty} → {} is public: security tickets are never filed there",
                    route.repo
                ),
            },
            Ok(false) => CheckLine {
                name: "github",
                ok: true,
                detail: format!("{ty} → {} (public: issues carry no contact details)", route.repo),
            },
            Err(e) => CheckLine {
                name: "github",
                ok: false,
                detail: format!("{ty} → {}: {e}", route.repo),
            },
        };
        lines.push(line);
    }
    lines
}
