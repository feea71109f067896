//! The help form in Debian's headless Chromium, driven over WebDriver (chromedriver) the way a
//! person uses it: label clicks, typing, the submit button. An invalid entry comes back with each
//! error beside its field and every word kept; the corrected entry lands on the confirmation page
//! with the reference. Once with JavaScript on and once with it off. A screenshot of every step is
//! kept in `target/browser-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use secrecy::SecretString;

use crate::process::{free_port, running_as_root, tool_available, Running, Submitter};

struct ChromeDriver {
    _process: Running,
    port: u16,
}

impl ChromeDriver {
    async fn start() -> ChromeDriver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let driver = ChromeDriver {
            _process: Running(child),
            port,
        };
        let status = format!("http://127.0.0.1:{port}/status");
        for _ in 0..100 {
            if let Ok(res) = reqwest::get(&status).await {
                if res.status() == 200 {
                    return driver;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not answer on port {port}");
    }

    /// A new headless Chromium session, with or without JavaScript.
    async fn session(&self, javascript: bool) -> Client {
        let mut args = vec![
            "--headless=new",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--window-size=1000,1800",
        ];
        if running_as_root() {
            args.push("--no-sandbox"); // Chromium refuses to run as root with its sandbox
        }
        let mut options = serde_json::json!({ "binary": chromium(), "args": args });
        if !javascript {
            options["prefs"] = serde_json::json!({ "profile.managed_default_content_settings.javascript": 2 });
        }
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), "chrome".into());
        caps.insert("goog:chromeOptions".into(), options);
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

fn chromium() -> &'static str {
    if Path::new("/usr/bin/chromium").exists() {
        "/usr/bin/chromium"
    } else {
        "/usr/bin/chromium-browser"
    }
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// Clicks what `css` finds, as a person would (a button, a label).
async fn click(browser: &Client, css: &str) {
    let element = browser
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|_| panic!("{css} is on the page"));
    element.click().await.unwrap();
}

async fn type_into(browser: &Client, id: &str, text: &str) {
    let field = browser.find(Locator::Id(id)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn value_of(browser: &Client, id: &str) -> String {
    let field = browser.find(Locator::Id(id)).await.unwrap();
    field.prop("value").await.unwrap().unwrap_or_default()
}

/// The error shown for `field`: its text, and that it sits right above the field, inside the same
/// group, and is announced with it.
async fn error_beside(browser: &Client, field: &str) -> String {
    let error = browser
        .find(Locator::Id(&format!("{field}-error")))
        .await
        .unwrap_or_else(|_| panic!("an error for {field}"));
    assert!(error.is_displayed().await.unwrap(), "{field}'s error is visible");
    let control = browser.find(Locator::Id(field)).await.unwrap();
    let (_, error_y, _, error_h) = error.rectangle().await.unwrap();
    let (_, field_y, _, _) = control.rectangle().await.unwrap();
    let gap = field_y - (error_y + error_h);
    assert!((0.0..60.0).contains(&gap), "{field}'s error is {gap}px from it");
    let described = control.attr("aria-describedby").await.unwrap().unwrap_or_default();
    assert!(described.contains(&format!("{field}-error")), "{field}: {described}");
    assert_eq!(control.attr("aria-invalid").await.unwrap().as_deref(), Some("true"));
    error.text().await.unwrap()
}

async fn the_form_works_in_chromium(javascript: bool) {
    if !tool_available("chromedriver", &["--version"]) {
        return;
    }
    let mode = if javascript { "js" } else { "nojs" };
    let dir = tempfile::tempdir().unwrap();
    let db_url = format!("sqlite://{}", dir.path().join("db.sqlite").display());
    let env = [
        ("INTAKE_DATABASE__URL", db_url.clone()),
        (
            "INTAKE_EMAIL__FILE_DIR",
            dir.path().join("outbox").display().to_string(),
        ),
        ("INTAKE_LIMITS__MIN_FILL_SECONDS", "0".to_owned()),
        ("INTAKE_DELIVERY__ENABLED", "false".to_owned()),
    ];
    let intake = Submitter::serve(&env, &dir.path().join("intake.log"));
    let base = format!("http://127.0.0.1:{}", intake.port);
    let driver = ChromeDriver::start().await;
    let browser = driver.session(javascript).await;

    // The setting is real: a page's script runs only with JavaScript on.
    browser
        .goto("data:text/html,<title>off</title><script>document.title='on'</script>")
        .await
        .unwrap();
    let expected = if javascript { "on" } else { "off" };
    assert_eq!(browser.title().await.unwrap(), expected);

    browser.goto(&base).await.unwrap();
    assert_eq!(browser.title().await.unwrap().split(" ").next(), Some("Ask"));
    screenshot(&browser, &format!("{mode}-1-form")).await;

    // An invalid entry: no type, a broken address, no subject, a message too short.
    type_into(&browser, "name", "Grace Hopper").await;
    type_into(&browser, "email", "grace.example.com").await;
    type_into(&browser, "account", "acct-1906").await;
    type_into(&browser, "message", "Too short").await;
    click(&browser, "form button[type=submit]").await;
    browser
        .wait()
        .for_element(Locator::Css(".error-summary"))
        .await
        .unwrap();
    screenshot(&browser, &format!("{mode}-2-errors")).await;

    assert!(browser.title().await.unwrap().starts_with("Please check"));
    let summary = browser
        .find(Locator::Css(".error-summary"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(summary.contains("Please check 4 fields"), "{summary}");
    assert!(error_beside(&browser, "email")
        .await
        .contains("does not look like an email address"));
    assert!(!error_beside(&browser, "subject").await.is_empty());
    assert!(error_beside(&browser, "message").await.contains("10"));
    let type_error = browser.find(Locator::Id("type-error")).await.unwrap();
    assert!(type_error.is_displayed().await.unwrap());
    assert!(
        browser.find(Locator::Id("name-error")).await.is_err(),
        "no error for a good name"
    );
    // Every word the customer typed is still there.
    assert_eq!(value_of(&browser, "name").await, "Grace Hopper");
    assert_eq!(value_of(&browser, "email").await, "grace.example.com");
    assert_eq!(value_of(&browser, "account").await, "acct-1906");
    assert_eq!(value_of(&browser, "message").await, "Too short");

    // Corrected: the label of a type clicked, the fields fixed, sent again.
    click(&browser, "label[for=type-billing]").await;
    type_into(&browser, "email", "grace@example.com").await;
    type_into(&browser, "subject", "Invoice for October").await;
    type_into(
        &browser,
        "message",
        "Could you send me the invoice for October again? I cannot find it.",
    )
    .await;
    screenshot(&browser, &format!("{mode}-3-corrected")).await;
    click(&browser, "form button[type=submit]").await;
    let shown = browser.wait().for_element(Locator::Id("reference")).await.unwrap();
    screenshot(&browser, &format!("{mode}-4-confirmation")).await;

    let url = browser.current_url().await.unwrap();
    let reference = url
        .path()
        .strip_prefix("/submitted/")
        .expect("the confirmation page")
        .to_owned();
    assert_eq!(shown.text().await.unwrap(), reference);
    assert_eq!(browser.title().await.unwrap().split(" ").next(), Some("Request"));
    let store = intake::store::connect(&SecretString::from(db_url), 1).await.unwrap();
    let ticket = store
        .ticket_by_reference(&reference)
        .await
        .unwrap()
        .expect("the ticket is stored");
    assert_eq!(ticket.email, "grace@example.com");
    assert_eq!(ticket.account.as_deref(), Some("acct-1906"));
    browser.close().await.unwrap();
}

#[tokio::test]
async fn a_person_corrects_the_form_and_gets_a_reference_with_javascript() {
    the_form_works_in_chromium(true).await;
}

#[tokio::test]
async fn a_person_corrects_the_form_and_gets_a_reference_without_javascript() {
    the_form_works_in_chromium(false).await;
}
