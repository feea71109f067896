//! The labelled corpus (`tests/classify/*.toml`) and the evaluation of the whole classifier on it:
//! per-class precision and recall, a confusion table, and the three gate figures.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};
use strum::IntoEnumIterator;

use super::Classifier;
use crate::domain::{ClosedSet, RequestType, UnsupportedReason};

/// One labelled message.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    #[serde(default)]
    pub lang: Option<String>,
    /// What the customer picked in the form.
    pub picked: String,
    pub subject: String,
    pub message: String,
    /// `security`, an unsupported kind, or `ok` (the pick stands).
    pub expect: String,
    /// The text clearly belongs to another supported type than the one picked.
    #[serde(default)]
    pub triage: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    case: Vec<Case>,
}

/// The outcomes a case can have, in the confusion table's order.
pub const OUTCOMES: [&str; 5] = [
    "ok",
    "security",
    "custom_debugging",
    "on_demand_configuration",
    "data_recovery",
];

impl Case {
    pub fn picked_type(&self) -> Result<RequestType, String> {
        RequestType::parse(&self.picked).ok_or_else(|| format!("`{}` is not a request type", self.picked))
    }

    /// The index of `expect` in [`OUTCOMES`] (and the model's classes).
    pub fn class(&self) -> Result<usize, String> {
        OUTCOMES
            .iter()
            .position(|o| *o == self.expect)
            .ok_or_else(|| format!("`{}` is not one of {OUTCOMES:?}", self.expect))
    }
}

/// Reads a labelled file, checking every case's labels.
pub fn load(text: &str) -> Result<Vec<Case>, String> {
    let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
    for (i, c) in file.case.iter().enumerate() {
        c.picked_type().map_err(|e| format!("case {}: {e}", i + 1))?;
        c.class().map_err(|e| format!("case {}: {e}", i + 1))?;
    }
    Ok(file.case)
}

/// What the classifier made of a case, as one of [`OUTCOMES`]: an unsupported kind when it
/// answered with the policy, `security` when it filed a report in the security route (or kept a
/// report the customer filed as security), else `ok` (the pick stands).
pub fn outcome(classifier: &Classifier, case: &Case) -> &'static str {
    let picked = case.picked_type().unwrap_or(RequestType::Product);
    outcome_of(case, &classifier.classify(picked, &case.subject, &case.message))
}

/// [`outcome`] of a decision already made.
pub fn outcome_of(case: &Case, c: &super::Classification) -> &'static str {
    let picked = case.picked_type().unwrap_or(RequestType::Product);
    if let Some(u) = c.unsupported {
        return u.id();
    }
    if c.filed_as != picked || (picked == RequestType::Security && case.expect == "security") {
        return "security";
    }
    "ok"
}

/// The scores of one labelled set.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    pub cases: usize,
    /// Expected → outcome → count.
    pub confusion: BTreeMap<String, BTreeMap<String, u32>>,
    /// Of the vulnerability reports, the share routed to security.
    pub security_recall: f64,
    /// Of the unsupported requests, the share answered as unsupported for the right reason.
    pub unsupported_recall: f64,
    /// Of the ordinary requests (hard negatives included), the share that kept the customer's pick.
    pub keep_pick: f64,
    /// Per outcome: (precision, recall).
    pub per_class: BTreeMap<String, (f64, f64)>,
}

/// The gates the frozen test split must meet.
pub const GATE_SECURITY_RECALL: f64 = 0.95;
pub const GATE_UNSUPPORTED_RECALL: f64 = 0.90;
pub const GATE_KEEP_PICK: f64 = 0.95;

impl Evaluation {
    pub fn passes_gates(&self) -> bool {
        self.security_recall >= GATE_SECURITY_RECALL
            && self.unsupported_recall >= GATE_UNSUPPORTED_RECALL
            && self.keep_pick >= GATE_KEEP_PICK
    }

    /// The report `intake classify eval` prints.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{} cases", self.cases);
        let _ = writeln!(
            out,
            "\nexpected \\ outcome          {}",
            OUTCOMES.map(|o| format!("{:>9.9}", o)).join(" ")
        );
        for expected in OUTCOMES {
            let row = self.confusion.get(expected);
            let cells: Vec<String> = OUTCOMES
                .iter()
                .map(|o| format!("{:>9}", row.and_then(|r| r.get(*o)).copied().unwrap_or(0)))
                .collect();
            let _ = writeln!(out, "{expected:<27}{}", cells.join(" "));
        }
        let _ = writeln!(out, "\n{:<27}{:>9} {:>9}", "class", "precision", "recall");
        for (class, (p, r)) in &self.per_class {
            let _ = writeln!(out, "{class:<27}{p:>9.3} {r:>9.3}");
        }
        let gate = |v: f64, g: f64| if v >= g { "ok" } else { "BELOW" };
        let _ = writeln!(
            out,
            "\nsecurity recall     {:.3} (gate {GATE_SECURITY_RECALL}: {})",
            self.security_recall,
            gate(self.security_recall, GATE_SECURITY_RECALL)
        );
        let _ = writeln!(
            out,
            "unsupported recall  {:.3} (gate {GATE_UNSUPPORTED_RECALL}: {})",
            self.unsupported_recall,
            gate(self.unsupported_recall, GATE_UNSUPPORTED_RECALL)
        );
        let _ = writeln!(
            out,
            "keep-pick           {:.3} (gate {GATE_KEEP_PICK}: {})",
            self.keep_pick,
            gate(self.keep_pick, GATE_KEEP_PICK)
        );
        out
    }
}

/// Runs the classifier over `cases`.
pub fn evaluate(classifier: &Classifier, cases: &[Case]) -> Evaluation {
    tally(cases, cases.iter().map(|case| outcome(classifier, case)))
}

/// The figures of `cases` given the outcome of each, in order.
pub fn tally<'a>(cases: &[Case], outcomes: impl Iterator<Item = &'a str>) -> Evaluation {
    let mut confusion: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for (case, got) in cases.iter().zip(outcomes) {
        *confusion
            .entry(case.expect.clone())
            .or_default()
            .entry(got.to_owned())
            .or_insert(0) += 1;
    }
    from_confusion(cases.len(), confusion)
}

/// The figures of a confusion table (expected → outcome → count).
fn from_confusion(cases: usize, confusion: BTreeMap<String, BTreeMap<String, u32>>) -> Evaluation {
    let count =
        |expected: &str, got: &str| -> u32 { confusion.get(expected).and_then(|r| r.get(got)).copied().unwrap_or(0) };
    let total = |expected: &str| -> u32 { confusion.get(expected).map_or(0, |r| r.values().sum()) };
    let predicted = |got: &str| -> u32 { confusion.values().map(|r| r.get(got).copied().unwrap_or(0)).sum() };
    let ratio = |a: u32, b: u32| if b == 0 { 1.0 } else { f64::from(a) / f64::from(b) };
    let unsupported: Vec<&str> = UnsupportedReason::iter().map(|u| u.id()).collect();
    let per_class = OUTCOMES
        .iter()
        .map(|o| {
            (
                (*o).to_owned(),
                (ratio(count(o, o), predicted(o)), ratio(count(o, o), total(o))),
            )
        })
        .collect();
    Evaluation {
        cases,
        security_recall: ratio(count("security", "security"), total("security")),
        unsupported_recall: ratio(
            unsupported.iter().map(|u| count(u, u)).sum(),
            unsupported.iter().map(|u| total(u)).sum(),
        ),
        keep_pick: ratio(count("ok", "ok"), total("ok")),
        per_class,
        confusion,
    }
}
