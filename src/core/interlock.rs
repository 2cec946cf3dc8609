//! The fence interlock: the rules between this host's fence action and its VM starts and
//! publishes. Pure: the daemon keeps one behind a mutex shared by the heartbeat loop, the backup
//! deadline thread and the VM thread (each call is a few instructions: nobody holds it across a
//! driver call or an I/O); the simulator drives the same code. docs/SAFETY.md, point 6.
//!
//! Why: a fence mark says "the VMs this host published stopped". A start that completes after
//! the fence action ran would make the mark lie about that VM (it runs, on a host proven gone:
//! restarted elsewhere, twice), and a publish after the fence began could erase the evidence of
//! what ran here. So once a fence attempt begins, no start begins and nothing is published, and
//! the action itself waits for the starts already in flight, for a bounded time (then the
//! attempt fails and is retried: a failed fence proves nothing).

/// What a fence attempt may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// No VM start is in flight: run the action.
    Go,
    /// Starts are in flight: ask again later (they end within the driver's call timeout).
    Wait,
    /// Starts have been in flight for the whole limit: this attempt fails.
    Fail,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Interlock {
    fencing: bool,
    starts_in_flight: u32,
    /// When the current fence attempt began waiting for starts in flight.
    waiting_since_ms: Option<u64>,
}

impl Interlock {
    pub const fn new() -> Interlock {
        Interlock { fencing: false, starts_in_flight: 0, waiting_since_ms: None }
    }

    /// A VM start may begin: the node is `live` and this host is not fencing. On `true` the start
    /// is in flight until [`Interlock::end_start`].
    #[must_use]
    pub fn begin_start(&mut self, live: bool) -> bool {
        if self.fencing || !live {
            return false;
        }
        self.starts_in_flight += 1;
        true
    }

    /// A start that [`Interlock::begin_start`] allowed has returned (whatever its outcome).
    pub fn end_start(&mut self) {
        // Called under the daemon's mutex: a panic here would leave the fence (run by the panic
        // hook) waiting on that same mutex. Checked in debug builds and by the simulator.
        debug_assert!(self.starts_in_flight > 0, "end_start without a start in flight");
        self.starts_in_flight = self.starts_in_flight.saturating_sub(1);
    }

    /// Whether a host state may be written: never once fencing began (the last state on the
    /// disk stays the evidence of what ran here).
    pub fn may_publish(&self) -> bool {
        !self.fencing
    }

    pub fn is_fencing(&self) -> bool {
        self.fencing
    }

    pub fn starts_in_flight(&self) -> u32 {
        self.starts_in_flight
    }

    /// A fence attempt wants to act at `now_ms`. From the first call on, this host is fencing
    /// (for good: a fenced host starts and publishes nothing). `Go` once no start is in flight;
    /// `Fail` when starts have been in flight for `limit_ms` since this attempt began waiting.
    pub fn fence_gate(&mut self, now_ms: u64, limit_ms: u64) -> Gate {
        self.fencing = true;
        if self.starts_in_flight == 0 {
            self.waiting_since_ms = None;
            return Gate::Go;
        }
        let since = *self.waiting_since_ms.get_or_insert(now_ms);
        if now_ms.saturating_sub(since) >= limit_ms {
            // The next attempt waits afresh.
            self.waiting_since_ms = None;
            Gate::Fail
        } else {
            Gate::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_start_begins_once_fencing_and_the_fence_waits_for_starts_in_flight() {
        let mut i = Interlock::new();
        assert!(!i.begin_start(false), "not live: no start");
        assert!(i.begin_start(true));
        assert!(i.may_publish());
        assert_eq!(i.fence_gate(100, 50), Gate::Wait);
        assert!(!i.may_publish(), "nothing is published once fencing");
        assert!(!i.begin_start(true), "no start begins once fencing");
        assert_eq!(i.fence_gate(149, 50), Gate::Wait);
        assert_eq!(i.fence_gate(150, 50), Gate::Fail);
        assert_eq!(i.fence_gate(160, 50), Gate::Wait, "a new attempt waits afresh");
        i.end_start();
        assert_eq!(i.fence_gate(170, 50), Gate::Go);
        assert!(i.is_fencing());
    }
}
