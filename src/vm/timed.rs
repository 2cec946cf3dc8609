//! Bounds every call of a driver that has no timeout of its own (libvirt: its client API has none
//! per call, and keepalive needs an event loop). The driver lives on a worker thread; each call is
//! handed to it and waited for at most the call timeout (`Timing::vm_call_timeout_ms`). A call
//! that overruns is abandoned together with its worker and driver (the connection it hangs on):
//! the caller gets an `Unreachable` error at the deadline, and the next call opens a fresh driver
//! on a fresh worker. The abandoned thread ends when its call returns, if ever.

use super::{DriverError, Inventory, ProtectionSettings, StartRequest, VmDriver, VmRunState};
use std::sync::mpsc;
use std::time::Duration;

type Job = Box<dyn FnOnce(&mut dyn VmDriver) + Send>;
type Open = Box<dyn Fn() -> Result<Box<dyn VmDriver>, DriverError> + Send + Sync>;

pub struct TimedDriver {
    kind: &'static str,
    open: std::sync::Arc<Open>,
    timeout: Duration,
    worker: Option<mpsc::Sender<Job>>,
}

impl TimedDriver {
    /// `open` makes the driver (on the worker thread: a hanging connect is bounded too). Opens
    /// the first one now, so a driver that cannot be opened is reported at once.
    pub fn new(
        kind: &'static str,
        timeout_ms: u64,
        open: impl Fn() -> Result<Box<dyn VmDriver>, DriverError> + Send + Sync + 'static,
    ) -> Result<TimedDriver, DriverError> {
        let mut d = TimedDriver {
            kind,
            open: std::sync::Arc::new(Box::new(open)),
            timeout: Duration::from_millis(timeout_ms),
            worker: None,
        };
        d.worker = Some(d.spawn()?);
        Ok(d)
    }

    fn spawn(&self) -> Result<mpsc::Sender<Job>, DriverError> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (opened_tx, opened) = mpsc::sync_channel::<Result<(), DriverError>>(1);
        let open = self.open.clone();
        std::thread::Builder::new()
            .name(format!("{}-driver", self.kind))
            .spawn(move || {
                let mut driver = match open() {
                    Ok(d) => {
                        let _ = opened_tx.send(Ok(()));
                        d
                    }
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        return;
                    }
                };
                for job in rx {
                    job(driver.as_mut());
                }
            })
            .map_err(|e| {
                DriverError::Unreachable(format!("cannot start a {} driver thread: {e}", self.kind))
            })?;
        match opened.recv_timeout(self.timeout) {
            Ok(Ok(())) => Ok(jobs),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(DriverError::Unreachable(format!(
                "opening the {} connection did not finish within {} ms: abandoned",
                self.kind,
                self.timeout.as_millis()
            ))),
        }
    }

    fn call<T: Send + 'static>(
        &mut self,
        op: &'static str,
        f: impl FnOnce(&mut dyn VmDriver) -> Result<T, DriverError> + Send + 'static,
    ) -> Result<T, DriverError> {
        if self.worker.is_none() {
            self.worker = Some(self.spawn()?);
        }
        let (reply_tx, reply) = mpsc::sync_channel(1);
        let job: Job = Box::new(move |d| {
            let _ = reply_tx.send(f(d));
        });
        let sent = self.worker.as_ref().is_some_and(|w| w.send(job).is_ok());
        if !sent {
            self.worker = None;
            return Err(DriverError::Unreachable(format!("the {} driver thread is gone", self.kind)));
        }
        match reply.recv_timeout(self.timeout) {
            Ok(r) => r,
            Err(e) => {
                // Abandon the worker and its connection: the next call starts afresh.
                self.worker = None;
                let why = match e {
                    mpsc::RecvTimeoutError::Timeout => {
                        format!("no answer within {} ms: connection abandoned", self.timeout.as_millis())
                    }
                    mpsc::RecvTimeoutError::Disconnected => "the driver thread died".to_string(),
                };
                Err(DriverError::Unreachable(format!("{} {op}: {why}", self.kind)))
            }
        }
    }
}

impl VmDriver for TimedDriver {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn inventory(&mut self) -> Result<Inventory, DriverError> {
        self.call("inventory", |d| d.inventory())
    }

    fn start(&mut self, vm: &StartRequest<'_>) -> Result<(), DriverError> {
        let (name, uuid, definition) = (vm.name.to_string(), vm.uuid, vm.definition.to_vec());
        self.call("start", move |d| d.start(&StartRequest { name: &name, uuid, definition: &definition }))
    }

    fn destroy(&mut self, name: &str) -> Result<(), DriverError> {
        let name = name.to_string();
        self.call("destroy", move |d| d.destroy(&name))
    }

    fn lookup(&mut self, uuid: uuid::Uuid) -> Result<Option<VmRunState>, DriverError> {
        self.call("lookup", move |d| d.lookup(uuid))
    }

    fn set_protection(&mut self, name: &str, settings: &ProtectionSettings) -> Result<(), DriverError> {
        let (name, settings) = (name.to_string(), settings.clone());
        self.call("set_protection", move |d| d.set_protection(&name, &settings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::Capacity;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    /// Hangs in `inventory` while `hang` is set; counts opens.
    struct Slow {
        hang: Arc<std::sync::atomic::AtomicBool>,
    }

    impl VmDriver for Slow {
        fn kind(&self) -> &'static str {
            "slow"
        }
        fn inventory(&mut self) -> Result<Inventory, DriverError> {
            while self.hang.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(Inventory { capacity: Capacity { memory_mib: 1, vcpus: 1 }, vms: vec![] })
        }
        fn start(&mut self, _: &StartRequest<'_>) -> Result<(), DriverError> {
            Ok(())
        }
        fn destroy(&mut self, name: &str) -> Result<(), DriverError> {
            Err(DriverError::NoSuchVm(name.into()))
        }
        fn lookup(&mut self, _: uuid::Uuid) -> Result<Option<VmRunState>, DriverError> {
            Ok(None)
        }
        fn set_protection(&mut self, _: &str, _: &ProtectionSettings) -> Result<(), DriverError> {
            Ok(())
        }
    }

    #[test]
    fn a_hung_call_is_abandoned_at_the_timeout_and_the_next_call_reconnects() {
        let hang = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let opens = Arc::new(AtomicU32::new(0));
        let (h, o) = (hang.clone(), opens.clone());
        let mut d = TimedDriver::new("slow", 200, move || {
            o.fetch_add(1, Ordering::SeqCst);
            Ok(Box::new(Slow { hang: h.clone() }) as Box<dyn VmDriver>)
        })
        .unwrap();
        assert!(d.inventory().is_ok());
        assert!(matches!(d.destroy("x"), Err(DriverError::NoSuchVm(n)) if n == "x"), "errors pass through");
        hang.store(true, Ordering::SeqCst);
        let e = d.inventory().unwrap_err();
        assert!(
            matches!(&e, DriverError::Unreachable(m) if m.contains("inventory") && m.contains("200 ms")),
            "{e}"
        );
        assert_eq!(opens.load(Ordering::SeqCst), 1);
        hang.store(false, Ordering::SeqCst);
        assert!(d.inventory().is_ok(), "a fresh driver answers");
        assert_eq!(opens.load(Ordering::SeqCst), 2, "the hung connection was abandoned, a new one opened");
    }

    #[test]
    fn a_hanging_open_is_bounded_too() {
        let e = TimedDriver::new("slow", 100, || {
            std::thread::sleep(Duration::from_secs(5));
            Err(DriverError::Unreachable("never".into()))
        })
        .err()
        .expect("refused");
        assert!(matches!(&e, DriverError::Unreachable(m) if m.contains("100 ms")), "{e}");
    }
}
