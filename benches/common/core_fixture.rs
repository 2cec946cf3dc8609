// Shared by benches/core.rs and tests/core_alloc.rs (included with `#[path]`).
//
// A core on slot 0 of a 2048-slot table where every other slot holds a live host whose record
// advances every cycle: a few versions of the whole table are encoded up front, so moving the
// peers on costs nothing inside the measured cycle.

use diskbeat::core::{Action, IoFailure, Node, NodeConfig, Phase, SlotSource};
use diskbeat::format::mailbox::Mailbox;
use diskbeat::format::record::{Record, State};
use diskbeat::timing::Timing;

pub const SLOTS: u32 = 2048;
const VERSIONS: usize = 4;
const CLUSTER: uuid::Uuid = uuid::Uuid::from_u128(0xbe9c);
const SUPERBLOCK: [u8; 512] = [0x5b; 512];

pub struct Table {
    /// VERSIONS copies of the table; peers advance by switching versions.
    versions: Vec<Vec<[u8; 512]>>,
    current: usize,
    own: [u8; 512],
    mailbox: [u8; 512],
}

impl SlotSource for Table {
    fn slot(&self, slot: u32) -> Result<&[u8], IoFailure> {
        if slot == 0 {
            Ok(&self.own)
        } else {
            Ok(&self.versions[self.current][slot as usize])
        }
    }
    fn mailbox(&self) -> Result<&[u8], IoFailure> {
        Ok(&self.mailbox)
    }
    fn superblock(&self) -> Result<&[u8], IoFailure> {
        Ok(&SUPERBLOCK)
    }
}

pub struct Fixture {
    pub core: Node,
    pub table: Table,
    pub now: u64,
}

impl Fixture {
    pub fn new() -> Fixture {
        let mut versions = vec![vec![[0u8; 512]; SLOTS as usize]; VERSIONS];
        for (v, table) in versions.iter_mut().enumerate() {
            for s in 1..SLOTS {
                let mut r = Record::free(CLUSTER, s);
                r.state = State::Live;
                r.host_uuid = uuid::Uuid::from_u128(0x1000 + u128::from(s));
                r.generation = 1;
                r.sequence = 100 + v as u64;
                r.io_timeout_ms = 10_000;
                r.interval_ms = 2_000;
                r.set_host_name(&format!("hv-{s:04}")).unwrap();
                r.net_view.set(s, true);
                r.encode(&mut table[s as usize]);
            }
        }
        let mut mailbox = [0u8; 512];
        Mailbox::empty(CLUSTER, 0).encode(&mut mailbox);
        let mut own = [0u8; 512];
        Record::free(CLUSTER, 0).encode(&mut own);
        let core = Node::new(
            NodeConfig {
                slot: 0,
                slot_count: SLOTS,
                cluster_uuid: CLUSTER,
                host_uuid: uuid::Uuid::from_u128(0xabc),
                host_name: diskbeat::format::encode_name("bench").unwrap(),
                timing: Timing::from_base(40_000).unwrap(),
                superblock: SUPERBLOCK,
                watchdog: true,
                fence_stops_vms: true,
                skip_acquire_wait: false,
                networks: 0,
                weight: 1,
                isolation_configured: false,
                boot_id: uuid::Uuid::nil(),
                fence_suspicion_ms: 0,
            },
            0,
        );
        Fixture { core, table: Table { versions, current: 0, own, mailbox }, now: 0 }
    }

    /// One heartbeat cycle, driven like the daemon: the peers advance, the node sweeps (handed the
    /// table), then writes (the record lands in our slot).
    #[inline]
    pub fn cycle(&mut self) {
        self.table.current = (self.table.current + 1) % VERSIONS;
        if let Some(at) = self.core.poll_timeout() {
            self.now = self.now.max(at);
        }
        let now = self.now;
        while let Some(a) = self.core.poll_action(now) {
            match a {
                Action::Sweep { .. } => self.core.handle_sweep(now + 1, now + 2, Some(&self.table), 900, 0),
                Action::Write { record, .. } => {
                    record.encode(&mut self.table.own);
                    self.core.handle_write(now + 3, Ok(150));
                }
                Action::Fence { .. } => panic!("the bench fixture never fences"),
                _ => {}
            }
        }
    }

    /// Drains the core's events; returns how many there were.
    pub fn drain(&mut self) -> usize {
        std::iter::from_fn(|| self.core.poll_event()).count()
    }

    /// Runs until live and every peer is seen live, with no more events.
    pub fn warm_up(&mut self) {
        for _ in 0..100 {
            self.cycle();
            self.drain();
            if self.core.phase() == Phase::Live {
                break;
            }
        }
        assert_eq!(self.core.phase(), Phase::Live);
        for _ in 0..3 {
            self.cycle();
            self.drain();
        }
        self.cycle();
        assert_eq!(self.drain(), 0, "steady state emits no events");
        assert!(self.core.peers()[1..].iter().all(|p| p.state == diskbeat::core::PeerState::Live));
    }
}
