//! `spawn_app()` and friends: a real server on a free port, with its own fresh database.

use std::sync::Arc;

use intake::config::Settings;
use intake::startup::Application;
use intake::store::Store;
use secrecy::SecretString;
use serde_json::{json, Value};

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server for tests, e.g. `postgres://postgres@127.0.0.1:5432/postgres`.
pub fn postgres_admin_url() -> Option<String> {
    match std::env::var("INTAKE_TEST_POSTGRES_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            // CI sets the variable: there a missing server is a failure, not a skip.
            assert!(
                std::env::var_os("CI").is_none(),
                "INTAKE_TEST_POSTGRES_URL must be set in CI"
            );
            eprintln!("INTAKE_TEST_POSTGRES_URL is not set: skipping the PostgreSQL run of this test");
            None
        }
    }
}

/// A database created for one test and dropped after it.
pub enum TestDatabase {
    Sqlite {
        _dir: tempfile::TempDir,
        url: String,
    },
    Postgres {
        admin_url: String,
        name: String,
        url: String,
    },
}

impl TestDatabase {
    /// `None` when the backend is PostgreSQL and no server is configured (outside CI).
    pub async fn create(backend: Backend) -> Option<TestDatabase> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("intake.db").display());
                Some(TestDatabase::Sqlite { _dir: dir, url })
            }
            Backend::Postgres => {
                let admin_url = postgres_admin_url()?;
                let name = format!("intake_test_{}", uuid_like());
                let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&admin_url)
                    .await
                    .expect("connect to the test PostgreSQL server");
                sqlx::Executor::execute(&mut conn, format!(r#"CREATE DATABASE "{name}""#).as_str())
                    .await
                    .expect("create the test database");
                let mut url = url::Url::parse(&admin_url).expect("INTAKE_TEST_POSTGRES_URL is a URL");
                url.set_path(&name);
                Some(TestDatabase::Postgres {
                    admin_url,
                    name,
                    url: url.to_string(),
                })
            }
        }
    }

    pub fn url(&self) -> &str {
        match self {
            TestDatabase::Sqlite { url, .. } | TestDatabase::Postgres { url, .. } => url,
        }
    }

    /// Removes the database while the app still runs: connections are cut.
    pub async fn drop_now(&self) {
        if let TestDatabase::Postgres { admin_url, name, .. } = self {
            drop_postgres(admin_url, name).await;
        }
    }
}

async fn drop_postgres(admin_url: &str, name: &str) {
    if let Ok(mut conn) = <sqlx::PgConnection as sqlx::Connection>::connect(admin_url).await {
        let _ = sqlx::Executor::execute(
            &mut conn,
            format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#).as_str(),
        )
        .await;
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let TestDatabase::Postgres { admin_url, name, .. } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs inside the test's runtime; do the async clean-up on a thread of its own.
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime")
                    .block_on(drop_postgres(&admin_url, &name));
            })
            .join();
        }
    }
}

pub fn uuid_like() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..16).map(|_| format!("{:x}", rng.gen::<u8>() & 0xf)).collect()
}

/// A running service and a client for it.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub deliverer: intake::outbox::Deliverer,
    pub db: TestDatabase,
    /// Where the file transport writes.
    pub outbox_dir: tempfile::TempDir,
    pub refusals: Arc<intake::abuse::Refusals>,
}

/// Settings for tests: a free port, the test database, everything else at its default.
pub fn test_settings(db_url: &str, outbox: &std::path::Path) -> Settings {
    let mut s = Settings::default();
    s.server.listen = "127.0.0.1:0".parse().expect("address");
    s.server.workers = 1;
    s.database.url = SecretString::from(db_url.to_owned());
    s.database.max_connections = 4;
    s.email.file_dir = outbox.to_path_buf();
    s.tickets.reference_prefix = "LV".to_owned();
    // Forms in tests are sent at once; the bot timing check has tests of its own.
    s.limits.min_fill_seconds = 0;
    // Every test client is 127.0.0.1 with the same address; the limits have tests of their own.
    s.limits.per_ip = "1000000/second".parse().expect("rate");
    s.limits.per_email = "1000000/second".parse().expect("rate");
    s.limits.acks_per_domain = "1000000/day".parse().expect("rate");
    // Tests drive delivery step by step with `app.deliverer.run_once()`.
    s.delivery.enabled = false;
    s
}

/// Starts the app on `backend`; `None` when that backend is not available here (outside CI).
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

pub async fn spawn_app_with(backend: Backend, customise: impl FnOnce(&mut Settings)) -> Option<TestApp> {
    intake::telemetry::init(&intake::config::LogSettings {
        level: "warn".into(),
        ..Default::default()
    });
    let db = TestDatabase::create(backend).await?;
    let outbox_dir = tempfile::tempdir().expect("temporary directory");
    let mut settings = test_settings(db.url(), outbox_dir.path());
    customise(&mut settings);
    let app = Application::build(settings).await.expect("the app builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    let store = app.store();
    let deliverer = app.deliverer();
    let refusals = app.refusals();
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    Some(TestApp {
        address,
        client,
        store,
        deliverer,
        db,
        outbox_dir,
        refusals,
    })
}

/// A valid JSON submission; tests change what they need.
pub fn valid_ticket() -> Value {
    json!({
        "name": "Ada Lovelace",
        "email": "ada@example.com",
        "type": "billing",
        "subject": "Invoice for October",
        "message": "Could you send me the invoice for October again? I cannot find it in my inbox.",
    })
}

impl TestApp {
    pub async fn post_ticket(&self, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}/api/v1/tickets", self.address))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Submits `ticket` through the API, which must accept it, and returns its reference.
    pub async fn submit(&self, ticket: &Value) -> String {
        let res = self.post_ticket(ticket).await;
        assert_eq!(res.status(), 202);
        let v: Value = res.json().await.expect("a JSON answer");
        v["ticket"].as_str().expect("a reference").to_owned()
    }

    pub async fn post_ticket_with_key(&self, body: &Value, key: &str) -> reqwest::Response {
        self.client
            .post(format!("{}/api/v1/tickets", self.address))
            .header("Idempotency-Key", key)
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.address))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .send()
            .await
            .expect("request sent")
    }

    /// The form page and the token in it.
    pub async fn get_form(&self) -> (String, String) {
        let html = self.get("/").await.text().await.expect("body");
        let token = form_token(&html).expect("the form carries a token");
        (html, token)
    }

    pub async fn post_form(&self, fields: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}/", self.address))
            .form(fields)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn ticket_count(&self) -> i64 {
        self.store.count_tickets().await.expect("count")
    }
}

pub fn form_token(html: &str) -> Option<String> {
    let re = regex::Regex::new(r#"name="form_token" value="([^"]+)""#).expect("regex");
    re.captures(html).map(|c| c[1].to_owned())
}

/// Runs a test body on SQLite and, when available, on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
                #[tokio::test]
                async fn postgres() {
                    if $crate::helpers::postgres_admin_url().is_some() {
                        super::$name($crate::helpers::Backend::Postgres).await
                    }
                }
            }
        )*
    };
}

/// A fresh database of `backend` with the schema, and a store on it, for tests below the HTTP layer.
pub async fn open_store(backend: Backend, connections: u32) -> Option<(TestDatabase, Arc<dyn Store>)> {
    let db = TestDatabase::create(backend).await?;
    let store = intake::store::connect(&SecretString::from(db.url().to_owned()), connections)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    Some((db, store))
}

/// A ticket ready to store, classified as the service would, with both delivery jobs.
pub fn new_ticket(raw: intake::domain::RawSubmission, key: Option<&str>) -> intake::store::NewTicket {
    let submission = raw.validate().unwrap();
    let classification = intake::classify::Classifier::builtin().classify(
        submission.request_type,
        &submission.subject,
        &submission.message,
    );
    intake::store::NewTicket {
        reference: intake::domain::Reference::generate("LV"),
        created_at: chrono::Utc::now(),
        channel: intake::domain::Channel::Api,
        submission,
        classification,
        idempotency_key: key.map(|k| intake::domain::IdempotencyKey::from_api(k).unwrap()),
        jobs: vec![
            intake::store::queue::JobKind::AckEmail,
            intake::store::queue::JobKind::GithubIssue,
        ],
    }
}

/// The `what` of every step of a ticket's timeline (`tickets show --json`, `GET /api/v1/tickets/{ref}`).
pub fn timeline_steps(shown: &Value) -> Vec<&str> {
    shown["timeline"]
        .as_array()
        .expect("a timeline")
        .iter()
        .map(|s| s["what"].as_str().expect("a step"))
        .collect()
}
