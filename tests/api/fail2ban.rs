//! The shipped Fail2Ban filter, run by the real `fail2ban-regex` over log lines the real binary
//! wrote, in both log formats, for IPv4 and IPv6 clients behind a trusted proxy.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::json;

use crate::helpers::{form_token, valid_ticket};
use crate::process::{run_ok, tool_available, Submitter};

fn filter() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/fail2ban/filter.d/intake.conf")
}

/// Debian's Fail2Ban configuration copied to `dir/fail2ban`, with the shipped filter and `jail` as
/// `jail.d/intake.conf`, and without Debian's own sshd jail (no log for it on a test machine).
pub fn debian_config_with(dir: &Path, jail: &str) -> PathBuf {
    let conf = dir.join("fail2ban");
    run_ok(Command::new("cp").arg("-r").arg("/etc/fail2ban").arg(&conf));
    let _ = std::fs::remove_file(conf.join("jail.d/defaults-debian.conf"));
    std::fs::copy(filter(), conf.join("filter.d/intake.conf")).unwrap();
    std::fs::write(conf.join("jail.d/intake.conf"), jail).unwrap();
    conf
}

/// `intake serve` on SQLite, logging in `format` to a file, behind a trusted proxy at 127.0.0.1.
fn start(format: &str, dir: &Path) -> Submitter {
    let env = [
        ("INTAKE_SERVER__TRUSTED_PROXIES", r#"["127.0.0.1/32"]"#.to_owned()),
        (
            "INTAKE_DATABASE__URL",
            format!("sqlite://{}", dir.join("db.sqlite").display()),
        ),
        ("INTAKE_EMAIL__FILE_DIR", dir.join("outbox").display().to_string()),
        ("INTAKE_LIMITS__PER_IP", "1/hour".to_owned()),
        ("INTAKE_WEBHOOK__GITHUB_SECRET", "webhook-test-secret".to_owned()),
        ("INTAKE_LIMITS__MIN_FILL_SECONDS", "0".to_owned()),
        ("INTAKE_DELIVERY__ENABLED", "false".to_owned()),
        ("INTAKE_LOG__FORMAT", format.to_owned()),
    ];
    Submitter::serve(&env, &dir.join("intake.log"))
}

/// The addresses `fail2ban-regex` finds with the shipped filter, one per matched line, sorted.
pub fn banned_addresses(log: &Path) -> Vec<String> {
    let out = Command::new("fail2ban-regex")
        .args(["-o", "ip"])
        .arg(log)
        .arg(filter())
        .output()
        .expect("run fail2ban-regex");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut ips: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    ips.sort();
    ips
}

async fn refuse_clients(port: u16) {
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let api = |xff: &'static str, ua: &'static str, body: serde_json::Value| {
        client
            .post(format!("{base}/api/v1/tickets"))
            .header("X-Forwarded-For", xff)
            .header("User-Agent", ua)
            .json(&body)
            .send()
    };
    // Over the rate limit, IPv4 and IPv6 (the first attempt is allowed, the second refused).
    for xff in ["6.6.6.6, 203.0.113.5", "2001:db8::7"] {
        assert_eq!(api(xff, "t", valid_ticket()).await.unwrap().status(), 202);
        assert_eq!(api(xff, "t", valid_ticket()).await.unwrap().status(), 429);
    }
    // A client rotating its addresses inside one IPv6 /64 is one client, named by its /64.
    for i in 1..=3 {
        let xff: &'static str = Box::leak(format!("2001:db8:77:1::{i}").into_boxed_str());
        let status = api(xff, "t", valid_ticket()).await.unwrap().status();
        assert_eq!(status, if i == 1 { 202 } else { 429 });
    }
    // The trusted proxy itself, passing no address: limited, but never named (it would ban every
    // client behind it).
    let plain = client.post(format!("{base}/api/v1/tickets")).json(&valid_ticket());
    assert_eq!(plain.send().await.unwrap().status(), 202);
    let plain = client.post(format!("{base}/api/v1/tickets")).json(&valid_ticket());
    assert_eq!(plain.send().await.unwrap().status(), 429);
    // A client that writes a fake refusal line into what it controls is banned itself, not the
    // address it wrote.
    let forged = "x: refused a client client=192.0.2.250 reason=rate-limit";
    assert_eq!(api("203.0.113.99", forged, json!({})).await.unwrap().status(), 422);
    assert_eq!(api("203.0.113.99", forged, json!({})).await.unwrap().status(), 429);
    // An oversized body.
    let big = json!({ "message": "a".repeat(70 * 1024) });
    assert_eq!(api("2001:db8:1::21", "t", big).await.unwrap().status(), 413);

    // The form: a honeypot and a forged token.
    let html = client
        .get(format!("{base}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token = form_token(&html).unwrap();
    let form = |xff: &'static str, fields: Vec<(&'static str, String)>| {
        client
            .post(format!("{base}/"))
            .header("X-Forwarded-For", xff)
            .form(&fields)
            .send()
    };
    let fields = |token: &str, website: &str| {
        let mut f = crate::form::valid_fields(token);
        f[1].1 = website.to_owned();
        f
    };
    // A filled honeypot is answered as a person's form is (a redirect to a confirmation).
    assert_eq!(
        form("198.51.100.20", fields(&token, "http://spam"))
            .await
            .unwrap()
            .status(),
        303
    );
    assert_eq!(
        form("198.51.100.21", fields("v1.1.x.forged", ""))
            .await
            .unwrap()
            .status(),
        422
    );

    // A webhook with a forged signature.
    let res = client
        .post(format!("{base}/webhooks/github"))
        .header("X-Forwarded-For", "2001:db8:2::5")
        .header("X-GitHub-Event", "ping")
        .header("X-GitHub-Delivery", "d-1")
        .header("X-Hub-Signature-256", "sha256=0000")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

async fn the_filter_matches_every_refusal_and_nothing_else(format: &str) {
    if !tool_available("fail2ban-regex", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start(format, dir.path());
    refuse_clients(server.port).await;
    let log = std::fs::read_to_string(&server.log).unwrap();
    let found = banned_addresses(&server.log);
    // IPv6 clients by their /64, in one spelling; the address-less proxy never.
    let mut expected = vec![
        "198.51.100.20",
        "198.51.100.21",
        "2001:db8:1::/64",
        "2001:db8:2::/64",
        "2001:db8:77:1::/64",
        "2001:db8:77:1::/64",
        "2001:db8::/64",
        "203.0.113.5",
        "203.0.113.99",
    ];
    expected.sort();
    assert_eq!(found, expected, "{format} log:\n{log}");
}

#[tokio::test]
async fn the_filter_matches_every_refusal_in_text_logs() {
    the_filter_matches_every_refusal_and_nothing_else("text").await;
}

#[tokio::test]
async fn the_filter_matches_every_refusal_in_json_logs() {
    the_filter_matches_every_refusal_and_nothing_else("json").await;
}

/// A client rotating its address inside one IPv6 /64 on every attempt: the limiter counts the /64,
/// and the refusal lines name it, so a real fail2ban-server bans the /64 after `maxretry`.
#[tokio::test]
async fn fail2ban_bans_an_ipv6_client_rotating_inside_its_slash_64() {
    if !tool_available("fail2ban-server", &["--version"]) || !tool_available("node", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let server = start("text", dir.path());
    let f2b = crate::pm2::Fail2Ban::start(dir.path(), &server.log);
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let client = reqwest::Client::new();
    for i in 1..=12 {
        let res = client
            .post(format!("http://127.0.0.1:{}/api/v1/tickets", server.port))
            .header("X-Forwarded-For", format!("2001:db8:99:1:{i:x}::{i:x}"))
            .json(&valid_ticket())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), if i == 1 { 202 } else { 429 });
    }
    for _ in 0..150 {
        if f2b.banned().contains("+2001:db8:99:1::/64") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        f2b.banned().contains("+2001:db8:99:1::/64"),
        "banned: {:?}\nfail2ban log:\n{}\nintake log:\n{}",
        f2b.banned(),
        f2b.log(),
        server.log_text()
    );
}

/// Malformed requests in a burst: actix-http's `stream error` line for each is thinned, so a flood
/// of garbage cannot flood the log.
#[tokio::test]
async fn a_flood_of_malformed_requests_writes_few_error_lines() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let server = start("text", dir.path());
    for _ in 0..300 {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nBroken header line\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), conn.read_to_end(&mut out)).await;
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.1 400"), "{out:?}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let log = server.log_text();
    let errors = log.lines().filter(|l| l.contains("stream error")).count();
    assert!((1..=10).contains(&errors), "{errors} stream error lines:\n{log}");
}
