//! medic: a self-healing alert remediation engine for Prometheus Alertmanager.
//!
//! The pipeline, one module per stage (see ARCHITECTURE.md):
//! `ingest` (webhook intake) → `routing` (which runbook) → `store` (incidents and the
//! audit log, durably) → `runner` (claims queued incidents) → `runbook` (the sandboxed
//! script) → `steps` (the world) → `verify` (did the alert resolve?) → `escalate` (tell a person).

pub mod alert;
pub mod api;
pub mod app;
pub mod approval;
pub mod audit;
pub mod auth;
pub mod authoring;
pub mod callbacks;
pub mod cli;
pub mod clock;
pub mod config;
pub mod escalate;
pub mod guard;
pub mod incident;
pub mod ingest;
pub mod loaded;
pub mod metrics;
pub mod operate;
pub mod packaging;
pub mod plan;
pub mod postmortem;
pub mod reload;
pub mod retention;
pub mod routing;
pub mod runbook;
pub mod runner;
pub mod server;
pub mod snapshot;
pub mod steps;
pub mod store;
pub mod ui;
pub mod verify;
