//! The libvirt VM driver against real libvirtd hosts (one per mount+PID namespace, tiny QEMU
//! guests; harness tests/common/libvirt.rs). Needs root and libvirt (tools/install-libvirt.sh);
//! skipped otherwise, failing instead under CI.

mod common;
#[path = "common/libvirt.rs"]
mod libvirt_host;

use diskbeat::planner::Protection;
use diskbeat::vm::libvirt::LibvirtDriver;
use diskbeat::vm::{DriverError, ProtectionSettings, StartRequest, VmDriver, VmInfo, VmRunState};
use libvirt_host::{tiny_guest_xml, virsh, LibvirtHost};
use uuid::Uuid;

fn find<'a>(vms: &'a [VmInfo], name: &str) -> &'a VmInfo {
    vms.iter().find(|v| v.name == name).unwrap_or_else(|| panic!("no VM {name} in {vms:?}"))
}

fn start(d: &mut LibvirtDriver, name: &str, uuid: Uuid, xml: &str) -> Result<(), DriverError> {
    d.start(&StartRequest { name, uuid, definition: xml.as_bytes() })
}

#[test]
fn libvirt_start_inventory_protect_destroy() {
    if libvirt_host::skip() {
        return;
    }
    let host = LibvirtHost::start();
    let mut d = LibvirtDriver::open(&host.uri()).unwrap();
    let inv = d.inventory().unwrap();
    assert!(inv.capacity.memory_mib > 0 && inv.capacity.vcpus > 0, "{:?}", inv.capacity);
    assert!(inv.vms.is_empty());

    let uuid = Uuid::new_v4();
    let xml = tiny_guest_xml("g1", uuid, 64);
    // A definition whose UUID is not the request's is refused, and nothing gets defined.
    let e = start(&mut d, "g1", Uuid::new_v4(), &xml).unwrap_err();
    assert!(matches!(&e, DriverError::Failed { op: "start", .. }), "{e:?}");
    assert!(e.to_string().contains(&uuid.to_string()), "{e}");
    assert!(d.inventory().unwrap().vms.is_empty());

    start(&mut d, "g1", uuid, &xml).unwrap();
    assert_eq!(host.qemu_pids().len(), 1);
    let inv = d.inventory().unwrap();
    let g = find(&inv.vms, "g1");
    assert_eq!((g.uuid, g.memory_mib, g.vcpus, g.state), (uuid, 64, 1, VmRunState::Running));
    assert_eq!(g.protection, ProtectionSettings::default());
    let def = String::from_utf8(g.definition.clone()).unwrap();
    assert!(def.contains(&format!("<uuid>{uuid}</uuid>")) && def.contains("<name>g1</name>"), "{def}");
    // Started by diskbeat only: never by libvirt when the host boots.
    assert!(virsh(&host.uri(), &["dominfo", "g1"])
        .lines()
        .any(|l| l.starts_with("Autostart:") && l.contains("disable")));
    // Starting a running VM again is fine (a retried restart).
    start(&mut d, "g1", uuid, &xml).unwrap();

    let settings = ProtectionSettings {
        level: Protection::Protect,
        order: Some(1),
        anti_affinity: Some("db & <co>".into()),
    };
    d.set_protection("g1", &settings).unwrap();
    let inv = d.inventory().unwrap();
    let g = find(&inv.vms, "g1");
    assert_eq!(g.protection, settings);
    let def = String::from_utf8(g.definition.clone()).unwrap();
    assert!(def.contains("https://diskbeat.dev/xmlns/protection/1"), "metadata not in the definition: {def}");
    // Live copy too: what `virsh dumpxml` of the running domain shows.
    assert!(virsh(&host.uri(), &["dumpxml", "g1"]).contains("level=\"protect\""));

    d.destroy("g1").unwrap();
    assert!(host.qemu_pids().is_empty());
    let inv = d.inventory().unwrap();
    assert_eq!(find(&inv.vms, "g1").state, VmRunState::Stopped);
    d.destroy("g1").unwrap();
    d.destroy("not-defined-here").unwrap();
    assert!(matches!(d.set_protection("nope", &settings), Err(DriverError::NoSuchVm(n)) if n == "nope"));

    // Persistent: the settings survive destroy + start, including a start from the inventory's
    // definition (what a survivor does).
    let def = find(&inv.vms, "g1").definition.clone();
    d.start(&StartRequest { name: "g1", uuid, definition: &def }).unwrap();
    let inv = d.inventory().unwrap();
    let g = find(&inv.vms, "g1");
    assert_eq!((g.state, &g.protection), (VmRunState::Running, &settings));
    d.set_protection("g1", &ProtectionSettings::default()).unwrap();
    assert_eq!(find(&d.inventory().unwrap().vms, "g1").protection, ProtectionSettings::default());
    d.destroy("g1").unwrap();
}

#[test]
fn libvirt_garbage_metadata_is_a_protocol_error() {
    if libvirt_host::skip() {
        return;
    }
    let host = LibvirtHost::start();
    let uri = host.uri();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("g.xml");
    std::fs::write(&file, tiny_guest_xml("bad1", Uuid::new_v4(), 64)).unwrap();
    virsh(&uri, &["define", file.to_str().unwrap()]);
    let mut d = LibvirtDriver::open(&uri).unwrap();
    for garbage in [
        "<protect level=\"sometimes\"/>",
        "<protect order=\"1\"/>",
        "<protect level=\"protect\" order=\"x\"/>",
    ] {
        virsh(
            &uri,
            &[
                "metadata",
                "bad1",
                "--key",
                "diskbeat",
                "--uri",
                diskbeat::vm::libvirt::METADATA_NS,
                "--set",
                garbage,
            ],
        );
        match d.inventory() {
            Err(DriverError::Protocol(m)) => assert!(m.contains("'bad1'"), "{m}"),
            other => panic!("{garbage}: {other:?}"),
        }
    }
    // Fixed by setting it again.
    let s = ProtectionSettings { level: Protection::BestEffort, order: None, anti_affinity: None };
    d.set_protection("bad1", &s).unwrap();
    assert_eq!(find(&d.inventory().unwrap().vms, "bad1").protection, s);
}

#[test]
fn libvirt_killed_host_gives_errors_then_reconnects() {
    if libvirt_host::skip() {
        return;
    }
    let mut host = LibvirtHost::start();
    let mut d = LibvirtDriver::open(&host.uri()).unwrap();
    let uuid = Uuid::new_v4();
    let xml = tiny_guest_xml("k1", uuid, 64);
    start(&mut d, "k1", uuid, &xml).unwrap();
    let s = ProtectionSettings { level: Protection::Protect, order: Some(5), anti_affinity: None };
    d.set_protection("k1", &s).unwrap();

    host.kill();
    // Every call fails (twice: the reconnect attempt fails too), none panics.
    for _ in 0..2 {
        assert!(matches!(d.inventory(), Err(DriverError::Unreachable(_))));
        assert!(matches!(start(&mut d, "k1", uuid, &xml), Err(DriverError::Unreachable(_))));
        assert!(matches!(d.destroy("k1"), Err(DriverError::Unreachable(_))));
        assert!(matches!(d.set_protection("k1", &s), Err(DriverError::Unreachable(_))));
    }
    assert!(matches!(LibvirtDriver::open(&host.uri()), Err(DriverError::Unreachable(_))));

    // The host comes back: the same driver reconnects, the VM is defined but was not started.
    host.reboot();
    let inv = d.inventory().unwrap();
    let g = find(&inv.vms, "k1");
    assert_eq!((g.state, &g.protection), (VmRunState::Stopped, &s));
    assert!(host.qemu_pids().is_empty());
}

/// Nothing in libvirt stops one UUID running on two hosts at once: only diskbeat's rules (restart
/// only after the old host is proven fenced or dead) prevent it. The driver does not check.
#[test]
fn libvirt_same_uuid_runs_on_two_hosts() {
    if libvirt_host::skip() {
        return;
    }
    let (h1, h2) = (LibvirtHost::start(), LibvirtHost::start());
    let (mut d1, mut d2) = (LibvirtDriver::open(&h1.uri()).unwrap(), LibvirtDriver::open(&h2.uri()).unwrap());
    let uuid = Uuid::new_v4();
    let xml = tiny_guest_xml("twin", uuid, 64);
    start(&mut d1, "twin", uuid, &xml).unwrap();
    let def = find(&d1.inventory().unwrap().vms, "twin").definition.clone();
    d2.start(&StartRequest { name: "twin", uuid, definition: &def }).unwrap();
    for d in [&mut d1, &mut d2] {
        assert_eq!(find(&d.inventory().unwrap().vms, "twin").state, VmRunState::Running);
    }
    assert_eq!((h1.qemu_pids().len(), h2.qemu_pids().len()), (1, 1));
    d2.destroy("twin").unwrap();
    assert_eq!(find(&d1.inventory().unwrap().vms, "twin").state, VmRunState::Running);
    assert_eq!(find(&d2.inventory().unwrap().vms, "twin").state, VmRunState::Stopped);
}

#[test]
fn cli_vm_protect_and_list_against_libvirt() {
    if libvirt_host::skip() {
        return;
    }
    let host = LibvirtHost::start();
    let spec = format!("libvirt:{}", host.uri());
    let mut d = LibvirtDriver::open(&host.uri()).unwrap();
    let uuid = Uuid::new_v4();
    start(&mut d, "web1", uuid, &tiny_guest_xml("web1", uuid, 64)).unwrap();

    let out = common::run(&[
        "vm",
        "protect",
        "web1",
        "--level",
        "protect",
        "--order",
        "2",
        "--anti-affinity",
        "web",
        "--driver",
        &spec,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));

    // The driver from the environment this time.
    let out = std::process::Command::new(common::bin())
        .args(["vm", "list", "--json"])
        .env("DISKBEAT_VM_DRIVER", &spec)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", common::stderr(&out));
    let j = common::stdout_json(&out);
    assert_eq!(j["driver"], "libvirt");
    assert!(j["capacity"]["memory_mib"].as_u64().unwrap() > 0);
    let vm = &j["vms"][0];
    assert_eq!(vm["name"], "web1");
    assert_eq!(vm["uuid"], uuid.to_string());
    assert_eq!(vm["state"], "running");
    assert_eq!(vm["memory_mib"], 64);
    assert_eq!(vm["protection"], serde_json::json!({"level": "protect", "order": 2, "anti_affinity": "web"}));

    let out = common::run(&["vm", "list", "--driver", &spec]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("web1") && text.contains("protect") && text.contains("web"), "{text}");

    let out = common::run(&["vm", "protect", "nope", "--level", "none", "--driver", &spec]);
    assert_eq!(out.status.code(), Some(2), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("no VM named 'nope'"));
    let dead = format!("libvirt:qemu:///system?socket={}/no-such-sock", host.root().display());
    let out = common::run(&["vm", "list", "--driver", &dead]);
    assert_eq!(out.status.code(), Some(1), "{}", common::stderr(&out));
    assert!(common::stderr(&out).contains("--driver"), "{}", common::stderr(&out));
    d.destroy("web1").unwrap();
}
