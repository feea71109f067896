//! The command line: `serve`, `migrate`, `check`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::classify::Classifier;
use crate::config::{EmailTransport, Settings, Source};
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
    lines.push(match settings.email.transport {
        EmailTransport::File => {
            let dir = &settings.email.file_dir;
            match std::fs::create_dir_all(dir) {
                Ok(()) => CheckLine {
                    name: "email",
                    ok: true,
                    detail: format!("file transport, writing to {}", dir.display()),
                },
                Err(e) => CheckLine {
                    name: "email",
                    ok: false,
                    detail: format!("cannot create {}: {e}", dir.display()),
                },
            }
        }
        EmailTransport::Smtp => CheckLine {
            name: "email",
            ok: true,
            detail: "smtp transport configured".to_owned(),
        },
    });
    let delivery = startup::delivery_config(settings);
    lines.push(CheckLine {
        name: "github",
        // Unconfigured filing is a choice, not a failure: jobs wait.
        ok: true,
        detail: match delivery.github_missing {
            Some(m) => format!("not configured ({m}); filing jobs wait in the outbox"),
            None => format!("{} route(s) configured", settings.github.routes.len()),
        },
    });
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
