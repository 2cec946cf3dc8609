//! Per-view fault state and the dispatcher that decides how each data request is served.
//!
//! The FUSE session threads must never sleep on behalf of a faulted view, otherwise a hung
//! view would stall every other view. So a request on a faulted view is turned into a `Job`
//! (a closure owning the fuser `Reply*` object) which is either parked (hang), run on a
//! short-lived timer thread (delay) or run inline (healthy / EIO).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use fuser::Errno;

/// Faults of one view. `Default` is healthy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fault {
    pub eio_read: bool,
    pub eio_write: bool,
    pub delay_ms: u64,
    pub hang: bool,
}

/// Kind of a data request, which decides the faults that apply to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Read,
    Write,
    /// fsync/fdatasync: what the loop driver issues for FLUSH/FUA; treated as a write.
    Fsync,
}

/// The deferred work of one request: `Ok(())` means "serve it", `Err(e)` means "fail with e".
pub type Job = Box<dyn FnOnce(Result<(), Errno>) + Send>;

#[derive(Clone, Copy, Debug, Default)]
struct Counters {
    reads: u64,
    writes: u64,
    fsyncs: u64,
    eio: u64,
    delayed: u64,
    hung: u64,
}

#[derive(Default)]
struct ViewState {
    fault: Fault,
    parked: Vec<(Op, Job)>,
    counters: Counters,
}

struct State {
    views: BTreeMap<String, ViewState>,
    shutting_down: bool,
}

/// Shared fault table for all views.
pub struct Faults {
    order: Vec<String>,
    state: Mutex<State>,
}

/// What to do with a request, decided under the lock and executed outside it.
enum Action {
    Now(Result<(), Errno>),
    After(Duration, Result<(), Errno>),
}

impl Faults {
    pub fn new(views: &[String]) -> Self {
        let views_map = views.iter().map(|v| (v.clone(), ViewState::default())).collect();
        Faults { order: views.to_vec(), state: Mutex::new(State { views: views_map, shutting_down: false }) }
    }

    pub fn view_names(&self) -> &[String] {
        &self.order
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic in a job never happens under this lock, but don't cascade if it did.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Serve `job` for a request of kind `op` on `view` according to the view's current fault.
    pub fn submit(&self, view: &str, op: Op, job: Job) {
        let action = {
            let mut st = self.lock();
            if st.shutting_down {
                Action::Now(Err(Errno::EIO))
            } else {
                match st.views.get_mut(view) {
                    None => Action::Now(Err(Errno::ENOENT)),
                    Some(vs) => {
                        match op {
                            Op::Read => vs.counters.reads += 1,
                            Op::Write => vs.counters.writes += 1,
                            Op::Fsync => vs.counters.fsyncs += 1,
                        }
                        if vs.fault.hang {
                            vs.counters.hung += 1;
                            vs.parked.push((op, job));
                            return;
                        }
                        decide(vs, op)
                    }
                }
            }
        };
        run(action, job);
    }

    /// Replace the fault of `view`. Requests parked by a previous `hang` are re-submitted
    /// under the new fault (so `hang` -> `eio_read` fails them, `hang` -> healthy serves them).
    pub fn set(&self, view: &str, fault: Fault) -> Result<(), String> {
        let released = {
            let mut st = self.lock();
            let vs = st.views.get_mut(view).ok_or_else(|| format!("unknown view {view:?}"))?;
            vs.fault = fault;
            if fault.hang {
                Vec::new()
            } else {
                std::mem::take(&mut vs.parked)
            }
        };
        for (op, job) in released {
            // Re-dispatch without recounting: decide under the new fault.
            let action = {
                let mut st = self.lock();
                let shutting = st.shutting_down;
                match st.views.get_mut(view) {
                    Some(_) if shutting => Action::Now(Err(Errno::EIO)),
                    Some(vs) if vs.fault.hang => {
                        // Fault changed again to hang while we were releasing: park again.
                        vs.parked.push((op, job));
                        continue;
                    }
                    Some(vs) => decide(vs, op),
                    None => Action::Now(Err(Errno::EIO)),
                }
            };
            run(action, job);
        }
        Ok(())
    }

    /// Stop accepting faults: every parked request and every future faulted request gets EIO,
    /// so nothing stays in D state while we unmount.
    pub fn shutdown(&self) {
        let parked: Vec<Job> = {
            let mut st = self.lock();
            st.shutting_down = true;
            st.views.values_mut().flat_map(|vs| std::mem::take(&mut vs.parked)).map(|(_, j)| j).collect()
        };
        for job in parked {
            job(Err(Errno::EIO));
        }
    }

    /// JSON snapshot of faults and counters. View names are validated to `[A-Za-z0-9_.-]`,
    /// so no escaping is needed.
    pub fn show_json(&self) -> String {
        let st = self.lock();
        let mut out = String::from("{\"views\":{");
        for (i, name) in self.order.iter().enumerate() {
            let Some(vs) = st.views.get(name) else { continue };
            let f = vs.fault;
            let c = vs.counters;
            if i > 0 {
                out.push(',');
            }
            out.push_str(&format!(
                "\"{name}\":{{\"eio_read\":{},\"eio_write\":{},\"delay_ms\":{},\"hang\":{},\
                 \"parked\":{},\"ops\":{{\"reads\":{},\"writes\":{},\"fsyncs\":{},\"eio\":{},\
                 \"delayed\":{},\"hung\":{}}}}}",
                f.eio_read,
                f.eio_write,
                f.delay_ms,
                f.hang,
                vs.parked.len(),
                c.reads,
                c.writes,
                c.fsyncs,
                c.eio,
                c.delayed,
                c.hung
            ));
        }
        out.push_str(&format!("}},\"shutting_down\":{}}}", st.shutting_down));
        out
    }
}

fn decide(vs: &mut ViewState, op: Op) -> Action {
    let f = vs.fault;
    let fail = match op {
        Op::Read => f.eio_read,
        Op::Write | Op::Fsync => f.eio_write,
    };
    let outcome = if fail {
        vs.counters.eio += 1;
        Err(Errno::EIO)
    } else {
        Ok(())
    };
    if f.delay_ms > 0 {
        vs.counters.delayed += 1;
        Action::After(Duration::from_millis(f.delay_ms), outcome)
    } else {
        Action::Now(outcome)
    }
}

fn run(action: Action, job: Job) {
    match action {
        Action::Now(r) => job(r),
        Action::After(d, r) => {
            // One thread per delayed request: delays are for tests, request rates are low,
            // and a thread keeps other views (and other requests of this view) unblocked.
            let spawned = thread::Builder::new().name("faultfs-delay".into()).spawn(move || {
                thread::sleep(d);
                job(r);
            });
            if let Err(e) = spawned {
                // The job moved into the failed closure is dropped; fuser replies EIO on drop.
                eprintln!("faultfs: cannot spawn delay thread ({e}); request fails with EIO");
            }
        }
    }
}
