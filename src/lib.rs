//! medic: a self-healing alert remediation engine for Prometheus Alertmanager.
//!
//! The pipeline, one module per stage (see ARCHITECTURE.md):
//! `ingest` (webhook intake) → `routing` (which runbook) → `store` (incidents and the
//! audit log, durably) → later stages run, verify and escalate.

pub mod api;
pub mod audit;
pub mod auth;
pub mod cli;
pub mod config;
pub mod engine;
pub mod incident;
pub mod ingest;
pub mod metrics;
pub mod routing;
pub mod runbook;
pub mod server;
pub mod store;
