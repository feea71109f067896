use serde::{Deserialize, Serialize};

/// The five request types the team supports.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
    strum::EnumCount,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum RequestType {
    Account,
    Billing,
    Product,
    Security,
    Availability,
}

impl RequestType {
    pub fn label(self) -> &'static str {
        match self {
            RequestType::Account => "Account",
            RequestType::Billing => "Billing",
            RequestType::Product => "Product",
            RequestType::Security => "Security",
            RequestType::Availability => "Availability",
        }
    }

    /// One line for the form, so the customer can pick well.
    pub fn description(self) -> &'static str {
        match self {
            RequestType::Account => "Signing in, access to your account, passwords and team members.",
            RequestType::Billing => "Your subscription, invoices, payments and refunds.",
            RequestType::Product => {
                "Something in the product does not work as documented, or you need a feature explained."
            }
            RequestType::Security => "You found a vulnerability or suspect your account was compromised.",
            RequestType::Availability => "The service or part of it is down, unreachable or very slow.",
        }
    }
}

/// What the team does not do, and says so. Not a valid `type`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::EnumIter,
    strum::EnumCount,
    strum::Display,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum UnsupportedReason {
    CustomDebugging,
    OnDemandConfiguration,
    DataRecovery,
}

impl UnsupportedReason {
    /// The policy, stated factually; shown on the confirmation page and in the acknowledgement.
    pub fn policy(self) -> &'static str {
        match self {
            UnsupportedReason::CustomDebugging => "We do not debug code, integrations or scripts written by customers or third parties. If our product or API behaves differently from its documentation, please send a request of type Product describing what you expected and what happened.",
            UnsupportedReason::OnDemandConfiguration => "We do not configure accounts, integrations or settings on a customer's behalf. The documentation describes every setting; if a setting does not work as documented, please send a request of type Product.",
            UnsupportedReason::DataRecovery => "We can only restore data within our published backup and retention policy. Data deleted or expired outside that policy cannot be recovered by support.",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            UnsupportedReason::CustomDebugging => "Custom debugging",
            UnsupportedReason::OnDemandConfiguration => "On-demand configuration",
            UnsupportedReason::DataRecovery => "Data recovery outside policy",
        }
    }
}
