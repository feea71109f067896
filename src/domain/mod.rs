//! Validated domain types: once a request is parsed into these, nothing downstream sees raw input.

mod reference;
mod request_type;
mod submission;
mod text;

pub use reference::Reference;
pub use request_type::{RequestType, UnsupportedReason};
pub use submission::{FieldError, IdempotencyKey, RawSubmission, Submission};
pub use text::{clean_multi_line, clean_single_line, is_invisible};
