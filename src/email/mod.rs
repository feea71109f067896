//! Email with lettre: SMTP (TLS, credentials, a connection pool) or `.eml` files (the default), and
//! the acknowledgement composed from templates.

mod ack;
mod followup;

use std::time::Duration;

use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::{EmailSettings, EmailTransport};

pub use ack::{ack_message, ack_message_id, AckContext};
pub use followup::{followup_message, followup_message_id};

/// Where mail goes.
#[derive(Clone)]
pub enum Mailer {
    /// `.eml` files in this directory.
    File(AsyncFileTransport<Tokio1Executor>, std::path::PathBuf),
    Smtp(AsyncSmtpTransport<Tokio1Executor>),
}

/// Why a message was not sent. Transient failures are retried; permanent ones (the server refused
/// the recipient or the message for good) are not.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct MailError {
    pub transient: bool,
    pub message: String,
}

impl Mailer {
    /// Builds the configured transport; checks the SMTP URL without connecting.
    pub fn from_settings(settings: &EmailSettings) -> anyhow::Result<Mailer> {
        match settings.transport {
            EmailTransport::File => {
                // The messages hold customers' addresses: a new outbox is the owner's alone.
                let mut dir = std::fs::DirBuilder::new();
                dir.recursive(true);
                #[cfg(unix)]
                std::os::unix::fs::DirBuilderExt::mode(&mut dir, 0o700);
                dir.create(&settings.file_dir)?;
                Ok(Mailer::File(
                    AsyncFileTransport::new(&settings.file_dir),
                    settings.file_dir.clone(),
                ))
            }
            EmailTransport::Smtp => {
                let url = settings
                    .smtp_url
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("email.smtp_url is required for the smtp transport"))?;
                // The URL may hold a password: the error names the key, never the value.
                let mut builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .map_err(|e| anyhow::anyhow!("email.smtp_url is not a valid SMTP URL: {}", redact(&e)))?;
                if let Some(ca) = &settings.smtp_ca_file {
                    if let Some(tls) = tls_with_extra_root(url.expose_secret(), ca)? {
                        builder = builder.tls(tls);
                    }
                }
                let transport = builder
                    .timeout(Some(Duration::from_secs(30)))
                    .pool_config(PoolConfig::new().max_size(4).idle_timeout(Duration::from_secs(60)))
                    .build();
                Ok(Mailer::Smtp(transport))
            }
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Mailer::File(..) => "file",
            Mailer::Smtp(_) => "smtp",
        }
    }

    pub async fn send(&self, message: Message) -> Result<(), MailError> {
        match self {
            Mailer::File(t, dir) => {
                let id = t.send(message).await.map_err(|e| MailError {
                    transient: true,
                    message: format!("writing the message file failed: {e}"),
                })?;
                // The message holds a customer's address: the file is the service's alone, whatever
                // the umask (lettre creates it with the default mode).
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let path = dir.join(format!("{id}.eml"));
                    // One chmod of a file just written: not worth a blocking-pool hop.
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(|e| MailError {
                        transient: true,
                        message: format!("making the message file private failed: {e}"),
                    })?;
                }
                #[cfg(not(unix))]
                let _ = (id, dir);
                Ok(())
            }
            Mailer::Smtp(t) => t.send(message).await.map(|_| ()).map_err(|e| MailError {
                transient: !e.is_permanent(),
                message: format!("SMTP: {}", redact(&e)),
            }),
        }
    }

    /// Opens a connection and says hello, for `intake check`.
    pub async fn test_connection(&self) -> Result<(), MailError> {
        match self {
            Mailer::File(..) => Ok(()),
            Mailer::Smtp(t) => match t.test_connection().await {
                Ok(true) => Ok(()),
                Ok(false) => Err(MailError {
                    transient: true,
                    message: "the SMTP server did not answer".into(),
                }),
                Err(e) => Err(MailError {
                    transient: true,
                    message: format!("SMTP: {}", redact(&e)),
                }),
            },
        }
    }
}

/// The TLS mode the URL asks for (`smtps://` implicit, `?tls=required|opportunistic` STARTTLS),
/// trusting the certificates in `ca` besides the public roots; `None` for a URL without TLS.
fn tls_with_extra_root(url: &str, ca: &std::path::Path) -> anyhow::Result<Option<Tls>> {
    let pem = std::fs::read(ca).map_err(|e| anyhow::anyhow!("email.smtp_ca_file: {e}"))?;
    let parsed = url::Url::parse(url).map_err(|_| anyhow::anyhow!("email.smtp_url is not a valid URL"))?;
    let host = parsed
        .host_str()
        .ok_or_else(|| anyhow::anyhow!("email.smtp_url has no host"))?;
    let params = TlsParameters::builder(host.trim_start_matches('[').trim_end_matches(']').to_owned())
        .add_root_certificate(
            Certificate::from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("email.smtp_ca_file is not a PEM certificate: {e}"))?,
        )
        .build_rustls()
        .map_err(|e| anyhow::anyhow!("email.smtp_ca_file: {e}"))?;
    let mode = parsed
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    Ok(match (parsed.scheme(), mode.as_deref()) {
        ("smtps", _) => Some(Tls::Wrapper(params)),
        (_, Some("required")) => Some(Tls::Required(params)),
        (_, Some("opportunistic")) => Some(Tls::Opportunistic(params)),
        _ => None,
    })
}

/// lettre's errors can quote the server's reply but not our credentials; keep only the first line
/// and cap its length all the same.
/// An SMTP error for a log line and the delivery's last error: its first line, at most 300
/// characters, with any address in it replaced (a server's reply often quotes the recipient, and
/// a URL error the credentials).
fn redact(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    let first: String = s.lines().next().unwrap_or("").chars().take(300).collect();
    first
        .split_inclusive(|c: char| c.is_whitespace() || matches!(c, '<' | '>' | '(' | ')' | ',' | ';' | '"' | '\''))
        .map(|word| {
            let end = word.trim_end_matches(|c: char| {
                c.is_whitespace() || matches!(c, '<' | '>' | '(' | ')' | ',' | ';' | '"' | '\'')
            });
            if end.contains('@') {
                format!("[address]{}", &word[end.len()..])
            } else {
                word.to_owned()
            }
        })
        .collect()
}

#[cfg(test)]
mod redact_tests {
    use super::redact;

    #[test]
    fn an_smtp_reply_loses_the_address_it_quotes_and_keeps_the_rest() {
        let reply = "permanent error (550): 5.1.1 <victim@example.com>: Recipient address rejected\nsecond line";
        assert_eq!(
            redact(&reply),
            "permanent error (550): 5.1.1 <[address]>: Recipient address rejected"
        );
        assert_eq!(redact(&"smtp://user:pw@relay:587 is bad"), "[address] is bad");
        assert_eq!(redact(&"connection refused"), "connection refused");
    }
}
