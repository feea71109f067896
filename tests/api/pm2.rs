//! `deploy/pm2/ecosystem.config.js` run by the real PM2 (its own daemon in a temporary PM2_HOME)
//! with the example configuration and an environment file, `pm2 restart intake --update-env`
//! taking a new setting, and the `[intake-pm2]` jail of `deploy/fail2ban/` run by a real
//! fail2ban-server over the log PM2 writes, banning the client intake refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use crate::fail2ban::debian_config_with;
use crate::process::{free_port, run_ok, tool_available, Running};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

/// PM2 with its daemon and state in a directory of its own; `pm2 kill` when dropped.
struct Pm2 {
    home: PathBuf,
}

impl Pm2 {
    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new("pm2");
        cmd.args(args).env("PM2_HOME", &self.home).stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        run_ok(&mut cmd)
    }

    fn pid(&self) -> u32 {
        let out = self.run(&["pid", "intake"], &[]);
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
    }
}

impl Drop for Pm2 {
    fn drop(&mut self) {
        let _ = Command::new("pm2")
            .arg("kill")
            .env("PM2_HOME", &self.home)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The page at `/` once it answers, within 30 s.
async fn form_page(port: u16) -> String {
    for _ in 0..300 {
        if let Ok(res) = reqwest::get(format!("http://127.0.0.1:{port}/")).await {
            if res.status() == 200 {
                return res.text().await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("intake under PM2 did not answer on port {port}");
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// The shipped jail file with the test's overrides: the journal jail off (no journal here), the
/// PM2 jail on, reading `log`, banning through fail2ban's `dummy` action into `banned`.
fn jail_with_test_overrides(jail: &str, log: &Path, banned: &Path) -> String {
    let mut section = String::new();
    let mut out = String::new();
    let mut overridden = 0;
    for line in jail.lines() {
        if line.starts_with('[') {
            section = line.to_owned();
        }
        let line = match (section.as_str(), line.split('=').next().unwrap_or("").trim()) {
            ("[intake]", "enabled") => "enabled = false".to_owned(),
            ("[intake-pm2]", "enabled") => {
                overridden += 1;
                format!("enabled = true\naction = dummy[target=\"{}\"]", banned.display())
            }
            ("[intake-pm2]", "logpath") => {
                overridden += 1;
                let shipped = line.split_once('=').unwrap().1.trim();
                assert_eq!(shipped, ecosystem_log(), "the jail reads the file PM2 writes");
                format!("logpath = {}", log.display())
            }
            _ => line.to_owned(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    assert_eq!(overridden, 2, "the [intake-pm2] jail has `enabled` and `logpath`");
    out
}

/// The file the shipped ecosystem sends intake's stderr to, as Node evaluates it.
fn ecosystem_log() -> String {
    let script = format!(
        "process.stdout.write(require({:?}).apps[0].error_file)",
        deploy("pm2/ecosystem.config.js").display().to_string()
    );
    let out = run_ok(Command::new("node").arg("-e").arg(script));
    String::from_utf8(out.stdout).unwrap()
}

/// fail2ban-server in the foreground with Debian's configuration, the shipped filter and jail,
/// and its socket, database and log in `dir`. Runs in a time zone far from UTC, so a log whose
/// times it misread would fall outside `findtime` and ban nobody.
pub struct Fail2Ban {
    _process: Running,
    dir: PathBuf,
}

impl Fail2Ban {
    pub fn start(dir: &Path, log: &Path) -> Fail2Ban {
        let jail = std::fs::read_to_string(deploy("fail2ban/jail.d/intake.conf")).unwrap();
        let banned = dir.join("banned");
        let conf = debian_config_with(dir, &jail_with_test_overrides(&jail, log, &banned));
        let d = dir.display();
        std::fs::write(
            conf.join("fail2ban.local"),
            format!(
                "[Definition]\nlogtarget = {d}/fail2ban.log\nsocket = {d}/fail2ban.sock\n\
                 pidfile = {d}/fail2ban.pid\ndbfile = :memory:\n"
            ),
        )
        .unwrap();
        let child = Command::new("fail2ban-server")
            .args(["-f", "-x", "-c"])
            .arg(&conf)
            .env("TZ", "Pacific/Auckland")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start fail2ban-server");
        Fail2Ban {
            _process: Running(child),
            dir: dir.to_owned(),
        }
    }

    pub fn banned(&self) -> String {
        std::fs::read_to_string(self.dir.join("banned")).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("fail2ban.log")).unwrap_or_default()
    }
}

#[tokio::test]
async fn pm2_runs_intake_restarts_it_with_a_new_environment_and_fail2ban_reads_its_log() {
    if !tool_available("pm2", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The secrets and local settings, in the environment file the ecosystem reads.
    let env_file = dir.path().join("intake.env");
    std::fs::write(
        &env_file,
        format!(
            "# test settings, written as for systemd (quotes are not part of the value)\n\
             INTAKE_DATABASE__URL='sqlite://{db}'\n; a comment\nINTAKE_SERVER__LISTEN=127.0.0.1:{port}\n\
             INTAKE_EMAIL__TRANSPORT=file\nINTAKE_EMAIL__FILE_DIR={outbox}\nINTAKE_DELIVERY__ENABLED=false\n\
             INTAKE_WEBHOOK__GITHUB_SECRET=pm2-test-secret\nINTAKE_SERVER__FORM_SECRET=a-form-secret-of-at-least-32-chars!\n",
            db = dir.path().join("db.sqlite").display(),
            outbox = dir.path().join("outbox").display(),
        ),
    )
    .unwrap();
    // The shipped file with the test's paths: the binary, the example configuration, the logs.
    let log = dir.path().join("intake.log");
    let config = dir.path().join("test.config.js");
    std::fs::write(
        &config,
        format!(
            "const shipped = require({shipped:?});\nconst app = shipped.apps[0];\n\
             app.script = {bin:?};\napp.cwd = {cwd:?};\napp.env.INTAKE_CONFIG = {toml:?};\n\
             app.out_file = {out:?};\napp.error_file = {log:?};\nmodule.exports = shipped;\n",
            shipped = deploy("pm2/ecosystem.config.js").display().to_string(),
            bin = env!("CARGO_BIN_EXE_intake"),
            cwd = dir.path().display().to_string(),
            toml = deploy("intake.example.toml").display().to_string(),
            out = dir.path().join("intake.out.log").display().to_string(),
            log = log.display().to_string(),
        ),
    )
    .unwrap();
    let pm2 = Pm2 {
        home: dir.path().join("pm2"),
    };
    let env_file = env_file.display().to_string();
    pm2.run(
        &["start", config.to_str().unwrap()],
        &[("INTAKE_ENV_FILE", env_file.as_str())],
    );
    let page = form_page(port).await;
    assert!(page.contains("LocalizeVideos"), "the example configuration's site name");
    assert!(dir.path().join("db.sqlite").exists(), "the environment file's database");
    let first = pm2.pid();
    assert!(first > 0 && alive(first));

    // A setting exported in the shell reaches the restarted process.
    pm2.run(
        &["restart", "intake", "--update-env"],
        &[("INTAKE_SERVER__SITE_NAME", "Localize Videos Help")],
    );
    let mut page = String::new();
    for _ in 0..100 {
        page = form_page(port).await;
        if page.contains("Localize Videos Help") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(page.contains("Localize Videos Help"), "the new site name is served");
    let second = pm2.pid();
    assert!(
        second > 0 && second != first && !alive(first),
        "a new process replaced {first}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("shutting down: finishing requests in flight"),
        "the first process stopped gracefully:\n{text}"
    );

    // Refusals written to PM2's log ban the client in the [intake-pm2] jail.
    if !tool_available("fail2ban-server", &["--version"]) {
        return;
    }
    let f2b = Fail2Ban::start(dir.path(), &log);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let client = reqwest::Client::new();
    for i in 0..12 {
        let res = client
            .post(format!("http://127.0.0.1:{port}/webhooks/github"))
            .header("X-Forwarded-For", "203.0.113.9")
            .header("X-GitHub-Event", "ping")
            .header("X-GitHub-Delivery", format!("d-{i}"))
            .header("X-Hub-Signature-256", "sha256=00")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    for _ in 0..150 {
        if f2b.banned().contains("+203.0.113.9") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        f2b.banned().contains("+203.0.113.9"),
        "banned: {:?}\nfail2ban log:\n{}",
        f2b.banned(),
        f2b.log()
    );
    // And read the times right (Fail2Ban bans on misread times too, but warns of a time zone).
    assert!(!f2b.log().contains("timezone problem"), "{}", f2b.log());
}
