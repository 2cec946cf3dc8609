//! `fence_diskbeat` / `diskbeat fence-agent`: the Pacemaker fence agent's interface. Its exit
//! status follows fence-agents, not the rest of diskbeat: 0 success, 1 failure (bad options
//! included), 2 `status` says OFF.

use crate::fence_agent::{self, Action, AgentError, Device, Power, Request, AGENT_NAME};
use crate::format::escape_name;
use crate::io::EngineKind;
use clap::{CommandFactory, FromArgMatches};
use std::ffi::OsString;

/// fence-agents' exit statuses.
pub const AGENT_OK: u8 = 0;
pub const AGENT_FAIL: u8 = 1;
pub const AGENT_STATUS_OFF: u8 = 2;

/// Fence agent for Pacemaker (installed as `fence_diskbeat`): fence a host and confirm it.
#[derive(clap::Args, Debug, Default)]
#[command(
    version,
    after_help = "\
Pacemaker runs it as fence_diskbeat (tools/install.sh installs that symlink to diskbeat) with no
options and the arguments on stdin, one key=value a line: action=off, plug=NODE (or port=,
nodename=), devices=/dev/...; blank lines and # comments are skipped, unknown keys ignored with
a note on stderr. Stdin is read only when no option is given.

off and reboot (the same: the host's fence action reboots it) write a fence request into the
host's mailbox and succeed only on proof: its record says fenced, acknowledging the request,
after a fence action that stops the host, or it stayed unchanged for the host-dead timeout with
a hardware watchdog armed. A clean leave or a log-only fence action is not proof: they fail.
They wait at most 2.25 T (the disk's base timeout). on is not supported.
The plug is the host's diskbeat name (the daemon's --name, its Pacemaker node name), or slotN.

Examples:
  pcs stonith create diskbeat-fence fence_diskbeat devices=/dev/mapper/hb-lun pcmk_host_list=\"n0 n1\"
  printf 'action=status\\nplug=n1\\ndevices=/dev/mapper/hb-lun\\n' | fence_diskbeat
  fence_diskbeat -o list --devices /dev/mapper/hb-lun
  diskbeat fence-agent -o off -n n1 --devices /dev/mapper/hb-lun
  fence_diskbeat -o metadata

Exit status (fence-agents'): 0 success (status: ON), 1 failed or bad options, 2 status: OFF."
)]
pub struct Args {
    /// Action: off, reboot, on, status, list, list-status, monitor, metadata, validate-all
    /// (default: reboot).
    #[arg(short = 'o', long, value_enum, value_name = "ACTION", hide_possible_values = true)]
    pub action: Option<Action>,
    /// The host: its diskbeat name (daemon --name, the Pacemaker node name), or slotN.
    #[arg(short = 'n', long, visible_alias = "port", value_name = "NODE")]
    pub plug: Option<String>,
    /// The host when no --plug is given (Pacemaker's nodename=).
    #[arg(long, value_name = "NODE")]
    pub nodename: Option<String>,
    /// The heartbeat device.
    #[arg(long, value_name = "DEVICE")]
    pub devices: Option<String>,
    /// Progress on stderr (without it, stderr says something only when the action fails).
    #[arg(short = 'v', long)]
    pub verbose: bool,
}

impl Args {
    fn request(self) -> Request {
        Request {
            action: self.action,
            plug: self.plug,
            nodename: self.nodename,
            devices: self.devices,
            verbose: self.verbose,
        }
    }
}

// The same options as a command of its own, named as Pacemaker runs it.
#[derive(clap::Parser, Debug)]
#[command(name = AGENT_NAME, about = "Fence agent for Pacemaker on a diskbeat heartbeat disk: fence a host and confirm it")]
struct AgentCli {
    #[command(flatten)]
    args: Args,
}

/// Whether the process runs as the fence agent: argv[0]'s file name is `fence_diskbeat`.
pub fn invoked_as_agent(argv0: Option<&OsString>) -> bool {
    argv0.and_then(|a| std::path::Path::new(a).file_name()).is_some_and(|n| n == AGENT_NAME)
}

/// Runs the agent with `options` (argv after the program or after `fence-agent`); with none,
/// reads the arguments from stdin. Returns the exit status.
pub fn main(bin_name: &str, options: &[OsString]) -> u8 {
    let request = if options.is_empty() {
        let mut text = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut text) {
            return fail(&format!("cannot read the arguments on stdin: {e}"));
        }
        match fence_agent::parse_stdin(&text) {
            Ok((r, notes)) => {
                for n in notes {
                    eprintln!("{AGENT_NAME}: {n}");
                }
                r
            }
            Err(e) => return fail(&e.to_string()),
        }
    } else {
        let cmd = AgentCli::command().name(AGENT_NAME).bin_name(bin_name);
        let argv = std::iter::once(OsString::from(bin_name)).chain(options.iter().cloned());
        match cmd.try_get_matches_from(argv).and_then(|m| Args::from_arg_matches(&m)) {
            Ok(a) => a.request(),
            Err(e) => {
                let _ = e.print();
                // fence-agents exit 1 on bad options (2 means "OFF" to a fencer).
                return if e.use_stderr() { AGENT_FAIL } else { AGENT_OK };
            }
        }
    };
    run_request(request)
}

/// `diskbeat fence-agent` reached through the ordinary parser (`cli::run`).
pub fn run(args: Args) -> u8 {
    run_request(args.request())
}

fn fail(message: &str) -> u8 {
    eprintln!("{AGENT_NAME}: {message}");
    AGENT_FAIL
}

fn run_request(req: Request) -> u8 {
    match act(&req) {
        Ok(code) => code,
        Err(e) => fail(&e.to_string()),
    }
}

fn act(req: &Request) -> Result<u8, AgentError> {
    let engine = EngineKind::Auto;
    match req.action() {
        Action::Metadata => {
            print!("{}", fence_agent::metadata());
            Ok(AGENT_OK)
        }
        Action::On => Err(AgentError::OnUnsupported),
        Action::ValidateAll => {
            let dev = req.device()?;
            if !dev.exists() {
                return Err(AgentError::NoDevice("devices", dev.display().to_string()));
            }
            Ok(AGENT_OK)
        }
        Action::Monitor => {
            let mut d = Device::open(&req.device()?, engine)?;
            let t = d.table()?;
            if req.verbose {
                eprintln!(
                    "{AGENT_NAME}: {}: {} host(s) in {} slots",
                    req.device()?.display(),
                    t.hosts.len(),
                    t.slot_count
                );
            }
            Ok(AGENT_OK)
        }
        Action::List | Action::ListStatus => {
            let mut d = Device::open(&req.device()?, engine)?;
            let t = d.table()?;
            for (slot, why) in &t.unusable {
                eprintln!("{AGENT_NAME}: slot {slot} left out: {why}");
            }
            // One line per host name (a host may have left a record in an old slot too).
            let mut hosts = Vec::new();
            for h in &t.hosts {
                if !hosts.iter().any(|(n, _): &(String, u32)| *n == h.name) {
                    hosts.push((h.name.clone(), fence_agent::resolve(&t, &h.name).unwrap_or(h.slot)));
                }
            }
            if req.action() == Action::List {
                for (name, _) in &hosts {
                    println!("{},", escape_name(name));
                }
                return Ok(AGENT_OK);
            }
            let slots: Vec<u32> = hosts.iter().map(|(_, s)| *s).collect();
            let powers = d.power(&slots)?;
            for ((name, slot), p) in hosts.iter().zip(powers) {
                let p = p.map(Power::as_str).unwrap_or_else(|why| {
                    eprintln!("{AGENT_NAME}: slot {slot} ('{}'): {why}", escape_name(name));
                    "UNKNOWN"
                });
                println!("{},,{p}", escape_name(name));
            }
            Ok(AGENT_OK)
        }
        Action::Status => {
            let plug = req.target()?;
            let mut d = Device::open(&req.device()?, engine)?;
            let t = d.table()?;
            let slot = fence_agent::resolve(&t, plug)?;
            let p = d.power(&[slot])?.remove(0);
            match p {
                Ok(p) => {
                    println!("Status: {}", p.as_str());
                    Ok(if p == Power::On { AGENT_OK } else { AGENT_STATUS_OFF })
                }
                Err(reason) => Err(AgentError::PowerUnknown { slot, name: plug.to_string(), reason }),
            }
        }
        Action::Off | Action::Reboot => {
            let plug = req.target()?;
            let verbose = req.verbose;
            let mut progress = |l: &str| {
                if verbose {
                    eprintln!("{AGENT_NAME}: {l}")
                }
            };
            let r = fence_agent::off(&req.device()?, plug, engine, &mut progress)?;
            let how = match &r.confirmed {
                crate::fence::Confirmed::Fenced => "marked itself fenced, acknowledging the request".into(),
                crate::fence::Confirmed::Stopped { silent_ms } => {
                    format!("stopped heartbeating with a watchdog armed ({silent_ms} ms silent)")
                }
                crate::fence::Confirmed::AlreadyGone { state } => format!("was already {state}"),
                crate::fence::Confirmed::OperatorConfirmed { silent_ms } => {
                    format!("was marked fenced by an operator after {silent_ms} ms of silence")
                }
            };
            if req.verbose {
                eprintln!(
                    "{AGENT_NAME}: slot {} ('{}', generation {}) {how} after {} ms",
                    r.slot,
                    escape_name(&r.host_name),
                    r.generation,
                    r.elapsed_ms
                );
            }
            match (&r.confirmed, req.action()) {
                (crate::fence::Confirmed::AlreadyGone { .. }, _) => println!("Success: Already OFF"),
                (_, Action::Reboot) => println!("Success: Rebooted"),
                _ => println!("Success: Powered OFF"),
            }
            Ok(AGENT_OK)
        }
    }
}
