//! Validated domain types: once a request is parsed into these, nothing downstream sees raw input.

mod reference;
mod request_type;
mod submission;

pub use reference::Reference;
pub use request_type::{RequestType, UnsupportedReason};
pub use submission::{FieldError, IdempotencyKey, RawSubmission, Submission};
