//! Admission control: refuse operations that would break the failover plan.

use super::pool::{Pool, PoolError};
use super::tolerance::{tolerates, Budget, Verdict};

/// An operation an administrator asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Start a VM (not running now) on a host.
    StartVm {
        /// VM name.
        vm: String,
        /// Host name.
        host: String,
    },
    /// Move a running VM to another host.
    MigrateVm {
        /// VM name.
        vm: String,
        /// Destination host name.
        to: String,
    },
    /// Stop accepting restarts on a host (its running VMs stay and still need restarts if it fails).
    DisableHost {
        /// Host name.
        host: String,
    },
}

/// Why a change cannot even be evaluated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdmissionError {
    /// The VM is not in the pool.
    #[error("vm `{0}` is not in the pool; use a VM name from the pool file")]
    UnknownVm(String),
    /// The host is not in the pool.
    #[error("host `{0}` is not in the pool; use a host name from the pool file")]
    UnknownHost(String),
    /// Starting a VM that already runs, or migrating one that does not.
    #[error("vm `{vm}` {problem}")]
    WrongState {
        /// VM name.
        vm: String,
        /// What is wrong.
        problem: &'static str,
    },
    /// The change itself does not fit (the host lacks room).
    #[error("the change does not fit: {0}")]
    DoesNotFit(PoolError),
}

/// Applies a change to a copy of the pool.
pub fn apply(pool: &Pool, change: &Change) -> Result<Pool, AdmissionError> {
    let mut p = pool.clone();
    let host = |name: &str| p.host_index(name).ok_or_else(|| AdmissionError::UnknownHost(name.to_string()));
    let vm = |name: &str| p.vm_index(name).ok_or_else(|| AdmissionError::UnknownVm(name.to_string()));
    match change {
        Change::StartVm { vm: v, host: h } => {
            let (v, h) = (vm(v)?, host(h)?);
            if p.vms[v].host.is_some() {
                return Err(AdmissionError::WrongState {
                    vm: p.vms[v].name.clone(),
                    problem: "is already running",
                });
            }
            p.vms[v].host = Some(h);
        }
        Change::MigrateVm { vm: v, to } => {
            let (v, h) = (vm(v)?, host(to)?);
            if p.vms[v].host.is_none() {
                return Err(AdmissionError::WrongState {
                    vm: p.vms[v].name.clone(),
                    problem: "is not running",
                });
            }
            p.vms[v].host = Some(h);
        }
        Change::DisableHost { host: h } => {
            let h = host(h)?;
            p.hosts[h].accepts_restarts = false;
        }
    }
    p.check_loads().map_err(AdmissionError::DoesNotFit)?;
    Ok(p)
}

/// True when, after `change`, the pool is no longer proven to tolerate `k` host failures.
///
/// Conservative: if the search budget cannot prove `k` either way, the change is reported
/// as breaking the plan (the seed system also refuses what it cannot prove safe).
pub fn would_break_plan(
    pool: &Pool,
    change: &Change,
    k: usize,
    budget: Budget,
) -> Result<bool, AdmissionError> {
    let after = apply(pool, change)?;
    Ok(tolerates(&after, k, budget) != Verdict::Yes)
}
