//! The two builds (tools/test.sh runs this file in both): with the `libvirt` feature (default) the
//! binary links libvirt and offers its driver; without it, nothing links libvirt and a libvirt
//! driver in a command line or config is refused with an error that says how to get one.

mod common;
use common::*;
use std::process::Command;

/// The shared libraries the built `diskbeat` binary needs (ELF NEEDED, as `ldd` resolves them).
fn linked_libraries() -> String {
    let out = Command::new("ldd").arg(bin()).output().expect("run ldd (libc-bin)");
    assert!(out.status.success(), "ldd {}: {}", bin().display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_binary_links_libvirt_exactly_when_the_feature_is_on() {
    let libs = linked_libraries();
    assert_eq!(
        libs.contains("libvirt.so"),
        cfg!(feature = "libvirt"),
        "feature libvirt = {}, but ldd says:\n{libs}",
        cfg!(feature = "libvirt")
    );
}

#[test]
fn a_libvirt_driver_without_the_feature_is_refused_with_a_way_out() {
    let out = run(&["vm", "list", "--driver", "libvirt"]);
    let err = String::from_utf8_lossy(&out.stderr);
    if cfg!(feature = "libvirt") {
        // Built in: whatever libvirt answers, never the "built without" refusal.
        assert!(!err.contains("built without the libvirt driver"), "{err}");
    } else {
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("built without the libvirt driver") && err.contains("exec:"), "{err}");
        let out =
            run(&["daemon", "--device", "/dev/null", "--slot", "0", "--name", "h", "--vm-driver", "libvirt"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains("built without the libvirt driver"), "{err}");
    }
}
