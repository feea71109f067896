//! The HTML form: rendering, accessibility hooks, errors beside fields with the text kept, redirects.

use intake::abuse::Refusal;

use crate::helpers::{form_token, spawn_app, Backend};

pub fn valid_fields(token: &str) -> Vec<(&'static str, String)> {
    vec![
        ("form_token", token.to_owned()),
        ("website", String::new()),
        ("type", "account".to_owned()),
        ("name", "Grace Hopper".to_owned()),
        ("email", "grace@example.com".to_owned()),
        ("subject", "Cannot sign in".to_owned()),
        (
            "message",
            "Since this morning I cannot sign in; the page says my password is wrong.".to_owned(),
        ),
        ("account", String::new()),
        ("page_url", String::new()),
    ]
}

pub fn as_refs<'a>(fields: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    fields.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn the_form_lists_every_type_and_the_policy_with_labels_and_strict_headers() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let res = app.get("/").await;
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"));
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let html = res.text().await.unwrap();
    for t in ["account", "billing", "product", "security", "availability"] {
        assert!(html.contains(&format!(r#"id="type-{t}" value="{t}""#)), "{t}");
        assert!(html.contains(&format!(r#"<label for="type-{t}">"#)), "{t}");
    }
    for field in ["name", "email", "subject", "message", "account", "page_url"] {
        assert!(html.contains(&format!(r#"<label for="{field}">"#)), "label for {field}");
    }
    // A new form is empty (a missing value once printed as "none" in every field).
    let filled = regex::Regex::new(r#"<input type="(?:text|email|url)" id="(\w+)"[^>]* value="([^"]*)""#).unwrap();
    let inputs: Vec<_> = filled
        .captures_iter(&html)
        .map(|c| (c[1].to_owned(), c[2].to_owned()))
        .collect();
    assert_eq!(inputs.len(), 6, "{inputs:?}");
    assert!(inputs.iter().all(|(_, v)| v.is_empty()), "{inputs:?}");
    assert!(html.contains("></textarea>"), "an empty message box");
    assert!(html.contains("business hours"));
    assert!(html.contains("Data recovery outside policy"));
    assert!(!html.contains("<script"), "no JavaScript");
    for attr in ["src=\"http", "href=\"http", "src=\"//", "href=\"//"] {
        assert!(!html.contains(attr), "no third-party assets: {attr}");
    }
    assert!(html.contains(r#"name="viewport""#));
    assert!(form_token(&html).is_some());
    let css = app.get("/static/intake.css").await;
    assert_eq!(css.status(), 200);
    assert!(css.headers()["content-type"].to_str().unwrap().starts_with("text/css"));
}

#[tokio::test]
async fn a_valid_form_redirects_to_the_confirmation_with_the_reference() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let (_, token) = app.get_form().await;
    let fields = valid_fields(&token);
    let res = app.post_form(&as_refs(&fields)).await;
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let reference = location
        .strip_prefix("/submitted/")
        .expect("redirect to the confirmation");
    let page = app.get(&location).await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(reference));
    assert!(html.contains("What happens next"));
    let ticket = app.store.ticket_by_reference(reference).await.unwrap().unwrap();
    assert_eq!(ticket.email, "grace@example.com");
    assert_eq!(ticket.channel, intake::domain::Channel::Form);
}

#[tokio::test]
async fn resubmitting_the_same_form_leads_to_the_same_confirmation() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let (_, token) = app.get_form().await;
    let fields = valid_fields(&token);
    let first = app.post_form(&as_refs(&fields)).await;
    let second = app.post_form(&as_refs(&fields)).await;
    assert_eq!(second.status(), 303);
    assert_eq!(first.headers()["location"], second.headers()["location"]);
    assert_eq!(app.ticket_count().await, 1);
}

#[tokio::test]
async fn invalid_input_rerenders_the_form_with_the_text_kept_and_errors_beside_fields() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let (_, token) = app.get_form().await;
    let mut fields = valid_fields(&token);
    fields[3].1 = "<script>alert('x')</script> & Co".to_owned(); // name: kept, escaped
    fields[4].1 = "not an address".to_owned(); // email: invalid
    fields[6].1 = "short".to_owned(); // message: too short, kept
    let res = app.post_form(&as_refs(&fields)).await;
    assert_eq!(res.status(), 422);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("&lt;script&gt;alert(&#x27;x&#x27;)&lt;&#x2f;script&gt; &amp; Co")
            || html.contains("&lt;script&gt;")
    );
    assert!(!html.contains("<script>"));
    assert!(html.contains(r#"value="not an address""#));
    assert!(html.contains(">short</textarea>"));
    // Each error is tied to its field for screen readers, and listed in a summary.
    assert!(html.contains(r#"id="email-error""#));
    assert!(html.contains(r#"aria-describedby="email-hint email-error" aria-invalid="true""#));
    assert!(html.contains(r#"id="message-error""#));
    assert!(html.contains(r##"<a href="#email">"##));
    assert!(!html.contains(r#"id="subject-error""#));
    // The same token comes back, so the corrected form is still one request.
    assert_eq!(form_token(&html).as_deref(), Some(token.as_str()));
    // The choice made is kept.
    assert!(html.contains(r#"value="account" checked"#));
    assert_eq!(app.ticket_count().await, 0);
}

#[tokio::test]
async fn a_forged_or_missing_token_keeps_the_text_and_stores_nothing() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    for token in ["", "v1.1.abc.forged", "garbage"] {
        let fields = valid_fields(token);
        let res = app.post_form(&as_refs(&fields)).await;
        assert_eq!(res.status(), 422);
        let html = res.text().await.unwrap();
        assert!(html.contains("Grace Hopper"));
        assert!(html.contains("expired"));
        let fresh = form_token(&html).unwrap();
        assert_ne!(fresh, token);
    }
    assert_eq!(app.ticket_count().await, 0);
    assert_eq!(app.refusals.count(Refusal::BadToken), 3, "each one counted and logged");
}

#[tokio::test]
async fn a_form_sent_as_another_content_type_or_too_large_gets_a_page() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let res = app.post_raw("/", "application/json", "{}").await;
    assert_eq!(res.status(), 415);
    assert!(res.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    let big = format!("message={}", "a".repeat(70 * 1024));
    let res = app.post_raw("/", "application/x-www-form-urlencoded", big).await;
    assert_eq!(res.status(), 413);
    assert!(res.text().await.unwrap().contains("too long"));
    assert_eq!(app.ticket_count().await, 0);
    assert_eq!(app.refusals.count(Refusal::BodyTooLarge), 1);
}

#[tokio::test]
async fn an_unknown_or_malformed_reference_is_not_found() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    assert_eq!(app.get("/submitted/LV-00000000").await.status(), 404);
    assert_eq!(app.get("/submitted/'%20OR%201=1").await.status(), 404);
    assert_eq!(app.get("/no-such-page").await.status(), 404);
}

#[tokio::test]
async fn an_unsupported_request_sees_the_policy_on_its_confirmation() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let (_, token) = app.get_form().await;
    let mut fields = valid_fields(&token);
    fields[2].1 = "product".to_owned();
    fields[5].1 = "Restore deleted project".to_owned();
    fields[6].1 = "I deleted a project two years ago and emptied the trash. Can you restore it?".to_owned();
    let res = app.post_form(&as_refs(&fields)).await;
    assert_eq!(res.status(), 303);
    let html = app
        .get(res.headers()["location"].to_str().unwrap())
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("retention policy"), "{html}");
}

/// Follows a form answer to the page it leads to, as a browser would: the status of the answer,
/// the confirmation's status and its HTML with the reference taken out.
async fn as_a_browser_sees_it(app: &crate::helpers::TestApp, res: reqwest::Response) -> (u16, u16, String, String) {
    let status = res.status().as_u16();
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let reference = location.trim_start_matches("/submitted/").to_owned();
    let page = app.get(&location).await;
    let page_status = page.status().as_u16();
    let html = page.text().await.unwrap();
    assert!(html.contains(&reference), "the page shows its reference");
    (status, page_status, html.replace(&reference, "REF"), reference)
}

#[tokio::test]
async fn a_filled_honeypot_is_answered_as_a_person_is_but_nothing_is_stored() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    // A person's submission, for comparison.
    let (_, token) = app.get_form().await;
    let person = app.post_form(&as_refs(&valid_fields(&token))).await;
    let (status, page_status, person_page, _) = as_a_browser_sees_it(&app, person).await;
    assert_eq!((status, page_status), (303, 200));

    let (_, token) = app.get_form().await;
    let mut fields = valid_fields(&token);
    fields[1].1 = "http://spam.example".to_owned(); // the hidden `website` field
    let bot = app.post_form(&as_refs(&fields)).await;
    let (status, page_status, bot_page, reference) = as_a_browser_sees_it(&app, bot).await;
    assert_eq!(
        (status, page_status),
        (303, 200),
        "a redirect and a confirmation, as for a person"
    );
    assert_eq!(bot_page, person_page, "the same page down to the words");
    // The same form sent again leads to the same reference, as a person's does.
    let again = app.post_form(&as_refs(&fields)).await;
    assert_eq!(again.headers()["location"], format!("/submitted/{reference}").as_str());

    assert_eq!(app.ticket_count().await, 1, "only the person's ticket");
    assert_eq!(
        app.deliverer.run_once().await.unwrap(),
        1,
        "only the person's acknowledgement"
    );
    assert_eq!(app.refusals.count(Refusal::Honeypot), 2, "the attempts are counted");
}

#[tokio::test]
async fn a_form_sent_faster_than_a_person_can_fill_it_is_answered_alike_and_not_stored() {
    let app = crate::helpers::spawn_app_with(Backend::Sqlite, |s| s.limits.min_fill_seconds = 30)
        .await
        .unwrap();
    let (_, token) = app.get_form().await;
    let res = app.post_form(&as_refs(&valid_fields(&token))).await;
    let (status, page_status, html, _) = as_a_browser_sees_it(&app, res).await;
    assert_eq!((status, page_status), (303, 200), "answered as if accepted");
    assert!(html.contains("We have your request"));
    assert!(html.contains("account request"), "{html}");
    assert_eq!(app.ticket_count().await, 0);
    assert_eq!(app.refusals.count(Refusal::TooFast), 1);
    // A bot's invalid form gets the errors a person's would.
    let (_, token) = app.get_form().await;
    let mut fields = valid_fields(&token);
    fields[4].1 = "not-an-address".to_owned();
    let res = app.post_form(&as_refs(&fields)).await;
    assert_eq!(res.status(), 422);
}
