//! `fence_diskbeat`: a Pacemaker fence agent following ClusterLabs fence-agents' conventions
//! (arguments as `key=value` lines on stdin or as options, `Status: ON|OFF`, the `metadata` XML,
//! exit 0 success, 1 failure, 2 status OFF), built on the confirmed poison pill of [`crate::fence`].
//!
//! `off` (and `reboot`, the same here: the host's own fence action reboots it) succeeds only on
//! the proof the pool itself needs before restarting a host's VMs elsewhere
//! ([`crate::core::Peer::vms_gone`]): a `fenced` mark acknowledging the request, written after a
//! fence action that stops the host, or silence for the host-dead timeout with a hardware
//! watchdog armed. A clean leave or a log-only fence stops nothing, so it is a failure here: a
//! fencer must never report a node safe that may still run its resources.

use crate::core::{silence_rule, NotProven, Peer, PeerState, SilenceRule};
use crate::disk::{Disk, DiskError};
use crate::fence::{FenceError, FenceReport};
use crate::format::escape_name;
use crate::format::record::{Record, State};
use crate::io::{Access, EngineKind};
use crate::timing::Timing;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The agent's name: the file name Pacemaker runs (a symlink to `diskbeat`).
pub const AGENT_NAME: &str = "fence_diskbeat";

/// The actions of fence-agents' API this agent knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// Fence the host (the same as reboot).
    Off,
    /// Fence the host: its fence action reboots it (the same as off).
    Reboot,
    /// Not supported: a fenced host rejoins by itself when its daemon starts again.
    On,
    /// Whether the host is on (exit 0) or off (exit 2).
    Status,
    /// The device is readable and formatted.
    Monitor,
    /// One line per host on the disk: `NAME,`.
    List,
    /// One line per host: `NAME,,ON|OFF`.
    ListStatus,
    /// The agent's description as XML (fence-agents' schema).
    Metadata,
    /// The options parse and the device exists.
    ValidateAll,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Off => "off",
            Action::Reboot => "reboot",
            Action::On => "on",
            Action::Status => "status",
            Action::Monitor => "monitor",
            Action::List => "list",
            Action::ListStatus => "list-status",
            Action::Metadata => "metadata",
            Action::ValidateAll => "validate-all",
        }
    }

    pub const ALL: [Action; 9] = [
        Action::On,
        Action::Off,
        Action::Reboot,
        Action::Status,
        Action::List,
        Action::ListStatus,
        Action::Monitor,
        Action::Metadata,
        Action::ValidateAll,
    ];

    pub fn parse(s: &str) -> Result<Action, AgentError> {
        Action::ALL.into_iter().find(|a| a.name() == s).ok_or_else(|| AgentError::BadAction(s.to_string()))
    }
}

/// What the agent was asked, from stdin or from the command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// fence-agents' default is `reboot`.
    pub action: Option<Action>,
    /// `plug=` (or its old name `port=`).
    pub plug: Option<String>,
    /// `nodename=`: Pacemaker names the target this way too; `plug` wins when both are given.
    pub nodename: Option<String>,
    /// `devices=` (or `device=`): the heartbeat device.
    pub devices: Option<String>,
    /// `verbose=`: progress on stderr. Off by default: Pacemaker logs an agent's stderr as
    /// warnings, on success too.
    pub verbose: bool,
}

impl Request {
    pub fn action(&self) -> Action {
        self.action.unwrap_or(Action::Reboot)
    }

    /// The host the action is about.
    pub fn target(&self) -> Result<&str, AgentError> {
        self.plug.as_deref().or(self.nodename.as_deref()).ok_or(AgentError::MissingPlug(self.action().name()))
    }

    /// The one heartbeat device (`devices` is a comma-separated list in fence-agents; diskbeat
    /// has a single heartbeat disk).
    pub fn device(&self) -> Result<PathBuf, AgentError> {
        let list: Vec<&str> = self
            .devices
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .collect();
        match list[..] {
            [] => Err(AgentError::MissingDevice),
            [one] => Ok(PathBuf::from(one)),
            _ => Err(AgentError::TooManyDevices(list.len())),
        }
    }
}

/// Parses the `key=value` lines Pacemaker's fencer writes on the agent's stdin, as fence-agents
/// do: blank lines and `#` comments skipped, `-` and `_` alike in keys, a value's surrounding
/// double quotes removed, unknown keys ignored. Returns the request and one note per ignored line
/// (for stderr).
pub fn parse_stdin(text: &str) -> Result<(Request, Vec<String>), AgentError> {
    let mut req = Request::default();
    let mut notes = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = line.split_once('=').unwrap_or((line, ""));
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        // An empty value leaves the option unset, as if the line were absent.
        let value = (!value.is_empty()).then(|| value.to_string());
        match key.trim().replace('-', "_").as_str() {
            // `option` is fence-agents' old name for `action`.
            "action" | "option" => req.action = value.as_deref().map(Action::parse).transpose()?,
            "plug" | "port" => req.plug = value,
            "nodename" => req.nodename = value,
            "devices" | "device" => req.devices = value,
            // fence-agents' booleans: present (any value but off/false/0) is on.
            "verbose" => {
                req.verbose = !matches!(
                    value.as_deref().map(str::to_ascii_lowercase).as_deref(),
                    Some("0" | "false" | "off" | "no")
                )
            }
            "verbose_level" | "quiet" | "debug" | "debug_file" => {}
            _ => notes.push(format!("Parse error: Ignoring unknown option '{line}'")),
        }
    }
    Ok((req, notes))
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(
        "unknown action '{0}': use on, off, reboot, status, list, list-status, monitor, metadata or \
         validate-all"
    )]
    BadAction(String),
    #[error("no heartbeat device: give devices=/dev/... (on the command line: --devices DEVICE)")]
    MissingDevice,
    #[error("{0} devices given: diskbeat uses one heartbeat disk, give only it in devices=")]
    TooManyDevices(usize),
    #[error("{0}: {1} does not exist")]
    NoDevice(&'static str, String),
    #[error("action {0} needs the host: give plug=NODE (on the command line: -n NODE)")]
    MissingPlug(&'static str),
    #[error(
        "action on is not supported: a host fenced through diskbeat rebooted itself (its fence \
         action), and rejoins when its daemon starts again; nothing here powers a host on"
    )]
    OnUnsupported,
    #[error("'{}' is not on the heartbeat disk: no slot's record names it (hosts: {known}){unreadable}",
        escape_name(.plug))]
    UnknownHost { plug: String, known: String, unreadable: String },
    #[error("'{}' is named by the records of slots {slots:?}: fence by slot (plug=slotN)", escape_name(.plug))]
    Ambiguous { plug: String, slots: Vec<u32> },
    #[error(
        "slot {slot} ('{}') is NOT proven off: {}; fence it another way (a further fencing level) or \
         check it by hand", escape_name(.name), .why.text()
    )]
    NotProven { slot: u32, name: String, why: NotProven },
    #[error("cannot tell whether slot {slot} ('{}') is on or off: {reason}", escape_name(.name))]
    PowerUnknown { slot: u32, name: String, reason: String },
    #[error(transparent)]
    Fence(#[from] FenceError),
    #[error(transparent)]
    Disk(#[from] DiskError),
    #[error(transparent)]
    Timing(#[from] crate::timing::TimingError),
}

/// Whether a host is on or off, as fence agents say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    On,
    Off,
}

impl Power {
    pub fn as_str(self) -> &'static str {
        match self {
            Power::On => "ON",
            Power::Off => "OFF",
        }
    }
}

/// A slot whose record names a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub slot: u32,
    pub name: String,
    pub state: State,
}

/// What one read of the record table says: the hosts on it, and the slots that could not be read
/// or are corrupt (a host may hide there).
#[derive(Debug, Clone, Default)]
pub struct Table {
    pub hosts: Vec<Host>,
    pub unusable: Vec<(u32, String)>,
    pub slot_count: u32,
}

/// The heartbeat disk, opened read-only, with its timing.
pub struct Device {
    pub disk: Disk,
    pub timing: Timing,
}

impl Device {
    pub fn open(path: &Path, engine: EngineKind) -> Result<Device, AgentError> {
        let disk = Disk::open(path, Access::ReadOnly, engine, None)?;
        let timing = Timing::from_base(disk.superblock().base_timeout_ms)?;
        Ok(Device { disk, timing })
    }

    /// One sweep: every slot whose record names a host (free slots aside).
    pub fn table(&mut self) -> Result<Table, AgentError> {
        self.disk.sweep(self.timing.io_timeout())?;
        let mut t = Table { slot_count: self.disk.superblock().layout.slot_count, ..Table::default() };
        for (slot, view) in self.disk.snapshot().into_iter().enumerate() {
            let slot = slot as u32;
            match view {
                crate::disk::SlotView::Record(r) if r.state == State::Free => {}
                crate::disk::SlotView::Record(r) => {
                    t.hosts.push(Host { slot, name: r.host_name().to_string(), state: r.state })
                }
                crate::disk::SlotView::Corrupt(c) => t.unusable.push((slot, c.to_string())),
                crate::disk::SlotView::Unreadable(s) => {
                    t.unusable.push((slot, crate::inspect::status_reason(s)))
                }
            }
        }
        Ok(t)
    }

    /// Watches `slots` until each is known on or off, as [`crate::fence`] judges a record: one
    /// that says `fenced`, `left` or `free` is off at once; one that advances is on (`live`,
    /// `joining`, and `self_fencing` still writing); one unchanged for the host-dead timeout
    /// between two of our successful reads is off (dead). Each slot's answer is `Err(reason)`
    /// when its record stays corrupt or unreadable, or goes silent without that silence being
    /// evidence (a network-enabled host may be riding through a heartbeat-disk outage).
    pub fn power(&mut self, slots: &[u32]) -> Result<Vec<Result<Power, String>>, AgentError> {
        let start = Instant::now();
        let now_ms = || start.elapsed().as_millis() as u64;
        let t = self.timing;
        let sb = self.disk.superblock().clone();
        let mut peers = vec![Peer::default(); slots.len()];
        let mut last_problem = vec![String::new(); slots.len()];
        let mut out: Vec<Option<Result<Power, String>>> = vec![None; slots.len()];
        // Watch for the longest silence that can count for the slots seen (a capped ride is
        // longer), plus a read's worth.
        let mut longest_dead_ms = u64::from(t.host_dead_ms);
        loop {
            let s = now_ms();
            self.disk.sweep(t.io_timeout())?;
            let e = now_ms();
            for (i, &slot) in slots.iter().enumerate() {
                if out[i].is_some() {
                    continue;
                }
                let peer = &mut peers[i];
                let read = match self.disk.slot_bytes(slot) {
                    Err(status) => {
                        peer.read_failed();
                        last_problem[i] = crate::inspect::status_reason(status);
                        continue;
                    }
                    Ok(bytes) => Record::validate(bytes, &sb.cluster_uuid, slot),
                };
                let (f, st, m) = match read {
                    Ok(raw) => {
                        last_problem[i].clear();
                        (raw.flags.get(), raw.state(), raw.members())
                    }
                    Err(c) => {
                        last_problem[i] = format!("corrupt: {c}");
                        (peer.flags, peer.record_state, peer.members)
                    }
                };
                // A tool holds no slot: the same rule `diskbeat fence` applies to silence.
                let rule = silence_rule(f, st, m, sb.layout.slot_count, None);
                let dead_ms = match rule {
                    SilenceRule::Capped => u64::from(t.host_dead_ms) + t.ride_max_ms(),
                    _ => u64::from(t.host_dead_ms),
                };
                longest_dead_ms = longest_dead_ms.max(dead_ms);
                peer.observe(read, s, e, dead_ms, t.read_gap_ms(), rule != SilenceRule::NotListed);
                out[i] = match peer.state {
                    // Unchanged but unreadable as a record: who holds it cannot be known.
                    PeerState::Dead if peer.corruption.is_some() => Some(Err(last_problem[i].clone())),
                    PeerState::Free | PeerState::Leaving | PeerState::Fenced | PeerState::Dead => {
                        Some(Ok(Power::Off))
                    }
                    PeerState::Live | PeerState::SelfFencing => Some(Ok(Power::On)),
                    PeerState::Silent => Some(Err(NotProven::NotListed.text())),
                    PeerState::Unknown | PeerState::Unread | PeerState::Corrupt => None,
                };
            }
            if out.iter().all(Option::is_some) {
                break;
            }
            if now_ms() > longest_dead_ms + 2 * u64::from(t.io_timeout_ms) {
                for (o, why) in out.iter_mut().zip(last_problem) {
                    if o.is_none() {
                        let why = if why.is_empty() {
                            "its record neither advanced nor aged out".into()
                        } else {
                            why
                        };
                        *o = Some(Err(why));
                    }
                }
                break;
            }
            std::thread::sleep(t.interval());
        }
        Ok(out.into_iter().map(|o| o.expect("every slot answered")).collect())
    }
}

/// The slot `plug` names: the slot whose record carries that host name (the daemon's `--name`,
/// Pacemaker's node name); among several, the one still heartbeating (`joining`, `live`,
/// `self_fencing`) if exactly one is. A plug no record names may be a slot: `slotN` or `N`.
pub fn resolve(table: &Table, plug: &str) -> Result<u32, AgentError> {
    let named: Vec<&Host> = table.hosts.iter().filter(|h| h.name == plug).collect();
    let running: Vec<&&Host> = named
        .iter()
        .filter(|h| matches!(h.state, State::Joining | State::Live | State::SelfFencing))
        .collect();
    match (&named[..], &running[..]) {
        (_, [one]) => return Ok(one.slot),
        ([one], []) => return Ok(one.slot),
        ([], _) => {}
        _ => {
            return Err(AgentError::Ambiguous {
                plug: plug.into(),
                slots: named.iter().map(|h| h.slot).collect(),
            })
        }
    }
    if let Ok(slot) = plug.strip_prefix("slot").unwrap_or(plug).parse::<u32>() {
        if slot < table.slot_count {
            return Ok(slot);
        }
    }
    let mut known: Vec<String> = Vec::new();
    for h in &table.hosts {
        let name = escape_name(&h.name).into_owned();
        if !known.contains(&name) {
            known.push(name);
        }
    }
    let known = if known.is_empty() { "none".to_string() } else { known.join(", ") };
    let unreadable = if table.unusable.is_empty() {
        String::new()
    } else {
        let slots: Vec<String> = table.unusable.iter().map(|(s, why)| format!("{s} ({why})")).collect();
        format!("; slots that cannot be read, where it may be: {}", slots.join(", "))
    };
    Err(AgentError::UnknownHost { plug: plug.into(), known, unreadable })
}

/// `off` and `reboot`: resolves `plug`, fences its slot through the mailbox
/// ([`crate::fence::fence`]) and succeeds only if the host is proven stopped (see the module
/// doc).
pub fn off(
    path: &Path,
    plug: &str,
    engine: EngineKind,
    progress: &mut dyn FnMut(&str),
) -> Result<FenceReport, AgentError> {
    let mut dev = Device::open(path, engine)?;
    let table = dev.table()?;
    let slot = resolve(&table, plug)?;
    let by_name = table.hosts.iter().any(|h| h.slot == slot && h.name == plug);
    drop(dev);
    // `fence` reads the slot again: it must still be the host asked about when the request is
    // written, or nothing is.
    let r = crate::fence::fence_host(path, slot, by_name.then_some(plug), engine, progress)?;
    match r.why_not {
        None if r.vms_gone => Ok(r),
        why => Err(AgentError::NotProven { slot, name: r.host_name, why: why.unwrap_or(NotProven::NoHost) }),
    }
}

/// The agent's description in fence-agents' metadata schema (what `pcs stonith describe` and
/// Pacemaker's fencer read).
pub fn metadata() -> String {
    let param = |name: &str, required: bool, extra: &str, getopt: &str, default: Option<&str>, desc: &str| {
        let default = default.map(|d| format!(" default=\"{d}\"")).unwrap_or_default();
        format!(
            "\t<parameter name=\"{name}\" unique=\"0\" required=\"{}\"{extra}>\n\
             \t\t<getopt mixed=\"{getopt}\" />\n\
             \t\t<content type=\"{}\"{default}  />\n\
             \t\t<shortdesc lang=\"en\">{desc}</shortdesc>\n\
             \t</parameter>\n",
            u8::from(required),
            if matches!(name, "help" | "version" | "verbose") { "boolean" } else { "string" },
        )
    };
    let plug_desc = "The host to fence: its diskbeat name (the daemon's --name, equal to its Pacemaker \
                     node name), or slotN";
    let mut xml = String::from("<?xml version=\"1.0\" ?>\n");
    xml.push_str(&format!(
        "<resource-agent name=\"{AGENT_NAME}\" shortdesc=\"Fence agent for diskbeat heartbeat disks \
         (confirmed poison pill)\" >\n"
    ));
    xml.push_str(
        "<longdesc>fence_diskbeat fences a host through its slot on a diskbeat heartbeat disk: it writes \
         a fence request into the slot's mailbox, and the host's diskbeat daemon fences itself with \
         its fence action (reboot by default). Unlike fence_sbd, which reports success once msgwait \
         has passed, off and reboot succeed only on proof read from the disk: the host's record says \
         fenced, acknowledging this request, after a fence action that stops the host; or the record \
         stayed unchanged for the host-dead timeout with a hardware watchdog armed. A host whose \
         daemon left cleanly, or whose fence action is log-only, is not proven off: the action \
         fails. reboot is the same as off: the poison pill makes the host fence itself, and its \
         fence action reboots it; its daemon rejoins when it starts again. on is not supported. \
         off and reboot wait at most 2.25 times the disk's base timeout T (40 s by default): set \
         pcmk_off_timeout and pcmk_reboot_timeout above that. status reports ON for a host whose \
         record advances, OFF for one fenced, left or silent for the host-dead timeout.</longdesc>\n",
    );
    xml.push_str("<vendor-url></vendor-url>\n<parameters>\n");
    xml.push_str(&param("action", true, "", "-o, --action=[action]", Some("reboot"), "Fencing action"));
    xml.push_str(&param(
        "devices",
        true,
        "",
        "--devices=[device]",
        None,
        "The diskbeat heartbeat device (one path, e.g. /dev/mapper/hb-lun)",
    ));
    xml.push_str(&param("plug", true, " obsoletes=\"port\"", "-n, --plug=[id]", None, plug_desc));
    xml.push_str(&param("port", true, " deprecated=\"1\"", "-n, --plug=[id]", None, plug_desc));
    xml.push_str(&param(
        "nodename",
        false,
        "",
        "--nodename=[name]",
        None,
        "The host to fence when no plug is given (Pacemaker passes the target's node name)",
    ));
    xml.push_str(&param(
        "verbose",
        false,
        "",
        "-v, --verbose",
        None,
        "Progress on stderr (off: stderr only on failure)",
    ));
    xml.push_str(&param("version", false, "", "-V, --version", None, "Display version information and exit"));
    xml.push_str(&param("help", false, "", "-h, --help", None, "Display help and exit"));
    xml.push_str("</parameters>\n<actions>\n");
    for a in Action::ALL {
        // Pacemaker never calls `on` by itself (no unfencing): it is unsupported.
        let extra = if a == Action::On { " automatic=\"0\"" } else { " " };
        xml.push_str(&format!("\t<action name=\"{}\"{extra}/>\n", a.name()));
    }
    xml.push_str("</actions>\n</resource-agent>\n");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdin_as_the_fencer_writes_it() {
        let text = "# from pacemaker-fenced\n\naction=off\nport=n1\nnodename=n1\n\
                    devices=\"/dev/mapper/hb\"\npcmk_bogus=1\ncolour=blue\n";
        let (r, notes) = parse_stdin(text).unwrap();
        assert_eq!(r.action(), Action::Off);
        assert_eq!(r.target().unwrap(), "n1");
        assert_eq!(r.device().unwrap(), PathBuf::from("/dev/mapper/hb"));
        assert_eq!(
            notes,
            [
                "Parse error: Ignoring unknown option 'pcmk_bogus=1'",
                "Parse error: Ignoring unknown option 'colour=blue'"
            ]
        );
        // plug wins over nodename, keys with '-' or '_' alike, `option` is `action`.
        let (r, _) = parse_stdin("option=list-status\nnodename=a\nplug=b\ndevice=/dev/x").unwrap();
        assert_eq!((r.action(), r.target().unwrap()), (Action::ListStatus, "b"));
        assert_eq!(r.device().unwrap(), PathBuf::from("/dev/x"));
        let (r, _) = parse_stdin("action=validate-all").unwrap();
        assert_eq!(r.action(), Action::ValidateAll);
        // Defaults and errors.
        let (r, _) = parse_stdin("").unwrap();
        assert_eq!(r.action(), Action::Reboot);
        assert!(matches!(r.target(), Err(AgentError::MissingPlug("reboot"))));
        assert!(matches!(r.device(), Err(AgentError::MissingDevice)));
        let (r, _) = parse_stdin("devices=/dev/a,/dev/b").unwrap();
        assert!(matches!(r.device(), Err(AgentError::TooManyDevices(2))));
        assert!(matches!(parse_stdin("action=explode"), Err(AgentError::BadAction(_))));
        let (r, _) = parse_stdin("plug=").unwrap();
        assert_eq!(r.plug, None);
    }

    #[test]
    fn plugs_resolve_to_slots() {
        let h = |slot, name: &str, state| Host { slot, name: name.into(), state };
        let t = Table {
            hosts: vec![
                h(0, "n0", State::Live),
                h(1, "n1", State::Fenced),
                h(3, "n1", State::Live),
                h(4, "7", State::Leaving),
            ],
            unusable: vec![(5, "corrupt".into())],
            slot_count: 8,
        };
        assert_eq!(resolve(&t, "n0").unwrap(), 0);
        assert_eq!(resolve(&t, "n1").unwrap(), 3, "the running one of two");
        assert_eq!(resolve(&t, "7").unwrap(), 4, "a name before a slot number");
        assert_eq!(resolve(&t, "slot6").unwrap(), 6);
        assert_eq!(resolve(&t, "2").unwrap(), 2);
        let e = resolve(&t, "n9").unwrap_err().to_string();
        assert!(e.contains("'n9' is not on the heartbeat disk") && e.contains("(hosts: n0, n1, 7)"), "{e}");
        assert!(e.contains("5 (corrupt)"), "{e}");
        assert!(resolve(&t, "slot8").is_err());
        let t2 = Table { hosts: vec![h(0, "x", State::Live), h(1, "x", State::Live)], ..t.clone() };
        assert!(matches!(resolve(&t2, "x"), Err(AgentError::Ambiguous { .. })));
    }

    #[test]
    fn metadata_lists_every_action_and_parameter() {
        let m = metadata();
        for a in Action::ALL {
            assert!(m.contains(&format!("<action name=\"{}\"", a.name())), "{a:?}");
        }
        for p in ["action", "plug", "port", "nodename", "devices"] {
            assert!(m.contains(&format!("<parameter name=\"{p}\"")), "{p}");
        }
        assert!(!m.contains('&'));
    }
}
