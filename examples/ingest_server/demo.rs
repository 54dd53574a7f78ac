//! `--demo`: synthetic telemetry for three tenants, posted through the
//! host every 100 ms, with a regional incident (slow and failing requests)
//! every 90 seconds that fires the shipped alert rules.

use std::time::Duration;

use edgestream::host::tokio::{Clock, HostError, HostHandle, SystemClock};

pub(crate) const TENANTS: [&str; 3] = ["acme", "globex", "initech"];

/// Region, latitude, longitude, typical latency in ms.
const REGIONS: [(&str, f64, f64, f64); 6] = [
    ("eu-west", 38.72, -9.14, 38.0),
    ("eu-central", 50.11, 8.68, 32.0),
    ("us-east", 38.90, -77.04, 45.0),
    ("us-west", 37.77, -122.42, 52.0),
    ("ap-south", 19.08, 72.88, 70.0),
    ("sa-east", -23.55, -46.63, 60.0),
];
const SERVICES: [&str; 3] = ["api", "auth", "checkout"];
const TYPES: [&str; 4] = ["page_view", "api_call", "login", "purchase"];

/// xorshift64*: a small deterministic generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: usize) -> usize {
        (self.unit() * n as f64) as usize % n.max(1)
    }

    /// Standard normal (Box–Muller).
    fn normal(&mut self) -> f64 {
        let u = self.unit().max(1e-12);
        let v = self.unit();
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items.get(self.below(items.len())).copied().unwrap_or_default()
    }
}

/// Posts until the host shuts down.
pub(crate) async fn run(handle: HostHandle) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut seq = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    let started = tokio::time::Instant::now();
    loop {
        ticker.tick().await;
        let elapsed = started.elapsed().as_secs();
        // From 40 s to 70 s of every 90 s, one region is in trouble.
        let incident = (40..70).contains(&(elapsed % 90)).then(|| (elapsed / 90) as usize % REGIONS.len());
        let now_ms = SystemClock.now().as_millis();
        for (t, tenant) in TENANTS.iter().enumerate() {
            let n = 8 + 6 * t + rng.below(8);
            let mut body = String::with_capacity(n * 220);
            for i in 0..n {
                seq += 1;
                let r = rng.below(REGIONS.len());
                let Some(&(region, lat, lon, typical)) = REGIONS.get(r) else { continue };
                let trouble = incident == Some(r);
                let latency = typical * (0.45 * rng.normal()).exp() * if trouble { 6.0 } else { 1.0 };
                let errors = u8::from(rng.unit() < if trouble { 0.3 } else { 0.01 });
                let ts = now_ms - 100 + (i as i64 * 100 / n as i64);
                body.push_str(&format!(
                    concat!(
                        r#"{{"tenant":"{}","stream":"http","ts":{},"id":"{}-{}","#,
                        r#""dims":{{"region":"{}","service":"{}","type":"{}"}},"#,
                        r#""fields":{{"latency_ms":{:.1},"errors":{}}},"geo":{{"lat":{:.3},"lon":{:.3}}}}}"#,
                        "\n"
                    ),
                    tenant,
                    ts,
                    tenant,
                    seq,
                    region,
                    rng.pick(&SERVICES),
                    rng.pick(&TYPES),
                    latency,
                    errors,
                    lat + rng.normal() * 1.5,
                    lon + rng.normal() * 1.5,
                ));
            }
            match handle.ingest(tenant, "application/x-ndjson", body.into()).await {
                Ok(_) => {}
                Err(HostError::Closed) => return,
                Err(e) => tracing::warn!(error = %e, "demo body refused"),
            }
        }
    }
}
