//! Validated domain types: once a request is parsed into these, nothing downstream sees raw input.

mod reference;
mod request_type;
mod signal;
mod submission;
mod text;
mod ticket;

pub use reference::Reference;
pub use request_type::{RequestType, UnsupportedReason};
pub use signal::{Signal, DECISION, MODEL};
pub use submission::{FieldError, IdempotencyKey, RawSubmission, Submission};
pub use text::{clean_multi_line, clean_single_line, is_invisible};
pub use ticket::{Channel, FiledIssue, IssueAction, IssueEvent, Ticket, TicketEvent, TicketStatus, TicketSummary};

/// A closed set of values with a stable text id (in the database, URLs, JSON, configuration and
/// the command line). Derived with strum (`IntoStaticStr`, `EnumString`, `EnumIter`): the one
/// mechanism for every such set, so an id is written once, on its variant.
pub trait ClosedSet: Copy + Into<&'static str> + std::str::FromStr + strum::IntoEnumIterator + 'static {
    /// The value's id.
    fn id(self) -> &'static str {
        self.into()
    }

    /// The value with this id, if there is one.
    fn parse(id: &str) -> Option<Self> {
        id.parse().ok()
    }

    /// Every value, in declaration order.
    fn all() -> Vec<Self> {
        Self::iter().collect()
    }

    /// The ids, for an error message: `a, b or c`.
    fn ids_listed() -> String {
        let ids: Vec<&str> = Self::iter().map(Self::id).collect();
        match ids.split_last() {
            Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
            _ => ids.join(""),
        }
    }
}

impl<T: Copy + Into<&'static str> + std::str::FromStr + strum::IntoEnumIterator + 'static> ClosedSet for T {}
