#![no_main]
// Alert snapshots come back from storage: any bytes give a typed error or
// an evaluator / notifier that keeps working, never a panic.

use edgestream::alert::{EvalConfig, Evaluator, Notifier, NotifierConfig, Rule};
use edgestream::time::Timestamp;
use libfuzzer_sys::fuzz_target;

fn rules() -> Vec<Rule> {
    ["avg(x) by (g) > 1 for 2m", "absent() by (g) for 3m", "spike(count()) > 3 keep_firing_for 1m"]
        .iter()
        .enumerate()
        .map(|(i, text)| Rule::parse(&format!("r{i}"), text).expect("valid rule"))
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if let Ok(mut ev) = Evaluator::restore(rules(), EvalConfig::default(), data) {
        let mut out = Vec::new();
        let _ = ev.next_deadline();
        ev.advance(Timestamp::from_secs(1_000_000_000).expect("in range"), &mut out);
        let mut bytes = Vec::new();
        ev.snapshot(&mut bytes);
        assert!(Evaluator::restore(rules(), EvalConfig::default(), &bytes).is_ok());
    }
    if let Ok(mut n) = Notifier::restore(NotifierConfig::default(), &rules(), data) {
        let mut out = Vec::new();
        let _ = n.next_deadline();
        n.advance(Timestamp::from_secs(1_000_000_000).expect("in range"), &mut out);
    }
});
