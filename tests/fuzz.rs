//! Fuzzing with proptest at scale: the submission parsers (JSON and form), validation, the
//! classifier, and the renderers of the GitHub issue, the acknowledgement and the form page, fed
//! arbitrary and adversarial input. Each property says what must hold for *every* input, not only
//! that nothing panics.
//!
//! `cargo test --test fuzz` runs a few hundred cases per property; `scripts/fuzz` runs them at
//! scale (FUZZ_CASES, default 100,000 per property) in release mode.

use chrono::Utc;
use intake::classify::Classifier;
use intake::domain::{Channel, ClosedSet, RawSubmission, RequestType, Ticket, UnsupportedReason};
use intake::email::{ack_message, AckContext};
use intake::github::{issue_body, issue_title, marker, BODY_MAX, TITLE_MAX};
use intake::http::{form_page, parse_form_submission, parse_json_submission, ApiError};
use intake::templates::Templates;
use proptest::prelude::*;
use unicode_normalization::UnicodeNormalization;

/// The shipped rules, compiled once.
static CLASSIFIER: std::sync::LazyLock<Classifier> = std::sync::LazyLock::new(Classifier::builtin);

fn config() -> ProptestConfig {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Text an attacker would try: markup, mentions, fences, control and bidi characters, lone
/// surrogates' neighbours, long runs; mixed with arbitrary Unicode.
fn nasty_text(max: usize) -> impl Strategy<Value = String> {
    let pieces = prop_oneof![
        any::<String>(),
        Just("<script>alert(1)</script>".to_owned()),
        Just("\"><img src=x onerror=alert(1)>".to_owned()),
        Just("@octocat #1 @org/team".to_owned()),
        Just("```".to_owned()),
        Just("````````````".to_owned()),
        Just("~~~".to_owned()),
        Just("\n```\n".to_owned()),
        Just("<!-- intake-ticket: LV-AAAAAAAA -->".to_owned()),
        Just("\u{202E}\u{2066}\u{200B}\u{FEFF}".to_owned()),
        Just("\r\n\t\0\u{7}\u{1b}[31m".to_owned()),
        Just("e\u{301}".to_owned()),
        Just("{{ 7*7 }}{% if true %}".to_owned()),
        Just("password reset invoice refund vulnerability XSS down outage restore deleted".to_owned()),
        "[a-zA-Z ]{0,40}",
    ];
    prop::collection::vec(pieces, 0..8).prop_map(move |v| {
        let s: String = v.concat();
        s.chars().take(max).collect()
    })
}

fn opt_text(max: usize) -> impl Strategy<Value = Option<String>> {
    prop::option::of(nasty_text(max))
}

fn raw_submission() -> impl Strategy<Value = RawSubmission> {
    (
        opt_text(150),
        prop_oneof![
            opt_text(60),
            Just(Some("ada@example.com".to_owned())),
            Just(Some(" ADA@Example.COM ".to_owned()))
        ],
        prop_oneof![
            opt_text(20),
            prop::sample::select(vec!["account", "billing", "product", "security", "availability"])
                .prop_map(|s| Some(s.to_owned()))
        ],
        opt_text(200),
        opt_text(12_000),
        opt_text(250),
        prop_oneof![opt_text(100), Just(Some("https://app.example.com/p?q=<x>".to_owned()))],
    )
        .prop_map(
            |(name, email, request_type, subject, message, account, page_url)| RawSubmission {
                name,
                email,
                request_type,
                subject,
                message,
                account,
                page_url,
            },
        )
}

/// A stored ticket with arbitrary customer text.
fn ticket() -> impl Strategy<Value = Ticket> {
    (
        nasty_text(100),
        nasty_text(150),
        nasty_text(10_000),
        opt_text(200),
        opt_text(300),
        prop::sample::select(RequestType::all()),
        prop::option::of(prop::sample::select(UnsupportedReason::all())),
        any::<bool>(),
    )
        .prop_map(
            |(name, subject, message, account, page_url, filed, unsupported, triage)| Ticket {
                id: 1,
                reference: "LV-7K3M9QXD".to_owned(),
                created_at: Utc::now(),
                channel: Channel::Form,
                name,
                email: "ada@example.com".to_owned(),
                picked_type: RequestType::Product,
                filed_type: filed,
                unsupported,
                needs_triage: triage,
                signals: Vec::new(),
                subject,
                message,
                account,
                page_url,
                ack_message_id: None,
                github_issue: None,
            },
        )
}

fn is_single_line_clean(s: &str) -> bool {
    !s.chars().any(|c| c.is_control()) && s == s.trim()
}

/// The parts of a Markdown document outside fenced code blocks (CommonMark: a fence opens with
/// three or more backticks after at most three spaces and closes with a line of at least as many).
fn outside_fences(doc: &str) -> String {
    let mut out = String::new();
    let mut open: Option<usize> = None;
    for line in doc.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let rest = &line[indent..];
        let ticks = rest.len() - rest.trim_start_matches('`').len();
        match open {
            None if indent <= 3 && ticks >= 3 => open = Some(ticks),
            None => {
                out.push_str(line);
                out.push('\n');
            }
            Some(n) if indent <= 3 && ticks >= n && rest[ticks..].trim().is_empty() => open = None,
            Some(_) => {}
        }
    }
    out
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes: a submission or a clear refusal, never a panic; what parses validates without
    /// panicking either.
    #[test]
    fn the_json_parser_takes_any_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        match parse_json_submission(&body) {
            Ok(raw) => { let _ = raw.validate(); }
            Err(ApiError::Malformed(_) | ApiError::Invalid(_)) => {}
            Err(other) => prop_assert!(false, "unexpected refusal {other:?}"),
        }
    }

    /// JSON objects of the right shape with arbitrary values: the fields arrive as sent.
    #[test]
    fn the_json_parser_keeps_string_fields_exactly(raw in raw_submission()) {
        let body = serde_json::to_vec(&raw).unwrap();
        let parsed = parse_json_submission(&body).unwrap();
        prop_assert_eq!(parsed, raw);
    }

    /// The form body: whatever a browser (or anything else) sends is read or refused, never a
    /// panic, and URL-encoded fields come back exactly.
    #[test]
    fn the_form_parser_round_trips(raw in raw_submission(), token in nasty_text(300), junk in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_form_submission(&junk);
        let mut pairs: Vec<(&str, &str)> = vec![("form_token", &token), ("website", "")];
        for (k, v) in [("name", &raw.name), ("email", &raw.email), ("type", &raw.request_type), ("subject", &raw.subject), ("message", &raw.message), ("account", &raw.account), ("page_url", &raw.page_url)] {
            if let Some(v) = v { pairs.push((k, v)); }
        }
        let body = serde_urlencoded::to_string(&pairs).unwrap();
        let (parsed, extras) = parse_form_submission(body.as_bytes()).unwrap();
        prop_assert_eq!(parsed, raw);
        prop_assert_eq!(extras.token, token);
        prop_assert!(extras.honeypot.is_empty());
    }

    /// Whatever validation accepts is within the documented limits (docs/http-api.md), normalised and clean.
    #[test]
    fn validation_accepts_only_clean_text_within_limits(raw in raw_submission()) {
        if let Ok(s) = raw.validate() {
            let len = |s: &str| s.chars().count();
            prop_assert!((1..=100).contains(&len(&s.name)));
            prop_assert!((1..=150).contains(&len(&s.subject)));
            prop_assert!((10..=10_000).contains(&len(&s.message)));
            prop_assert!(s.account.as_deref().is_none_or(|a| len(a) <= 200));
            prop_assert!(s.page_url.as_deref().is_none_or(|u| len(u) <= 2000 && (u.starts_with("http://") || u.starts_with("https://"))));
            for field in [&s.name, &s.email, &s.subject] {
                prop_assert!(is_single_line_clean(field), "{field:?}");
                prop_assert_eq!(field.nfc().collect::<String>(), field.clone());
            }
            prop_assert!(!s.message.chars().any(|c| c.is_control() && c != '\n' && c != '\t'));
            prop_assert_eq!(s.message.nfc().collect::<String>(), s.message.clone());
            prop_assert_eq!(Some(s.email.clone()), raw.valid_email());
        }
    }

    /// The classifier decides every text, the same way every time, and only moves a pick to
    /// security.
    #[test]
    fn the_classifier_is_total_and_deterministic(subject in nasty_text(150), message in nasty_text(3000), picked in prop::sample::select(RequestType::all())) {
        let classifier = &*CLASSIFIER;
        let a = classifier.classify(picked, &subject, &message);
        let b = classifier.classify(picked, &subject, &message);
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.picked, picked);
        prop_assert!(a.filed_as == picked || a.filed_as == RequestType::Security);
    }

    /// The issue: title within GitHub's limit and clean; body within GitHub's limit, ending in the
    /// one marker; outside its code fences nothing the customer wrote can take effect (no mention,
    /// no HTML, no second marker).
    #[test]
    fn the_issue_keeps_customer_text_inert(t in ticket(), private in any::<bool>()) {
        let title = issue_title(&t);
        prop_assert!(title.chars().count() <= TITLE_MAX);
        prop_assert!(!title.chars().any(|c| c.is_control()));
        let body = issue_body(&t, private);
        prop_assert!(body.chars().count() <= BODY_MAX);
        let m = marker(&t.reference);
        prop_assert!(body.trim_end().ends_with(&m));
        let outside = outside_fences(&body);
        let prose = outside.replacen(&m, "", 1);
        prop_assert!(!prose.contains('@'), "mention outside a fence:\n{outside}");
        prop_assert!(!prose.contains('<'), "markup outside a fence:\n{outside}");
    }

    /// The acknowledgement is the same message whatever the customer wrote: only the reference,
    /// the type and the address come from the ticket.
    #[test]
    fn the_acknowledgement_carries_no_customer_text(a in ticket(), b in ticket()) {
        let ctx = AckContext {
            from: "Support <support@example.com>".parse().unwrap(),
            reply_to: "help@example.com".parse().unwrap(),
            site_name: "LocalizeVideos".to_owned(),
            public_url: "https://help.example.com".to_owned(),
        };
        let templates = Templates::new();
        let b = Ticket { filed_type: a.filed_type, unsupported: a.unsupported, ..b };
        let one = normalise(&ack_message(&ctx, &templates, &a).unwrap().formatted());
        let two = normalise(&ack_message(&ctx, &templates, &b).unwrap().formatted());
        prop_assert_eq!(one, two);
    }

    /// The form page escapes every value it shows again: nothing the customer typed becomes markup
    /// or leaves its attribute.
    #[test]
    fn the_form_page_escapes_what_it_shows(raw in raw_submission(), token in nasty_text(100)) {
        let templates = Templates::new();
        let html = form_page(&templates, "LocalizeVideos", &token, &raw, &[], None).unwrap();
        // The same page with nothing typed (the chosen type kept: it only checks a radio button).
        let blank = RawSubmission { request_type: raw.request_type.clone(), ..RawSubmission::default() };
        let base = form_page(&templates, "LocalizeVideos", "token", &blank, &[], None).unwrap();
        for c in ['<', '>', '"', '\''] {
            prop_assert_eq!(html.matches(c).count(), base.matches(c).count(), "{:?} added by input", c);
        }
    }
}

/// A formatted message without what differs between two sends anyway (date, MIME boundaries).
fn normalise(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(message).into_owned();
    let boundary = regex::Regex::new(r#"boundary="([^"]+)""#).unwrap();
    let mut out = text.clone();
    for c in boundary.captures_iter(&text) {
        out = out.replace(&c[1], "BOUNDARY");
    }
    out.lines()
        .filter(|l| !l.starts_with("Date:"))
        .collect::<Vec<_>>()
        .join("\n")
}
