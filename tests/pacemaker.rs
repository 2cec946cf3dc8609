//! `fence_diskbeat` under Pacemaker's own fencer: tools/pacemaker-fence.sh builds a two-node
//! corosync 3 + Pacemaker 2.1 cluster (each node in its own network and mount namespace, Debian's
//! packages, installed by the script when missing), two diskbeat daemons on a loop device, and a
//! stonith primitive of type fence_diskbeat; then `stonith_admin --fence h2` must succeed through
//! the agent (h2's daemon fenced itself through its mailbox, Pacemaker shows it offline), and
//! `stonith_admin --fence h1`, whose fence action is log-only, must fail (not proven off).

mod common;
use common::*;
use std::process::Command;

fn scenario(name: &str) {
    let out = Command::new(repo().join("tools/pacemaker-fence.sh"))
        .env("DISKBEAT", bin())
        .env("SCENARIO", name)
        .env("TRACE", "1")
        .output()
        .expect("run tools/pacemaker-fence.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{text}");
    assert!(out.status.success(), "scenario {name} failed (exit {:?})", out.status.code());
    assert!(text.lines().any(|l| l.starts_with("PASS: ")), "no PASS line");
}

#[test]
fn pacemaker_fences_through_fence_diskbeat_and_a_log_only_host_is_not_reported_off() {
    if skip_unless_root() {
        return;
    }
    scenario("fence");
    scenario("refused");
}
