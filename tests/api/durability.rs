//! A `202` means durable: the real binary is killed with SIGKILL mid-load, and every ticket it
//! acknowledged is found afterwards, with its jobs.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::SecretString;

use crate::helpers::{valid_ticket, Backend, TestDatabase};
use crate::on_both_backends;

/// Starts `intake serve` on a free port and returns it with the port it bound.
pub fn start(db_url: &str, outbox: &std::path::Path) -> (Child, u16) {
    start_with(db_url, outbox, &[])
}

/// As [`start`], with more settings in the environment.
pub fn start_with(db_url: &str, outbox: &std::path::Path, env: &[(&str, String)]) -> (Child, u16) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_intake"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .arg("serve")
        .env_remove("INTAKE_CONFIG")
        .env("RUST_LOG", "info")
        .env("INTAKE_SERVER__LISTEN", "127.0.0.1:0")
        .env("INTAKE_DATABASE__URL", db_url)
        .env("INTAKE_EMAIL__FILE_DIR", outbox)
        .env("INTAKE_LOG__FORMAT", "json")
        .env("INTAKE_LIMITS__PER_IP", "1000000/second")
        .env("INTAKE_LIMITS__PER_EMAIL", "1000000/second")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start intake");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"] == "intake listening" {
                    let _ = tx.send(v["port"].as_u64().expect("port") as u16);
                }
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("intake reports its port");
    (child, port)
}

async fn every_acknowledged_ticket_survives_a_kill_9(backend: Backend) {
    let Some(db) = TestDatabase::create(backend).await else {
        return;
    };
    let outbox = tempfile::tempdir().unwrap();
    let (mut child, port) = start(db.url(), outbox.path());
    let url = format!("http://127.0.0.1:{port}/api/v1/tickets");
    let client = reqwest::Client::new();
    let accepted = Arc::new(Mutex::new(Vec::<String>::new()));

    // Eight clients submit as fast as they can; the process is killed while they do.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, url, accepted) = (client.clone(), url.clone(), Arc::clone(&accepted));
        tasks.push(tokio::spawn(async move {
            loop {
                match client.post(&url).json(&valid_ticket()).send().await {
                    Ok(res) if res.status() == 202 => {
                        if let Ok(v) = res.json::<serde_json::Value>().await {
                            accepted.lock().unwrap().push(v["ticket"].as_str().unwrap().to_owned());
                        }
                    }
                    Ok(res) => panic!("unexpected status {}", res.status()),
                    Err(_) => return, // the server is gone
                }
            }
        }));
    }
    while accepted.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }

    let accepted = accepted.lock().unwrap().clone();
    assert!(accepted.len() >= 300);
    let store = intake::store::connect(&SecretString::from(db.url().to_owned()), 2)
        .await
        .unwrap();
    for reference in &accepted {
        let ticket = store
            .ticket_by_reference(reference)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{reference} was acknowledged but is lost"));
        assert_eq!(
            store.deliveries_for_ticket(ticket.id).await.unwrap().len(),
            2,
            "{reference}"
        );
    }
    // And a restart finds a working database.
    let (mut child, port) = start(db.url(), outbox.path());
    crate::process::submit(port, 1).await;
    child.kill().unwrap();
    child.wait().unwrap();
}

on_both_backends!(every_acknowledged_ticket_survives_a_kill_9);

/// A trigger that refuses one ticket, as the database refuses data it cannot hold (on PostgreSQL,
/// a NUL in text did this to every customer in the same group commit).
async fn poison_subjects(db: &TestDatabase, backend: Backend) {
    let statements: &[&str] = match backend {
        Backend::Sqlite => &[
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON tickets WHEN NEW.subject = 'poison' \
             BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
        ],
        Backend::Postgres => &[
            "CREATE FUNCTION refuse_poison() RETURNS trigger AS $$ BEGIN \
             IF NEW.subject = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$ LANGUAGE plpgsql",
            "CREATE TRIGGER refuse_poison BEFORE INSERT ON tickets FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
        ],
    };
    match backend {
        Backend::Sqlite => {
            let mut c = <sqlx::SqliteConnection as sqlx::Connection>::connect(db.url())
                .await
                .unwrap();
            for s in statements {
                sqlx::Executor::execute(&mut c, *s).await.unwrap();
            }
        }
        Backend::Postgres => {
            let mut c = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
                .await
                .unwrap();
            for s in statements {
                sqlx::Executor::execute(&mut c, *s).await.unwrap();
            }
        }
    }
}

async fn one_bad_ticket_does_not_fail_the_others_in_its_batch(backend: Backend) {
    let Some((db, store)) = crate::helpers::open_store(backend, 4).await else {
        return;
    };
    poison_subjects(&db, backend).await;
    let (writer, _tasks) =
        intake::store::TicketWriter::spawn(Arc::clone(&store), 512, 1, Arc::new(tokio::sync::Notify::new()));
    let ticket = |subject: &str, message: &str| {
        let mut t = crate::helpers::new_ticket(
            intake::domain::RawSubmission {
                name: Some("Ada".into()),
                email: Some("ada@example.com".into()),
                request_type: Some("billing".into()),
                subject: Some(subject.into()),
                message: Some("Please send the invoice again.".into()),
                ..Default::default()
            },
            None,
        );
        // Stored text that got past the checks (as a page URL with a NUL once did).
        t.submission.message = message.to_owned();
        t
    };
    let mut batch: Vec<_> = (0..40).map(|i| ticket(&format!("Invoice {i}"), "fine")).collect();
    batch[7] = ticket("poison", "fine");
    batch[31] = ticket("poison", "fine");
    if backend == Backend::Postgres {
        batch[20] = ticket("NUL", "a\0b");
    }
    // Queued together, they are written as one batch.
    let answers = futures_util::future::join_all(batch.into_iter().map(|t| writer.submit(t))).await;
    let failed: Vec<usize> = answers
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_err())
        .map(|(i, _)| i)
        .collect();
    let expected = if backend == Backend::Postgres {
        vec![7, 20, 31]
    } else {
        vec![7, 31]
    };
    assert_eq!(
        failed,
        expected,
        "only the bad tickets get the error: {:?}",
        answers.iter().find(|a| a.is_err())
    );
    assert_eq!(store.count_tickets().await.unwrap(), 40 - expected.len() as i64);
    // Every ticket stored has its jobs: nothing half-stored.
    assert_eq!(
        store.outbox_stats(chrono::Utc::now()).await.unwrap().pending,
        2 * (40 - expected.len() as i64)
    );
}

on_both_backends!(one_bad_ticket_does_not_fail_the_others_in_its_batch);
