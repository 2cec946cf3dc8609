//! `diskbeat vm`: the VMs of this host as the VM driver sees them, and their protection settings.

use super::output::{print_json, print_table};
use super::{CliError, CliResult, EXIT_OK};
use crate::vm::{protection_serde, DriverError, DriverSpec, Protection, ProtectionSettings, VmDriver};
use serde_json::json;

/// Environment variable naming the driver when `--driver` is absent.
pub const DRIVER_ENV: &str = "DISKBEAT_VM_DRIVER";

const DRIVER_HELP: &str = "\
Driver (--driver, else $DISKBEAT_VM_DRIVER, else `libvirt`):
  libvirt                 libvirt at qemu:///system
  libvirt:URI             libvirt at URI, e.g. libvirt:qemu+ssh://h2/system
  exec:/path/to/hook      a hook command (docs/VMS.md, \"Exec hook protocol\")";

/// VMs of this host and their protection settings.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: VmCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum VmCommand {
    /// List the VMs defined on this host, with their protection settings.
    #[command(after_help = format!("{DRIVER_HELP}

Examples:
  diskbeat vm list
  diskbeat vm list --driver exec:/usr/local/lib/diskbeat/vm-hook --json

Exit status: 0 listed; 1 the driver failed (hypervisor down, hook error); 2 bad options."))]
    List(ListArgs),
    /// Set how hard the pool restarts a VM after its host fails (stored in the VM's definition).
    #[command(after_help = format!("{DRIVER_HELP}

Levels: protect (always restarted, counts toward the failures tolerated), best-effort (restarted
while capacity remains), none (never restarted). Lower --order restarts first; VMs of one
--anti-affinity group are not restarted onto one host.

Examples:
  diskbeat vm protect db1 --level protect --order 1 --anti-affinity db
  diskbeat vm protect scratch --level none

Exit status: 0 stored; 1 the driver failed; 2 bad options or no such VM."))]
    Protect(ProtectArgs),
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// VM driver spec (see below).
    #[arg(long, value_name = "SPEC")]
    pub driver: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ProtectArgs {
    /// VM name.
    pub name: String,
    /// protect, best-effort or none.
    #[arg(long, value_parser = parse_level)]
    pub level: Protection,
    /// Restart order (lower first).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub order: Option<i64>,
    /// Anti-affinity group.
    #[arg(long, value_name = "GROUP")]
    pub anti_affinity: Option<String>,
    /// VM driver spec (see below).
    #[arg(long, value_name = "SPEC")]
    pub driver: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

fn parse_level(s: &str) -> Result<Protection, String> {
    protection_serde::parse(s).ok_or_else(|| format!("'{s}': use protect, best-effort or none"))
}

pub fn run(args: Args) -> CliResult {
    match args.command {
        VmCommand::List(a) => list(a),
        VmCommand::Protect(a) => protect(a),
    }
}

/// The driver from `--driver`, else the environment, else libvirt at qemu:///system.
fn open(flag: Option<String>) -> Result<Box<dyn VmDriver>, CliError> {
    let (text, from) = match flag {
        Some(s) => (s, "--driver"),
        None => match std::env::var(DRIVER_ENV) {
            Ok(s) if !s.is_empty() => (s, DRIVER_ENV),
            _ => ("libvirt".to_string(), "default"),
        },
    };
    let spec: DriverSpec = text.parse().map_err(|e| CliError::usage(format!("{from}: {e}")))?;
    spec.open().map_err(|e| driver_error(&e, &text))
}

fn driver_error(e: &DriverError, spec: &str) -> CliError {
    match e {
        DriverError::NoSuchVm(_) => CliError::usage(e.to_string()).with_hint("see `diskbeat vm list`"),
        DriverError::Unreachable(_) => CliError::fail(format!("{e} (driver '{spec}')")).with_hint(format!(
            "start the hypervisor, or choose another driver with --driver or ${DRIVER_ENV}"
        )),
        _ => CliError::fail(e.to_string()),
    }
}

fn settings_json(p: &ProtectionSettings) -> serde_json::Value {
    json!({ "level": p.level.as_str(), "order": p.order, "anti_affinity": p.anti_affinity })
}

fn list(args: ListArgs) -> CliResult {
    let spec = args.driver.clone();
    let mut driver = open(args.driver)?;
    let shown = spec.unwrap_or_else(|| driver.kind().to_string());
    let inv = driver.inventory().map_err(|e| driver_error(&e, &shown))?;
    if args.json {
        let vms: Vec<_> = inv
            .vms
            .iter()
            .map(|v| {
                json!({
                    "name": v.name,
                    "uuid": v.uuid.to_string(),
                    "state": v.state,
                    "memory_mib": v.memory_mib,
                    "vcpus": v.vcpus,
                    "protection": settings_json(&v.protection),
                })
            })
            .collect();
        print_json(&json!({ "driver": driver.kind(), "capacity": inv.capacity, "vms": vms }));
        return Ok(EXIT_OK);
    }
    let rows: Vec<Vec<String>> = inv
        .vms
        .iter()
        .map(|v| {
            vec![
                crate::format::escape_name(&v.name).into_owned(),
                v.uuid.to_string(),
                match v.state {
                    crate::vm::VmRunState::Running => "running".into(),
                    crate::vm::VmRunState::Stopped => "stopped".into(),
                },
                format!("{} MiB", v.memory_mib),
                v.vcpus.to_string(),
                v.protection.level.as_str().to_string(),
                v.protection.order.map_or("-".into(), |o| o.to_string()),
                v.protection
                    .anti_affinity
                    .as_deref()
                    .map_or("-".into(), |g| crate::format::escape_name(g).into_owned()),
            ]
        })
        .collect();
    println!(
        "{} driver: {} MiB, {} vCPUs; {} VMs",
        driver.kind(),
        inv.capacity.memory_mib,
        inv.capacity.vcpus,
        inv.vms.len()
    );
    if !rows.is_empty() {
        print_table(&["NAME", "UUID", "STATE", "MEMORY", "VCPUS", "PROTECTION", "ORDER", "GROUP"], &rows);
    }
    Ok(EXIT_OK)
}

fn protect(args: ProtectArgs) -> CliResult {
    if args.anti_affinity.as_deref() == Some("") {
        return Err(CliError::usage("--anti-affinity needs a group name (omit it for no group)"));
    }
    let spec = args.driver.clone();
    let mut driver = open(args.driver)?;
    let shown = spec.unwrap_or_else(|| driver.kind().to_string());
    let settings =
        ProtectionSettings { level: args.level, order: args.order, anti_affinity: args.anti_affinity };
    driver.set_protection(&args.name, &settings).map_err(|e| driver_error(&e, &shown))?;
    if args.json {
        print_json(&json!({ "name": args.name, "protection": settings_json(&settings) }));
    } else {
        let mut line =
            format!("{}: protection {}", crate::format::escape_name(&args.name), settings.level.as_str());
        if let Some(o) = settings.order {
            line.push_str(&format!(", order {o}"));
        }
        if let Some(g) = &settings.anti_affinity {
            line.push_str(&format!(", anti-affinity group {}", crate::format::escape_name(g)));
        }
        println!("{line}");
    }
    Ok(EXIT_OK)
}
