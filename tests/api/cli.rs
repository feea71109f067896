//! The command line, run as a user would: exit codes, messages naming the key, `--config` anywhere.

use std::process::{Command, Output};

fn intake(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_intake"));
    cmd.current_dir(dir)
        .args(args)
        .env_remove("INTAKE_CONFIG")
        .env("RUST_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the binary runs")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn a_bad_value_stops_with_exit_2_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = intake(dir.path(), &["check"], &[("INTAKE_SERVER__LISTEN", "not-an-address")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("server.listen"), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "one clear message: {}", stderr(&out));

    let out = intake(dir.path(), &["check"], &[("INTAKE_LIMITS__PER_IP", "10/fortnight")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("limits.per_ip"), "{}", stderr(&out));

    let out = intake(dir.path(), &["check"], &[("INTAKE_TICKETS__REFERENCE_PREFIX", "lower")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("tickets.reference_prefix"), "{}", stderr(&out));
}

#[test]
fn an_unknown_key_or_missing_file_stops_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\nlistne = 1\n",
    )
    .unwrap();
    let out = intake(dir.path(), &["--config", "bad.toml", "check"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("listne"), "{}", stderr(&out));

    let out = intake(dir.path(), &["check", "--config", "missing.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("missing.toml"), "{}", stderr(&out));

    std::fs::write(
        dir.path().join("routes.toml"),
        "[github.routes.refunds]\nrepo = \"acme/support\"\n",
    )
    .unwrap();
    let out = intake(dir.path(), &["check", "--config", "routes.toml"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("github.routes.refunds"), "{}", stderr(&out));
}

#[test]
fn check_on_embedded_defaults_reports_each_part_and_passes() {
    let dir = tempfile::tempdir().unwrap();
    let out = intake(dir.path(), &["check"], &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", stderr(&out));
    for part in ["configuration", "rules", "database", "email", "github"] {
        assert!(stdout.contains(part), "{part}: {stdout}");
    }
    assert!(stdout.contains("embedded defaults"));
    assert!(stdout.contains("not configured"));
    assert!(
        dir.path().join("data/intake.db").exists(),
        "SQLite in ./data by default"
    );
    // Tickets and emails hold personal data: the new database and the outbox are the owner's
    // alone, whatever the umask. (SQLite gives the WAL the database's mode; the WAL itself may be
    // gone once the last connection closed, so it is checked only if it is still there.)
    use std::os::unix::fs::PermissionsExt;
    for file in ["data/intake.db", "data/outbox", "data/intake.db-wal"] {
        let Ok(meta) = std::fs::metadata(dir.path().join(file)) else {
            assert!(file.ends_with("-wal"), "{file} exists");
            continue;
        };
        let mode = meta.permissions().mode();
        assert_eq!(mode & 0o077, 0, "{file} is {mode:o}");
    }
}

#[test]
fn config_may_stand_after_the_subcommand_and_json_is_parseable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("intake-test.toml"),
        "[database]\nurl = \"sqlite://other/x.db\"\n",
    )
    .unwrap();
    let out = intake(dir.path(), &["migrate", "--config", "intake-test.toml", "--json"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(v["ok"], true);
    assert!(dir.path().join("other/x.db").exists());

    let out = intake(dir.path(), &["--json", "check", "--config", "intake-test.toml"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(v["ok"], true);
    assert_eq!(v["checks"].as_array().unwrap().len(), 5);
}

#[test]
fn check_fails_with_a_clear_line_when_the_database_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let out = intake(
        dir.path(),
        &["check"],
        &[("INTAKE_DATABASE__URL", "postgres://postgres@127.0.0.1:1/nothing")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("database") && stdout.contains("FAILED"), "{stdout}");
    assert!(!stdout.contains("postgres@"), "the URL may hold a password: {stdout}");
}

#[test]
fn a_broken_rules_file_is_reported_by_check() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.toml"),
        "[decision]\ntriage_min_score = 2\n[[rule]]\nid = \"bad\"\npoints_to = \"billing\"\npatterns = [\"(\"]\n",
    )
    .unwrap();
    let out = intake(dir.path(), &["check"], &[("INTAKE_CLASSIFY__RULES_FILE", "rules.toml")]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("rules") && stdout.contains("`bad`"), "{stdout}");
}

async fn intake_async(dir: std::path::PathBuf, args: Vec<&'static str>, env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        intake(&dir, &args, &env)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn check_reaches_smtp_and_github_and_judges_each_route() {
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    let smtp = crate::smtp_server::SmtpServer::start().await;
    let fake = MockServer::start().await;
    for (repo, private) in [("acme/support", true), ("acme/public", false)] {
        Mock::given(method("GET"))
            .and(path(format!("/repos/{repo}")))
            .and(header("authorization", "Bearer ghp_check"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({"private": private})))
            .mount(&fake)
            .await;
    }
    let dir = tempfile::tempdir().unwrap();
    let base = vec![
        ("INTAKE_EMAIL__TRANSPORT", "smtp".to_owned()),
        ("INTAKE_EMAIL__SMTP_URL", smtp.url()),
        ("INTAKE_GITHUB__API_URL", fake.uri()),
        ("INTAKE_GITHUB__TOKEN", "ghp_check".to_owned()),
        ("INTAKE_GITHUB__ROUTES__BILLING__REPO", "acme/support".to_owned()),
        ("INTAKE_GITHUB__ROUTES__PRODUCT__REPO", "acme/public".to_owned()),
    ];
    let out = intake_async(dir.path().to_path_buf(), vec!["check"], base.clone()).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("handshake"), "{stdout}");
    assert!(stdout.contains("billing → acme/support (private)"), "{stdout}");
    assert!(stdout.contains("product → acme/public (public"), "{stdout}");
    assert!(!stdout.contains("ghp_check"), "no token in the report");

    let mut security_public = base.clone();
    security_public.push(("INTAKE_GITHUB__ROUTES__SECURITY__REPO", "acme/public".to_owned()));
    let out = intake_async(dir.path().to_path_buf(), vec!["check"], security_public).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("never filed there"));

    let mut gone = base.clone();
    gone.push(("INTAKE_GITHUB__ROUTES__ACCOUNT__REPO", "acme/gone".to_owned()));
    let out = intake_async(dir.path().to_path_buf(), vec!["check"], gone).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("404"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let mut no_smtp = base;
    no_smtp[1].1 = "smtp://127.0.0.1:1".to_owned();
    let out = intake_async(dir.path().to_path_buf(), vec!["check"], no_smtp).await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("email") && stdout.contains("FAILED"), "{stdout}");
}

/// A rollback, or an instance of the old release restarting in the middle of a rolling upgrade:
/// the schema carries a migration this binary does not know, and `migrate` and `serve` still work.
async fn an_earlier_release_starts_on_a_later_schema(backend: crate::helpers::Backend) {
    let Some(db) = crate::helpers::TestDatabase::create(backend).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = [("INTAKE_DATABASE__URL", db.url())];
    let out = intake(dir.path(), &["migrate"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    // What a later release's migration leaves behind: a new table and its row in sqlx's ledger.
    let later = [
        "CREATE TABLE from_a_later_release (id BIGINT PRIMARY KEY)",
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from a later release', TRUE, x'00', 0)",
    ];
    let pg_later = later[1].replace("x'00'", "'\\x00'::bytea");
    match backend {
        crate::helpers::Backend::Sqlite => {
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(db.url())
                .await
                .unwrap();
            for sql in later {
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
        }
        crate::helpers::Backend::Postgres => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
                .await
                .unwrap();
            for sql in [later[0], pg_later.as_str()] {
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
        }
    }
    let out = intake(dir.path(), &["migrate"], &env);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = intake(dir.path(), &["check"], &env);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("database"),
        "{}",
        stderr(&out)
    );
    let mut server = crate::process::Submitter::serve(
        &[
            ("INTAKE_DATABASE__URL", db.url().to_owned()),
            (
                "INTAKE_EMAIL__FILE_DIR",
                dir.path().join("outbox").display().to_string(),
            ),
            ("INTAKE_DELIVERY__ENABLED", "false".to_owned()),
        ],
        &dir.path().join("serve.log"),
    );
    crate::process::submit(server.port, 1).await;
    server.kill();
}

crate::on_both_backends!(an_earlier_release_starts_on_a_later_schema);

#[test]
fn an_empty_list_says_so_on_stderr_and_keeps_stdout_empty() {
    let dir = tempfile::tempdir().unwrap();
    for (args, said) in [
        (&["tickets", "list"][..], "no tickets match"),
        (&["deliveries", "list", "--dead"][..], "no dead deliveries"),
        (&["audit"][..], "the audit log is empty"),
    ] {
        let out = intake(dir.path(), args, &[]);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(stderr(&out).trim(), said, "{args:?}");
    }
}

#[test]
fn classify_explains_a_decision_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "classify",
        "--type",
        "product",
        "--subject",
        "Other companies' videos",
        "--message",
        "If I change the number at the end of the address I can watch another company's project and download it.",
    ];
    let out = intake(dir.path(), &args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for line in ["picked:       product", "band:", "model:        ok "] {
        assert!(text.contains(line), "{line}: {text}");
    }
    let mut json_args = args.to_vec();
    json_args.push("--json");
    let out = intake(dir.path(), &json_args, &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["band"].is_string() && v["why"].is_string(), "{v}");
    let scores: Vec<&serde_json::Value> = v["signals"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["rule"] == "model")
        .collect();
    assert_eq!(scores.len(), 5, "a score per class: {v}");
    let sum: f64 = scores.iter().map(|s| s["score"].as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 0.01, "{sum}");
    // A picked type that is not one is refused.
    let out = intake(
        dir.path(),
        &["classify", "--type", "nope", "--subject", "s", "--message", "m"],
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn classify_eval_scores_a_labelled_file_and_fails_below_the_gates() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cases.toml");
    std::fs::write(
        &file,
        "[[case]]\npicked = \"billing\"\nsubject = \"Invoice for March\"\nmessage = \"Could you send the March invoice again, with our VAT number on it?\"\nexpect = \"ok\"\n\n\
         [[case]]\npicked = \"product\"\nsubject = \"Export\"\nmessage = \"Please export all our projects as SRT files for us every Monday.\"\nexpect = \"security\"\n",
    )
    .unwrap();
    let out = intake(dir.path(), &["classify", "eval", file.to_str().unwrap(), "--json"], &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    assert_eq!(v["cases"], 2);
    assert_eq!(v["security_recall"], 0.0, "a mislabelled case is a miss: {v}");
    assert_eq!(out.status.code(), Some(1), "below a gate");
    let out = intake(dir.path(), &["classify", "eval", file.to_str().unwrap()], &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("security recall     0.000 (gate 0.95: BELOW)"));
    // A broken file is a clear error.
    std::fs::write(&file, "[[case]]\npicked = \"nonsense\"\n").unwrap();
    let out = intake(dir.path(), &["classify", "eval", file.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn classify_eval_passes_on_the_frozen_test_split() {
    let dir = tempfile::tempdir().unwrap();
    let split = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/classify/corpus/test.toml");
    let out = intake(dir.path(), &["classify", "eval", split], &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    for gate in ["security recall", "unsupported recall", "keep-pick"] {
        let line = text
            .lines()
            .find(|l| l.starts_with(gate))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(line.ends_with(": ok)"), "{line}");
    }
}

#[test]
fn a_model_file_that_is_not_one_fails_the_check() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("model.bin");
    std::fs::write(&bad, b"not a model").unwrap();
    let out = intake(
        dir.path(),
        &["check"],
        &[("INTAKE_CLASSIFY__MODEL_FILE", bad.to_str().unwrap())],
    );
    assert!(!out.status.success());
    let all = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(all.contains("model file"), "{all}");
}
