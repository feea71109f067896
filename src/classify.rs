//! Categorisation: explainable rules, read from a TOML file, applied to subject + message.
//!
//! The customer's pick stands unless a rule says the text is a vulnerability report (moved to
//! `security`) or clearly asks for something the team does not do (answered as unsupported). When the
//! text points clearly at another type than the one picked, the ticket is flagged `needs-triage`
//! instead of being moved. Every fired rule is kept on the ticket as a signal.

use std::path::Path;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

use crate::domain::{RequestType, UnsupportedReason};

/// The rules shipped with the binary; `classify.rules_file` replaces them.
pub const DEFAULT_RULES: &str = include_str!("../rules/classify.toml");

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

/// One fired rule, stored on the ticket so a person can see why it was categorised as it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signal {
    pub rule: String,
    pub points_to: String,
}

/// The decision for one submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
}

/// Compiled rules, shared by every request.
pub struct Classifier {
    rules: Vec<Rule>,
    triage_min_score: u32,
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
}

fn alternation(rule: &str, patterns: &[String]) -> Result<Option<Regex>, RulesError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let joined = patterns
        .iter()
        .map(|p| format!("(?:{p})"))
        .collect::<Vec<_>>()
        .join("|");
    RegexBuilder::new(&joined)
        .case_insensitive(true)
        .size_limit(1 << 22)
        .build()
        .map(Some)
        .map_err(|e| RulesError::Rule {
            rule: rule.to_owned(),
            message: e.to_string(),
        })
}

impl Classifier {
    /// The rules shipped with the binary.
    pub fn builtin() -> Classifier {
        // The shipped file is checked by the tests below; it cannot fail at run time.
        Classifier::from_toml(DEFAULT_RULES).expect("the shipped rules file is valid")
    }

    /// The rules from `path`, or the shipped ones when `None`.
    pub fn load(path: Option<&Path>) -> Result<Classifier, RulesError> {
        match path {
            Some(p) => Classifier::from_toml(&std::fs::read_to_string(p)?),
            None => Ok(Classifier::builtin()),
        }
    }

    pub fn from_toml(text: &str) -> Result<Classifier, RulesError> {
        let file: RulesFile = toml::from_str(text)?;
        let mut rules = Vec::with_capacity(file.rules.len());
        for r in file.rules {
            let target = RequestType::from_id(&r.points_to)
                .map(Target::Type)
                .or_else(|| UnsupportedReason::from_id(&r.points_to).map(Target::Unsupported))
                .ok_or_else(|| RulesError::Rule {
                    rule: r.id.clone(),
                    message: format!(
                        "points_to `{}` is neither a request type nor an unsupported kind",
                        r.points_to
                    ),
                })?;
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
                any,
            });
        }
        Ok(Classifier {
            rules,
            triage_min_score: file.decision.triage_min_score,
        })
    }

    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }

    pub fn classify(&self, picked: RequestType, subject: &str, message: &str) -> Classification {
        // The whole text is examined: a report buried at the end of a long message is still a report,
        // and the regex engine is linear in the input.
        let mut text = String::with_capacity(subject.len() + 1 + message.len());
        text.push_str(subject);
        text.push('\n');
        text.push_str(message);

        let mut signals = Vec::new();
        let mut type_scores = [0u32; RequestType::ALL.len()];
        let mut unsupported_scores = [0u32; UnsupportedReason::ALL.len()];
        for rule in &self.rules {
            let fired = rule.any.is_match(&text)
                && rule.and.as_ref().is_none_or(|r| r.is_match(&text))
                && !rule.unless.as_ref().is_some_and(|r| r.is_match(&text));
            if !fired {
                continue;
            }
            match rule.target {
                Target::Type(t) => type_scores[t as usize] += rule.weight,
                Target::Unsupported(u) => unsupported_scores[u as usize] += rule.weight,
            }
            signals.push(Signal {
                rule: rule.id.clone(),
                points_to: rule.target.id().to_owned(),
            });
        }

        let security = type_scores[RequestType::Security as usize] > 0;
        let filed_as = if security { RequestType::Security } else { picked };
        // A vulnerability report is handled as one even when it also asks for something unsupported.
        let unsupported = if security {
            None
        } else {
            UnsupportedReason::ALL
                .into_iter()
                .filter(|u| unsupported_scores[*u as usize] > 0)
                .max_by_key(|u| (unsupported_scores[*u as usize], std::cmp::Reverse(*u as usize)))
        };
        let best_other = RequestType::ALL
            .into_iter()
            .filter(|t| *t != picked && *t != RequestType::Security)
            .map(|t| type_scores[t as usize])
            .max()
            .unwrap_or(0);
        // An unsupported request is answered with the policy whatever was picked: no triage needed.
        let needs_triage = !security
            && unsupported.is_none()
            && type_scores[picked as usize] == 0
            && best_other >= self.triage_min_score;

        Classification {
            picked,
            filed_as,
            unsupported,
            needs_triage,
            signals,
        }
    }
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
