//! Categorisation: explainable rules (read from a TOML file) and a learned model ([`model`]) beside
//! them, applied to subject + message, and one decision policy with asymmetric costs:
//!
//! - a missed vulnerability report is public disclosure, a false alarm only files a ticket
//!   privately: a security rule or a model probability from `security` on files the ticket as a
//!   report; from the lower `security_suspect` on it is a suspected report, filed in the security
//!   route (never a public repository) and flagged `needs-triage`;
//! - an unsupported answer tells a customer we will not help: it needs a rule and the model to agree
//!   on the kind (the model giving it at least `unsupported_agree`), or the model alone to be very
//!   sure (`unsupported_alone`); a rule or a model that suggests it without that is a received
//!   ticket flagged `needs-triage`;
//! - otherwise the customer's pick stands, flagged `needs-triage` when the text points clearly at
//!   another type.
//!
//! Every fired rule, the model's score per class and the band are kept on the ticket as signals.

pub mod corpus;
pub mod model;
pub mod train;

use std::path::Path;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use strum::{EnumCount, IntoEnumIterator};

use crate::domain::{ClosedSet, RequestType, Signal, UnsupportedReason, DECISION, MODEL};

/// The rules shipped with the binary; `classify.rules_file` replaces them.
pub const DEFAULT_RULES: &str = include_str!("../../rules/classify.toml");

/// The model shipped with the binary (`intake classify train` writes it); `classify.model_file`
/// replaces it.
pub const DEFAULT_MODEL: &[u8] = include_bytes!("../../rules/model.bin");

/// What a rule points to: a request type or an unsupported kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Target {
    Type(RequestType),
    Unsupported(UnsupportedReason),
}

impl Target {
    pub fn id(self) -> &'static str {
        match self {
            Target::Type(t) => t.id(),
            Target::Unsupported(r) => r.id(),
        }
    }
}

/// Where a decision fell, for the team: the band's name is its label on the GitHub issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Band {
    /// A security rule or a high model probability: a vulnerability report.
    Security,
    /// The middle band: a suspected report, filed in the security route and flagged for triage.
    SecuritySuspect,
    /// Answered with the unsupported policy (a rule and the model agreed, or the model was sure).
    Unsupported,
    /// A rule or the model suggested an unsupported kind without the agreement an answer needs.
    UnsupportedUnconfirmed,
    /// The customer's pick stands.
    Pick,
}

impl Band {
    pub fn id(self) -> &'static str {
        match self {
            Band::Security => "security",
            Band::SecuritySuspect => "security-suspect",
            Band::Unsupported => "unsupported",
            Band::UnsupportedUnconfirmed => "unsupported-unconfirmed",
            Band::Pick => "pick",
        }
    }

    pub fn from_id(s: &str) -> Option<Band> {
        [
            Band::Security,
            Band::SecuritySuspect,
            Band::Unsupported,
            Band::UnsupportedUnconfirmed,
            Band::Pick,
        ]
        .into_iter()
        .find(|b| b.id() == s)
    }

    /// The one line the GitHub issue says about why the ticket went where it went.
    pub fn explanation(self) -> &'static str {
        match self {
            Band::Security => "Routed to security: the text reads as a vulnerability report.",
            Band::SecuritySuspect => {
                "Routed to security as a suspected vulnerability report: not certain, please triage."
            }
            Band::Unsupported => "Answered with the unsupported-request policy: rules and model agree.",
            Band::UnsupportedUnconfirmed => {
                "Kept as picked: the text may ask for something unsupported, but not clearly enough to say so."
            }
            Band::Pick => "Kept as the customer picked it.",
        }
    }
}

/// The ids of the rules that fired, among a ticket's signals.
pub fn fired_rules(signals: &[Signal]) -> impl Iterator<Item = &Signal> {
    signals.iter().filter(|s| s.is_rule())
}

/// The model's score per class among a ticket's signals, as `security 0.87` (`decimals` places).
pub fn model_scores(signals: &[Signal], decimals: usize) -> Vec<String> {
    signals
        .iter()
        .filter(|s| s.rule == MODEL)
        .map(|s| format!("{} {:.*}", s.points_to, decimals, s.score.unwrap_or(0.0)))
        .collect()
}

/// The band a stored ticket's signals name, if any (tickets from before the model have none).
pub fn band_of(signals: &[Signal]) -> Option<Band> {
    signals
        .iter()
        .find(|s| s.rule == DECISION)
        .and_then(|s| Band::from_id(&s.points_to))
}

/// The decision for one submission.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classification {
    pub picked: RequestType,
    /// The type the ticket is filed under; differs from `picked` only for vulnerability reports.
    pub filed_as: RequestType,
    pub unsupported: Option<UnsupportedReason>,
    pub needs_triage: bool,
    pub signals: Vec<Signal>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    decision: DecisionFile,
    #[serde(rename = "rule")]
    rules: Vec<RuleFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionFile {
    triage_min_score: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: String,
    points_to: String,
    #[serde(default = "one")]
    weight: u32,
    patterns: Vec<String>,
    #[serde(default)]
    and: Vec<String>,
    #[serde(default)]
    unless: Vec<String>,
    /// A security rule that counts only when the model agrees a little (see
    /// [`model::Thresholds::security_rule_confirm`]): words that also turn up in ordinary requests.
    #[serde(default)]
    needs_model: bool,
}

fn one() -> u32 {
    1
}

struct Rule {
    id: String,
    target: Target,
    weight: u32,
    any: Regex,
    and: Option<Regex>,
    unless: Option<Regex>,
    needs_model: bool,
}

/// Compiled rules and the model, shared by every request.
pub struct Classifier {
    rules: Vec<Rule>,
    triage_min_score: u32,
    model: model::Model,
}

/// Why a rules file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error("rules file: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("rule `{rule}`: {message}")]
    Rule { rule: String, message: String },
    #[error("reading rules file: {0}")]
    Io(#[from] std::io::Error),
    #[error("model file: {0}")]
    Model(String),
}

/// `pattern` with each `\b` made an ASCII word boundary. A Unicode word boundary stops the regex
/// engine's DFA at the first non-ASCII character of the text and leaves the rest to its slow
/// engine (milliseconds per message in the languages the rules read, tens for a long one); at an
/// ASCII boundary, a letter like `é` counts as a non-word character, which is what the patterns,
/// written around ASCII stems, expect.
fn ascii_word_boundaries(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len() + 16);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            // `\b{start}` and its kin are left as written.
            Some('b') if chars.peek() != Some(&'{') => out.push_str("(?-u:\\b)"),
            Some(next) => {
                out.push('\\');
                out.push(next);
            }
            None => out.push('\\'),
        }
    }
    out
}

fn alternation(rule: &str, patterns: &[String]) -> Result<Option<Regex>, RulesError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let joined = patterns
        .iter()
        .map(|p| format!("(?:{})", ascii_word_boundaries(p)))
        .collect::<Vec<_>>()
        .join("|");
    RegexBuilder::new(&joined)
        .case_insensitive(true)
        .size_limit(1 << 22)
        .dfa_size_limit(1 << 23)
        .build()
        .map(Some)
        .map_err(|e| RulesError::Rule {
            rule: rule.to_owned(),
            message: e.to_string(),
        })
}

impl Classifier {
    /// The rules and model shipped with the binary.
    pub fn builtin() -> Classifier {
        // The shipped files are checked by the tests below; they cannot fail at run time.
        Classifier::from_toml(DEFAULT_RULES).expect("the shipped rules file is valid")
    }

    /// The rules from `rules` and the model from `model`, or the shipped ones when `None`.
    pub fn load(rules: Option<&Path>, model: Option<&Path>) -> Result<Classifier, RulesError> {
        let mut classifier = match rules {
            Some(p) => Classifier::from_toml(&std::fs::read_to_string(p)?)?,
            None => Classifier::builtin(),
        };
        if let Some(p) = model {
            let bytes = std::fs::read(p).map_err(|e| RulesError::Model(format!("{}: {e}", p.display())))?;
            classifier.model = model::Model::from_bytes(&bytes).map_err(RulesError::Model)?;
        }
        Ok(classifier)
    }

    /// The same rules with another model (training, evaluation of a candidate).
    pub fn with_model(mut self, model: model::Model) -> Classifier {
        self.model = model;
        self
    }

    pub fn model(&self) -> &model::Model {
        &self.model
    }

    /// Rules from `text`, with the shipped model.
    pub fn from_toml(text: &str) -> Result<Classifier, RulesError> {
        let file: RulesFile = toml::from_str(text)?;
        let mut rules = Vec::with_capacity(file.rules.len());
        for r in file.rules {
            let target = RequestType::parse(&r.points_to)
                .map(Target::Type)
                .or_else(|| UnsupportedReason::parse(&r.points_to).map(Target::Unsupported))
                .ok_or_else(|| RulesError::Rule {
                    rule: r.id.clone(),
                    message: format!(
                        "points_to `{}` is neither a request type nor an unsupported kind",
                        r.points_to
                    ),
                })?;
            if r.needs_model && target != Target::Type(RequestType::Security) {
                return Err(RulesError::Rule {
                    rule: r.id,
                    message: "needs_model is for rules pointing to security".to_owned(),
                });
            }
            let any = alternation(&r.id, &r.patterns)?.ok_or_else(|| RulesError::Rule {
                rule: r.id.clone(),
                message: "needs at least one pattern".to_owned(),
            })?;
            rules.push(Rule {
                and: alternation(&r.id, &r.and)?,
                unless: alternation(&r.id, &r.unless)?,
                id: r.id,
                target,
                weight: r.weight,
                needs_model: r.needs_model,
                any,
            });
        }
        Ok(Classifier {
            rules,
            triage_min_score: file.decision.triage_min_score,
            model: model::Model::from_bytes(DEFAULT_MODEL).map_err(RulesError::Model)?,
        })
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    /// The rules that fire on a text, with the scores they give each type and unsupported kind.
    pub fn rules_on(&self, subject: &str, message: &str) -> RuleScores {
        // The whole text is examined: a report buried at the end of a long message is still a report,
        // and the regex engine is linear in the input.
        let mut text = String::with_capacity(subject.len() + 1 + message.len());
        text.push_str(subject);
        text.push('\n');
        text.push_str(message);
        let mut scores = RuleScores::default();
        for rule in &self.rules {
            let fired = rule.any.is_match(&text)
                && rule.and.as_ref().is_none_or(|r| r.is_match(&text))
                && !rule.unless.as_ref().is_some_and(|r| r.is_match(&text));
            if !fired {
                continue;
            }
            match rule.target {
                Target::Type(RequestType::Security) if rule.needs_model => {
                    scores.security_needs_model = true;
                }
                Target::Type(t) => scores.types[t as usize] += rule.weight,
                Target::Unsupported(u) => scores.unsupported[u as usize] += rule.weight,
            }
            scores.signals.push(Signal::rule(&rule.id, rule.target.id()));
        }
        scores
    }

    pub fn classify(&self, picked: RequestType, subject: &str, message: &str) -> Classification {
        let rules = self.rules_on(subject, message);
        let p = self.model.score(subject, message);
        self.decide(picked, rules, &p)
    }

    /// The decision policy (see the module documentation) on the rules' verdict and the model's
    /// probabilities; training chooses the thresholds by running this very function.
    pub fn decide(&self, picked: RequestType, rules: RuleScores, p: &[f32; 5]) -> Classification {
        self.decide_with(self.model.thresholds, picked, rules, p)
    }

    /// [`Classifier::decide`] with other thresholds (training tries them).
    pub fn decide_with(
        &self,
        t: model::Thresholds,
        picked: RequestType,
        rules: RuleScores,
        p: &[f32; 5],
    ) -> Classification {
        let RuleScores {
            types,
            security_needs_model,
            unsupported: unsupported_scores,
            mut signals,
        } = rules;
        let rule_security = types[RequestType::Security as usize] > 0
            || (security_needs_model && p[model::SECURITY] >= t.security_rule_confirm);
        let security_band = if rule_security || p[model::SECURITY] >= t.security {
            Some(Band::Security)
        } else if p[model::SECURITY] >= t.security_suspect {
            Some(Band::SecuritySuspect)
        } else {
            None
        };
        let rule_kind = UnsupportedReason::iter()
            .filter(|u| unsupported_scores[*u as usize] > 0)
            .max_by_key(|u| (unsupported_scores[*u as usize], std::cmp::Reverse(*u as usize)));
        let (model_kind, model_p) = UnsupportedReason::iter()
            .map(|u| (u, p[model::FIRST_UNSUPPORTED + u as usize]))
            .fold((UnsupportedReason::CustomDebugging, f32::MIN), |best, x| {
                if x.1 > best.1 {
                    x
                } else {
                    best
                }
            });
        // A vulnerability report is handled as one even when it also asks for something unsupported.
        let (unsupported, band) = match security_band {
            Some(band) => (None, band),
            None => match rule_kind {
                Some(k) if p[model::FIRST_UNSUPPORTED + k as usize] >= t.unsupported_agree => {
                    (Some(k), Band::Unsupported)
                }
                _ if model_p >= t.unsupported_alone => (Some(model_kind), Band::Unsupported),
                Some(_) => (None, Band::UnsupportedUnconfirmed),
                None if model_p >= t.unsupported_agree => (None, Band::UnsupportedUnconfirmed),
                None => (None, Band::Pick),
            },
        };
        let filed_as = if security_band.is_some() {
            RequestType::Security
        } else {
            picked
        };
        let best_other = RequestType::iter()
            .filter(|t| *t != picked && *t != RequestType::Security)
            .map(|t| types[t as usize])
            .max()
            .unwrap_or(0);
        let points_elsewhere = types[picked as usize] == 0 && best_other >= self.triage_min_score;
        // An unsupported request is answered with the policy whatever was picked: no triage needed.
        let needs_triage = match band {
            Band::SecuritySuspect | Band::UnsupportedUnconfirmed => true,
            Band::Pick => points_elsewhere,
            Band::Security | Band::Unsupported => false,
        };
        for (class, score) in model::CLASSES.iter().zip(p) {
            signals.push(Signal {
                rule: MODEL.to_owned(),
                points_to: (*class).to_owned(),
                score: Some((score * 1000.0).round() / 1000.0),
            });
        }
        signals.push(Signal::rule(DECISION, band.id()));
        Classification {
            picked,
            filed_as,
            unsupported,
            needs_triage,
            signals,
        }
    }
}

/// What the rules made of a text.
#[derive(Debug, Clone, Default)]
pub struct RuleScores {
    /// Scores of the rules that count by themselves.
    pub types: [u32; RequestType::COUNT],
    /// A security rule that needs the model's agreement fired.
    pub security_needs_model: bool,
    pub unsupported: [u32; UnsupportedReason::COUNT],
    pub signals: Vec<Signal>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_rules_compile() {
        assert!(Classifier::builtin().rule_count() >= 10);
    }

    #[test]
    fn a_vulnerability_report_picked_as_product_is_filed_as_security() {
        let c = Classifier::builtin().classify(
            RequestType::Product,
            "Stored XSS in video titles",
            "A title containing a script tag runs in other users' browsers.",
        );
        assert_eq!(c.filed_as, RequestType::Security);
        assert_eq!(c.picked, RequestType::Product);
        assert!(c.signals.iter().any(|s| s.points_to == "security"));
    }

    #[test]
    fn an_ordinary_request_keeps_its_pick_without_flags() {
        let c = Classifier::builtin().classify(
            RequestType::Billing,
            "Invoice for October",
            "Could you send me the invoice for October again? I cannot find it.",
        );
        assert_eq!(c.filed_as, RequestType::Billing);
        assert_eq!(c.unsupported, None);
        assert!(!c.needs_triage);
    }

    #[test]
    fn a_clear_disagreement_is_flagged_not_overridden() {
        let c = Classifier::builtin().classify(
            RequestType::Product,
            "Charged twice",
            "I was charged twice for my subscription this month, please refund one payment. Invoice 2231.",
        );
        assert_eq!(c.filed_as, RequestType::Product);
        assert!(c.needs_triage);
    }

    fn thresholds() -> model::Thresholds {
        model::Thresholds {
            security_suspect: 0.4,
            security: 0.6,
            security_rule_confirm: 0.05,
            unsupported_agree: 0.1,
            unsupported_alone: 0.9,
        }
    }

    /// Probabilities with `security` at `p` and the rest on `ok`.
    fn security_at(p: f32) -> [f32; 5] {
        [1.0 - p, p, 0.0, 0.0, 0.0]
    }

    const RULES: &str = "[decision]\ntriage_min_score = 2\n\
        [[rule]]\nid = \"strong\"\npoints_to = \"security\"\npatterns = [\"vulnerability\"]\n\
        [[rule]]\nid = \"weak\"\npoints_to = \"security\"\nneeds_model = true\npatterns = [\"csrf\"]\n";

    fn band_of_decision(c: &Classification) -> &str {
        c.signals
            .iter()
            .rev()
            .find(|s| s.rule == DECISION)
            .map(|s| s.points_to.as_str())
            .unwrap()
    }

    #[test]
    fn a_rule_that_needs_the_model_files_a_report_only_when_the_model_agrees_a_little() {
        let rules = Classifier::from_toml(RULES).unwrap();
        let decide = |text: &str, p: f32| {
            let verdict = rules.rules_on("subject", text);
            rules.decide_with(thresholds(), RequestType::Product, verdict, &security_at(p))
        };
        // The model all but rules it out: the words were an error message, the pick stands.
        let c = decide("the CSRF token expired error when saving", 0.01);
        assert_eq!(c.filed_as, RequestType::Product);
        assert_eq!(band_of_decision(&c), "pick");
        // The fired rule is still on record.
        assert!(c.signals.iter().any(|s| s.rule == "weak"));
        // The model gives it the confirming bar, far below its own suspect band: a report.
        let c = decide("the CSRF token expired error when saving", 0.05);
        assert_eq!(c.filed_as, RequestType::Security);
        assert_eq!(band_of_decision(&c), "security");
        // A rule without the flag wins whatever the model says.
        let c = decide("I found a vulnerability", 0.0);
        assert_eq!(c.filed_as, RequestType::Security);
        // The model alone, in its suspect band, with no rule.
        let c = decide("something odd", 0.45);
        assert_eq!(c.filed_as, RequestType::Security);
        assert!(c.needs_triage);
        assert_eq!(band_of_decision(&c), "security-suspect");
    }

    #[test]
    fn needs_model_is_refused_on_a_rule_that_does_not_point_to_security() {
        let bad = "[decision]\ntriage_min_score = 2\n[[rule]]\nid = \"z\"\npoints_to = \"billing\"\n\
            needs_model = true\npatterns = [\"a\"]\n";
        let err = Classifier::from_toml(bad).err().unwrap().to_string();
        assert!(err.contains("`z`") && err.contains("needs_model"), "{err}");
    }

    #[test]
    fn word_boundaries_become_ascii_ones_and_nothing_else_changes() {
        assert_eq!(ascii_word_boundaries(r"\bxss\b"), r"(?-u:\b)xss(?-u:\b)");
        assert_eq!(ascii_word_boundaries(r"a\\b \d\w \b{start}x"), r"a\\b \d\w \b{start}x");
        // A boundary still holds next to a letter outside ASCII, and inside a word it does not.
        let re = alternation("t", &[r"\bfaille\b".to_owned()]).unwrap().unwrap();
        assert!(re.is_match("une faille sérieuse"));
        assert!(re.is_match("éfaille"));
        assert!(!re.is_match("defailles"));
    }

    #[test]
    fn bad_rules_are_refused_with_the_rule_named() {
        let bad =
            "[decision]\ntriage_min_score = 2\n[[rule]]\nid = \"x\"\npoints_to = \"nonsense\"\npatterns = [\"a\"]\n";
        let err = Classifier::from_toml(bad).err().unwrap().to_string();
        assert!(err.contains("`x`"), "{err}");
        let bad_regex =
            "[decision]\ntriage_min_score = 2\n[[rule]]\nid = \"y\"\npoints_to = \"billing\"\npatterns = [\"(\"]\n";
        assert!(Classifier::from_toml(bad_regex)
            .err()
            .unwrap()
            .to_string()
            .contains("`y`"));
    }
}
