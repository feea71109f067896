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

#[derive(Clone)]
pub struct SmtpServer {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    /// Answer this many MAIL commands with 451 (try again later).
    pub transient_failures: Arc<AtomicUsize>,
    /// Answer this many RCPT commands with 550 (no such user).
    pub permanent_failures: Arc<AtomicUsize>,
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let server = SmtpServer {
            port: listener.local_addr().unwrap().port(),
            received: Arc::default(),
            transient_failures: Arc::default(),
            permanent_failures: Arc::default(),
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

    async fn session(&self, stream: tokio::net::TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut lines = BufReader::new(read).lines();
        write.write_all(b"220 test.local ESMTP intake-test\r\n").await?;
        let mut current: Option<Received> = None;
        while let Some(line) = lines.next_line().await? {
            let upper = line.to_ascii_uppercase();
            let reply: &[u8] = if upper.starts_with("EHLO") {
                b"250-test.local\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n"
            } else if upper.starts_with("HELO") {
                b"250 test.local\r\n"
            } else if upper.starts_with("MAIL FROM:") {
                if Self::take(&self.transient_failures) {
                    b"451 4.3.0 Try again later\r\n"
                } else {
                    current = Some(Received {
                        at: std::time::Instant::now(),
                        mail_from: addr(&line[10..]),
                        rcpt_to: Vec::new(),
                        data: String::new(),
                    });
                    b"250 2.1.0 OK\r\n"
                }
            } else if upper.starts_with("RCPT TO:") {
                if Self::take(&self.permanent_failures) {
                    b"550 5.1.1 No such user\r\n"
                } else if let Some(m) = current.as_mut() {
                    m.rcpt_to.push(addr(&line[8..]));
                    b"250 2.1.5 OK\r\n"
                } else {
                    b"503 5.5.1 MAIL first\r\n"
                }
            } else if upper == "DATA" {
                write.write_all(b"354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                let mut data = String::new();
                while let Some(l) = lines.next_line().await? {
                    if l == "." {
                        break;
                    }
                    data.push_str(l.strip_prefix('.').unwrap_or(&l));
                    data.push_str("\r\n");
                }
                if let Some(mut m) = current.take() {
                    m.data = data;
                    m.at = std::time::Instant::now();
                    self.received.lock().unwrap().push(m);
                }
                b"250 2.0.0 OK queued\r\n"
            } else if upper == "RSET" {
                current = None;
                b"250 2.0.0 OK\r\n"
            } else if upper == "NOOP" {
                b"250 2.0.0 OK\r\n"
            } else if upper == "QUIT" {
                write.write_all(b"221 2.0.0 Bye\r\n").await?;
                return Ok(());
            } else {
                b"502 5.5.2 Command not recognised\r\n"
            };
            write.write_all(reply).await?;
        }
        Ok(())
    }
}

fn addr(s: &str) -> String {
    let s = s.trim();
    let s = s.split_whitespace().next().unwrap_or(s);
    s.trim_start_matches('<').trim_end_matches('>').to_owned()
}
