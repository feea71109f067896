use serde::{Deserialize, Serialize};

/// The five request types the team supports (SPEC section 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestType {
    Account,
    Billing,
    Product,
    Security,
    Availability,
}

impl RequestType {
    pub const ALL: [RequestType; 5] = [
        RequestType::Account,
        RequestType::Billing,
        RequestType::Product,
        RequestType::Security,
        RequestType::Availability,
    ];

    pub fn id(self) -> &'static str {
        match self {
            RequestType::Account => "account",
            RequestType::Billing => "billing",
            RequestType::Product => "product",
            RequestType::Security => "security",
            RequestType::Availability => "availability",
        }
    }

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

    pub fn from_id(id: &str) -> Option<RequestType> {
        RequestType::ALL.into_iter().find(|t| t.id() == id)
    }
}

/// What the team does not do, and says so (SPEC section 1). Not a valid `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnsupportedReason {
    CustomDebugging,
    OnDemandConfiguration,
    DataRecovery,
}

impl UnsupportedReason {
    pub const ALL: [UnsupportedReason; 3] = [
        UnsupportedReason::CustomDebugging,
        UnsupportedReason::OnDemandConfiguration,
        UnsupportedReason::DataRecovery,
    ];

    pub fn id(self) -> &'static str {
        match self {
            UnsupportedReason::CustomDebugging => "custom_debugging",
            UnsupportedReason::OnDemandConfiguration => "on_demand_configuration",
            UnsupportedReason::DataRecovery => "data_recovery",
        }
    }

    pub fn from_id(id: &str) -> Option<UnsupportedReason> {
        UnsupportedReason::ALL.into_iter().find(|r| r.id() == id)
    }

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
