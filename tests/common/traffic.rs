//! Deterministic, realistic telemetry for tests and benchmarks: a few
//! tenants, 8 regions, 200 devices, 5 device types, two numeric fields
//! with two and one decimals, unique ids, millisecond event times.

use edgestream::event::{Event, EventBatch};
use edgestream::time::{Span, Timestamp};

const TENANTS: [&str; 3] = ["acme", "globex", "initech"];
const REGIONS: [&str; 8] =
    ["eu-west", "eu-central", "us-east", "us-west", "sa-east", "ap-south", "ap-northeast", "af-south"];
const TYPES: [&str; 5] = ["thermostat", "meter", "gateway", "camera", "pump"];

/// SplitMix64: a tiny, fixed-seed generator so runs are reproducible.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The event time the generated traffic starts at: 2026-11-28T04:00:00Z.
pub(crate) fn start() -> Timestamp {
    Timestamp::from_secs(1_795_838_400).unwrap()
}

/// `n` events: 3 dims, 2 fields, an id, about one per millisecond.
pub(crate) fn events(n: usize, seed: u64) -> Vec<Event> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let device = rng.below(200);
            let ts = start().saturating_add(Span::from_millis(i as i64 + rng.below(20) as i64 - 10));
            Event::new(TENANTS[(device % 3) as usize], "metrics", ts)
                .with_id(format!("evt-{seed:04}-{i:08}"))
                .with_dim("region", REGIONS[(device % 8) as usize])
                .with_dim("device", format!("dev-{device:04}"))
                .with_dim("type", TYPES[(device % 5) as usize])
                .with_field("temp_c", (1_500 + rng.below(2_000)) as f64 / 100.0)
                .with_field("humidity", (300 + rng.below(400)) as f64 / 10.0)
        })
        .collect()
}

/// The same events as a batch.
pub(crate) fn batch(n: usize, seed: u64) -> EventBatch {
    let mut batch = EventBatch::new();
    for e in events(n, seed) {
        batch.push(&e);
    }
    batch
}
