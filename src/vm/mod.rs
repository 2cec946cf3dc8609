//! VM drivers: the one interface the failover code uses to see and act on the VMs of this host.
//!
//! Two drivers: [`libvirt`] (the libvirt API through the `virt` crate) and [`exec`] (a hook command
//! with a JSON protocol on stdout, docs/VMS.md). Protection settings travel with the VM's own
//! definition (libvirt: a `diskbeat` element in the domain metadata; exec: the hook stores them).

pub mod exec;
#[cfg(feature = "libvirt")]
pub mod libvirt;

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

/// What the driver reports in one poll.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    pub capacity: Capacity,
    pub vms: Vec<VmInfo>,
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
    #[error("no VM named '{0}' on this host")]
    NoSuchVm(String),
    /// The hypervisor refused or failed the operation.
    #[error("{op} '{vm}' failed: {message}")]
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
    /// Capacity and every VM defined on this host, with definitions and protection settings.
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
    /// Opens the driver (connects to libvirt; checks the hook exists and is executable).
    pub fn open(&self) -> Result<Box<dyn VmDriver>, DriverError> {
        match self {
            #[cfg(feature = "libvirt")]
            DriverSpec::Libvirt { uri } => Ok(Box::new(libvirt::LibvirtDriver::open(uri)?)),
            #[cfg(not(feature = "libvirt"))]
            DriverSpec::Libvirt { .. } => Err(DriverError::Unreachable(LIBVIRT_NOT_BUILT.into())),
            DriverSpec::Exec { hook } => Ok(Box::new(exec::ExecDriver::new(hook)?)),
        }
    }
}
