//! Failover planner: protection levels, host failures tolerated, restart plans (pure code).
//!
//! - [`pool`]: the pool description (TOML/JSON) and its validation.
//! - [`pack`]: exact two-dimensional bin-packing feasibility (branch and bound, node budget).
//! - [`tolerance`]: how many simultaneous host failures the pool tolerates (bounds + search).
//! - [`plan`]: the restart plan for one failure set.
//! - [`validate`]: an independent checker for restart plans.
//! - [`admission`]: would an operation (VM start, migrate, host disable) break the plan?
//!
//! No I/O and no clock: callers measure time; search effort is bounded by a node [`Budget`].

pub mod admission;
pub mod pack;
pub mod plan;
pub mod pool;
pub mod synth;
pub mod tolerance;
pub mod validate;

pub use admission::{would_break_plan, AdmissionError, Change};
pub use plan::{restart_plan, Placement, PlanError, RestartPlan, Unplaced, UnplacedReason};
pub use pool::{Host, Pool, PoolError, Protection, Vm};
pub use tolerance::{tolerance, tolerates, Budget, Tolerance, Verdict, WorstCaseKind};
pub use validate::{validate_plan, Violation};
