//! What `deploy/` ships, checked with the real programs: the example configuration loads and
//! migrates with the real binary; the systemd unit passes `systemd-analyze verify` without a warning.

use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy").join(file)
}

#[test]
fn the_example_configuration_is_complete_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    // Secrets come from the environment, as the file's header says.
    let out = Command::new(env!("CARGO_BIN_EXE_intake"))
        .arg("--config")
        .arg(deploy("intake.example.toml"))
        .args(["migrate", "--json"])
        .env_remove("INTAKE_CONFIG")
        .env(
            "INTAKE_DATABASE__URL",
            format!("sqlite://{}", dir.path().join("db.sqlite").display()),
        )
        .env("INTAKE_EMAIL__SMTP_URL", "smtp://relay.example:587?tls=required")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let text = std::fs::read_to_string(deploy("intake.example.toml")).unwrap();
    let v: toml::Value = toml::from_str(&text).unwrap();
    let routes = v["github"]["routes"].as_table().unwrap();
    for ty in ["account", "billing", "product", "security", "availability"] {
        assert!(routes.contains_key(ty), "a route for {ty}");
    }
    assert_ne!(
        routes["security"]["repo"], routes["product"]["repo"],
        "security reports have their own repository"
    );
    for secret in ["token", "github_secret", "smtp_url", "form_secret"] {
        assert!(
            !text.lines().any(|l| l.trim_start().starts_with(&format!("{secret} ="))),
            "{secret} belongs in the environment, not in the file"
        );
    }
}

#[test]
fn the_systemd_unit_verifies_without_a_warning() {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("systemd-analyze is not available: skipping the unit check");
        return;
    }
    let unit = std::fs::read_to_string(deploy("systemd/intake.service")).unwrap();
    for hardening in [
        "User=intake",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=intake",
        "Restart=on-failure",
        "PrivateTmp=yes",
    ] {
        assert!(unit.lines().any(|l| l == hardening), "{hardening}");
    }
    let dir = tempfile::tempdir().unwrap();
    // The one test override: the binary where this build put it, not /usr/local/bin.
    let written = |text: &str| {
        let path = dir.path().join("intake.service");
        std::fs::write(
            &path,
            text.replace("/usr/local/bin/intake", env!("CARGO_BIN_EXE_intake")),
        )
        .unwrap();
        path
    };
    let verify = |text: &str| {
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(written(text))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let warnings: Vec<String> = stderr
            .lines()
            .filter(|l| l.contains("intake.service"))
            .map(str::to_owned)
            .collect();
        (out.status.success(), warnings)
    };
    let (ok, warnings) = verify(&unit);
    assert!(ok && warnings.is_empty(), "{warnings:?}");
    // The check can fail: a misspelt hardening option is reported.
    let (_, warnings) = verify(&unit.replace("ProtectSystem=strict", "ProtectSystem=bogus"));
    assert!(!warnings.is_empty(), "systemd-analyze reports a bad value");

    // systemd's own exposure score (0 best, 10 worst) stays at 1.5 or below ("OK"); the unit
    // scores 1.2. A unit with the sandboxing lines removed scores far worse and fails the check.
    let exposure_at_most_1_5 = |text: &str| {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--threshold=15"])
            .arg(written(text))
            .output()
            .unwrap();
        out.status.success()
    };
    assert!(exposure_at_most_1_5(&unit));
    let unhardened: String = unit
        .lines()
        .filter(|l| !l.starts_with("Protect") && !l.starts_with("Restrict") && !l.starts_with("Private"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!exposure_at_most_1_5(&unhardened));
}

#[test]
fn the_journal_jail_reads_the_units_journal_in_debians_fail2ban() {
    if !crate::process::tool_available("fail2ban-client", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jail = std::fs::read_to_string(deploy("fail2ban/jail.d/intake.conf")).unwrap();
    let conf = crate::fail2ban::debian_config_with(dir.path(), &jail);
    let out = crate::process::run_ok(Command::new("fail2ban-client").arg("-c").arg(&conf).arg("-d"));
    let dump = String::from_utf8_lossy(&out.stdout);
    // The journal of the unit deploy/systemd ships, and only the one jail enabled by default.
    let unit = deploy("systemd/intake.service");
    let unit_name = unit.file_name().unwrap().to_str().unwrap();
    for expected in [
        "['add', 'intake', 'systemd']".to_owned(),
        format!("['set', 'intake', 'addjournalmatch', '_SYSTEMD_UNIT={unit_name}']"),
        "['set', 'intake', 'maxretry', 10]".to_owned(),
    ] {
        assert!(dump.contains(&expected), "{expected} in\n{dump}");
    }
    assert!(!dump.contains("'intake-pm2'"), "the PM2 jail is off unless enabled");
}
