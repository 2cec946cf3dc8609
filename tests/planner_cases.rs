//! Hand-made pools with known answers, bad files, restart plans and admission control.

use diskbeat::planner::admission::apply;
use diskbeat::planner::plan::failure_set;
use diskbeat::planner::{
    restart_plan, tolerance, tolerates, validate_plan, would_break_plan, AdmissionError, Budget, Change,
    Pool, PoolError, Protection, UnplacedReason, Verdict,
};

fn pool(text: &str) -> Pool {
    Pool::from_toml_str(text).unwrap_or_else(|e| panic!("{e}"))
}

fn hosts(n: usize, memory_mib: u64) -> String {
    (0..n).map(|i| format!("[[host]]\nname = \"h{i}\"\nmemory_mib = {memory_mib}\n")).collect()
}

fn vm(name: &str, memory_mib: u64, protection: &str, host: Option<&str>) -> String {
    let host = host.map_or(String::new(), |h| format!("host = \"{h}\"\n"));
    format!("[[vm]]\nname = \"{name}\"\nmemory_mib = {memory_mib}\nprotection = \"{protection}\"\n{host}")
}

#[test]
fn empty_pool_tolerates_zero_of_zero() {
    let t = tolerance(&pool(""), Budget::default());
    assert_eq!((t.tolerated_min, t.tolerated_max, t.exact, t.overcommitted), (0, 0, true, false));
}

#[test]
fn no_protected_vms_tolerates_all_hosts() {
    let mut text = hosts(3, 1000);
    text += &vm("a", 900, "best-effort", Some("h0"));
    text += &vm("b", 900, "none", Some("h1"));
    let t = tolerance(&pool(&text), Budget::default());
    assert_eq!((t.tolerated_min, t.tolerated_max, t.exact), (3, 3, true));
}

#[test]
fn two_hosts_half_full_tolerate_one() {
    let mut text = hosts(2, 1000);
    text += &vm("a", 500, "protect", Some("h0"));
    text += &vm("b", 500, "protect", Some("h1"));
    let t = tolerance(&pool(&text), Budget::default());
    assert_eq!((t.tolerated_min, t.exact), (1, true));
    assert_eq!(t.worst_case.len(), 2, "losing both hosts is the proven-impossible evidence");
}

#[test]
fn two_hosts_fragmented_tolerate_zero() {
    // 600 MiB free in total on h1 but the VM of h0 needs 700 contiguous on one host.
    let mut text = hosts(2, 1000);
    text += &vm("big", 700, "protect", Some("h0"));
    text += &vm("other", 400, "best-effort", Some("h1"));
    let p = pool(&text);
    let t = tolerance(&p, Budget::default());
    assert_eq!((t.tolerated_min, t.exact, t.overcommitted), (0, true, false));
    assert_eq!(t.worst_case, vec![0]);
    assert!(matches!(tolerates(&p, 1, Budget::default()), Verdict::No(_)));
}

#[test]
fn unstarted_protected_vm_that_cannot_fit_means_overcommitted() {
    let mut text = hosts(2, 1000);
    text += &vm("a", 800, "protect", Some("h0"));
    text += &vm("b", 800, "protect", Some("h1"));
    text += &vm("c", 300, "protect", None);
    let t = tolerance(&pool(&text), Budget::default());
    assert!(t.overcommitted && t.exact);
    assert_eq!(t.tolerated_max, 0);
}

#[test]
fn unstarted_protected_vm_that_fits_counts_in_every_scenario() {
    let mut text = hosts(3, 1000);
    text += &vm("a", 400, "protect", Some("h0"));
    text += &vm("c", 500, "protect", None);
    // No failure: c fits. One failure of h0: a (400) + c (500) on two empty hosts: fits.
    // Two failures: 900 on one host of 1000: fits. Three: nothing left.
    let t = tolerance(&pool(&text), Budget::default());
    assert_eq!((t.tolerated_min, t.exact, t.overcommitted), (2, true, false));
}

#[test]
fn bin_packing_not_fluid() {
    // h0 (1200) fails: 3 x 400 = 1200 must go to h1 and h2, 600 free each. The fluid bound
    // says yes; exact packing says no (each host holds one 400), so it tolerates 0.
    let mut text = hosts(3, 1000);
    text += &vm("x", 400, "best-effort", Some("h1"));
    text += &vm("y", 400, "best-effort", Some("h2"));
    for i in 0..3 {
        text += &vm(&format!("p{i}"), 400, "protect", Some("h0"));
    }
    text = text
        .replace("[[host]]\nname = \"h0\"\nmemory_mib = 1000", "[[host]]\nname = \"h0\"\nmemory_mib = 1200");
    let t = tolerance(&pool(&text), Budget::default());
    assert_eq!((t.tolerated_min, t.exact), (0, true));
}

/// The shape of xapi's counter-example: 16 hosts of 256 GiB, 800 mixed-size VMs. Each host
/// runs one 64 GiB VM, 40 of 2 GiB and 9 of 4 GiB (180 GiB, 76 GiB free). Slot counting with
/// the largest VM (64 GiB) finds one slot per host for 50 VMs: 0 failures. The truth is 4:
/// 4 x 180 = 720 GiB fits the 12 x 76 = 912 GiB left (one 64 GiB VM per survivor, the rest in
/// 2/4 GiB pieces), while 5 x 180 = 900 GiB exceeds 11 x 76 = 836 GiB.
#[test]
fn xapi_counter_example_shape() {
    let mut text = hosts(16, 262_144);
    for h in 0..16 {
        let host = format!("h{h}");
        text += &vm(&format!("big{h}"), 65_536, "protect", Some(&host));
        for i in 0..40 {
            text += &vm(&format!("s{h}_{i}"), 2048, "protect", Some(&host));
        }
        for i in 0..9 {
            text += &vm(&format!("m{h}_{i}"), 4096, "protect", Some(&host));
        }
    }
    let p = pool(&text);
    assert_eq!(p.vms.len(), 800);
    let (used, _) = p.used();
    let slots: u64 = p.hosts.iter().zip(&used).map(|(h, u)| (h.memory_mib - u) / 65_536).sum();
    assert_eq!(slots, 16, "slot counting: 16 slots for 50 VMs per failed host -> tolerates 0");
    let t = tolerance(&p, Budget::default());
    assert_eq!((t.tolerated_min, t.tolerated_max, t.exact), (4, 4, true), "{t:?}");
    assert_eq!(t.worst_case.len(), 5);
}

#[test]
fn vcpu_limit_binds() {
    let text = "[[host]]\nname = \"h0\"\nmemory_mib = 100000\nmax_vcpus = 8\n\
                [[host]]\nname = \"h1\"\nmemory_mib = 100000\nmax_vcpus = 8\n"
        .to_string()
        + "[[vm]]\nname = \"a\"\nmemory_mib = 10\nvcpus = 6\nprotection = \"protect\"\nhost = \"h0\"\n"
        + "[[vm]]\nname = \"b\"\nmemory_mib = 10\nvcpus = 6\nprotection = \"protect\"\nhost = \"h1\"\n";
    let t = tolerance(&pool(&text), Budget::default());
    assert_eq!((t.tolerated_min, t.exact), (0, true), "memory is plentiful but 6+6 vCPUs > 8");
}

#[test]
fn json_is_accepted() {
    let p = Pool::parse(r#"{"host":[{"name":"h","memory_mib":10}],"vm":[{"name":"v","memory_mib":5,"protection":"protect","host":"h"}]}"#)
        .unwrap();
    assert_eq!(p.vms[0].host, Some(0));
}

#[test]
fn bad_files_are_rejected_with_the_entry_named() {
    let h = "[[host]]\nname = \"h1\"\nmemory_mib = 1000\n";
    type Case = (String, fn(&PoolError) -> bool, &'static str);
    let cases: Vec<Case> = vec![
        (
            format!("{h}{}", vm("v", 10, "protect", Some("nope"))),
            |e| matches!(e, PoolError::UnknownHost { .. }),
            "nope",
        ),
        (format!("{h}{h}"), |e| matches!(e, PoolError::DuplicateHost(_)), "h1"),
        (
            format!("{h}{}{}", vm("v", 10, "protect", None), vm("v", 20, "none", None)),
            |e| matches!(e, PoolError::DuplicateVm(_)),
            "`v`",
        ),
        (
            format!("{h}{}", vm("v", 0, "protect", None)),
            |e| matches!(e, PoolError::BadSize { .. }),
            "memory_mib",
        ),
        (
            format!("{h}[[vm]]\nname = \"v\"\nmemory_mib = -5\nprotection = \"protect\"\n"),
            |e| matches!(e, PoolError::BadSize { .. }),
            "-5",
        ),
        (
            format!("{h}[[vm]]\nname = \"v\"\nmemory_mib = 5\nvcpus = 0\nprotection = \"protect\"\n"),
            |e| matches!(e, PoolError::BadSize { .. }),
            "vcpus",
        ),
        (
            "[[host]]\nname = \"h1\"\nmemory_mib = 0\n".to_string(),
            |e| matches!(e, PoolError::BadSize { .. }),
            "h1",
        ),
        (
            "[[host]]\nname = \"h1\"\nmemory_mib = 10\nmax_vcpus = -1\n".to_string(),
            |e| matches!(e, PoolError::BadSize { .. }),
            "max_vcpus",
        ),
        (
            format!("{h}{}", vm("v", 10, "always", None)),
            |e| matches!(e, PoolError::UnknownProtection { .. }),
            "always",
        ),
        (
            format!("{h}{}", vm("huge", 5000, "none", None)),
            |e| matches!(e, PoolError::VmTooLarge { .. }),
            "huge",
        ),
        (
            format!("{h}{}{}", vm("a", 600, "none", Some("h1")), vm("b", 600, "none", Some("h1"))),
            |e| matches!(e, PoolError::HostOverloaded { .. }),
            "h1",
        ),
        (
            "[[host]]\nname = \"\"\nmemory_mib = 10\n".to_string(),
            |e| matches!(e, PoolError::EmptyName { .. }),
            "host #1",
        ),
        ("[[host]\nname=".to_string(), |e| matches!(e, PoolError::Syntax { .. }), "TOML"),
        (
            "[[host]]\nname = \"h\"\nmemory_mib = 10\ncolour = 3\n".to_string(),
            |e| matches!(e, PoolError::Syntax { .. }),
            "colour",
        ),
    ];
    for (text, is_kind, mention) in cases {
        let e = Pool::parse(&text).expect_err(&text);
        assert!(is_kind(&e), "wrong error for {text:?}: {e:?}");
        assert!(e.to_string().contains(mention), "{e} should mention {mention}");
    }
}

#[test]
fn restart_plan_priorities_order_and_reasons() {
    let mut text = hosts(3, 1000);
    text += "[[vm]]\nname = \"db\"\nmemory_mib = 600\nprotection = \"protect\"\norder = 0\nhost = \"h0\"\n";
    text += "[[vm]]\nname = \"app\"\nmemory_mib = 300\nprotection = \"protect\"\norder = 1\nhost = \"h0\"\n";
    text += &vm("batch", 900, "best-effort", Some("h1"));
    text += &vm("scratch", 50, "none", Some("h1"));
    text += &vm("filler", 500, "best-effort", Some("h2"));
    let p = pool(&text);
    let failed = failure_set(&p, &["h0", "h1"]).unwrap();
    let plan = restart_plan(&p, &failed, Budget::default());
    assert_eq!(validate_plan(&p, &plan), vec![]);
    let names: Vec<&str> = plan.placements.iter().map(|x| p.vms[x.vm].name.as_str()).collect();
    // Only h2 survives with 500 free: db (600) cannot fit, app (300) does; batch cannot.
    assert_eq!(names, vec!["app"]);
    assert!(!plan.protected_complete);
    let reasons: Vec<(&str, UnplacedReason)> =
        plan.unplaced.iter().map(|u| (p.vms[u.vm].name.as_str(), u.reason)).collect();
    assert!(reasons.contains(&("db", UnplacedReason::NoCapacity)));
    assert!(reasons.contains(&("batch", UnplacedReason::NoCapacity)));
    assert!(reasons.contains(&("scratch", UnplacedReason::NotProtected)));
    assert_eq!(
        failure_set(&p, &["h9"]).unwrap_err().to_string(),
        "host `h9` is not in the pool; list hosts by the names in the pool file"
    );
}

#[test]
fn restart_plan_honors_anti_affinity_when_possible() {
    let mut text = hosts(3, 1000);
    for (n, h) in [("w1", "h0"), ("w2", "h0"), ("w3", "h1")] {
        text += &format!("[[vm]]\nname = \"{n}\"\nmemory_mib = 100\nprotection = \"protect\"\nhost = \"{h}\"\nanti_affinity = \"web\"\n");
    }
    let p = pool(&text);
    let plan = restart_plan(&p, &[0], Budget::default());
    assert_eq!(validate_plan(&p, &plan), vec![]);
    // w3 runs on h1, so w1 and w2 would both prefer h2: only one can have it.
    assert_eq!(plan.placements.len(), 2);
    let honored = plan.placements.iter().filter(|x| x.anti_affinity_honored).count();
    assert_eq!(honored, 1, "h1 holds w3 and h2 can take one; the other must share: {plan:?}");
    let hosts_used: std::collections::HashSet<usize> = plan.placements.iter().map(|x| x.host).collect();
    assert_eq!(hosts_used.len(), 2, "the two restarts go to different hosts");
    let mut text2 = hosts(4, 1000);
    for (n, h) in [("w1", "h0"), ("w2", "h0")] {
        text2 += &format!("[[vm]]\nname = \"{n}\"\nmemory_mib = 100\nprotection = \"protect\"\nhost = \"{h}\"\nanti_affinity = \"web\"\n");
    }
    let p2 = pool(&text2);
    let plan2 = restart_plan(&p2, &[0], Budget::default());
    assert!(plan2.placements.iter().all(|x| x.anti_affinity_honored), "{plan2:?}");
    assert_eq!(validate_plan(&p2, &plan2), vec![]);
}

#[test]
fn admission_refuses_what_breaks_the_plan() {
    let mut text = hosts(3, 1000);
    text += &vm("a", 600, "protect", Some("h0"));
    text += &vm("b", 600, "protect", Some("h1"));
    text += &vm("new", 300, "protect", None);
    let p = pool(&text);
    let k1 = |c: Change| would_break_plan(&p, &c, 1, Budget::default());
    assert_eq!(tolerates(&p, 1, Budget::default()), Verdict::Yes);
    // h2 failing then needs `new` (300) elsewhere: h0 and h1 have 400 free each.
    assert_eq!(k1(Change::StartVm { vm: "new".into(), host: "h2".into() }), Ok(false));
    assert_eq!(k1(Change::MigrateVm { vm: "b".into(), to: "h2".into() }), Ok(false));
    // Without h2 as a target, h0 failing needs 600 + 300 on h1, which has 400 free.
    assert_eq!(k1(Change::DisableHost { host: "h2".into() }), Ok(true));
    assert!(matches!(
        k1(Change::MigrateVm { vm: "a".into(), to: "h1".into() }),
        Err(AdmissionError::DoesNotFit(_))
    ));
    assert_eq!(
        k1(Change::StartVm { vm: "zzz".into(), host: "h0".into() }),
        Err(AdmissionError::UnknownVm("zzz".into()))
    );
    assert!(matches!(
        k1(Change::StartVm { vm: "a".into(), host: "h0".into() }),
        Err(AdmissionError::WrongState { .. })
    ));
    assert!(matches!(
        k1(Change::MigrateVm { vm: "new".into(), to: "h0".into() }),
        Err(AdmissionError::WrongState { .. })
    ));
    let disabled = apply(&p, &Change::DisableHost { host: "h2".into() }).unwrap();
    let plan = restart_plan(&disabled, &[0], Budget::default());
    assert!(plan.placements.iter().all(|x| x.host != 2), "a disabled host receives no restarts");
    assert_eq!(validate_plan(&disabled, &plan), vec![]);
    assert_eq!(p.vms.iter().filter(|v| v.protection == Protection::Protect).count(), 3);
}
