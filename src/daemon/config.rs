//! Daemon configuration: a TOML file, every field also a flag (flags win).

use crate::timing::parse_duration_ms;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/diskbeat/diskbeat.toml";
pub const DEFAULT_SOCKET: &str = "/run/diskbeat/diskbeat.sock";

/// What the daemon does to fence this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FenceAction {
    /// Immediate reboot (sysrq 'b'): no sync, no shutdown scripts.
    Reboot,
    /// Run a command (`sh -c`), e.g. to power off through a BMC; the host may survive.
    Exec(String),
    /// Log and mark the record only (tests and dry runs): the host keeps running.
    LogOnly,
}

impl FenceAction {
    pub fn parse(text: &str) -> Result<FenceAction, String> {
        match text {
            "reboot" => Ok(FenceAction::Reboot),
            "log-only" => Ok(FenceAction::LogOnly),
            t if t.starts_with("exec:") && t.len() > 5 => Ok(FenceAction::Exec(t[5..].to_string())),
            t => Err(format!("'{t}' is not a fence action: use reboot, exec:COMMAND or log-only")),
        }
    }
}

/// The file format, and the flags (every field optional here; required ones are checked after
/// merging flags over the file).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub device: Option<PathBuf>,
    pub slot: Option<u32>,
    pub name: Option<String>,
    pub timeout: Option<String>,
    pub socket: Option<PathBuf>,
    pub fence_action: Option<String>,
    pub watchdog: Option<PathBuf>,
    pub engine: Option<crate::io::EngineKind>,
    pub sched_rr: Option<bool>,
    pub mlock: Option<bool>,
    /// This host's heartbeat addresses, `IP:PORT`, one per heartbeat network (at most two).
    pub hb_addrs: Option<Vec<String>>,
    /// Cluster key file (default: the keyring on the heartbeat disk).
    pub key_file: Option<PathBuf>,
    /// Partition weight (default 1).
    pub weight: Option<u32>,
    /// Isolation addresses (IPv4), probed with ICMP echo.
    pub isolation_addrs: Option<Vec<String>>,
    /// VM driver: `libvirt`, `libvirt:URI` or `exec:/path/to/hook` (none: no VM failover here).
    pub vm_driver: Option<String>,
    /// Memory offered to VMs, MiB (default: what the driver reports).
    pub vm_memory_mib: Option<u64>,
    /// vCPUs offered to VMs (default: what the driver reports).
    pub vm_vcpus: Option<u32>,
    /// Take no restarted VMs here (maintenance).
    pub no_restarts_here: Option<bool>,
    /// Warn when the pool tolerates fewer host failures than this.
    pub tolerance_target: Option<u32>,
    /// Prometheus endpoint, `IP:PORT` (none: off; docs/METRICS.md).
    pub metrics_addr: Option<String>,
    /// Fence devices of pool hosts, by host name (`[fence_devices.NAME]`; config file only: its
    /// arguments hold secrets). docs/SAFETY.md, "Fence devices".
    pub fence_devices: Option<std::collections::BTreeMap<String, FenceDeviceFile>>,
    /// Silence on the network and the disk before a peer with a device is powered off (default
    /// T/8).
    pub fence_suspicion: Option<String>,
}

/// One host's fence device in the config file.
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FenceDeviceFile {
    /// A fence-agents agent (`fence_ipmilan`: looked up in /usr/sbin, then PATH) or the path of
    /// any command that speaks the same protocol (an exec device).
    pub agent: String,
    /// Arguments given to the agent on stdin as `key=value` lines, as Pacemaker's fencer does
    /// (never in argv: `ps` would show a BMC password). `action` is diskbeat's to set.
    #[serde(default)]
    pub args: std::collections::BTreeMap<String, toml::Value>,
    /// Abandon a call (`off`, then `status` until OFF) after this long (default: 3 io timeouts,
    /// at least 10 s).
    pub timeout: Option<String>,
}

/// A validated fence device.
#[derive(Clone, PartialEq, Eq)]
pub struct FenceDevice {
    pub agent: PathBuf,
    /// `key=value` argument lines (without `action`).
    pub args: Vec<(String, String)>,
    pub timeout_ms: Option<u64>,
}

impl std::fmt::Debug for FenceDevice {
    // Argument values may be secrets (a BMC password): never logged.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys: Vec<&str> = self.args.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("FenceDevice")
            .field("agent", &self.agent)
            .field("arg_keys", &keys)
            .field("timeout_ms", &self.timeout_ms)
            .finish()
    }
}

/// Finds a fence agent: a path is taken as is, a bare name in /usr/sbin, /usr/local/sbin, then
/// PATH.
pub fn find_agent(agent: &str) -> Result<PathBuf, String> {
    let exec_ok = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if agent.contains('/') {
        let p = PathBuf::from(agent);
        return if exec_ok(&p) { Ok(p) } else { Err(format!("'{agent}' is not an executable file")) };
    }
    if agent.is_empty() || !agent.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
        return Err(format!("'{agent}' is not an agent name (e.g. fence_ipmilan) or a path"));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs =
        ["/usr/sbin", "/usr/local/sbin"].into_iter().map(PathBuf::from).chain(std::env::split_paths(&path));
    for d in dirs {
        let p = d.join(agent);
        if exec_ok(&p) {
            return Ok(p);
        }
    }
    Err(format!(
        "fence agent '{agent}' not found in /usr/sbin, /usr/local/sbin or PATH (install fence-agents)"
    ))
}

/// Validates one `[fence_devices.NAME]` table.
fn fence_device(host: &str, d: FenceDeviceFile) -> Result<FenceDevice, ConfigError> {
    let bad = |reason: String| field("fence_devices", format!("host '{host}': {reason}"));
    crate::format::encode_name(host).map_err(|e| bad(e.to_string()))?;
    let agent = find_agent(&d.agent).map_err(bad)?;
    let mut args = Vec::new();
    for (k, v) in d.args {
        if k.is_empty() || !k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(bad(format!("argument name '{k}' must be letters, digits, '_' or '-'")));
        }
        if k == "action" || k == "option" {
            return Err(bad(format!("'{k}' is set by diskbeat (off, then status): remove it from args")));
        }
        let v = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => if b { "1" } else { "0" }.to_string(),
            other => return Err(bad(format!("argument '{k}' = {other}: use a string, number or boolean"))),
        };
        if v.contains('\n') || v.contains('\r') || v.contains('\0') {
            return Err(bad(format!("argument '{k}' contains a line break or NUL")));
        }
        args.push((k, v));
    }
    let timeout_ms = d
        .timeout
        .as_deref()
        .map(|t| parse_duration_ms(t).map(u64::from).map_err(|e| bad(format!("timeout: {e}"))))
        .transpose()?;
    if timeout_ms == Some(0) {
        return Err(bad("timeout: must be more than 0".into()));
    }
    Ok(FenceDevice { agent, args, timeout_ms })
}

impl FileConfig {
    /// Fields set in `self` win over `other`'s.
    fn or(self, other: FileConfig) -> FileConfig {
        FileConfig {
            device: self.device.or(other.device),
            slot: self.slot.or(other.slot),
            name: self.name.or(other.name),
            timeout: self.timeout.or(other.timeout),
            socket: self.socket.or(other.socket),
            fence_action: self.fence_action.or(other.fence_action),
            watchdog: self.watchdog.or(other.watchdog),
            engine: self.engine.or(other.engine),
            sched_rr: self.sched_rr.or(other.sched_rr),
            mlock: self.mlock.or(other.mlock),
            hb_addrs: self.hb_addrs.or(other.hb_addrs),
            key_file: self.key_file.or(other.key_file),
            weight: self.weight.or(other.weight),
            vm_driver: self.vm_driver.or(other.vm_driver),
            vm_memory_mib: self.vm_memory_mib.or(other.vm_memory_mib),
            vm_vcpus: self.vm_vcpus.or(other.vm_vcpus),
            no_restarts_here: self.no_restarts_here.or(other.no_restarts_here),
            tolerance_target: self.tolerance_target.or(other.tolerance_target),
            isolation_addrs: self.isolation_addrs.or(other.isolation_addrs),
            metrics_addr: self.metrics_addr.or(other.metrics_addr),
            fence_devices: self.fence_devices.or(other.fence_devices),
            fence_suspicion: self.fence_suspicion.or(other.fence_suspicion),
        }
    }
}

/// A validated configuration (the disk-dependent checks come later, before any write).
#[derive(Debug, Clone)]
pub struct Config {
    pub device: PathBuf,
    pub slot: u32,
    pub name: String,
    /// Base timeout, if given: must equal the one the disk was formatted with.
    pub timeout_ms: Option<u32>,
    pub socket: PathBuf,
    pub fence_action: FenceAction,
    pub watchdog: Option<PathBuf>,
    pub engine: crate::io::EngineKind,
    pub sched_rr: bool,
    pub mlock: bool,
    /// Own heartbeat addresses (network i = address i); empty: disk-only heartbeat.
    pub hb_addrs: Vec<std::net::SocketAddr>,
    pub key_file: Option<PathBuf>,
    pub weight: u32,
    pub isolation_addrs: Vec<std::net::Ipv4Addr>,
    pub vm_driver: Option<crate::vm::DriverSpec>,
    pub vm_memory_mib: Option<u64>,
    pub vm_vcpus: Option<u32>,
    pub no_restarts_here: bool,
    pub tolerance_target: Option<u32>,
    /// Where the Prometheus endpoint listens (`None`: off).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Fence devices by host name (docs/SAFETY.md, "Fence devices").
    pub fence_devices: std::collections::BTreeMap<String, FenceDevice>,
    /// Suspicion time, if given (checked against T once the disk is read).
    pub fence_suspicion_ms: Option<u64>,
    /// Test only: take the slot without watching it (lets two daemons share a slot).
    pub unsafe_skip_acquire: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("{field}: {reason}")]
    Field { field: &'static str, reason: String },
    #[error("{0} is required (in the config file or as --{0})")]
    Missing(&'static str),
}

fn field(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Field { field, reason: reason.into() }
}

/// Reads `path` (None: the default path if it exists).
pub fn load_file(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let (path, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
        Err(e) => return Err(ConfigError::File { path: path.display().to_string(), reason: e.to_string() }),
    };
    toml::from_str(&text).map_err(|e| ConfigError::File {
        path: path.display().to_string(),
        reason: e.to_string().trim().to_string(),
    })
}

/// Merges flags over the file and validates every field that does not need the disk.
pub fn resolve(
    file: FileConfig,
    flags: FileConfig,
    unsafe_skip_acquire: bool,
) -> Result<Config, ConfigError> {
    let c = flags.or(file);
    let device = c.device.ok_or(ConfigError::Missing("device"))?;
    let slot = c.slot.ok_or(ConfigError::Missing("slot"))?;
    if slot >= crate::format::MAX_SLOTS {
        return Err(field("slot", format!("{slot} is out of range (0..{})", crate::format::MAX_SLOTS)));
    }
    let name = match c.name {
        Some(n) => n,
        None => nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .ok_or_else(|| field("name", "not given and the hostname is unreadable"))?,
    };
    crate::format::encode_name(&name).map_err(|e| field("name", e.to_string()))?;
    let timeout_ms = match c.timeout {
        None => None,
        Some(t) => {
            let ms = parse_duration_ms(&t).map_err(|e| field("timeout", e))?;
            crate::timing::Timing::from_base(ms).map_err(|e| field("timeout", e.to_string()))?;
            Some(ms)
        }
    };
    let fence_action = FenceAction::parse(c.fence_action.as_deref().unwrap_or("reboot"))
        .map_err(|e| field("fence_action", e))?;
    if let Some(w) = &c.watchdog {
        if !w.exists() {
            return Err(field(
                "watchdog",
                format!("{} does not exist (load a watchdog driver, e.g. softdog)", w.display()),
            ));
        }
    }
    let hb_addrs = c
        .hb_addrs
        .unwrap_or_default()
        .iter()
        .map(|a| {
            let addr: std::net::SocketAddr = a.parse().map_err(|_| {
                field("hb_addr", format!("'{a}' is not IP:PORT (for example 192.168.10.3:7788)"))
            })?;
            crate::format::extent::host_info::HostInfo::new(&[addr])
                .map_err(|e| field("hb_addr", format!("'{a}': {e}")))?;
            Ok(addr)
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    if hb_addrs.len() > crate::core::net::MAX_NETWORKS {
        return Err(field(
            "hb_addr",
            format!(
                "{} addresses given: at most {} heartbeat networks",
                hb_addrs.len(),
                crate::core::net::MAX_NETWORKS
            ),
        ));
    }
    let isolation_addrs = c
        .isolation_addrs
        .unwrap_or_default()
        .iter()
        .map(|a| a.parse().map_err(|_| field("isolation_addr", format!("'{a}' is not an IPv4 address"))))
        .collect::<Result<Vec<std::net::Ipv4Addr>, ConfigError>>()?;
    if !isolation_addrs.is_empty() && hb_addrs.is_empty() {
        return Err(field("isolation_addr", "isolation addresses need network heartbeats (--hb-addr)"));
    }
    let metrics_addr = c
        .metrics_addr
        .as_deref()
        .map(|a| {
            a.parse::<std::net::SocketAddr>().map_err(|_| {
                field("metrics_addr", format!("'{a}' is not IP:PORT (for example 127.0.0.1:9464)"))
            })
        })
        .transpose()?;
    if c.key_file.is_some() && hb_addrs.is_empty() {
        return Err(field("key_file", "a key file needs network heartbeats (--hb-addr)"));
    }
    let fence_devices = c
        .fence_devices
        .unwrap_or_default()
        .into_iter()
        .map(|(host, d)| fence_device(&host, d).map(|d| (host, d)))
        .collect::<Result<std::collections::BTreeMap<_, _>, _>>()?;
    let fence_suspicion_ms = c
        .fence_suspicion
        .as_deref()
        .map(|t| parse_duration_ms(t).map(u64::from).map_err(|e| field("fence_suspicion", e)))
        .transpose()?;
    Ok(Config {
        device,
        slot,
        name,
        timeout_ms,
        socket: c.socket.unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
        fence_action,
        watchdog: c.watchdog,
        engine: c.engine.unwrap_or(crate::io::EngineKind::Auto),
        sched_rr: c.sched_rr.unwrap_or(false),
        mlock: c.mlock.unwrap_or(true),
        hb_addrs,
        key_file: c.key_file,
        weight: c.weight.unwrap_or(1),
        isolation_addrs,
        vm_driver: c
            .vm_driver
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e: String| field("vm_driver", e))?,
        vm_memory_mib: c.vm_memory_mib,
        vm_vcpus: c.vm_vcpus,
        no_restarts_here: c.no_restarts_here.unwrap_or(false),
        tolerance_target: c.tolerance_target,
        metrics_addr,
        fence_devices,
        fence_suspicion_ms,
        unsafe_skip_acquire,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> FileConfig {
        FileConfig {
            device: Some("/dev/x".into()),
            slot: Some(1),
            name: Some("h1".into()),
            ..Default::default()
        }
    }

    #[test]
    fn flags_override_file() {
        let file: FileConfig =
            toml::from_str("device = \"/dev/a\"\nslot = 3\nname = \"f\"\ntimeout = \"2s\"").unwrap();
        let c = resolve(file, FileConfig { slot: Some(5), ..Default::default() }, false).unwrap();
        assert_eq!(
            (c.device.to_str().unwrap(), c.slot, c.name.as_str(), c.timeout_ms),
            ("/dev/a", 5, "f", Some(2000))
        );
        assert_eq!(c.fence_action, FenceAction::Reboot);
    }

    #[test]
    fn errors_name_the_field() {
        let e = |o: FileConfig| resolve(FileConfig::default(), o, false).unwrap_err().to_string();
        assert!(e(FileConfig { device: None, ..base() }).contains("device is required"));
        assert!(e(FileConfig { slot: Some(5000), ..base() }).starts_with("slot:"));
        assert!(e(FileConfig { name: Some("x".repeat(70)), ..base() }).starts_with("name:"));
        assert!(e(FileConfig { timeout: Some("fast".into()), ..base() }).starts_with("timeout:"));
        assert!(e(FileConfig { timeout: Some("10ms".into()), ..base() }).starts_with("timeout:"));
        assert!(e(FileConfig { fence_action: Some("shoot".into()), ..base() }).starts_with("fence_action:"));
        assert!(e(FileConfig { watchdog: Some("/dev/nope".into()), ..base() }).starts_with("watchdog:"));
        let bad: Result<FileConfig, _> = toml::from_str("devise = \"/dev/a\"");
        assert!(bad.unwrap_err().to_string().contains("unknown field"));
        assert_eq!(FenceAction::parse("exec:/bin/true"), Ok(FenceAction::Exec("/bin/true".into())));
        let addrs = |v: &[&str]| Some(v.iter().map(|a| a.to_string()).collect::<Vec<_>>());
        assert!(e(FileConfig { hb_addrs: addrs(&["10.0.0.1"]), ..base() }).starts_with("hb_addr:"));
        assert!(e(FileConfig { hb_addrs: addrs(&["10.0.0.1:0"]), ..base() }).starts_with("hb_addr:"));
        assert!(e(FileConfig { hb_addrs: addrs(&["0.0.0.0:7788"]), ..base() }).starts_with("hb_addr:"));
        let three = addrs(&["10.0.0.1:1", "10.0.0.2:1", "10.0.0.3:1"]);
        assert!(e(FileConfig { hb_addrs: three, ..base() }).contains("at most 2"));
        let iso = addrs(&["10.0.0.254"]);
        assert!(e(FileConfig { isolation_addrs: iso.clone(), ..base() }).contains("need network heartbeats"));
        let bad_iso = addrs(&["gateway"]);
        let hb = addrs(&["10.0.0.1:7788"]);
        assert!(e(FileConfig { hb_addrs: hb.clone(), isolation_addrs: bad_iso, ..base() })
            .starts_with("isolation_addr:"));
        let ok = resolve(
            FileConfig::default(),
            FileConfig { hb_addrs: hb, isolation_addrs: iso, weight: Some(3), ..base() },
            false,
        )
        .unwrap();
        assert_eq!((ok.hb_addrs.len(), ok.isolation_addrs.len(), ok.weight), (1, 1, 3));
        assert!(e(FileConfig { metrics_addr: Some("9464".into()), ..base() }).starts_with("metrics_addr:"));
        assert_eq!(ok.metrics_addr, None, "the metrics endpoint is off by default");
        let file: FileConfig = toml::from_str("metrics_addr = \"127.0.0.1:9464\"").unwrap();
        let on = resolve(file, FileConfig { metrics_addr: Some("[::1]:0".into()), ..base() }, false).unwrap();
        assert_eq!(on.metrics_addr, Some("[::1]:0".parse().unwrap()), "the flag wins over the file");
        let on = resolve(
            FileConfig { metrics_addr: Some("127.0.0.1:9464".into()), ..base() },
            FileConfig::default(),
            false,
        );
        assert_eq!(on.unwrap().metrics_addr, Some("127.0.0.1:9464".parse().unwrap()));
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let text = include_str!("../../tools/diskbeat.toml.example");
        let file: FileConfig = toml::from_str(text).expect("tools/diskbeat.toml.example parses");
        let c = resolve(file, FileConfig::default(), false).unwrap();
        assert_eq!(c.hb_addrs.len(), 2);
        assert_eq!(c.fence_action, FenceAction::Reboot);
    }
}
