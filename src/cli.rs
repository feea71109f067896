//! The command line: `serve`, `migrate`, `check`, and the ops commands (`cli_ops`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde::Serialize;

use crate::classify::Classifier;
use std::time::Duration;

use crate::cli_ops::{self, DeliveriesCommand, OpsCommand, TicketsCommand, TokensCommand};
use crate::config::{EmailTransport, Settings, Source};
use crate::domain::{ClosedSet, RequestType};
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
        /// How many entries: 1 to 500 (default 50).
        #[arg(long)]
        limit: Option<i64>,
    },
    /// Categorisation: how a message is decided, and why; evaluation and training of the model.
    Classify(ClassifyArgs),
}

/// `intake classify --subject S --message M [--type T]`, or a JSON object
/// `{"subject", "message", "type"}` on standard input; or one of the subcommands.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ClassifyArgs {
    #[command(subcommand)]
    action: Option<ClassifyAction>,
    /// The message's subject.
    #[arg(long)]
    subject: Option<String>,
    /// The message.
    #[arg(long)]
    message: Option<String>,
    /// The type the customer picked.
    #[arg(long = "type", default_value = "product")]
    picked: String,
}

#[derive(Debug, Subcommand)]
pub enum ClassifyAction {
    /// Scores a labelled file: per-class precision and recall, the confusion table and the gate
    /// figures; exits 1 below a gate.
    Eval {
        /// A labelled TOML file, e.g. tests/classify/corpus/test.toml.
        file: PathBuf,
    },
    /// Trains the model on the training split and writes it (the same corpus gives the same bytes).
    Train {
        /// Labelled files to learn from.
        #[arg(long = "corpus", default_value = "tests/classify/corpus/train.toml")]
        corpus: Vec<PathBuf>,
        /// Where to write the model.
        #[arg(long, default_value = "rules/model.bin")]
        out: PathBuf,
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
        Command::Tokens(command) => cli_ops::run(cli.json, &settings, OpsCommand::Tokens(command)).await,
        Command::Tickets(command) => cli_ops::run(cli.json, &settings, OpsCommand::Tickets(command)).await,
        Command::Deliveries(command) => cli_ops::run(cli.json, &settings, OpsCommand::Deliveries(command)).await,
        Command::Audit { limit } => cli_ops::run(cli.json, &settings, OpsCommand::Audit { limit }).await,
        Command::Classify(args) => classify_cmd(cli.json, &settings, args),
    }
}

fn classifier(settings: &Settings) -> Result<Classifier, String> {
    Classifier::load(
        settings.classify.rules_file.as_deref(),
        settings.classify.model_file.as_deref(),
    )
    .map_err(|e| e.to_string())
}

fn read_corpus(path: &std::path::Path) -> Result<Vec<crate::classify::corpus::Case>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    crate::classify::corpus::load(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn classify_cmd(json: bool, settings: &Settings, args: ClassifyArgs) -> ExitCode {
    let outcome = match args.action {
        Some(ClassifyAction::Eval { file }) => classify_eval(json, settings, &file),
        Some(ClassifyAction::Train { corpus, out }) => classify_train(json, settings, &corpus, &out),
        None => classify_one(json, settings, args.subject, args.message, args.picked),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("intake classify: {e}");
            ExitCode::from(2)
        }
    }
}

fn classify_eval(json: bool, settings: &Settings, file: &std::path::Path) -> Result<ExitCode, String> {
    let cases = read_corpus(file)?;
    let evaluation = crate::classify::corpus::evaluate(&classifier(settings)?, &cases);
    if json {
        println!("{}", serde_json::to_string(&evaluation).map_err(|e| e.to_string())?);
    } else {
        print!("{}", evaluation.report());
    }
    Ok(if evaluation.passes_gates() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn classify_train(
    json: bool,
    settings: &Settings,
    corpus: &[PathBuf],
    out: &std::path::Path,
) -> Result<ExitCode, String> {
    let mut cases = Vec::new();
    for file in corpus {
        cases.extend(read_corpus(file)?);
    }
    let trained = crate::classify::train::train(&classifier(settings)?, &cases)?;
    let bytes = trained.model.to_bytes();
    std::fs::write(out, &bytes).map_err(|e| format!("{}: {e}", out.display()))?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "out": out.display().to_string(),
                "bytes": bytes.len(),
                "thresholds": trained.model.thresholds,
                "out_of_fold": trained.out_of_fold,
            })
        );
    } else {
        print!("{}", trained.report);
        println!(
            "
wrote {} ({} bytes)",
            out.display(),
            bytes.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MessageIn {
    subject: String,
    message: String,
    #[serde(rename = "type", default)]
    picked: Option<String>,
}

fn classify_one(
    json: bool,
    settings: &Settings,
    subject: Option<String>,
    message: Option<String>,
    picked: String,
) -> Result<ExitCode, String> {
    let input = match (subject, message) {
        (Some(subject), Some(message)) => MessageIn {
            subject,
            message,
            picked: Some(picked),
        },
        (None, None) => {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| e.to_string())?;
            serde_json::from_str(&text)
                .map_err(|e| format!("standard input is not a JSON object with subject and message: {e}"))?
        }
        _ => return Err("give both --subject and --message, or a JSON object on standard input".to_owned()),
    };
    let picked_id = input.picked.unwrap_or_else(|| "product".to_owned());
    let picked = crate::domain::RequestType::parse(&picked_id)
        .ok_or_else(|| format!("--type: `{picked_id}` is not a request type"))?;
    let c = classifier(settings)?.classify(picked, &input.subject, &input.message);
    let band = crate::classify::band_of(&c.signals).unwrap_or(crate::classify::Band::Pick);
    if json {
        let mut v = serde_json::to_value(&c).map_err(|e| e.to_string())?;
        v["band"] = serde_json::json!(band.id());
        v["why"] = serde_json::json!(band.explanation());
        println!("{v}");
    } else {
        println!("picked:       {}", c.picked.id());
        println!("filed as:     {}", c.filed_as.id());
        println!("unsupported:  {}", c.unsupported.map_or("no", |u| u.id()));
        println!("needs triage: {}", if c.needs_triage { "yes" } else { "no" });
        println!("band:         {} ({})", band.id(), band.explanation());
        let rules: Vec<String> = crate::classify::fired_rules(&c.signals)
            .map(|s| format!("{} -> {}", s.rule, s.points_to))
            .collect();
        println!(
            "rules:        {}",
            if rules.is_empty() {
                "none".to_owned()
            } else {
                rules.join(", ")
            }
        );
        println!(
            "model:        {}",
            crate::classify::model_scores(&c.signals, 3).join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
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
    lines.push(
        match Classifier::load(
            settings.classify.rules_file.as_deref(),
            settings.classify.model_file.as_deref(),
        ) {
            Ok(c) => CheckLine {
                name: "rules",
                ok: true,
                detail: format!(
                    "{} categorisation rules from {}; the model from {} (security from {:.2}, suspect from {:.2})",
                    c.rule_count(),
                    settings
                        .classify
                        .rules_file
                        .as_ref()
                        .map_or("the shipped file".to_owned(), |p| p.display().to_string()),
                    settings
                        .classify
                        .model_file
                        .as_ref()
                        .map_or("the shipped file".to_owned(), |p| p.display().to_string()),
                    c.model().thresholds.security,
                    c.model().thresholds.security_suspect,
                ),
            },
            Err(e) => CheckLine {
                name: "rules",
                ok: false,
                detail: e.to_string(),
            },
        },
    );
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
    let token = match gh.filing_token() {
        Ok(token) => token.clone(),
        Err(why) => {
            return vec![CheckLine {
                name: "github",
                // Unconfigured filing is a choice, not a failure: jobs wait.
                ok: true,
                detail: format!("not configured ({why}); filing jobs wait in the outbox"),
            }];
        }
    };
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
            Ok(false) if RequestType::parse(ty) == Some(RequestType::Security) => CheckLine {
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
