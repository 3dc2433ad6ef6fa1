//! medic's integration tests, in one binary: each file beside this one is a module, so
//! the tests share one build and one link instead of one per file. `scripts/test.sh` fails
//! when a file here is not listed below (it would not be compiled at all).
//!
//! Run one file's tests with `cargo test --test suite escalation::`.

mod common;

mod ack_race;
mod alert_content;
mod alertmanager;
mod approval;
mod approval_in_process;
mod approval_people;
mod approval_replicas;
mod architecture;
mod backup;
mod browser;
mod callbacks;
mod check;
mod console;
mod console_actions;
mod console_admin;
mod console_sessions;
mod demo;
mod durability;
mod escalation;
mod guards;
mod hash_password;
mod in_process;
mod links;
mod logs;
mod medic_test;
mod migrate;
mod monitoring;
mod packaging;
mod postmortem;
mod postmortem_browser;
mod remediation;
mod replicas;
mod retention;
mod shipped_configs;
mod shipped_runbooks;
mod upgrade;
mod webhook;
