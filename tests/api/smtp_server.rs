//! A small SMTP server for tests, speaking the protocol over real TCP: enough of RFC 5321 for
//! lettre (EHLO, MAIL, RCPT, DATA, RSET, NOOP, QUIT), recording what it accepted, with faults on
//! request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// One accepted message.
#[derive(Debug, Clone)]
#[allow(dead_code)] // the delivery benchmark includes this file and reads only part of it
pub struct Received {
    /// When the server accepted it.
    pub at: std::time::Instant,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    pub data: String,
    /// Whether the message came over TLS, and as which authenticated user.
    pub tls: bool,
    pub user: Option<String>,
}

#[allow(dead_code)] // as above
impl Received {
    /// The message with quoted-printable undone (soft line breaks joined, `=XX` decoded), so tests
    /// can look for text as the reader sees it.
    pub fn decoded(&self) -> String {
        let joined = self.data.replace("=\r\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'=' && i + 2 < bytes.len() {
                if let Ok(b) = u8::from_str_radix(&joined[i + 1..i + 3], 16) {
                    out.push(b);
                    i += 3;
                    continue;
                }
            }
            out.push(bytes[i]);
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The value of the first header named `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next()?;
        let mut value: Option<String> = None;
        for line in head.split("\r\n") {
            if let Some(v) = value.as_mut() {
                if line.starts_with(' ') || line.starts_with('\t') {
                    v.push_str(line.trim_start());
                    continue;
                }
                return value;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case(name) {
                    value = Some(v.trim().to_owned());
                }
            }
        }
        value
    }
}

/// How the server protects the session.
#[derive(Clone)]
enum Security {
    Plain,
    /// STARTTLS offered and required before MAIL.
    StartTls(tokio_rustls::TlsAcceptor),
    /// TLS from the first byte (port 465 style).
    Implicit(tokio_rustls::TlsAcceptor),
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

#[derive(Clone)]
pub struct SmtpServer {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    /// Answer this many MAIL commands with 451 (try again later).
    pub transient_failures: Arc<AtomicUsize>,
    /// Answer this many RCPT commands with 550 (no such user).
    pub permanent_failures: Arc<AtomicUsize>,
    security: Security,
    /// The certificate clients must trust (PEM), for the TLS modes.
    pub certificate_pem: Option<String>,
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        Self::start_with(Security::Plain, None).await
    }

    /// A server with a fresh self-signed certificate for 127.0.0.1: STARTTLS when `implicit` is
    /// false, TLS from the first byte when true.
    #[allow(dead_code)] // used by the TLS tests only
    pub async fn start_tls(implicit: bool) -> SmtpServer {
        let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).expect("certificate");
        let chain = vec![cert.cert.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let security = if implicit {
            Security::Implicit(acceptor)
        } else {
            Security::StartTls(acceptor)
        };
        Self::start_with(security, Some(cert.cert.pem())).await
    }

    async fn start_with(security: Security, certificate_pem: Option<String>) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = SmtpServer {
            port: listener.local_addr().unwrap().port(),
            received: Arc::default(),
            transient_failures: Arc::default(),
            permanent_failures: Arc::default(),
            security,
            certificate_pem,
        };
        let s = server.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let _ = s.session(stream).await;
                });
            }
        });
        server
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn take(counter: &AtomicUsize) -> bool {
        counter
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    async fn session(&self, tcp: tokio::net::TcpStream) -> std::io::Result<()> {
        let (mut io, mut tls): (BufReader<Box<dyn Io>>, bool) = match &self.security {
            Security::Implicit(acceptor) => (BufReader::new(Box::new(acceptor.accept(tcp).await?)), true),
            _ => (BufReader::new(Box::new(tcp)), false),
        };
        io.get_mut().write_all(b"220 test.local ESMTP intake-test\r\n").await?;
        let mut current: Option<Received> = None;
        let mut user: Option<String> = None;
        loop {
            let mut line = String::new();
            if io.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let line = line.trim_end_matches(['\r', '\n']).to_owned();
            let upper = line.to_ascii_uppercase();
            let starttls_pending = matches!(self.security, Security::StartTls(_)) && !tls;
            let reply: Vec<u8> = if upper.starts_with("EHLO") {
                let mut r = String::from("250-test.local\r\n250-8BITMIME\r\n");
                if starttls_pending {
                    r.push_str("250-STARTTLS\r\n");
                }
                if tls {
                    r.push_str("250-AUTH PLAIN\r\n");
                }
                r.push_str("250 SMTPUTF8\r\n");
                r.into_bytes()
            } else if upper.starts_with("HELO") {
                b"250 test.local\r\n".to_vec()
            } else if upper == "STARTTLS" && starttls_pending {
                io.get_mut().write_all(b"220 2.0.0 Ready to start TLS\r\n").await?;
                let Security::StartTls(acceptor) = &self.security else {
                    unreachable!()
                };
                let plain = io.into_inner();
                io = BufReader::new(Box::new(acceptor.accept(plain).await?));
                tls = true;
                continue;
            } else if upper.starts_with("AUTH PLAIN ") && tls {
                use base64::Engine;
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(line[11..].trim())
                    .unwrap_or_default();
                let parts: Vec<&[u8]> = decoded.split(|b| *b == 0).collect();
                user = parts.get(1).map(|u| String::from_utf8_lossy(u).into_owned());
                b"235 2.7.0 Authentication successful\r\n".to_vec()
            } else if upper.starts_with("MAIL FROM:") {
                if starttls_pending {
                    b"530 5.7.0 Must issue a STARTTLS command first\r\n".to_vec()
                } else if Self::take(&self.transient_failures) {
                    b"451 4.3.0 Try again later\r\n".to_vec()
                } else {
                    current = Some(Received {
                        at: std::time::Instant::now(),
                        mail_from: addr(&line[10..]),
                        rcpt_to: Vec::new(),
                        data: String::new(),
                        tls,
                        user: user.clone(),
                    });
                    b"250 2.1.0 OK\r\n".to_vec()
                }
            } else if upper.starts_with("RCPT TO:") {
                if Self::take(&self.permanent_failures) {
                    b"550 5.1.1 No such user\r\n".to_vec()
                } else if let Some(m) = current.as_mut() {
                    m.rcpt_to.push(addr(&line[8..]));
                    b"250 2.1.5 OK\r\n".to_vec()
                } else {
                    b"503 5.5.1 MAIL first\r\n".to_vec()
                }
            } else if upper == "DATA" {
                io.get_mut()
                    .write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n")
                    .await?;
                let mut data = String::new();
                loop {
                    let mut l = String::new();
                    if io.read_line(&mut l).await? == 0 {
                        return Ok(());
                    }
                    let l = l.trim_end_matches(['\r', '\n']);
                    if l == "." {
                        break;
                    }
                    data.push_str(l.strip_prefix('.').unwrap_or(l));
                    data.push_str("\r\n");
                }
                if let Some(mut m) = current.take() {
                    m.data = data;
                    m.at = std::time::Instant::now();
                    self.received.lock().unwrap().push(m);
                }
                b"250 2.0.0 OK queued\r\n".to_vec()
            } else if upper == "RSET" {
                current = None;
                b"250 2.0.0 OK\r\n".to_vec()
            } else if upper == "NOOP" {
                b"250 2.0.0 OK\r\n".to_vec()
            } else if upper == "QUIT" {
                io.get_mut().write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            } else {
                b"502 5.5.2 Command not recognised\r\n".to_vec()
            };
            io.get_mut().write_all(&reply).await?;
        }
    }
}

fn addr(s: &str) -> String {
    let s = s.trim();
    let s = s.split_whitespace().next().unwrap_or(s);
    s.trim_start_matches('<').trim_end_matches('>').to_owned()
}
