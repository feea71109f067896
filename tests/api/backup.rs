//! The backups docs/deployment.md describes, taken with the real tools while the service runs and
//! restored into a new instance: `sqlite3 … ".backup …"` and `pg_dump -Fc` / `pg_restore`.

use std::path::Path;
use std::process::Command;

use secrecy::SecretString;

use crate::helpers::{Backend, TestDatabase};
use crate::process::{run_ok, submit, tool_available, Submitter};

fn serve(db_url: &str, dir: &Path, name: &str) -> Submitter {
    let env = [
        ("INTAKE_DATABASE__URL", db_url.to_owned()),
        ("INTAKE_EMAIL__FILE_DIR", dir.join("outbox").display().to_string()),
        ("INTAKE_DELIVERY__ENABLED", "false".to_owned()),
        ("INTAKE_LIMITS__PER_IP", "1000000/second".to_owned()),
        ("INTAKE_LIMITS__PER_EMAIL", "1000000/second".to_owned()),
    ];
    Submitter::serve(&env, &dir.join(format!("{name}.log")))
}

/// Submissions keep arriving while the backup is taken; returns the task to stop afterwards.
fn keep_submitting(port: u16) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            submit(port, 1).await;
        }
    })
}

/// Every reference is in the restored database, and the restored service takes new tickets.
async fn restored_has(db_url: &str, dir: &Path, references: &[String]) {
    let server = serve(db_url, dir, "restored");
    let store = intake::store::connect(&SecretString::from(db_url.to_owned()), 1)
        .await
        .unwrap();
    for reference in references {
        let ticket = store.ticket_by_reference(reference).await.unwrap();
        assert!(ticket.is_some(), "{reference} is in the backup");
    }
    let new = submit(server.port, 3).await;
    for reference in &new {
        assert!(!references.contains(reference));
        assert!(store.ticket_by_reference(reference).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn a_sqlite_backup_taken_while_serving_restores() {
    if !tool_available("sqlite3", &["--version"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("intake.db");
    let mut server = serve(&format!("sqlite://{}", live.display()), dir.path(), "live");
    let references = submit(server.port, 20).await;
    // While it serves, the WAL holds recent tickets: it has the database's private mode.
    use std::os::unix::fs::PermissionsExt;
    for file in ["intake.db", "intake.db-wal"] {
        let mode = std::fs::metadata(dir.path().join(file)).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{file} is {mode:o}");
    }
    let load = keep_submitting(server.port);
    let copy = dir.path().join("backup.db");
    run_ok(
        Command::new("sqlite3")
            .arg(&live)
            .arg(format!(".backup '{}'", copy.display())),
    );
    load.abort();
    server.kill();

    let out = Command::new("sqlite3")
        .arg(&copy)
        .arg("PRAGMA integrity_check")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    // Restore as docs/deployment.md says: the copy in place, no WAL files beside it.
    let restored = dir.path().join("restored");
    std::fs::create_dir(&restored).unwrap();
    std::fs::copy(&copy, restored.join("intake.db")).unwrap();
    let url = format!("sqlite://{}", restored.join("intake.db").display());
    restored_has(&url, dir.path(), &references).await;
}

#[tokio::test]
async fn a_postgres_dump_taken_while_serving_restores_into_an_empty_database() {
    if !tool_available("pg_dump", &["--version"]) {
        return;
    }
    let Some(live) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let Some(empty) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(live.url(), dir.path(), "live");
    let references = submit(server.port, 20).await;
    let load = keep_submitting(server.port);
    let dump = dir.path().join("intake.dump");
    run_ok(Command::new("pg_dump").args(["-Fc", "-f"]).arg(&dump).arg(live.url()));
    load.abort();
    server.kill();

    run_ok(Command::new("pg_restore").arg("-d").arg(empty.url()).arg(&dump));
    restored_has(empty.url(), dir.path(), &references).await;
}
