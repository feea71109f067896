//! Email with lettre: SMTP (TLS, credentials, a connection pool) or `.eml` files (the default), and
//! the acknowledgement composed from templates.

mod ack;

use std::time::Duration;

use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;

use crate::config::{EmailSettings, EmailTransport};

pub use ack::{ack_message, ack_message_id, AckContext};

/// Where mail goes.
#[derive(Clone)]
pub enum Mailer {
    File(AsyncFileTransport<Tokio1Executor>),
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
                std::fs::create_dir_all(&settings.file_dir)?;
                Ok(Mailer::File(AsyncFileTransport::new(&settings.file_dir)))
            }
            EmailTransport::Smtp => {
                let url = settings
                    .smtp_url
                    .as_ref()
                    .ok_or_else(|| anyhow::anyhow!("email.smtp_url is required for the smtp transport"))?;
                // The URL may hold a password: the error names the key, never the value.
                let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose_secret())
                    .map_err(|e| anyhow::anyhow!("email.smtp_url is not a valid SMTP URL: {}", redact(&e)))?
                    .timeout(Some(Duration::from_secs(30)))
                    .pool_config(PoolConfig::new().max_size(4).idle_timeout(Duration::from_secs(60)))
                    .build();
                Ok(Mailer::Smtp(transport))
            }
        }
    }

    pub fn describe(&self) -> &'static str {
        match self {
            Mailer::File(_) => "file",
            Mailer::Smtp(_) => "smtp",
        }
    }

    pub async fn send(&self, message: Message) -> Result<(), MailError> {
        match self {
            Mailer::File(t) => t.send(message).await.map(|_| ()).map_err(|e| MailError {
                transient: true,
                message: format!("writing the message file failed: {e}"),
            }),
            Mailer::Smtp(t) => t.send(message).await.map(|_| ()).map_err(|e| MailError {
                transient: !e.is_permanent(),
                message: format!("SMTP: {}", redact(&e)),
            }),
        }
    }

    /// Opens a connection and says hello, for `intake check`.
    pub async fn test_connection(&self) -> Result<(), MailError> {
        match self {
            Mailer::File(_) => Ok(()),
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

/// lettre's errors can quote the server's reply but not our credentials; keep only the first line
/// and cap its length all the same.
fn redact(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    let first = s.lines().next().unwrap_or("");
    first.chars().take(300).collect()
}
