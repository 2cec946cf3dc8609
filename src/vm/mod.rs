//! VM drivers: the one interface the failover code uses to see and act on the VMs of this host.
//!
//! Two drivers: [`libvirt`] (the libvirt API through the `virt` crate) and [`exec`] (a hook command
//! with a JSON protocol on stdout, docs/VMS.md). Protection settings travel with the VM's own
//! definition (libvirt: a `diskbeat` element in the domain metadata; exec: the hook stores them).

pub mod exec;
#[cfg(feature = "libvirt")]
pub mod libvirt;
pub mod timed;

pub use crate::planner::Protection;

/// How hard the pool tries to restart a VM after its host fails, stored in the VM's definition.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProtectionSettings {
    /// `protect`, `best-effort` or `none`.
    #[serde(with = "protection_serde")]
    pub level: Protection,
    /// Restart order (lower first; absent: after every ordered VM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order: Option<i64>,
    /// Anti-affinity group: restarts avoid two VMs of one group on one host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<String>,
}

impl Default for ProtectionSettings {
    /// A VM without settings is not restarted.
    fn default() -> Self {
        ProtectionSettings { level: Protection::None, order: None, anti_affinity: None }
    }
}

/// `"protect"` / `"best-effort"` / `"none"` (the pool file's spelling).
pub mod protection_serde {
    use super::Protection;
    pub fn serialize<S: serde::Serializer>(p: &Protection, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(p.as_str())
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Protection, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown protection level '{text}': use protect, best-effort or none"
            ))
        })
    }
    pub fn parse(text: &str) -> Option<Protection> {
        match text {
            "protect" => Some(Protection::Protect),
            "best-effort" => Some(Protection::BestEffort),
            "none" => Some(Protection::None),
            _ => None,
        }
    }
}

/// Whether a VM runs on this host, as its driver says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmRunState {
    /// Running (or paused, or in any state that holds its resources and could write its disks).
    Running,
    /// Defined here but not running.
    Stopped,
}

/// One VM as the local driver sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInfo {
    pub name: String,
    pub uuid: uuid::Uuid,
    pub memory_mib: u64,
    pub vcpus: u32,
    pub state: VmRunState,
    pub protection: ProtectionSettings,
    /// What a survivor needs to define and start this VM (libvirt: the persistent domain XML with
    /// its diskbeat metadata; exec: the hook's opaque `definition` string).
    pub definition: Vec<u8>,
}

/// What this host offers to VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Capacity {
    pub memory_mib: u64,
    pub vcpus: u32,
}

/// What the driver reports in one poll. Drivers return it only once [`Inventory::check`] passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub capacity: Capacity,
    pub vms: Vec<VmInfo>,
}

impl Inventory {
    /// What every driver's answer must satisfy before diskbeat trusts it (the daemon publishes it
    /// for the pool to act on): names and anti-affinity groups the disk can carry (1 to 255
    /// bytes, no control characters: [`crate::format::host_state::valid_vm_name`]), and no UUID
    /// and no name listed twice. `Err` says which, for a [`DriverError::Protocol`].
    pub fn check(&self) -> Result<(), String> {
        use crate::format::{escape_name, host_state::valid_vm_name};
        let mut uuids = std::collections::HashMap::with_capacity(self.vms.len());
        let mut names = std::collections::HashMap::with_capacity(self.vms.len());
        for v in &self.vms {
            let group = v.protection.anti_affinity.as_deref();
            for (what, text) in [("name", Some(v.name.as_str())), ("anti-affinity group", group)] {
                match text {
                    Some(t) if !valid_vm_name(t) => {
                        return Err(format!(
                            "VM {}: {what} '{}' ({} bytes) is not 1 to 255 bytes without control characters",
                            v.uuid,
                            escape_name(t),
                            t.len()
                        ))
                    }
                    _ => {}
                }
            }
            if let Some(first) = uuids.insert(v.uuid, v.name.as_str()) {
                return Err(format!(
                    "uuid {} listed twice (VMs '{}' and '{}')",
                    v.uuid,
                    escape_name(first),
                    escape_name(&v.name)
                ));
            }
            if let Some(first) = names.insert(v.name.as_str(), v.uuid) {
                return Err(format!(
                    "name '{}' listed twice (uuids {first} and {})",
                    escape_name(&v.name),
                    v.uuid
                ));
            }
        }
        Ok(())
    }
}

/// A VM to start here (a restart of a VM of another host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartRequest<'a> {
    pub name: &'a str,
    pub uuid: uuid::Uuid,
    pub definition: &'a [u8],
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The hypervisor could not be reached (connection refused, daemon down, hook missing).
    #[error("cannot reach the hypervisor: {0}")]
    Unreachable(String),
    /// No VM of that name or UUID on this host.
    #[error("no VM named '{}' on this host", crate::format::escape_name(.0))]
    NoSuchVm(String),
    /// The hypervisor refused or failed the operation. (Display escapes the name, which may come
    /// from the disk; exec hook messages are escaped where they are made.)
    #[error("{op} '{}' failed: {message}", crate::format::escape_name(vm))]
    Failed { op: &'static str, vm: String, message: String },
    /// The driver's answer could not be understood (exec hook output, metadata).
    #[error("the driver's answer is invalid: {0}")]
    Protocol(String),
}

/// The one interface failover uses. Blocking calls; the daemon runs them on its VM thread, never on
/// the heartbeat loop. Every call may fail; none may panic on a dead hypervisor.
pub trait VmDriver: Send {
    /// Short name for logs and status (`libvirt`, `exec`).
    fn kind(&self) -> &'static str;
    /// Capacity and every VM defined on this host, with definitions and protection settings;
    /// [`Inventory::check`] holds (a driver answer that fails it is a [`DriverError::Protocol`]).
    fn inventory(&mut self) -> Result<Inventory, DriverError>;
    /// Defines the VM here from `definition` (replacing a same-UUID definition) and starts it.
    /// Ok only when the hypervisor reports it running.
    fn start(&mut self, vm: &StartRequest<'_>) -> Result<(), DriverError>;
    /// Stops the VM at once (no guest shutdown). Ok if it is not running (or not defined here).
    fn destroy(&mut self, name: &str) -> Result<(), DriverError>;
    /// One VM by UUID, asked when an inventory omitted it: `Ok(Some(state))` defined here,
    /// `Ok(None)` only when the hypervisor says explicitly that no VM with this UUID is defined
    /// here (failover takes that as proof that it does not run here); anything else is an error.
    fn lookup(&mut self, uuid: uuid::Uuid) -> Result<Option<VmRunState>, DriverError>;
    /// Stores protection settings in the VM's own definition (persistent, and live if running).
    fn set_protection(&mut self, name: &str, settings: &ProtectionSettings) -> Result<(), DriverError>;
}

/// Which driver to use, from the config (`vm_driver = "libvirt:URI"` / `"exec:PATH"`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub enum DriverSpec {
    Libvirt { uri: String },
    Exec { hook: std::path::PathBuf },
}

/// Why a `libvirt` driver cannot be used by a diskbeat built without the `libvirt` feature.
pub const LIBVIRT_NOT_BUILT: &str = "this diskbeat was built without the libvirt driver \
    (cargo feature `libvirt`, on by default): rebuild with it, or use exec:/path/to/hook";

/// Whether this binary carries the libvirt driver.
pub const LIBVIRT_BUILT: bool = cfg!(feature = "libvirt");

impl std::str::FromStr for DriverSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<DriverSpec, String> {
        if (s == "libvirt" || s.starts_with("libvirt:")) && !LIBVIRT_BUILT {
            return Err(format!("VM driver '{s}': {LIBVIRT_NOT_BUILT}"));
        }
        if let Some(uri) = s.strip_prefix("libvirt:") {
            Ok(DriverSpec::Libvirt { uri: uri.to_string() })
        } else if s == "libvirt" {
            Ok(DriverSpec::Libvirt { uri: "qemu:///system".to_string() })
        } else if let Some(hook) = s.strip_prefix("exec:") {
            if hook.is_empty() {
                return Err("exec driver needs a hook path: exec:/path/to/hook".into());
            }
            Ok(DriverSpec::Exec { hook: hook.into() })
        } else {
            Err(format!(
                "unknown VM driver '{s}': use libvirt, libvirt:URI (e.g. libvirt:qemu:///system) or exec:/path/to/hook"
            ))
        }
    }
}

impl DriverSpec {
    /// Opens the driver (connects to libvirt; checks the hook exists and is executable), with
    /// the call timeout of the default T ([`exec::DEFAULT_TIMEOUT_MS`]): for tools that know no T.
    pub fn open(&self) -> Result<Box<dyn VmDriver>, DriverError> {
        self.open_with_timeout(exec::DEFAULT_TIMEOUT_MS)
    }

    /// As [`DriverSpec::open`], every call bounded by `timeout_ms` (the daemon's:
    /// `Timing::vm_call_timeout_ms`). The exec driver kills a hook run at the timeout; the
    /// libvirt driver does not take one (docs/VMS.md, "libvirt driver").
    pub fn open_with_timeout(&self, timeout_ms: u64) -> Result<Box<dyn VmDriver>, DriverError> {
        match self {
            #[cfg(feature = "libvirt")]
            DriverSpec::Libvirt { uri } => {
                // libvirt calls have no timeout of their own: every one runs on a worker thread
                // and is abandoned (with its connection) at the deadline.
                let uri = uri.clone();
                Ok(Box::new(timed::TimedDriver::new("libvirt", timeout_ms, move || {
                    Ok(Box::new(libvirt::LibvirtDriver::open(&uri)?) as Box<dyn VmDriver>)
                })?))
            }
            #[cfg(not(feature = "libvirt"))]
            DriverSpec::Libvirt { .. } => Err(DriverError::Unreachable(LIBVIRT_NOT_BUILT.into())),
            DriverSpec::Exec { hook } => Ok(Box::new(exec::ExecDriver::with_timeout_ms(hook, timeout_ms)?)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(name: &str, uuid: u128) -> VmInfo {
        VmInfo {
            name: name.into(),
            uuid: uuid::Uuid::from_u128(uuid),
            memory_mib: 1,
            vcpus: 1,
            state: VmRunState::Running,
            protection: ProtectionSettings::default(),
            definition: vec![],
        }
    }

    #[test]
    fn an_inventory_with_a_uuid_or_a_name_twice_is_refused() {
        let inv = |vms| Inventory { capacity: Capacity { memory_mib: 1, vcpus: 1 }, vms };
        assert_eq!(inv(vec![vm("a", 1), vm("b", 2)]).check(), Ok(()));
        assert_eq!(inv(vec![]).check(), Ok(()));
        let e = inv(vec![vm("a", 1), vm("b", 2), vm("c", 1)]).check().unwrap_err();
        assert!(e.contains("uuid 00000000-0000-0000-0000-000000000001 listed twice"), "{e}");
        let e = inv(vec![vm("a", 1), vm("a", 2)]).check().unwrap_err();
        assert!(e.contains("name 'a' listed twice"), "{e}");
        // Names the disk cannot carry; names in the message are escaped.
        let e = inv(vec![vm("x\u{1b}[2J", 1)]).check().unwrap_err();
        assert!(!e.contains('\u{1b}') && e.contains("name 'x\\u{1b}[2J'"), "{e}");
        for bad in ["", "a\tb", &"n".repeat(256)] {
            assert!(inv(vec![vm(bad, 1)]).check().is_err(), "{bad:?}");
        }
        assert_eq!(inv(vec![vm(&"n".repeat(255), 1), vm("--help", 2), vm("a b 'c'", 3)]).check(), Ok(()));
        let mut grouped = vm("a", 1);
        grouped.protection.anti_affinity = Some(String::new());
        assert!(inv(vec![grouped.clone()]).check().unwrap_err().contains("anti-affinity group ''"));
        grouped.protection.anti_affinity = Some("g\n".into());
        assert!(inv(vec![grouped]).check().is_err());
    }
}
