//! The evidence a categorisation decision leaves on its ticket.

use serde::{Deserialize, Serialize};

/// One reason for a decision, stored on the ticket so a person can see why it was categorised as it
/// was: a rule that fired (`rule` is its id), the model's probability for a class (`rule` is
/// `model`, `score` set), or the band the decision fell in (`rule` is `decision`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signal {
    pub rule: String,
    pub points_to: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f32>,
}

impl Signal {
    pub fn rule(id: &str, points_to: &str) -> Signal {
        Signal {
            rule: id.to_owned(),
            points_to: points_to.to_owned(),
            score: None,
        }
    }

    /// Whether this is a rule that fired (not a model score or the decision).
    pub fn is_rule(&self) -> bool {
        self.score.is_none() && self.rule != DECISION
    }
}

/// The `rule` of a model score's signal.
pub const MODEL: &str = "model";
/// The `rule` of the decision's signal; its `points_to` is the band.
pub const DECISION: &str = "decision";
