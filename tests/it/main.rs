//! Integration tests: each starts the real `herald` binary (see `util`).

#![allow(dead_code)]

mod actions;
mod console;
mod events;
mod executions;
mod hardening;
mod http_sink;
mod journal;
mod mail;
mod notifications;
mod operations;
mod schedules;
mod smtp_sink;
mod store;
mod time;
mod ui;
mod upgrade;
mod util;
mod webhooks;
mod worklist;
