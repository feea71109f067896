//! Settings: one typed struct read from a TOML file and `INTAKE_<SECTION>__<KEY>` environment variables.
//!
//! Everything has an embedded default so that `intake serve` runs with no file at all. A bad value
//! stops start-up with one message that names the key (see [`ConfigError`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::domain::{ClosedSet, RequestType};

/// Why the settings could not be loaded; the message names the key (or the file) at fault.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl ConfigError {
    fn key(key: &str, message: impl fmt::Display) -> Self {
        ConfigError(format!("configuration key `{key}`: {message}"))
    }
}

/// The whole configuration of one `intake` process.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub email: EmailSettings,
    pub github: GithubSettings,
    pub webhook: WebhookSettings,
    pub limits: LimitsSettings,
    pub tickets: TicketSettings,
    pub log: LogSettings,
    pub classify: ClassifySettings,
    pub delivery: DeliverySettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliverySettings {
    /// Run delivery workers in this process (tests turn them off and drive delivery step by step).
    pub enabled: bool,
    /// The safety-net poll of the outbox, beside the wake-up after each commit.
    pub poll_seconds: u64,
    /// How long a claimed job belongs to a worker before another may take it over.
    pub lease_seconds: u64,
}

impl Default for DeliverySettings {
    fn default() -> Self {
        DeliverySettings {
            enabled: true,
            poll_seconds: 5,
            lease_seconds: 300,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSettings {
    /// Address and port to listen on; port 0 picks a free port (tests).
    pub listen: SocketAddr,
    /// Base URL used in emails and links; defaults to `http://<listen>`.
    pub public_url: Option<url::Url>,
    /// Peers whose `X-Forwarded-For` header is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Key that signs form tokens. Several instances behind one balancer must share it; when it is
    /// unset each process draws a random one at start.
    pub form_secret: Option<SecretString>,
    /// HTTP worker threads; 0 means one per core.
    pub workers: usize,
    /// The name shown on the form's pages.
    pub site_name: String,
    /// Open connections the whole process holds at most; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// A client must send a request's head, and then its body, within this many seconds each
    /// (slow clients must not hold connections).
    pub request_timeout_seconds: u64,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: None,
            trusted_proxies: Vec::new(),
            form_secret: None,
            workers: 0,
            site_name: "intake".to_owned(),
            max_connections: 1024,
            request_timeout_seconds: 10,
        }
    }
}

impl ServerSettings {
    /// The configured public URL, or one derived from the listen address, without a trailing slash.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
            None => format!("http://{}", self.listen),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `sqlite://path` or `postgres://…`; may carry a password, so it is kept secret.
    pub url: SecretString,
    /// Connections in the pool.
    pub max_connections: u32,
    /// Most submissions written in one transaction by the group-commit writer.
    pub max_batch: usize,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        DatabaseSettings {
            url: SecretString::from("sqlite://data/intake.db"),
            max_connections: 8,
            max_batch: 512,
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum EmailTransport {
    #[default]
    File,
    Smtp,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailSettings {
    pub transport: EmailTransport,
    /// lettre SMTP URL; may carry credentials.
    pub smtp_url: Option<SecretString>,
    /// PEM certificate(s) to trust besides the public roots, for a relay with a private CA.
    pub smtp_ca_file: Option<PathBuf>,
    pub file_dir: PathBuf,
    pub from: String,
    pub reply_to: Option<String>,
}

impl Default for EmailSettings {
    fn default() -> Self {
        EmailSettings {
            transport: EmailTransport::File,
            smtp_url: None,
            smtp_ca_file: None,
            file_dir: PathBuf::from("data/outbox"),
            from: "Support <support@localhost>".to_owned(),
            reply_to: None,
        }
    }
}

#[derive(Debug, Deserialize, Clone, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GithubRoute {
    /// `owner/name`.
    pub repo: String,
    /// Labels to set; `None` means `["support", "<type>"]`.
    #[serde(default)]
    pub labels: Option<Vec<String>>,
    #[serde(default)]
    pub assignees: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GithubSettings {
    pub api_url: url::Url,
    pub token: Option<SecretString>,
    /// Where each request type is filed, keyed by type id.
    pub routes: BTreeMap<String, GithubRoute>,
    pub file_unsupported: bool,
    /// Pace issue creation under GitHub's content limits (turn off only against a fake).
    pub pacing: bool,
    pub per_minute: u32,
    pub per_hour: u32,
    /// A request without an answer after this long is given up (and treated as ambiguous).
    pub timeout_seconds: u64,
    /// The labels that say what the categorisation decided, added to the route's.
    pub decision_labels: DecisionLabels,
}

/// Why GitHub filing is not configured (filing jobs then wait in the outbox).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GithubUnconfigured {
    NoToken,
    NoRoutes,
}

impl std::fmt::Display for GithubUnconfigured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GithubUnconfigured::NoToken => "github.token is not set",
            GithubUnconfigured::NoRoutes => "no github.routes are configured",
        })
    }
}

impl GithubSettings {
    /// The token to file with, when filing is configured: a token and at least one route. The
    /// one place that decides it (start-up, health, `intake check` and the worker ask here).
    pub fn filing_token(&self) -> Result<&SecretString, GithubUnconfigured> {
        let token = self
            .token
            .as_ref()
            .filter(|t| !t.expose_secret().is_empty())
            .ok_or(GithubUnconfigured::NoToken)?;
        if self.routes.is_empty() {
            return Err(GithubUnconfigured::NoRoutes);
        }
        Ok(token)
    }
}

/// Labels for what a decision means, so the team sees it in the issue list.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionLabels {
    /// The ticket needs a person to look at its type (a suspected report, an unconfirmed
    /// unsupported request, a pick the text disagrees with).
    pub needs_triage: String,
    /// An unsupported request (filed only with `github.file_unsupported`).
    pub unsupported: String,
    /// The middle band: possibly a vulnerability report.
    pub security_suspect: String,
}

impl Default for DecisionLabels {
    fn default() -> Self {
        DecisionLabels {
            needs_triage: "needs-triage".to_owned(),
            unsupported: "unsupported".to_owned(),
            security_suspect: "security-suspect".to_owned(),
        }
    }
}

impl Default for GithubSettings {
    fn default() -> Self {
        GithubSettings {
            // A constant that parses; checked by the settings tests.
            api_url: url::Url::parse("https://api.github.com").expect("constant URL"),
            token: None,
            routes: BTreeMap::new(),
            file_unsupported: false,
            pacing: true,
            per_minute: 80,
            per_hour: 500,
            timeout_seconds: 10,
            decision_labels: DecisionLabels::default(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookSettings {
    pub github_secret: Option<SecretString>,
}

/// A count per period, written `N/second|minute|hour|day`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, unit) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not of the form N/second|minute|hour|day"))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| format!("`{count}` is not a whole number"))?;
        if count == 0 {
            return Err("the count must be at least 1".to_owned());
        }
        let per = match unit.trim() {
            "second" | "s" => Duration::from_secs(1),
            "minute" | "m" => Duration::from_secs(60),
            "hour" | "h" => Duration::from_secs(3600),
            "day" | "d" => Duration::from_secs(86_400),
            other => return Err(format!("unknown period `{other}`; use second, minute, hour or day")),
        };
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 => "second",
            60 => "minute",
            3600 => "hour",
            _ => "day",
        };
        write!(f, "{}/{unit}", self.count)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSettings {
    pub per_ip: Rate,
    pub per_email: Rate,
    pub acks_per_email: Rate,
    /// Acknowledgements to all addresses of one domain, so a flood cannot mail one organisation.
    pub acks_per_domain: Rate,
    pub min_fill_seconds: u64,
    /// Clients (and email addresses) each rate limiter keeps track of at most; past it, and after
    /// pruning, new submissions are refused with 429 rather than memory growing without bound.
    pub max_tracked_clients: usize,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        LimitsSettings {
            per_ip: Rate {
                count: 10,
                per: Duration::from_secs(3600),
            },
            per_email: Rate {
                count: 5,
                per: Duration::from_secs(3600),
            },
            acks_per_email: Rate {
                count: 3,
                per: Duration::from_secs(86_400),
            },
            acks_per_domain: Rate {
                count: 50,
                per: Duration::from_secs(3600),
            },
            min_fill_seconds: 2,
            max_tracked_clients: 500_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TicketSettings {
    pub reference_prefix: String,
}

impl Default for TicketSettings {
    fn default() -> Self {
        TicketSettings {
            reference_prefix: "SUP".to_owned(),
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A `tracing` filter such as `info` or `intake=debug,info`; `RUST_LOG` wins when set.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        LogSettings {
            format: LogFormat::Text,
            level: "info".to_owned(),
        }
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ClassifySettings {
    /// A rules file replacing the one shipped with the binary.
    pub rules_file: Option<PathBuf>,
    /// A model file (`intake classify train`) replacing the one shipped with the binary.
    pub model_file: Option<PathBuf>,
}

/// Where the settings came from, for `intake check`.
#[derive(Debug, Clone)]
pub enum Source {
    File(PathBuf),
    Defaults,
}

impl Settings {
    /// Reads the file named by `--config`, else `INTAKE_CONFIG`, else `./intake.toml` when present,
    /// then applies `INTAKE_<SECTION>__<KEY>` variables on top, then checks the values.
    pub fn load(explicit: Option<&Path>) -> Result<(Settings, Source), ConfigError> {
        let path = explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("INTAKE_CONFIG").map(PathBuf::from))
            .or_else(|| {
                let local = PathBuf::from("intake.toml");
                local.exists().then_some(local)
            });
        let mut figment = Figment::new();
        let source = match &path {
            Some(p) => {
                if !p.is_file() {
                    return Err(ConfigError(format!(
                        "configuration file `{}` does not exist or is not a file",
                        p.display()
                    )));
                }
                figment = figment.merge(Toml::file(p));
                Source::File(p.clone())
            }
            None => Source::Defaults,
        };
        // Only variables with a section separator are settings; INTAKE_CONFIG and the test
        // harness's INTAKE_TEST_* variables are not.
        figment = figment.merge(
            Env::prefixed("INTAKE_")
                .filter(|k| k.as_str().contains("__"))
                .split("__"),
        );
        let settings: Settings = figment.extract().map_err(|e| {
            let key = e.path.join(".");
            let mut msg = e.kind.to_string();
            if let Some(meta) = &e.metadata {
                msg = format!("{msg} (from {})", meta.name);
            }
            if key.is_empty() {
                ConfigError(format!("configuration: {msg}"))
            } else {
                ConfigError::key(&key, msg)
            }
        })?;
        settings.check()?;
        Ok((settings, source))
    }

    /// Checks what the types alone cannot.
    pub fn check(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        let url = self.database.url.expose_secret();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres:") || url.starts_with("postgresql:")) {
            return Err(ConfigError::key(
                "database.url",
                "must start with sqlite:// or postgres://",
            ));
        }
        if self.database.max_connections < 2 {
            return Err(ConfigError::key("database.max_connections", "must be at least 2"));
        }
        if !(1..=4096).contains(&self.database.max_batch) {
            return Err(ConfigError::key("database.max_batch", "must be between 1 and 4096"));
        }
        if self.server.max_connections == 0 {
            return Err(ConfigError::key("server.max_connections", "must be at least 1"));
        }
        if !(1..=300).contains(&self.server.request_timeout_seconds) {
            return Err(ConfigError::key(
                "server.request_timeout_seconds",
                "must be between 1 and 300",
            ));
        }
        if self.limits.max_tracked_clients < 1000 {
            return Err(ConfigError::key("limits.max_tracked_clients", "must be at least 1000"));
        }
        let prefix = &self.tickets.reference_prefix;
        if prefix.is_empty()
            || prefix.len() > 10
            || !prefix.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            return Err(ConfigError::key(
                "tickets.reference_prefix",
                "must be 1 to 10 characters A-Z or 0-9",
            ));
        }
        if let Some(u) = &self.server.public_url {
            if !matches!(u.scheme(), "http" | "https") {
                return Err(ConfigError::key("server.public_url", "must be an http or https URL"));
            }
        }
        if !matches!(self.github.api_url.scheme(), "http" | "https") {
            return Err(ConfigError::key("github.api_url", "must be an http or https URL"));
        }
        if self.email.transport == EmailTransport::Smtp && self.email.smtp_url.is_none() {
            return Err(ConfigError::key(
                "email.smtp_url",
                "is required when email.transport = \"smtp\"",
            ));
        }
        for (ty, route) in &self.github.routes {
            if RequestType::parse(ty).is_none() {
                return Err(ConfigError::key(
                    &format!("github.routes.{ty}"),
                    "is not a request type (account, billing, product, security, availability)",
                ));
            }
            let valid_repo = route
                .repo
                .split_once('/')
                .is_some_and(|(o, n)| valid_github_name(o) && valid_github_name(n));
            if !valid_repo {
                return Err(ConfigError::key(
                    &format!("github.routes.{ty}.repo"),
                    format!("`{}` is not of the form owner/name", route.repo),
                ));
            }
        }
        if self.email.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(ConfigError::key(
                "email.from",
                "must be an address, optionally with a name: `Support <support@example.com>`",
            ));
        }
        if let Some(r) = &self.email.reply_to {
            if r.parse::<lettre::message::Mailbox>().is_err() {
                return Err(ConfigError::key(
                    "email.reply_to",
                    "must be an address, optionally with a name",
                ));
            }
        }
        if self.github.per_minute == 0 || self.github.per_hour == 0 {
            return Err(ConfigError::key(
                "github.per_minute",
                "and github.per_hour must be at least 1",
            ));
        }
        if !(1..=300).contains(&self.github.timeout_seconds) {
            return Err(ConfigError::key("github.timeout_seconds", "must be between 1 and 300"));
        }
        if !(1..=3600).contains(&self.delivery.poll_seconds) {
            return Err(ConfigError::key("delivery.poll_seconds", "must be between 1 and 3600"));
        }
        if !(10..=86_400).contains(&self.delivery.lease_seconds) {
            return Err(ConfigError::key(
                "delivery.lease_seconds",
                "must be between 10 and 86400",
            ));
        }
        if self.limits.min_fill_seconds > 3600 {
            return Err(ConfigError::key("limits.min_fill_seconds", "must be at most 3600"));
        }
        if let Some(p) = &self.email.smtp_ca_file {
            if !p.is_file() {
                return Err(ConfigError::key(
                    "email.smtp_ca_file",
                    format!("`{}` does not exist or is not a file", p.display()),
                ));
            }
        }
        for (key, file) in [
            ("classify.rules_file", &self.classify.rules_file),
            ("classify.model_file", &self.classify.model_file),
        ] {
            if let Some(p) = file {
                if !p.is_file() {
                    return Err(ConfigError::key(
                        key,
                        format!("`{}` does not exist or is not a file", p.display()),
                    ));
                }
            }
        }
        Ok(())
    }
}

fn valid_github_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_in_every_unit_and_refuse_nonsense() {
        assert_eq!(
            "10/hour".parse::<Rate>().unwrap(),
            Rate {
                count: 10,
                per: Duration::from_secs(3600)
            }
        );
        assert_eq!("3/day".parse::<Rate>().unwrap().per, Duration::from_secs(86_400));
        assert_eq!("7/second".parse::<Rate>().unwrap().to_string(), "7/second");
        assert!("0/hour".parse::<Rate>().is_err());
        assert!("ten/hour".parse::<Rate>().is_err());
        assert!("10/fortnight".parse::<Rate>().is_err());
        assert!("10".parse::<Rate>().is_err());
    }

    #[test]
    fn defaults_pass_their_own_checks() {
        let s = Settings::default();
        s.check().unwrap();
        assert_eq!(s.server.public_url(), "http://127.0.0.1:8080");
        assert_eq!(s.github.api_url.as_str(), "https://api.github.com/");
    }
}
