//! `diskbeat plan`: host failures tolerated, restart plans, admission checks.

use crate::format::escape_name;
use crate::planner::plan::failure_set;
use crate::planner::{
    restart_plan, tolerance, tolerates, Budget, Pool, RestartPlan, Tolerance, Verdict, WorstCaseKind,
};
use crate::text::count;
use serde_json::json;
use std::time::Instant;

/// A host or VM name for the terminal: names come from pool files and from the disk, where
/// anyone who can write the LUN chooses them (`format::escape_name`; JSON output is escaped by
/// serde instead).
fn shown(name: &str) -> String {
    escape_name(name).into_owned()
}

/// `[2, 5]` -> "2, 5".
fn list(slots: &[u32]) -> String {
    slots.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
}

const AFTER_HELP: &str = "\
Pool file (TOML; JSON with the same fields is accepted too). Every field, its units and the
checks are in docs/PLANNER.md, \"Pool file\":
  [[host]]
  name = \"h1\"
  memory_mib = 262144        # MiB offered to VMs
  max_vcpus = 128            # optional hard vCPU limit
  [[vm]]
  name = \"web1\"
  memory_mib = 8192
  vcpus = 4                  # default 1
  protection = \"protect\"     # protect | best-effort | none
  order = 1                  # optional, lower restarts first
  host = \"h1\"                # optional, absent = not running
  anti_affinity = \"web\"      # optional group

Examples:
  diskbeat plan pool.toml                 failures tolerated, with the worst failure set
  diskbeat plan pool.toml --json          the same for scripts
  diskbeat plan pool.toml --fail h1,h2    restart plan if h1 and h2 fail together
  diskbeat plan pool.toml --check 2       exit 0 if 2 failures are tolerated, 1 if not
  diskbeat plan --device /dev/sdb         the live pool as published on the heartbeat disk
  diskbeat plan --device /dev/sdb --fail slot2   what happens if slot 2's host fails now

Exit status: 0 ok / yes; 1 no: for --check, K failures are not tolerated or the search budget
cannot prove it; for --fail, some protected VM cannot be restarted (the plan is still printed,
with protected_complete false in --json); 2 bad input.";

/// Failover planning for a pool description.
#[derive(clap::Args, Debug)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Pool description file (TOML, or JSON if it starts with `{`).
    #[arg(required_unless_present = "device")]
    pub pool: Option<std::path::PathBuf>,
    /// Take the pool from the heartbeat disk instead: every host whose record says live, with the
    /// capacity and the running VMs it published (needs daemons with a VM driver).
    #[arg(long, value_name = "DEV", conflicts_with = "pool")]
    pub device: Option<std::path::PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Comma-separated hosts that fail together: print their restart plan.
    #[arg(long, value_delimiter = ',', value_name = "HOSTS", conflicts_with = "check")]
    pub fail: Option<Vec<String>>,
    /// Exit 0 if the pool tolerates K simultaneous host failures, 1 if not or unproven.
    #[arg(long, value_name = "K")]
    pub check: Option<usize>,
    /// Search effort limit in nodes (higher = more exact answers on hard pools, slower).
    #[arg(long, value_name = "NODES", default_value_t = Budget::default().max_nodes)]
    pub budget: u64,
}

/// Runs `diskbeat plan`.
pub fn run(args: Args) -> super::CliResult {
    let pool = match (&args.pool, &args.device) {
        (_, Some(dev)) => pool_from_device(dev).map_err(super::CliError::fail)?,
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| super::CliError::usage(format!("cannot read {}: {e}", path.display())))?;
            // Errors quote names from the file: escaped like every name we print.
            Pool::parse(&text).map_err(|e| {
                super::CliError::usage(format!("{}: {}", path.display(), shown(&e.to_string())))
            })?
        }
        (None, None) => return Err(super::CliError::usage("give a pool file or --device DEV")),
    };
    let budget = Budget { max_nodes: args.budget, ..Budget::default() };
    if let Some(names) = &args.fail {
        let failed = failure_set(&pool, names).map_err(|e| super::CliError::usage(shown(&e.to_string())))?;
        let start = Instant::now();
        let plan = restart_plan(&pool, &failed, budget);
        let elapsed_us = start.elapsed().as_micros() as u64;
        print_plan(&pool, &plan, elapsed_us, args.json);
        // A protected VM left out is a "no", like a failed --check: scripts must not miss it.
        return Ok(if plan.protected_complete { super::EXIT_OK } else { super::EXIT_FAIL });
    }
    if let Some(k) = args.check {
        let start = Instant::now();
        let verdict = tolerates(&pool, k, budget);
        let elapsed_us = start.elapsed().as_micros() as u64;
        let (answer, code) = match &verdict {
            Verdict::Yes => ("yes", super::EXIT_OK),
            Verdict::No(_) => ("no", super::EXIT_FAIL),
            Verdict::Unknown => ("unknown", super::EXIT_FAIL),
        };
        let witness: Vec<&str> = match &verdict {
            Verdict::No(set) => set.iter().map(|&h| pool.hosts[h].name.as_str()).collect(),
            _ => vec![],
        };
        if args.json {
            let v = json!({"k": k, "tolerated": answer, "failing_set": witness, "elapsed_us": elapsed_us});
            println!("{v}");
        } else {
            let failures = count(k as u64, "host failure", "host failures");
            match verdict {
                Verdict::Yes => println!("tolerates {failures}: yes"),
                Verdict::No(_) => println!(
                    "tolerates {failures}: no (restart impossible if {} {})",
                    witness.iter().map(|n| shown(n)).collect::<Vec<_>>().join(", "),
                    if witness.len() == 1 { "fails" } else { "fail together" }
                ),
                Verdict::Unknown => {
                    println!("tolerates {failures}: unknown (search budget exhausted; raise --budget)")
                }
            }
        }
        return Ok(code);
    }
    let start = Instant::now();
    let t = tolerance(&pool, budget);
    let elapsed_us = start.elapsed().as_micros() as u64;
    print_tolerance(&pool, &t, elapsed_us, args.json);
    Ok(super::EXIT_OK)
}

fn print_tolerance(pool: &Pool, t: &Tolerance, elapsed_us: u64, as_json: bool) {
    let worst: Vec<&str> = t.worst_case.iter().map(|&h| pool.hosts[h].name.as_str()).collect();
    let kind = match t.worst_case_kind {
        WorstCaseKind::Infeasible => "infeasible",
        WorstCaseKind::MaxDemand => "max-demand",
    };
    if as_json {
        let v = json!({
            "hosts": t.hosts,
            "vms": pool.vms.len(),
            "tolerated_min": t.tolerated_min,
            "tolerated_max": t.tolerated_max,
            "exact": t.exact,
            "overcommitted": t.overcommitted,
            "worst_case": worst,
            "worst_case_kind": kind,
            "worst_case_demand_mib": t.worst_case_demand_mib,
            "sufficient_bound": t.sufficient_bound,
            "necessary_bound": t.necessary_bound,
            "sets_searched": t.sets_searched,
            "nodes": t.nodes,
            "elapsed_us": elapsed_us,
        });
        println!("{v}");
        return;
    }
    let protected = pool.vms.iter().filter(|v| v.protection == crate::planner::Protection::Protect).count();
    println!(
        "pool:                   {}, {} ({} protected)",
        count(t.hosts as u64, "host", "hosts"),
        count(pool.vms.len() as u64, "VM", "VMs"),
        protected
    );
    if t.exact {
        println!("host failures tolerated: {} (exact)", t.tolerated_min);
    } else {
        println!(
            "host failures tolerated: between {} and {} (search budget exhausted; raise --budget)",
            t.tolerated_min, t.tolerated_max
        );
    }
    println!(
        "overcommitted:          {}",
        if t.overcommitted { "yes (protected VMs do not fit even with no failure)" } else { "no" }
    );
    let hosts = if worst.is_empty() {
        "(none: no failure needed)".to_string()
    } else {
        worst.iter().map(|n| shown(n)).collect::<Vec<_>>().join(", ")
    };
    match t.worst_case_kind {
        WorstCaseKind::Infeasible => println!(
            "worst case:             {hosts} (restart of {} MiB proven impossible)",
            t.worst_case_demand_mib
        ),
        WorstCaseKind::MaxDemand => {
            println!("worst case:             {hosts} (restart needs {} MiB)", t.worst_case_demand_mib)
        }
    }
    println!(
        "closed-form bounds:     {} ..= {}; failure sets searched: {}",
        t.sufficient_bound, t.necessary_bound, t.sets_searched
    );
    println!("computed in:            {elapsed_us} us");
}

fn print_plan(pool: &Pool, plan: &RestartPlan, elapsed_us: u64, as_json: bool) {
    let failed: Vec<&str> = plan.failed.iter().map(|&h| pool.hosts[h].name.as_str()).collect();
    if as_json {
        let placements: Vec<_> = plan
            .placements
            .iter()
            .map(|p| {
                json!({
                    "vm": pool.vms[p.vm].name,
                    "host": pool.hosts[p.host].name,
                    "order": p.order,
                    "protection": p.protection.as_str(),
                    "anti_affinity_honored": p.anti_affinity_honored,
                })
            })
            .collect();
        let unplaced: Vec<_> = plan
            .unplaced
            .iter()
            .map(|u| {
                json!({
                    "vm": pool.vms[u.vm].name,
                    "reason": u.reason.code(),
                    "detail": u.reason.message(),
                    "protection": pool.vms[u.vm].protection.as_str(),
                })
            })
            .collect();
        let v = json!({
            "failed": failed,
            "placements": placements,
            "unplaced": unplaced,
            "protected_complete": plan.protected_complete,
            "elapsed_us": elapsed_us,
        });
        println!("{v}");
        return;
    }
    println!(
        "restart plan if {} {}:",
        failed.iter().map(|n| shown(n)).collect::<Vec<_>>().join(", "),
        if failed.len() == 1 { "fails" } else { "fail together" }
    );
    let width = pool.vms.iter().map(|v| shown(&v.name).len()).max().unwrap_or(2).max(2);
    let hwidth = pool.hosts.iter().map(|h| shown(&h.name).len()).max().unwrap_or(4).max(4);
    if plan.placements.is_empty() {
        println!("  (nothing to restart)");
    } else {
        println!("  {:<width$}  {:<hwidth$}  {:<11}  ORDER", "VM", "HOST", "LEVEL");
        for p in &plan.placements {
            let order = p.order.map_or("-".to_string(), |o| o.to_string());
            let note =
                if p.anti_affinity_honored { "" } else { "  (anti-affinity not honored: no room elsewhere)" };
            println!(
                "  {:<width$}  {:<hwidth$}  {:<11}  {order}{note}",
                shown(&pool.vms[p.vm].name),
                shown(&pool.hosts[p.host].name),
                p.protection.as_str()
            );
        }
    }
    if !plan.unplaced.is_empty() {
        println!("not restarted:");
        for u in &plan.unplaced {
            println!("  {:<width$}  {}", shown(&pool.vms[u.vm].name), u.reason.message());
        }
    }
    if !plan.protected_complete {
        let left_out = plan
            .unplaced
            .iter()
            .filter(|u| pool.vms[u.vm].protection == crate::planner::Protection::Protect)
            .count();
        println!(
            "WARNING: {} cannot be restarted (exit status 1)",
            count(left_out as u64, "protected VM", "protected VMs")
        );
    }
    println!("computed in: {elapsed_us} us");
}

/// The live pool from the heartbeat disk: hosts whose record says live (named `slotN`, the name
/// `--fail` takes), with the capacity and the running VMs they published in their extents.
pub fn pool_from_device(dev: &std::path::Path) -> Result<Pool, String> {
    use crate::disk::{Disk, ExtentRead};
    use crate::format::extent::Payload;
    use crate::format::record::{Record, State};
    let mut disk = Disk::open(dev, crate::io::Access::ReadOnly, crate::io::EngineKind::Auto, None)
        .map_err(|e| e.to_string())?;
    let sb = disk.superblock().clone();
    let timeout = std::time::Duration::from_millis(u64::from(sb.base_timeout_ms / 4).max(1000));
    disk.sweep(timeout).map_err(|e| e.to_string())?;
    let mut live = Vec::new();
    for slot in 0..sb.layout.slot_count {
        if let Ok(bytes) = disk.slot_bytes(slot) {
            if let Ok(r) = Record::decode(bytes, &sb.cluster_uuid, slot) {
                if r.state == State::Live {
                    live.push(slot);
                }
            }
        }
    }
    let mut buf = vec![0u8; disk.extent_payload_cap()];
    let mut pool = Pool::default();
    let (mut missing, mut invalid) = (Vec::new(), Vec::new());
    for slot in live {
        let state = match disk.read_extent(slot, &mut buf, timeout) {
            Ok(ExtentRead::Payload(h)) => match Payload::decode(&h, &buf[..h.payload_len as usize]) {
                Ok(Payload::HostState(st)) => Some(st),
                // Garbage (a name with a control character, a bad length...): never planned on,
                // and said so, apart from the hosts that publish nothing.
                Err(e) => {
                    eprintln!("plan: live slot {slot}'s data extent is invalid ({e}): left out of the pool");
                    invalid.push(slot);
                    continue;
                }
                Ok(_) => None,
            },
            _ => None,
        };
        let Some(st) = state.filter(|st| st.capacity.is_some()) else {
            missing.push(slot);
            continue;
        };
        let cap = st.capacity.expect("filtered");
        crate::core::failover::add_to_pool(&mut pool, slot, cap, &st.vms);
    }
    if pool.hosts.is_empty() {
        return Err(format!(
            "{}: no live host has published its capacity (start daemons with --vm-driver){}",
            dev.display(),
            if missing.is_empty() {
                String::new()
            } else {
                format!("; live slots without it: {}", list(&missing))
            } + &if invalid.is_empty() {
                String::new()
            } else {
                format!("; live slots whose extent is invalid: {}", list(&invalid))
            }
        ));
    }
    if !missing.is_empty() {
        let (noun, verb) = if missing.len() == 1 { ("slot", "publishes") } else { ("slots", "publish") };
        eprintln!(
            "plan: live {noun} {} {verb} no VM inventory (no --vm-driver): left out of the pool",
            list(&missing)
        );
    }
    Ok(pool)
}
