//! Runbook authoring: `medic test` and `medic replay`.
//!
//! Both run runbooks offline, on the same sandbox as `medic serve` and with the same
//! `alert`/`incident`/`secrets` maps, but on an [`offline::OfflineHost`]: no command runs,
//! nothing goes on the network, `sleep` returns at once. [`spec`] is the test file format,
//! [`harness`] runs test files and compares what happened with what was expected,
//! [`junit`] writes the report CI systems read, and [`replay`] shows what a webhook body
//! would make medic do.

pub mod diff;
pub mod harness;
pub mod junit;
pub mod offline;
pub mod replay;
pub mod spec;
