//! Conversions between rows and values, shared by both backends.

use crate::classify::Classification;
use crate::domain::{ClosedSet, Signal};
use crate::tokens::Scope;

use super::queue::JobKind;
use super::StoreError;

/// A closed set's value from its stored id; anything else means the database was edited by hand
/// (or by a later release this one does not know).
pub(super) fn parse_id<T: ClosedSet>(what: &str, id: &str) -> Result<T, StoreError> {
    T::parse(id).ok_or_else(|| StoreError::Corrupt(format!("unknown {what} `{id}`")))
}

/// [`parse_id`] of a nullable column.
pub(super) fn parse_optional_id<T: ClosedSet>(what: &str, id: Option<&str>) -> Result<Option<T>, StoreError> {
    id.map(|id| parse_id(what, id)).transpose()
}

/// Scopes as stored (`read,ops`), back into a list.
pub(super) fn stored_scopes(s: &str) -> Result<Vec<Scope>, StoreError> {
    crate::tokens::parse_scopes(s).map_err(StoreError::Corrupt)
}

/// A fresh lease token.
pub(super) fn lease_token() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..16).map(|_| format!("{:02x}", rng.gen::<u8>())).collect()
}

/// `kind IN (...)` for a list of job kinds; ids are fixed identifiers, never input.
pub(super) fn kinds_sql(kinds: &[JobKind]) -> String {
    let list: Vec<String> = kinds.iter().map(|k| format!("'{}'", k.id())).collect();
    if list.is_empty() {
        "FALSE".to_owned()
    } else {
        format!("kind IN ({})", list.join(", "))
    }
}

pub(super) fn signals_json(c: &Classification) -> String {
    // Serialising plain strings into JSON cannot fail.
    serde_json::to_string(&c.signals).unwrap_or_else(|_| "[]".to_owned())
}

pub(super) fn parse_signals(s: &str) -> Result<Vec<Signal>, StoreError> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(format!("signals: {e}")))
}
