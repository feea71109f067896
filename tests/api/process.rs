//! Real programs as child processes: the `intake` binary on a free loopback port with its log in a
//! file, and the check that an outside tool (nginx, fail2ban-regex, chromedriver, pm2) is installed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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

/// `intake serve`, killed when dropped.
pub struct Intake {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Intake {
    /// Starts `intake serve` on a free loopback port with `env` as its settings (no configuration
    /// file), its log written to `log`, and waits until it reports the port it bound.
    pub fn serve(env: &[(&str, String)], log: &Path) -> Intake {
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
        let mut intake = Intake {
            child,
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
            if let Ok(Some(status)) = intake.child.try_wait() {
                panic!("intake exited ({status}): {}", intake.log_text());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("intake did not report its port: {}", intake.log_text());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, as a crash or an OOM kill would stop it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Intake {
    fn drop(&mut self) {
        self.kill();
    }
}
