//! Nexmark q7 and q5 in their windowed-aggregate forms, on edgestream's
//! decode-free path: groups resolved once ([`Windows::resolve`]), values
//! pushed with [`Windows::push_resolved`]. Shared by the example, its
//! test and `benches/nexmark.rs`.

use std::collections::HashMap;

use edgestream::time::{Span, Timestamp};
use edgestream::window::{FieldSpec, GroupHandle, PushError, WindowResult, WindowSpec, Windows};

/// One bid, as the queries read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bid {
    /// The auction.
    pub(crate) auction: u64,
    /// The bidder.
    pub(crate) bidder: u64,
    /// The price, in cents.
    pub(crate) price: u64,
    /// Event time.
    pub(crate) ts: Timestamp,
}

/// One q7 row: the highest bid and the number of bids of one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Q7Row {
    /// Window start.
    pub(crate) start: Timestamp,
    /// Window end.
    pub(crate) end: Timestamp,
    /// The highest price.
    pub(crate) max_price: u64,
    /// Bids in the window.
    pub(crate) bids: u64,
}

/// One q5 row: the bids of one auction in one window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Q5Row {
    /// Window start.
    pub(crate) start: Timestamp,
    /// Window end.
    pub(crate) end: Timestamp,
    /// The auction.
    pub(crate) auction: u64,
    /// Its bids in the window.
    pub(crate) bids: u64,
}

/// Any failure of the windows (a bad spec; a push refused).
pub(crate) type Error = Box<dyn std::error::Error + Send + Sync>;

const TENANT: &str = "nexmark";
const STREAM: &str = "bids";
/// Bids between two `advance` calls: results leave the operator as the
/// stream goes, so memory holds the open windows only.
const ADVANCE_EVERY: usize = 64 * 1024;

/// Drains the operator's results into `rows`.
fn drain<T>(windows: &mut Windows, rows: &mut Vec<T>, row: impl Fn(&WindowResult) -> Option<T>) {
    while let Some(r) = windows.poll_result() {
        if let Some(row) = row(&r) {
            rows.push(row);
        }
    }
}

/// The end of the stream: every window closes.
fn finish(windows: &mut Windows, bids: &[Bid]) {
    let last = bids.iter().map(|b| b.ts).max().unwrap_or(Timestamp::from_nanos(0));
    windows.close_all(last);
}

/// q7: per window, the highest price and the number of bids.
pub(crate) fn q7(bids: &[Bid], window: Span) -> Result<Vec<Q7Row>, Error> {
    let spec = WindowSpec::new(window).field(FieldSpec::new("price")).idle_timeout(None);
    let mut windows = Windows::new(spec)?;
    let group = windows.resolve(TENANT, STREAM, &[]);
    let mut rows = Vec::new();
    let row = |r: &WindowResult| {
        let max = r.fields.first()?.scalar.max()?;
        Some(Q7Row { start: r.start, end: r.end, max_price: max as u64, bids: r.events })
    };
    for (i, bid) in bids.iter().enumerate() {
        windows.push_resolved(group, bid.ts, &[bid.price as f64], 1.0, bid.ts)?;
        if i % ADVANCE_EVERY == ADVANCE_EVERY - 1 {
            windows.advance(bid.ts);
            drain(&mut windows, &mut rows, row);
        }
    }
    finish(&mut windows, bids);
    drain(&mut windows, &mut rows, row);
    check_nothing_lost(&windows, bids.len())?;
    Ok(rows)
}

/// q5 in its windowed-aggregate form: per window and auction, the number
/// of bids.
pub(crate) fn q5(bids: &[Bid], window: Span) -> Result<Vec<Q5Row>, Error> {
    let spec = WindowSpec::new(window)
        .group_by(["auction"])
        .idle_timeout(None)
        // Every auction of a window is a group: no overflow group here.
        .max_groups_per_tenant(10_000_000);
    let mut windows = Windows::new(spec)?;
    // A fast hasher: the auction ids are not attacker-chosen here.
    let mut handles: HashMap<u64, GroupHandle, foldhash::fast::FixedState> = HashMap::default();
    let mut rows = Vec::new();
    let row = |r: &WindowResult| {
        let auction = r.group.label("auction")?.parse().ok()?;
        Some(Q5Row { start: r.start, end: r.end, auction, bids: r.events })
    };
    for (i, bid) in bids.iter().enumerate() {
        let handle = match handles.get(&bid.auction) {
            Some(h) => *h,
            None => *handles.entry(bid.auction).or_insert_with(|| resolve(&mut windows, bid.auction)),
        };
        match windows.push_resolved(handle, bid.ts, &[], 1.0, bid.ts) {
            Ok(_) => {}
            // The auction's group was freed (idle past its TTL): again.
            Err(PushError::StaleGroup { .. }) => {
                let handle = resolve(&mut windows, bid.auction);
                handles.insert(bid.auction, handle);
                windows.push_resolved(handle, bid.ts, &[], 1.0, bid.ts)?;
            }
            Err(e) => return Err(e.into()),
        }
        if i % ADVANCE_EVERY == ADVANCE_EVERY - 1 {
            windows.advance(bid.ts);
            drain(&mut windows, &mut rows, row);
        }
    }
    finish(&mut windows, bids);
    drain(&mut windows, &mut rows, row);
    check_nothing_lost(&windows, bids.len())?;
    Ok(rows)
}

fn resolve(windows: &mut Windows, auction: u64) -> GroupHandle {
    windows.resolve(TENANT, STREAM, &[&auction.to_string()])
}

/// Every bid was aggregated on time: none late, none in an overflow group.
fn check_nothing_lost(windows: &Windows, bids: usize) -> Result<(), Error> {
    let s = windows.stats();
    if s.on_time != bids as u64 || s.overflowed != 0 {
        return Err(format!("{} of {bids} bids on time, {} overflowed", s.on_time, s.overflowed).into());
    }
    Ok(())
}
