//! Integration tests: one binary, a real server per test, its own fresh database.

mod helpers;

mod api_tickets;
mod cli;
mod durability;
mod form;
mod health;
mod idempotency;
mod outbox_queue;
mod store_conformance;
