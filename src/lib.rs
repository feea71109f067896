//! intake: a help form that becomes a support record, an acknowledgement email and a GitHub issue.

pub mod abuse;
pub mod audit;
pub mod classify;
pub mod cli;
mod cli_ops;
pub mod config;
pub mod domain;
pub mod email;
pub mod form_token;
pub mod github;
pub mod http;
pub mod metrics;
pub mod ops;
pub mod outbox;
pub mod startup;
pub mod store;
pub mod submit;
pub mod telemetry;
pub mod templates;
pub mod tokens;
