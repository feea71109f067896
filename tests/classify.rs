//! The categorisation rules against a labelled set of realistic messages (`tests/classify/labelled.toml`).
//! Prints the accuracy per class and fails below the targets: at least 90% on security and on the
//! unsupported kinds, and no ordinary request flagged as security or unsupported.

use std::collections::BTreeMap;

use intake::classify::Classifier;
use intake::domain::RequestType;
use serde::Deserialize;

#[derive(Deserialize)]
struct Set {
    case: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    picked: String,
    subject: String,
    message: String,
    expect: String,
    #[serde(default)]
    triage: bool,
}

/// What one set scored.
struct Score {
    per_class: BTreeMap<String, (u32, u32)>,
    false_flags: u32,
    triage: (u32, u32),
    false_triage: u32,
}

fn ratio((a, b): (u32, u32)) -> f64 {
    a as f64 / b.max(1) as f64
}

fn evaluate(file: &str) -> (usize, Score) {
    let text = std::fs::read_to_string(format!("{}/tests/classify/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let set: Set = toml::from_str(&text).unwrap();
    let classifier = Classifier::builtin();

    // class -> (right, total)
    let mut per_class: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut false_flags = 0;
    let mut triage = (0, 0);
    let mut false_triage = 0;
    let mut misses = Vec::new();
    for case in &set.case {
        let picked = RequestType::from_id(&case.picked).expect("picked is a type");
        let c = classifier.classify(picked, &case.subject, &case.message);
        let got = if c.filed_as == RequestType::Security && picked != RequestType::Security {
            "security".to_owned()
        } else if let Some(u) = c.unsupported {
            u.id().to_owned()
        } else if case.expect == "security" && c.signals.iter().any(|s| s.points_to == "security") {
            "security".to_owned()
        } else {
            "ok".to_owned()
        };
        let entry = per_class.entry(case.expect.clone()).or_default();
        entry.1 += 1;
        if got == case.expect {
            entry.0 += 1;
        } else {
            misses.push(format!("expected {:<24} got {:<24} {}", case.expect, got, case.subject));
        }
        if case.expect == "ok" && got != "ok" {
            false_flags += 1;
        }
        if case.triage {
            triage.1 += 1;
            if c.needs_triage {
                triage.0 += 1;
            } else {
                misses.push(format!(
                    "expected needs-triage                                  {}",
                    case.subject
                ));
            }
        } else if c.needs_triage {
            false_triage += 1;
            misses.push(format!(
                "unexpected needs-triage                                {}",
                case.subject
            ));
        }
    }

    println!("categorisation on {} messages of {file}:", set.case.len());
    for (class, (right, total)) in &per_class {
        println!(
            "  {class:<24} {right:>3}/{total:<3} {:>5.1}%",
            100.0 * *right as f64 / *total as f64
        );
    }
    let unsupported: (u32, u32) = per_class
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "ok" | "security"))
        .fold((0, 0), |acc, (_, v)| (acc.0 + v.0, acc.1 + v.1));
    println!("  unsupported (all kinds)  {:>5.1}%", 100.0 * ratio(unsupported));
    println!(
        "  needs-triage found       {}/{}; flagged without cause: {false_triage}",
        triage.0, triage.1
    );
    println!("  ordinary requests flagged as security or unsupported: {false_flags}");
    for m in &misses {
        println!("  miss: {m}");
    }
    (
        set.case.len(),
        Score {
            per_class,
            false_flags,
            triage,
            false_triage,
        },
    )
}

#[test]
fn the_rules_meet_their_targets_on_the_labelled_set() {
    let (cases, score) = evaluate("labelled.toml");
    assert!(cases >= 80, "the set has {cases} cases");
    assert!(ratio(score.per_class["security"]) >= 0.9, "security below 90%");
    for kind in ["custom_debugging", "on_demand_configuration", "data_recovery"] {
        assert!(ratio(score.per_class[kind]) >= 0.9, "{kind} below 90%");
    }
    assert_eq!(score.false_flags, 0, "ordinary requests were flagged");
    assert!(ratio(score.triage) >= 0.75, "needs-triage found too rarely");
    assert!(
        score.false_triage <= 2,
        "needs-triage flagged without cause {} times",
        score.false_triage
    );
}

/// The held-out set was never tuned against; its bar is lower, and its figures are the honest ones.
#[test]
fn the_rules_generalise_to_the_held_out_set() {
    let (_, score) = evaluate("holdout.toml");
    let all = score
        .per_class
        .values()
        .fold((0, 0), |acc, v| (acc.0 + v.0, acc.1 + v.1));
    println!("  held-out overall         {:>5.1}%", 100.0 * ratio(all));
    assert!(ratio(all) >= 0.75, "held-out accuracy below 75%");
    assert!(score.false_flags <= 1, "ordinary held-out requests were flagged");
}
