//! The reconcile pass (architecture.md §4): claim due payments, plan gateway calls, call,
//! decide with the pure state machine, apply in batched transactions, and reverse as a last
//! resort. Cron, the CLI and tests all go through [`Reconciler::run_once`].

pub mod plan;
pub mod update;
