//! `deploy/nginx/intake.conf` run by Debian's real nginx, over TLS with a test certificate, in front
//! of two real `intake` instances on one PostgreSQL database. Clients connect from different
//! loopback addresses (127.0.0.0/8 is all loopback on Linux), so the address nginx passes on can be
//! told apart from nginx's own (127.0.0.1, the instances' only trusted proxy).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use secrecy::SecretString;

use crate::fail2ban::banned_addresses;
use crate::form::valid_fields;
use crate::helpers::{form_token, valid_ticket, Backend, TestDatabase};
use crate::process::{free_port, running_as_root, tool_available, Running, Submitter};

const HOST: &str = "help.localizevideos.example";

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/intake.conf")
}

/// The shipped file with the test overrides its header documents, and nothing else: certificate
/// paths, `listen` ports on loopback, log paths, and the instances. Every anchor must be found, so
/// a change to the shipped file that the overrides no longer fit fails here.
fn with_test_overrides(conf: &str, dir: &Path, https: u16, http: u16, instances: &[u16]) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut out = String::new();
    for line in conf.lines() {
        let t = line.trim_start();
        let mut count = |what| *counts.entry(what).or_default() += 1;
        let replaced = if t.starts_with('#') {
            line.to_owned()
        } else if t.starts_with("listen [::]:") {
            count("listen ipv6"); // loopback IPv6 may be off on a test machine
            String::new()
        } else if t.starts_with("listen 443 ssl") {
            count("listen 443");
            format!("    listen 127.0.0.1:{https} ssl http2;")
        } else if t.starts_with("listen 80;") {
            count("listen 80");
            format!("    listen 127.0.0.1:{http};")
        } else if t.starts_with("ssl_certificate ") {
            count("certificate");
            format!("    ssl_certificate {};", dir.join("cert.pem").display())
        } else if t.starts_with("ssl_certificate_key ") {
            count("key");
            format!("    ssl_certificate_key {};", dir.join("key.pem").display())
        } else if t.starts_with("access_log /var/log/nginx/intake.access.log ") {
            count("access log");
            format!("    access_log {} intake;", dir.join("access.log").display())
        } else if t.starts_with("error_log /var/log/nginx/intake.error.log ") {
            count("error log");
            format!("    error_log {} info;", dir.join("error.log").display())
        } else if t.starts_with("server 127.0.0.1:8080 ") {
            count("upstream");
            instances
                .iter()
                .map(|p| format!("    server 127.0.0.1:{p} max_fails=3 fail_timeout=10s;\n"))
                .collect()
        } else {
            line.to_owned()
        };
        out.push_str(&replaced);
        out.push('\n');
    }
    let expected = [
        ("access log", 1),
        ("certificate", 1),
        ("error log", 1),
        ("key", 1),
        ("listen 443", 1),
        ("listen 80", 1),
        ("listen ipv6", 2),
        ("upstream", 1),
    ];
    assert_eq!(
        counts.into_iter().collect::<Vec<_>>(),
        expected,
        "the test overrides no longer fit deploy/nginx/intake.conf"
    );
    out
}

struct Nginx {
    process: Running,
    dir: tempfile::TempDir,
    https: u16,
    http: u16,
    certificate: String,
}

impl Nginx {
    fn start(instances: &[u16]) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        let cert = rcgen::generate_simple_self_signed(vec![HOST.to_owned()]).unwrap();
        std::fs::write(dir.path().join("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(dir.path().join("key.pem"), cert.key_pair.serialize_pem()).unwrap();
        let (https, http) = (free_port(), free_port());
        let conf = std::fs::read_to_string(shipped()).unwrap();
        let site = with_test_overrides(&conf, dir.path(), https, http, instances);
        std::fs::write(dir.path().join("intake.conf"), site).unwrap();
        // The main file a Debian nginx.conf would be, in the test's directory. Running as root,
        // nginx's workers would otherwise switch to a user that cannot read the directory.
        let user = if running_as_root() { "user root;" } else { "" };
        let d = dir.path().display();
        let main = format!(
            "{user}\ndaemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n\
             include {d}/intake.conf;\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), main).unwrap();
        let child = Command::new("nginx")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(dir.path().join("nginx.conf"))
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        let mut nginx = Nginx {
            process: Running(child),
            dir,
            https,
            http,
            certificate: cert.cert.pem(),
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", https)).is_ok() {
                return nginx;
            }
            let log = nginx.error_log();
            nginx.process.assert_alive("nginx", || log);
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("nginx did not listen: {}", nginx.error_log());
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// A browser-like client connecting from `from`, trusting the test certificate, with the
    /// site's name resolved to this nginx.
    fn client(&self, from: Ipv4Addr) -> reqwest::Client {
        reqwest::Client::builder()
            .local_address(IpAddr::V4(from))
            .resolve(HOST, SocketAddr::from(([127, 0, 0, 1], self.https)))
            .add_root_certificate(reqwest::Certificate::from_pem(self.certificate.as_bytes()).unwrap())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }
}

fn url(path: &str) -> String {
    format!("https://{HOST}{path}")
}

/// An instance on `db`: nginx at 127.0.0.1 is its trusted proxy; three submissions per address.
fn instance(db: &TestDatabase, dir: &Path, name: &str) -> Submitter {
    let env = [
        ("INTAKE_DATABASE__URL", db.url().to_owned()),
        ("INTAKE_SERVER__TRUSTED_PROXIES", r#"["127.0.0.1/32"]"#.to_owned()),
        ("INTAKE_SERVER__PUBLIC_URL", format!("https://{HOST}")),
        // Every instance signs forms with the same key, so any of them accepts any form.
        (
            "INTAKE_SERVER__FORM_SECRET",
            "a-shared-form-secret-of-32-characters!".to_owned(),
        ),
        ("INTAKE_EMAIL__FILE_DIR", dir.join("outbox").display().to_string()),
        ("INTAKE_LIMITS__PER_IP", "3/hour".to_owned()),
        ("INTAKE_LIMITS__PER_EMAIL", "1000/hour".to_owned()),
        ("INTAKE_LIMITS__ACKS_PER_DOMAIN", "1000/hour".to_owned()),
        ("INTAKE_LIMITS__MIN_FILL_SECONDS", "0".to_owned()),
        ("INTAKE_DELIVERY__ENABLED", "false".to_owned()),
    ];
    Submitter::serve(&env, &dir.join(format!("{name}.log")))
}

fn loopback(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

#[tokio::test]
async fn nginx_passes_the_real_client_to_two_instances_on_one_database() {
    if !tool_available("nginx", &["-v"]) {
        return;
    }
    let Some(db) = TestDatabase::create(Backend::Postgres).await else {
        eprintln!("PostgreSQL is not configured: skipping the nginx test");
        return;
    };
    // Behind one trusted proxy, intake reads an appended header right too; overwriting is still
    // what the file promises, so that no client text reaches intake as an address.
    let conf = std::fs::read_to_string(shipped()).unwrap();
    assert!(conf.contains("proxy_set_header X-Forwarded-For $remote_addr;"));
    assert!(!conf.contains("$proxy_add_x_forwarded_for"));
    let dir = tempfile::tempdir().unwrap();
    let mut a = instance(&db, dir.path(), "a");
    let b = instance(&db, dir.path(), "b");
    let nginx = Nginx::start(&[a.port, b.port]);

    // Plain HTTP redirects to HTTPS; health answers through the proxy; metrics stay internal.
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let res = plain
        .get(format!("http://127.0.0.1:{}/?x=1", nginx.http))
        .header("Host", HOST)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 301);
    assert_eq!(res.headers()["location"], format!("https://{HOST}/?x=1"));
    let client = nginx.client(loopback(2));
    let res = client.get(url("/api/health")).send().await.unwrap();
    assert!(res.headers().contains_key("strict-transport-security"));
    let health: serde_json::Value = res.json().await.unwrap();
    assert_eq!(health["checks"]["database"]["status"], "ok", "{health}");
    assert_eq!(client.get(url("/metrics")).send().await.unwrap().status(), 404);

    // 127.0.0.2 claims to be someone else; nginx overwrites the claim, so intake limits and logs
    // 127.0.0.2. Each address stays on one instance, so the limit of three holds exactly.
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let res = client
            .post(url("/api/v1/tickets"))
            .header("X-Forwarded-For", "198.51.100.7")
            .json(&valid_ticket())
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [202, 202, 202, 429, 429]);
    // Another client is not limited by the first one's use (the limit is not nginx's address).
    let other = nginx.client(loopback(3));
    let res = other
        .post(url("/api/v1/tickets"))
        .header("X-Forwarded-For", "127.0.0.2")
        .json(&valid_ticket())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let logs = format!("{}{}", a.log_text(), b.log_text());
    assert!(logs.contains("client=127.0.0.2 reason=rate-limit"), "{logs}");
    for absent in ["198.51.100.7", "client=127.0.0.1 ", "client=127.0.0.3"] {
        assert!(!logs.contains(absent), "{absent} in the logs:\n{logs}");
    }
    if tool_available("fail2ban-regex", &["--version"]) {
        let banned: BTreeSet<String> = [&a.log, &b.log].iter().flat_map(|log| banned_addresses(log)).collect();
        assert_eq!(banned, BTreeSet::from(["127.0.0.2".to_owned()]));
    }

    // Forms issued to one client and sent by twenty others, spread over both instances: all
    // accepted (the instances share the form key), all in the one database.
    let mut tokens = Vec::new();
    for _ in 0..20 {
        let html = client.get(url("/")).send().await.unwrap().text().await.unwrap();
        tokens.push(form_token(&html).expect("a form token"));
    }
    let store = intake::store::connect(&SecretString::from(db.url().to_owned()), 2)
        .await
        .unwrap();
    for (i, token) in tokens.iter().enumerate() {
        let sender = nginx.client(loopback(10 + i as u8));
        let res = sender
            .post(url("/"))
            .form(&crate::form::as_refs(&valid_fields(token)))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303, "{}", res.text().await.unwrap());
        let location = res.headers()["location"].to_str().unwrap().to_owned();
        let reference = location.rsplit('/').next().unwrap().to_owned();
        let page = sender.get(url(&location)).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.text().await.unwrap().contains(&reference));
        assert!(store.ticket_by_reference(&reference).await.unwrap().is_some());
    }
    let served: BTreeSet<String> = nginx
        .access_log()
        .lines()
        .filter(|l| l.contains("\"POST /\" 303"))
        .filter_map(|l| l.split_whitespace().nth(7).map(str::to_owned))
        .collect();
    assert_eq!(
        served,
        BTreeSet::from([format!("127.0.0.1:{}", a.port), format!("127.0.0.1:{}", b.port)]),
        "{}",
        nginx.access_log()
    );

    // A body over the service's limit stops at nginx.
    let big = serde_json::json!({ "message": "a".repeat(70 * 1024) });
    let res = other.post(url("/api/v1/tickets")).json(&big).send().await.unwrap();
    assert_eq!(res.status(), 413);

    // A flood of submissions from one address meets the edge limit before intake sees it all.
    let flooder = nginx.client(loopback(40));
    let mut floods = Vec::new();
    for _ in 0..60 {
        let flooder = flooder.clone();
        floods.push(tokio::spawn(async move {
            let res = flooder.post(url("/api/v1/tickets")).body("{").send().await.unwrap();
            let problem = res.headers()["content-type"] == "application/problem+json";
            (res.status().as_u16(), problem)
        }));
    }
    let mut limited = 0;
    for f in floods {
        let (status, problem) = f.await.unwrap();
        assert!([400, 415, 429].contains(&status), "{status}");
        // nginx's refusal is its own page; intake's would be a problem document.
        limited += usize::from(status == 429 && !problem);
    }
    assert!(limited >= 25, "only {limited} of 60 limited");
    assert!(nginx.error_log().contains("limiting requests"), "{}", nginx.error_log());

    // An instance dies: every client is served by the other.
    a.kill();
    for i in 0..20u8 {
        let res = nginx
            .client(loopback(10 + i))
            .get(url("/api/live"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "client 127.0.0.{}", 10 + i);
    }
}
