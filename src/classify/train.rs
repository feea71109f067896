//! Training the model from the training split, and choosing the decision thresholds on it by
//! cross-validation (`intake classify train`). Deterministic: the same corpus gives the same bytes.

use std::fmt::Write;

use super::corpus::{Case, Evaluation, OUTCOMES};
use super::model::{self, Example, Model, Thresholds};
use super::{Classifier, RuleScores};
use crate::domain::RequestType;

/// The seed of every random choice in training.
pub const SEED: u64 = 0x1a7a_6e5e;
/// Folds of the cross-validation the thresholds are chosen on.
pub const FOLDS: usize = 5;

/// The security recall the thresholds aim at on the training split's out-of-fold scores: above the
/// gate, since unseen text scores a little worse. The suspect band stops short of it when ordinary
/// requests would fall below the keep-pick gate: a model too weak for both shows it in its figures
/// rather than in the tickets.
const SECURITY_RECALL_AIM: f64 = 0.97;
/// Ordinary requests that keep their pick while unsupported thresholds are tried, at least.
const UNSUPPORTED_KEEP_PICK_FLOOR: f64 = 0.98;

/// What training produced, and how the chosen thresholds scored out of fold.
pub struct Trained {
    pub model: Model,
    pub out_of_fold: Evaluation,
    pub report: String,
}

/// The evaluation of the policy with `thresholds` over precomputed rule verdicts and probabilities.
fn evaluate_with(
    rules: &Classifier,
    thresholds: Thresholds,
    cases: &[Case],
    verdicts: &[RuleScores],
    probabilities: &[[f32; 5]],
) -> Evaluation {
    let outcomes = cases
        .iter()
        .zip(verdicts)
        .zip(probabilities)
        .map(|((case, verdict), p)| {
            let picked = case.picked_type().unwrap_or(RequestType::Product);
            super::corpus::outcome_of(case, &rules.decide_with(thresholds, picked, verdict.clone(), p))
        });
    super::corpus::tally(cases, outcomes)
}

/// Trains on `cases` with the rules of `rules`.
pub fn train(rules: &Classifier, cases: &[Case]) -> Result<Trained, String> {
    let examples: Vec<Example> = cases
        .iter()
        .map(|c| {
            Ok(Example {
                features: model::features(&c.subject, &c.message),
                class: c.class()?,
            })
        })
        .collect::<Result<_, String>>()?;
    let out_of_fold = model::cross_validated(&examples, FOLDS, SEED);
    let verdicts: Vec<RuleScores> = cases.iter().map(|c| rules.rules_on(&c.subject, &c.message)).collect();
    let grid = |from: u32, to: u32, step: u32| -> Vec<f32> {
        (from..=to).step_by(step as usize).map(|v| v as f32 / 100.0).collect()
    };

    // Unsupported first, with security out of the way: the most unsupported requests found while
    // telling a customer "we will not help" stays right nine times in ten and ordinary requests
    // keep their pick.
    let mut best: Option<(f64, f64, Thresholds)> = None;
    for agree in grid(5, 95, 5) {
        for alone in grid(50, 99, 3) {
            let t = Thresholds {
                security_suspect: 1.1,
                security: 1.1,
                unsupported_agree: agree,
                unsupported_alone: alone.max(agree),
            };
            let e = evaluate_with(rules, t, cases, &verdicts, &out_of_fold);
            if unsupported_precision(&e) < 0.9 || e.keep_pick < UNSUPPORTED_KEEP_PICK_FLOOR {
                continue;
            }
            let better = best
                .as_ref()
                .is_none_or(|(recall, keep, _)| (e.unsupported_recall, e.keep_pick) > (*recall, *keep));
            if better {
                best = Some((e.unsupported_recall, e.keep_pick, t));
            }
        }
    }
    let mut thresholds = best.map_or(
        Thresholds {
            security_suspect: 1.1,
            security: 1.1,
            unsupported_agree: 0.95,
            unsupported_alone: 0.99,
        },
        |(.., t)| t,
    );
    // Then security: the suspect band reaches down as far as it must to find the aimed share of
    // reports, but no further than ordinary requests can bear (keep-pick at its gate).
    let mut suspect = 1.0f32;
    for t in grid(2, 99, 1).into_iter().rev() {
        let e = evaluate_with(
            rules,
            Thresholds {
                security_suspect: t,
                security: t,
                ..thresholds
            },
            cases,
            &verdicts,
            &out_of_fold,
        );
        if e.keep_pick < super::corpus::GATE_KEEP_PICK {
            break;
        }
        suspect = t;
        if e.security_recall >= SECURITY_RECALL_AIM {
            break;
        }
    }
    // A report (not a suspicion) from where the model is right nine times in ten.
    let mut sure = 1.0f32;
    for t in grid(2, 99, 1) {
        if t < suspect {
            continue;
        }
        let (hits, total) = cases
            .iter()
            .zip(&out_of_fold)
            .filter(|(_, p)| p[model::SECURITY] >= t)
            .fold((0, 0), |(h, n), (c, _)| (h + u32::from(c.expect == "security"), n + 1));
        if total > 0 && f64::from(hits) / f64::from(total) >= 0.9 {
            sure = t;
            break;
        }
    }
    thresholds.security_suspect = suspect;
    thresholds.security = sure.max(suspect);
    let out_of_fold_eval = evaluate_with(rules, thresholds, cases, &verdicts, &out_of_fold);

    let mut model = model::train(&examples, SEED);
    model.thresholds = thresholds;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "trained on {} cases ({}), seed {SEED:#x}, {} epochs",
        cases.len(),
        OUTCOMES
            .iter()
            .map(|o| format!("{o} {}", cases.iter().filter(|c| c.expect == *o).count()))
            .collect::<Vec<_>>()
            .join(", "),
        model::EPOCHS
    );
    let _ = writeln!(
        report,
        "thresholds: security_suspect {:.2}, security {:.2}, unsupported_agree {:.2}, unsupported_alone {:.2}",
        thresholds.security_suspect, thresholds.security, thresholds.unsupported_agree, thresholds.unsupported_alone
    );
    let argmax_right = examples
        .iter()
        .zip(&out_of_fold)
        .filter(|(e, p)| {
            let best = (0..p.len()).fold(0, |b, c| if p[c] > p[b] { c } else { b });
            best == e.class
        })
        .count();
    let rule_security_on_ok = cases
        .iter()
        .zip(&verdicts)
        .filter(|(c, v)| c.expect == "ok" && v.types[RequestType::Security as usize] > 0)
        .count();
    let _ = writeln!(
        report,
        "model alone, out of fold: {argmax_right} of {} right by its top class; security rules fire on {rule_security_on_ok} ordinary messages",
        examples.len()
    );
    let _ = writeln!(
        report,
        "\nout of fold ({FOLDS}-fold cross-validation on the training split):"
    );
    report.push_str(&out_of_fold_eval.report());
    Ok(Trained {
        model,
        out_of_fold: out_of_fold_eval,
        report,
    })
}

fn unsupported_precision(e: &Evaluation) -> f64 {
    let kinds = &OUTCOMES[model::FIRST_UNSUPPORTED..];
    let right: u32 = kinds
        .iter()
        .map(|k| e.confusion.get(*k).and_then(|r| r.get(*k)).copied().unwrap_or(0))
        .sum();
    let predicted: u32 = e
        .confusion
        .values()
        .map(|r| kinds.iter().map(|k| r.get(*k).copied().unwrap_or(0)).sum::<u32>())
        .sum();
    if predicted == 0 {
        1.0
    } else {
        f64::from(right) / f64::from(predicted)
    }
}
