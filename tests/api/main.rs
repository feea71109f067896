//! Integration tests: one binary, a real server per test, its own fresh database.

mod helpers;

mod abuse;
mod api_tickets;
mod backup;
mod browser;
mod cli;
mod delivery_crash;
mod delivery_email;
mod delivery_github;
mod deploy;
mod durability;
mod fail2ban;
mod form;
mod github_fake;
mod health;
mod idempotency;
mod nginx;
mod ops;
mod outbox_queue;
mod pm2;
mod process;
mod smtp_server;
mod store_conformance;
mod webhook;
