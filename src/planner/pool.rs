//! Pool description: parsing (TOML or JSON) and validation.

use serde::Deserialize;
use std::collections::HashMap;

/// How hard the planner tries to restart a VM after its host fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protection {
    /// Must be restarted; counts toward the failures tolerated.
    Protect,
    /// Restarted after all protected VMs, while capacity remains.
    BestEffort,
    /// Never restarted.
    None,
}

impl Protection {
    /// The spelling used in pool files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Protection::Protect => "protect",
            Protection::BestEffort => "best-effort",
            Protection::None => "none",
        }
    }
}

/// A host of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// Unique name.
    pub name: String,
    /// Memory available to VMs.
    pub memory_mib: u64,
    /// Hard vCPU limit; `None` means vCPUs are not limited.
    pub max_vcpus: Option<u64>,
    /// Whether restarted VMs may be placed here (false for a disabled host).
    pub accepts_restarts: bool,
}

/// A VM of the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// Unique name.
    pub name: String,
    /// Memory the VM needs.
    pub memory_mib: u64,
    /// vCPUs the VM needs.
    pub vcpus: u64,
    /// Restart priority level.
    pub protection: Protection,
    /// Restart order within a level (lower first); `None` starts after all ordered VMs.
    pub order: Option<i64>,
    /// Index into [`Pool::hosts`] of the host running the VM; `None` if not running.
    pub host: Option<usize>,
    /// Anti-affinity group: restart plans avoid two VMs of one group on one host.
    pub anti_affinity: Option<String>,
}

/// A validated pool: names are unique, sizes positive, every VM fits some host,
/// and no host runs more than its capacity.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Pool {
    /// Hosts in file order.
    pub hosts: Vec<Host>,
    /// VMs in file order.
    pub vms: Vec<Vm>,
}

/// What is wrong with a pool description.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// The file is not valid TOML/JSON or has the wrong shape.
    #[error("cannot parse pool description as {format}: {message}; fix the syntax (see `diskbeat plan --help` for the format)")]
    Syntax {
        /// "TOML" or "JSON".
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// A host or VM has an empty name.
    #[error("{kind} #{index} has an empty name; give every {kind} a unique non-empty `name`")]
    EmptyName {
        /// "host" or "vm".
        kind: &'static str,
        /// 1-based position in the file.
        index: usize,
    },
    /// Two hosts share a name.
    #[error("host `{0}` is declared twice; host names must be unique")]
    DuplicateHost(String),
    /// Two VMs share a name.
    #[error("vm `{0}` is declared twice; VM names must be unique")]
    DuplicateVm(String),
    /// A size is zero or negative.
    #[error("{kind} `{name}`: {field} must be a positive integer, got {value}")]
    BadSize {
        /// "host" or "vm".
        kind: &'static str,
        /// Entry name.
        name: String,
        /// Field name.
        field: &'static str,
        /// Value found.
        value: i64,
    },
    /// A VM names a host that is not declared.
    #[error("vm `{vm}` runs on host `{host}`, which is not declared; add a [[host]] named `{host}` or fix the name")]
    UnknownHost {
        /// VM name.
        vm: String,
        /// Host name given.
        host: String,
    },
    /// A protection level is not one of the known ones.
    #[error("vm `{vm}`: unknown protection `{value}`; use one of: protect, best-effort, none")]
    UnknownProtection {
        /// VM name.
        vm: String,
        /// Value found.
        value: String,
    },
    /// A VM does not fit on any host even when the host is empty.
    #[error(
        "vm `{vm}` needs {memory_mib} MiB and {}, more than any host offers; shrink it or add a larger host",
        crate::text::count(*vcpus, "vCPU", "vCPUs")
    )]
    VmTooLarge {
        /// VM name.
        vm: String,
        /// Its memory.
        memory_mib: u64,
        /// Its vCPUs.
        vcpus: u64,
    },
    /// Sizes add up past what the planner computes with (a crafted or mistyped file).
    #[error("the pool's {what} add up to {total} {unit}, more than the planner supports ({limit} {unit}); check the sizes and their units")]
    TotalTooLarge {
        /// What was added up.
        what: &'static str,
        /// The exact total.
        total: u128,
        /// The largest total accepted.
        limit: u64,
        /// "MiB" or "vCPUs".
        unit: &'static str,
    },
    /// The VMs running on a host exceed its capacity.
    #[error(
        "host `{host}` runs VMs needing {} but has only {}; fix the VM `host` fields or the host size",
        amount(*used, unit), amount(*capacity, unit)
    )]
    HostOverloaded {
        /// Host name.
        host: String,
        /// Total used.
        used: u64,
        /// Capacity.
        capacity: u64,
        /// "MiB" or "vCPUs".
        unit: &'static str,
    },
}

/// `amount(1, "vCPUs")` is "1 vCPU"; MiB stay "1 MiB".
fn amount(n: u64, unit: &str) -> String {
    match unit {
        "vCPUs" => crate::text::count(n, "vCPU", "vCPUs"),
        _ => format!("{n} {unit}"),
    }
}

/// Largest total the planner accepts, of memory (hosts' and VMs' together) and of vCPUs (hosts'
/// limits and VMs' together): any sum of sizes then fits in a u64 with room to spare.
pub const MAX_TOTAL: u64 = i64::MAX as u64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
    #[serde(default)]
    host: Vec<RawHost>,
    #[serde(default)]
    vm: Vec<RawVm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: String,
    memory_mib: i64,
    max_vcpus: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: String,
    memory_mib: i64,
    #[serde(default = "one")]
    vcpus: i64,
    protection: String,
    order: Option<i64>,
    host: Option<String>,
    anti_affinity: Option<String>,
}

fn one() -> i64 {
    1
}

fn positive(kind: &'static str, name: &str, field: &'static str, value: i64) -> Result<u64, PoolError> {
    u64::try_from(value).ok().filter(|v| *v > 0).ok_or_else(|| PoolError::BadSize {
        kind,
        name: name.to_string(),
        field,
        value,
    })
}

impl Pool {
    /// Parses a TOML pool description.
    pub fn from_toml_str(text: &str) -> Result<Pool, PoolError> {
        let raw: RawPool =
            toml::from_str(text).map_err(|e| PoolError::Syntax { format: "TOML", message: e.to_string() })?;
        Pool::from_raw(raw)
    }

    /// Parses a JSON pool description (same fields as TOML: `{"host": [...], "vm": [...]}`).
    pub fn from_json_str(text: &str) -> Result<Pool, PoolError> {
        let raw: RawPool = serde_json::from_str(text)
            .map_err(|e| PoolError::Syntax { format: "JSON", message: e.to_string() })?;
        Pool::from_raw(raw)
    }

    /// Parses JSON if the text starts with `{`, TOML otherwise.
    pub fn parse(text: &str) -> Result<Pool, PoolError> {
        if text.trim_start().starts_with('{') {
            Pool::from_json_str(text)
        } else {
            Pool::from_toml_str(text)
        }
    }

    fn from_raw(raw: RawPool) -> Result<Pool, PoolError> {
        let mut host_index = HashMap::new();
        let mut hosts = Vec::with_capacity(raw.host.len());
        for (i, h) in raw.host.into_iter().enumerate() {
            if h.name.is_empty() {
                return Err(PoolError::EmptyName { kind: "host", index: i + 1 });
            }
            if host_index.insert(h.name.clone(), i).is_some() {
                return Err(PoolError::DuplicateHost(h.name));
            }
            let memory_mib = positive("host", &h.name, "memory_mib", h.memory_mib)?;
            let max_vcpus = h.max_vcpus.map(|v| positive("host", &h.name, "max_vcpus", v)).transpose()?;
            hosts.push(Host { name: h.name, memory_mib, max_vcpus, accepts_restarts: true });
        }
        let mut vm_names = HashMap::new();
        let mut vms = Vec::with_capacity(raw.vm.len());
        for (i, v) in raw.vm.into_iter().enumerate() {
            if v.name.is_empty() {
                return Err(PoolError::EmptyName { kind: "vm", index: i + 1 });
            }
            if vm_names.insert(v.name.clone(), i).is_some() {
                return Err(PoolError::DuplicateVm(v.name));
            }
            let memory_mib = positive("vm", &v.name, "memory_mib", v.memory_mib)?;
            let vcpus = positive("vm", &v.name, "vcpus", v.vcpus)?;
            let protection = match v.protection.as_str() {
                "protect" => Protection::Protect,
                "best-effort" => Protection::BestEffort,
                "none" => Protection::None,
                _ => return Err(PoolError::UnknownProtection { vm: v.name, value: v.protection }),
            };
            let host = match v.host {
                None => None,
                Some(h) => match host_index.get(&h) {
                    Some(&i) => Some(i),
                    None => return Err(PoolError::UnknownHost { vm: v.name, host: h }),
                },
            };
            if !hosts.iter().any(|h| h.memory_mib >= memory_mib && h.max_vcpus.is_none_or(|c| c >= vcpus)) {
                return Err(PoolError::VmTooLarge { vm: v.name, memory_mib, vcpus });
            }
            vms.push(Vm {
                name: v.name,
                memory_mib,
                vcpus,
                protection,
                order: v.order,
                host,
                anti_affinity: v.anti_affinity,
            });
        }
        let pool = Pool { hosts, vms };
        pool.check_loads()?;
        Ok(pool)
    }

    /// Checks that the sizes add up to totals the planner can compute with (`MAX_TOTAL`).
    pub fn check_totals(&self) -> Result<(), PoolError> {
        let sum = |it: &mut dyn Iterator<Item = u64>| it.map(u128::from).sum::<u128>();
        let mem = sum(&mut self.hosts.iter().map(|h| h.memory_mib))
            + sum(&mut self.vms.iter().map(|v| v.memory_mib));
        if mem > u128::from(MAX_TOTAL) {
            return Err(PoolError::TotalTooLarge {
                what: "memory sizes (hosts' and VMs')",
                total: mem,
                limit: MAX_TOTAL,
                unit: "MiB",
            });
        }
        let cpu = sum(&mut self.hosts.iter().filter_map(|h| h.max_vcpus))
            + sum(&mut self.vms.iter().map(|v| v.vcpus));
        if cpu > u128::from(MAX_TOTAL) {
            return Err(PoolError::TotalTooLarge {
                what: "vCPU counts (hosts' limits and VMs')",
                total: cpu,
                limit: MAX_TOTAL,
                unit: "vCPUs",
            });
        }
        Ok(())
    }

    /// Checks the totals (`check_totals`) and that no host runs more than its capacity.
    pub fn check_loads(&self) -> Result<(), PoolError> {
        self.check_totals()?;
        let (mem, cpu) = self.used();
        for (h, host) in self.hosts.iter().enumerate() {
            if mem[h] > host.memory_mib {
                return Err(PoolError::HostOverloaded {
                    host: host.name.clone(),
                    used: mem[h],
                    capacity: host.memory_mib,
                    unit: "MiB",
                });
            }
            if let Some(c) = host.max_vcpus {
                if cpu[h] > c {
                    return Err(PoolError::HostOverloaded {
                        host: host.name.clone(),
                        used: cpu[h],
                        capacity: c,
                        unit: "vCPUs",
                    });
                }
            }
        }
        Ok(())
    }

    /// Memory and vCPUs used on each host by the VMs running there (all protection levels).
    /// The room host `h` offers for restarts, given the per-host usage from `used()`. A host
    /// that does not accept restarts offers none.
    pub fn free_bin(&self, h: usize, used_mem: &[u64], used_cpu: &[u64]) -> super::pack::Bin {
        let host = &self.hosts[h];
        if host.accepts_restarts {
            super::pack::Bin {
                memory_mib: host.memory_mib.saturating_sub(used_mem[h]),
                vcpus: host.max_vcpus.map(|c| c.saturating_sub(used_cpu[h])),
                groups: vec![],
            }
        } else {
            super::pack::Bin { memory_mib: 0, vcpus: Some(0), groups: vec![] }
        }
    }

    pub fn used(&self) -> (Vec<u64>, Vec<u64>) {
        let mut mem = vec![0u64; self.hosts.len()];
        let mut cpu = vec![0u64; self.hosts.len()];
        for vm in &self.vms {
            if let Some(h) = vm.host {
                // Saturating: an overloaded host stays overloaded (see `check_loads`).
                mem[h] = mem[h].saturating_add(vm.memory_mib);
                cpu[h] = cpu[h].saturating_add(vm.vcpus);
            }
        }
        (mem, cpu)
    }

    /// Index of the host with this name.
    pub fn host_index(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.name == name)
    }

    /// Index of the VM with this name.
    pub fn vm_index(&self, name: &str) -> Option<usize> {
        self.vms.iter().position(|v| v.name == name)
    }

    /// Whether any host limits vCPUs (capacity is then two-dimensional).
    pub fn has_vcpu_limits(&self) -> bool {
        self.hosts.iter().any(|h| h.max_vcpus.is_some())
    }
}
