//! io_uring submission failures: whatever the kernel may have accepted stays pinned until its
//! completion is reaped; what it never accepted is reported failed and pins nothing.

use super::uring::SubmitFault;
use super::*;

const SECTOR: usize = 4096;
const OPS: usize = 4;
/// A bound for the kernel, never a measured duration: no assertion depends on it.
const TIMEOUT: Duration = Duration::from_secs(10);

/// An io_uring engine over a regular file (O_DIRECT on the test file system) whose sector `i`
/// holds the byte `i + 1`, with one sector-sized buffer per op.
fn engine() -> Option<Engine> {
    use std::io::Write;
    let dir = tempfile::Builder::new().prefix("diskbeat-io").tempdir_in("/var/tmp").expect("tempdir");
    let path = dir.path().join("dev.img");
    let mut f = std::fs::File::create(&path).expect("create test device");
    for i in 0..OPS {
        f.write_all(&[i as u8 + 1; SECTOR]).expect("fill test device");
    }
    drop(f);
    let dev = Device::open(&path, Access::ReadWrite).expect("open test device");
    match Engine::new(dev, EngineKind::Uring, &[SECTOR; OPS], OPS) {
        Ok(e) => Some(e),
        Err(IoError::UringUnavailable(e)) if !matches!(std::env::var("CI"), Ok(v) if !v.is_empty()) => {
            eprintln!("SKIPPED: io_uring unavailable ({e})");
            None
        }
        Err(e) => panic!("io_uring engine: {e}"),
    }
}

fn reads() -> Vec<Op> {
    (0..OPS)
        .map(|i| Op { dir: Dir::Read, offset: (i * SECTOR) as u64, buf: i, buf_off: 0, len: SECTOR })
        .collect()
}

/// Runs `ops` without faults and checks every op read its sector.
fn run_clean(e: &mut Engine, ops: &[Op]) {
    let out = e.submit(ops, TIMEOUT).expect("clean submission");
    assert!(out.iter().all(Outcome::is_done), "clean batch: {out:?}");
    for (i, op) in ops.iter().enumerate() {
        let data = e.data(ops, i).expect("completed op has data");
        let want = (op.offset as usize / SECTOR + 1) as u8;
        assert!(data.iter().all(|&b| b == want), "op {i} read the wrong bytes");
    }
}

/// Submits clean batches until every late completion has been reaped (no clock involved).
fn drain(e: &mut Engine, ops: &[Op]) {
    for _ in 0..10_000 {
        if e.pinned_ops() == 0 {
            return;
        }
        run_clean(e, ops);
    }
    panic!("{} ops stay pinned", e.pinned_ops());
}

#[test]
fn submit_error_before_any_sqe_accepted_pins_nothing_and_fails_every_op() {
    let Some(mut e) = engine() else { return };
    let ops = reads();
    e.inject_submit_faults(&[SubmitFault { accept: 0, errno: libc::EIO }]);
    let r = e.submit(&ops, TIMEOUT);
    assert!(matches!(r, Err(IoError::Submit(_))), "{:?}", r.map(<[Outcome]>::to_vec));
    assert_eq!(e.pinned_ops(), 0, "nothing reached the kernel: nothing may stay pinned");
    for i in 0..OPS {
        assert_eq!(e.outcome(i).status, Status::Failed(libc::EIO), "op {i}");
    }
    // The failed batch never reaches the kernel later: clean batches see no stray completion.
    for _ in 0..3 {
        run_clean(&mut e, &ops);
        assert_eq!(e.pinned_ops(), 0);
    }
}

#[test]
fn transient_submit_errors_are_retried() {
    let Some(mut e) = engine() else { return };
    let ops = reads();
    e.inject_submit_faults(&[
        SubmitFault { accept: 0, errno: libc::EAGAIN },
        SubmitFault { accept: 0, errno: libc::EBUSY },
        SubmitFault { accept: 2, errno: libc::EINTR },
    ]);
    run_clean(&mut e, &ops);
    assert_eq!(e.pinned_ops(), 0);
}

#[test]
fn partial_acceptance_reported_as_a_count_submits_the_rest() {
    let Some(mut e) = engine() else { return };
    let ops = reads();
    e.inject_submit_faults(&[SubmitFault { accept: 3, errno: 0 }]);
    run_clean(&mut e, &ops);
    assert_eq!(e.pinned_ops(), 0);
}

/// `accept` SQEs reach the kernel (2 per op: the op and its linked timeout), then a hard error.
fn error_after_partial_acceptance(accept: u32) {
    let Some(mut e) = engine() else { return };
    let ops = reads();
    e.inject_submit_faults(&[SubmitFault { accept, errno: libc::EIO }]);
    let r = e.submit(&ops, TIMEOUT);
    assert!(matches!(r, Err(IoError::Submit(_))), "{:?}", r.map(<[Outcome]>::to_vec));
    let accepted_ops = (accept as usize).div_ceil(2);
    let mut in_flight = 0;
    for i in 0..OPS {
        let status = e.outcome(i).status;
        if i < accepted_ops {
            // Accepted: completed already, or pinned until its completion is reaped.
            match status {
                Status::Done => {}
                Status::TimedOut => {
                    in_flight += 1;
                    assert!(e.bufs[i].pinned[e.op_copy[i] as usize] > 0, "op {i} in flight but unpinned");
                }
                s => panic!("accepted op {i}: {s:?}"),
            }
        } else {
            assert_eq!(status, Status::Failed(libc::EIO), "op {i} never accepted");
            assert_eq!(e.bufs[i].pinned, [0, 0], "op {i} never accepted but pinned");
        }
    }
    assert_eq!(e.pinned_ops(), in_flight);
    // A copy pinned by an op in flight is never handed out again before its completion.
    for i in 0..accepted_ops {
        let b = &e.bufs[i];
        if b.pinned[e.op_copy[i] as usize] > 0 {
            let copy = e.op_copy[i] as usize;
            let ptr = e.buf_mut(i).expect("spare copy").as_ptr();
            assert_ne!(ptr, e.bufs[i].copies[copy].as_ptr(), "pinned copy of buffer {i} handed out");
        }
    }
    drain(&mut e, &ops);
    run_clean(&mut e, &ops);
    assert_eq!(e.pinned_ops(), 0);
}

#[test]
fn submit_error_after_one_op_accepted() {
    error_after_partial_acceptance(2);
}

#[test]
fn submit_error_after_an_op_accepted_without_its_linked_timeout() {
    error_after_partial_acceptance(3);
}

#[test]
fn ops_that_find_no_room_in_the_queue_fail_and_pin_nothing() {
    let Some(mut e) = engine() else { return };
    let ops = reads();
    // The first batch fills the submission queue and is never accepted; the second finds the
    // queue still full (its flush fails too) and cannot queue anything.
    e.inject_submit_faults(&[
        SubmitFault { accept: 0, errno: libc::EIO },
        SubmitFault { accept: 0, errno: libc::EIO },
    ]);
    assert!(e.submit(&ops, TIMEOUT).is_err());
    match e.submit(&ops, TIMEOUT) {
        Ok(out) => assert!(out.iter().all(|o| matches!(o.status, Status::Failed(_))), "{out:?}"),
        Err(IoError::Submit(_)) => {}
        Err(err) => panic!("{err}"),
    }
    assert_eq!(e.pinned_ops(), 0);
    run_clean(&mut e, &ops);
    assert_eq!(e.pinned_ops(), 0);
}
