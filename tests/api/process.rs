//! Real programs as child processes: the `intake` binary on a free loopback port with its log in a
//! file, and the check that an outside tool (nginx, fail2ban-regex, chromedriver, pm2) is installed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::helpers::valid_ticket;

/// Whether `program` runs (`args` is a cheap invocation such as `--version`). In CI it must:
/// `.ci/run` installs every tool a test needs, so a missing one fails there instead of skipping.
pub fn tool_available(program: &str, args: &[&str]) -> bool {
    let found = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(std::env::var_os("CI").is_none(), "{program} must be installed in CI");
        eprintln!("{program} is not installed: skipping the test that needs it");
    }
    found
}

/// A loopback port nothing listens on now (another process may take it before it is used; the
/// tests that need one bind it at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing running.
pub struct Running(pub Child);

impl Running {
    /// Panics with `log()` if the process has exited.
    pub fn assert_alive(&mut self, what: &str, log: impl FnOnce() -> String) {
        if let Ok(Some(status)) = self.0.try_wait() {
            panic!("{what} exited ({status}): {}", log());
        }
    }

    pub fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd` to its end and returns its output; panics with what it said if it failed.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the program runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `intake serve`, killed when dropped.
pub struct Submitter {
    child: Running,
    pub port: u16,
    pub log: PathBuf,
}

impl Submitter {
    /// Starts `intake serve` on a free loopback port with `env` as its settings (no configuration
    /// file), its log written to `log`, and waits until it reports the port it bound.
    pub fn serve(env: &[(&str, String)], log: &Path) -> Submitter {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_intake"));
        cmd.arg("serve")
            .env_remove("INTAKE_CONFIG")
            .env_remove("RUST_LOG")
            .env("INTAKE_SERVER__LISTEN", "127.0.0.1:0");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .expect("start intake");
        let mut intake = Submitter {
            child: Running(child),
            port: 0,
            log: log.to_owned(),
        };
        // The "listening" line in either log format: `port=8080` or `"port":8080`.
        let port_re = regex::Regex::new(r#"intake listening.*?"?port"?[=:](\d+)"#).unwrap();
        for _ in 0..300 {
            if let Some(c) = port_re.captures(&intake.log_text()) {
                intake.port = c[1].parse().unwrap();
                return intake;
            }
            let log = intake.log.clone();
            intake
                .child
                .assert_alive("intake", || std::fs::read_to_string(log).unwrap_or_default());
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("intake did not report its port: {}", intake.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash or an OOM kill would stop it.
    pub fn kill(&mut self) {
        self.child.kill();
    }
}

/// Submits `n` valid tickets to an instance on `port` through the API; their references.
pub async fn submit(port: u16, n: usize) -> Vec<String> {
    let client = reqwest::Client::new();
    let mut references = Vec::new();
    for _ in 0..n {
        let res = client
            .post(format!("http://127.0.0.1:{port}/api/v1/tickets"))
            .json(&valid_ticket())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 202);
        let v: serde_json::Value = res.json().await.unwrap();
        references.push(v["ticket"].as_str().unwrap().to_owned());
    }
    references
}
