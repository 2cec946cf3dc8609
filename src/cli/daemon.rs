//! `diskbeat daemon`: the per-host heartbeat agent.

use super::{CliError, CliResult};
use crate::daemon::config::{load_file, resolve, FileConfig};
use crate::io::EngineKind;
use std::path::PathBuf;

/// Run the heartbeat daemon for this host (foreground).
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Every field of the config file (TOML, default /etc/diskbeat/diskbeat.toml) is also a flag; flags win.

  device = \"/dev/mapper/hb-lun\"
  slot = 3
  name = \"hv-03\"
  fence_action = \"reboot\"        # reboot | exec:COMMAND | log-only
  socket = \"/run/diskbeat/diskbeat.sock\"
  # timeout = \"40s\"              # optional: must equal the disk's base timeout
  # watchdog = \"/dev/watchdog\"
  hb_addrs = [\"192.168.10.3:7788\", \"10.0.0.3:7788\"]   # one per heartbeat network (max 2)
  # isolation_addrs = [\"192.168.10.1\"]  # e.g. the gateway; pinged every interval
  # weight = 1
  # key_file = \"/etc/diskbeat/cluster.key\"  # default: the keyring on the heartbeat disk
  # metrics_addr = \"127.0.0.1:9464\"  # Prometheus endpoint, GET /metrics (off by default)
  # fence_suspicion = \"5s\"       # default T/8
  # [fence_devices.hv-04]          # a peer's BMC/PDU (fence-agents): powered off when silent
  # agent = \"fence_ipmilan\"        # args go to the agent on stdin, never in argv
  # args = { ip = \"10.1.0.4\", username = \"admin\", password = \"...\", lanplus = 1 }

Timing comes from the base timeout T the disk was formatted with: heartbeat every T/20, io
timeout T/4, self-fence after T/2 without a successful cycle, peers dead after T (docs/SAFETY.md).

Examples:
  diskbeat daemon --config /etc/diskbeat/diskbeat.toml
  diskbeat daemon --device /dev/loop0 --slot 0 --name hv-00 --fence-action log-only --socket /tmp/hb0.sock

The default fence action is `reboot` (immediate, via sysrq): use `log-only` only for tests.
A fence action counts only when it succeeds (exec: exit status 0 within the io timeout); a failed
one is retried every interval, shown in the record and in `status`, and escalated to the watchdog.

Exit status: 0 left cleanly (SIGTERM/SIGINT), 1 refused (slot in use, storage, disk changed),
2 bad config (nothing written), 3 stopped after self-fencing, 4 stopped while the fence action
kept failing (the host was NOT fenced; the watchdog, if any, stays armed).")]
pub struct Args {
    /// Config file (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Heartbeat device.
    #[arg(long)]
    pub device: Option<PathBuf>,
    /// This host's slot.
    #[arg(long)]
    pub slot: Option<u32>,
    /// This host's name (default: the hostname).
    #[arg(long)]
    pub name: Option<String>,
    /// Base timeout (40s, 2s, 500ms); must match the disk's.
    #[arg(long)]
    pub timeout: Option<String>,
    /// Control socket path.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// reboot (default) | exec:COMMAND | log-only.
    #[arg(long)]
    pub fence_action: Option<String>,
    /// Hardware watchdog device to arm and feed.
    #[arg(long)]
    pub watchdog: Option<PathBuf>,
    /// I/O engine.
    #[arg(long, value_enum)]
    pub engine: Option<EngineKind>,
    /// Run the heartbeat under SCHED_RR (real-time) scheduling.
    #[arg(long)]
    pub sched_rr: bool,
    /// Do not lock memory (mlockall).
    #[arg(long)]
    pub no_mlock: bool,
    /// This host's heartbeat address on one network, IP:PORT (repeat for a second network).
    /// Published on the heartbeat disk: peers find it there. Without any: disk-only heartbeat.
    #[arg(long = "hb-addr", value_name = "IP:PORT")]
    pub hb_addr: Vec<String>,
    /// Cluster key file (mode 600) instead of the keyring on the heartbeat disk.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// Partition weight: breaks ties between equal-size parts (default 1).
    #[arg(long)]
    pub weight: Option<u32>,
    /// An address to ping (IPv4, repeatable): a host that reaches none of its isolation
    /// addresses loses an equal split (VMware HA's isolation address).
    #[arg(long = "isolation-addr", value_name = "IP")]
    pub isolation_addr: Vec<String>,
    /// VM driver for failover: `libvirt` (qemu:///system), `libvirt:URI`, or `exec:/path/to/hook`
    /// (docs/VMS.md). Without one this host runs no failover: it publishes no VMs and takes no
    /// restarts (it still coordinates if it has the lowest live slot).
    #[arg(long, value_name = "SPEC")]
    pub vm_driver: Option<String>,
    /// Memory offered to restarted and running VMs, MiB (default: what the driver reports).
    #[arg(long, value_name = "MIB")]
    pub vm_memory_mib: Option<u64>,
    /// vCPUs offered to VMs, also above the host's CPUs (overcommit); default: the CPUs the
    /// driver reports, a hard limit.
    #[arg(long, value_name = "N")]
    pub vm_vcpus: Option<u32>,
    /// Take no restarted VMs on this host (maintenance); its own VMs stay protected.
    #[arg(long)]
    pub no_restarts_here: bool,
    /// Warn in status when the pool tolerates fewer host failures than this.
    #[arg(long, value_name = "K")]
    pub tolerance_target: Option<u32>,
    /// Serve Prometheus metrics at http://IP:PORT/metrics (off by default; port 0: any free
    /// port, shown in `diskbeat status`). docs/METRICS.md lists them.
    #[arg(long, value_name = "IP:PORT")]
    pub metrics_addr: Option<String>,
    /// How long a peer that has a fence device (`[fence_devices.NAME]` in the config file) must
    /// be silent on the network AND unchanged on the disk before the coordinator powers it off
    /// (default and least T/8, below T). docs/SAFETY.md, "Fence devices".
    #[arg(long, value_name = "DURATION")]
    pub fence_suspicion: Option<String>,
    /// TESTS ONLY: take the slot without watching it first (breaks slot-ownership safety).
    /// Exists only in test builds (cargo feature `test-hooks`).
    #[cfg(feature = "test-hooks")]
    #[arg(long, hide = true)]
    pub unsafe_skip_acquire: bool,
}

pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false);
    // journald timestamps lines itself.
    let _ = if journald { builder.without_time().try_init() } else { builder.try_init() };
}

pub fn run(args: Args) -> CliResult {
    init_logging();
    let file = load_file(args.config.as_deref()).map_err(|e| CliError::usage(e.to_string()))?;
    let flags = FileConfig {
        device: args.device,
        slot: args.slot,
        name: args.name,
        timeout: args.timeout,
        socket: args.socket,
        fence_action: args.fence_action,
        watchdog: args.watchdog,
        engine: args.engine,
        sched_rr: args.sched_rr.then_some(true),
        mlock: args.no_mlock.then_some(false),
        hb_addrs: (!args.hb_addr.is_empty()).then_some(args.hb_addr),
        key_file: args.key_file,
        weight: args.weight,
        isolation_addrs: (!args.isolation_addr.is_empty()).then_some(args.isolation_addr),
        vm_driver: args.vm_driver,
        vm_memory_mib: args.vm_memory_mib,
        vm_vcpus: args.vm_vcpus,
        no_restarts_here: args.no_restarts_here.then_some(true),
        tolerance_target: args.tolerance_target,
        metrics_addr: args.metrics_addr,
        fence_devices: None,
        fence_suspicion: args.fence_suspicion,
    };
    #[cfg(feature = "test-hooks")]
    let skip_acquire = args.unsafe_skip_acquire;
    #[cfg(not(feature = "test-hooks"))]
    let skip_acquire = false;
    let cfg = resolve(file, flags, skip_acquire).map_err(|e| CliError::usage(e.to_string()))?;
    crate::daemon::run(cfg).map_err(|e| CliError { code: e.exit_code(), message: e.to_string(), hint: None })
}
