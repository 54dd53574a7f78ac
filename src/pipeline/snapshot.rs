//! The whole pipeline state in one versioned blob.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Dedup, Pipeline, PipelineConfig, PipelineError, Sampler, Stage, Tenant, TenantStats};
use crate::alert::{Evaluator, Notifier};
use crate::delta::board::{BoardError, BoardStats, Frame, TileBoard};
use crate::flow::{FidelityLadder, LoadInputs, RateLimiter};
use crate::sample::{AdaptiveSampler, HashSampler, stable_hash};
use crate::time::Timestamp;
use crate::window::{Rollup, Windows};

/// The snapshot format version written by [`Pipeline::snapshot`].
const VERSION: u32 = 2;

/// Seed of the checksum that ends every snapshot.
const CHECKSUM_SEED: u64 = 0x7069_7065_6c69_6e65;

#[derive(Serialize, Deserialize)]
struct Snap {
    version: u32,
    tenants: Vec<TenantSnap>,
    tenants_refused: u64,
    retired: TenantStats,
    tenants_retired: u64,
    sampling: AsJson<super::SamplingConfig>,
    sampler: SamplerSnap,
    ladder: AsJson<Option<FidelityLadder>>,
    ladder_sampler: Option<HashSampler>,
    load: LoadInputs,
    windows: Vec<WindowSnap>,
    boards: Vec<BoardSnap>,
    board_errors: u64,
    evaluator: Option<Vec<u8>>,
    notifier: Option<Vec<u8>>,
    archive_seq: Option<u64>,
    archive_stats: Option<crate::sink::SinkStats>,
    archive_errors: u64,
    pending_since: Option<Timestamp>,
    last_advance: Option<Timestamp>,
    last_now: Option<Timestamp>,
    latency: super::stats::Latency,
    admitted_pending: u64,
    audit_dropped: u64,
    errors_dropped: u64,
    subscriber_frames_dropped: u64,
    subscribers_evicted: u64,
}

/// A value kept as JSON text inside the binary snapshot: for types whose
/// serde form needs a self-describing format (internally tagged enums).
struct AsJson<T>(T);

impl<T: Serialize> Serialize for AsJson<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let text = serde_json::to_string(&self.0).map_err(serde::ser::Error::custom)?;
        s.serialize_str(&text)
    }
}

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for AsJson<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        serde_json::from_str(&text).map(AsJson).map_err(serde::de::Error::custom)
    }
}

#[derive(Serialize, Deserialize)]
struct TenantSnap {
    name: String,
    stats: TenantStats,
    last_seen: Timestamp,
    /// Keys of the remembered ids, oldest first.
    ids: Vec<u128>,
    admitted_since: u64,
}

#[derive(Serialize, Deserialize)]
enum SamplerSnap {
    None,
    Hash(HashSampler),
    Adaptive(AdaptiveSampler<String>),
}

#[derive(Serialize, Deserialize)]
struct WindowSnap {
    name: String,
    windows: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct BoardSnap {
    tenant: String,
    /// The board as a Protobuf snapshot frame.
    frame: Vec<u8>,
    stats: BoardStats,
}

impl Pipeline {
    /// Appends the whole state to `out` in one versioned binary blob that
    /// ends with a checksum: tenants and their counters, remembered ids,
    /// rate limiter and sampler state, the fidelity level, every window
    /// operator with its rollup, the tile boards, the alert evaluator and
    /// notifier, the archive's file numbering. [`Pipeline::restore`]
    /// continues from it as if there had been no restart.
    ///
    /// What is waiting for the next `advance` to hand out (archive files
    /// finished during ingest, raw and late events, audit events, errors)
    /// is handed out into `pending` first, so nothing is held outside the
    /// blob. The rows of archive files still open are not in it: call
    /// [`flush_archive`](Pipeline::flush_archive) first when they must
    /// survive a restart.
    ///
    /// Fails only if a part of the state cannot be encoded (a bug, reported
    /// rather than hidden); `out` is then left as it was.
    pub fn snapshot(&mut self, out: &mut Vec<u8>, pending: &mut super::Outputs) -> Result<(), PipelineError> {
        self.hand_out_pending(pending);
        let tenants = self
            .tenants
            .iter()
            .map(|(name, t)| TenantSnap {
                name: name.to_string(),
                stats: t.stats.clone(),
                last_seen: t.last_seen,
                ids: t.dedup.order.iter().copied().collect(),
                admitted_since: t.admitted_since,
            })
            .collect();
        let sampler = match &self.sampler {
            Sampler::None => SamplerSnap::None,
            Sampler::Hash(s) => SamplerSnap::Hash(s.clone()),
            Sampler::Adaptive { sampler, .. } => SamplerSnap::Adaptive((**sampler).clone()),
        };
        let windows = self
            .stages
            .iter()
            .map(|s| {
                let mut bytes = Vec::new();
                s.windows.snapshot(&mut bytes);
                WindowSnap { name: s.name.to_string(), windows: bytes }
            })
            .collect();
        let boards = self
            .boards
            .iter()
            .map(|((tenant, _), board)| BoardSnap {
                tenant: tenant.to_string(),
                frame: Frame::Snapshot(board.snapshot()).to_protobuf(),
                stats: board.stats().clone(),
            })
            .collect();
        let blob = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut bytes = Vec::new();
            f(&mut bytes);
            bytes
        };
        let snap = Snap {
            version: VERSION,
            tenants,
            tenants_refused: self.tenants_refused,
            retired: self.retired.clone(),
            tenants_retired: self.tenants_retired,
            sampling: AsJson(self.config.sampling.clone()),
            sampler,
            ladder: AsJson(self.ladder.clone()),
            ladder_sampler: self.ladder_sampler.clone(),
            load: self.load,
            windows,
            boards,
            board_errors: self.board_errors,
            evaluator: self.evaluator.as_ref().map(|e| blob(&|b| e.snapshot(b))),
            notifier: self.notifier.as_ref().map(|n| blob(&|b| n.snapshot(b))),
            archive_seq: self.archive.as_ref().map(crate::sink::EventSink::next_seq),
            archive_stats: self.archive.as_ref().map(|a| a.stats().clone()),
            archive_errors: self.archive_errors,
            pending_since: self.pending_since,
            last_advance: self.last_advance,
            last_now: self.last_now,
            latency: self.latency.clone(),
            admitted_pending: self.admitted_pending,
            audit_dropped: self.audit_dropped,
            errors_dropped: self.errors_dropped,
            subscriber_frames_dropped: self.subscribers.frames_dropped,
            subscribers_evicted: self.subscribers.evictions,
        };
        // The limiter and the rollups follow, written in place (they are
        // not `Clone`).
        let rollups: Vec<Option<&Rollup>> = self.stages.iter().map(|s| s.rollup.as_ref()).collect();
        let mut bytes = postcard::to_allocvec(&snap)
            .and_then(|b| postcard::to_extend(&self.limiter, b))
            .and_then(|b| postcard::to_extend(&rollups, b))
            .map_err(|e| PipelineError::Snapshot(format!("cannot encode: {e}")))?;
        let sum = stable_hash(CHECKSUM_SEED, &bytes);
        bytes.extend_from_slice(&sum.to_le_bytes());
        out.append(&mut bytes);
        Ok(())
    }

    /// A pipeline for `config` that continues from a
    /// [`snapshot`](Pipeline::snapshot).
    ///
    /// The configuration may have changed since: window operators are
    /// matched by name (one whose spec changed, or a new one, starts
    /// empty), alert rules by name (as [`Evaluator::restore`] does), quotas
    /// and limits come from `config`, and the sampler and fidelity ladder
    /// keep their state only if their configuration is unchanged.
    pub fn restore(config: PipelineConfig, bytes: &[u8]) -> Result<Pipeline, PipelineError> {
        let bad = |m: String| PipelineError::Snapshot(m);
        let split = bytes.len().checked_sub(8).ok_or_else(|| bad("too short".into()))?;
        let (body, sum) = bytes.split_at(split);
        let sum = u64::from_le_bytes(sum.try_into().map_err(|_| bad("too short".into()))?);
        if stable_hash(CHECKSUM_SEED, body) != sum {
            return Err(bad("the checksum does not match: the snapshot is damaged".into()));
        }
        let version = postcard::take_from_bytes::<u32>(body).map_err(|e| bad(e.to_string()))?.0;
        if version != VERSION {
            return Err(bad(format!("version {version}, expected {VERSION}")));
        }
        let (snap, rest) = postcard::take_from_bytes::<Snap>(body).map_err(|e| bad(e.to_string()))?;
        let (limiter, rest) =
            postcard::take_from_bytes::<Option<RateLimiter<Arc<str>>>>(rest).map_err(|e| bad(e.to_string()))?;
        let (rollups, _) = postcard::take_from_bytes::<Vec<Option<Rollup>>>(rest).map_err(|e| bad(e.to_string()))?;

        let mut p = Pipeline::new(config)?;
        if snap.tenants.len() > p.config.tenants.max_tenants {
            return Err(bad("more tenants than `tenants.max_tenants`".into()));
        }
        let cap = p.config.dedup.as_ref().map_or(0, |d| d.ids_per_tenant);
        for t in snap.tenants {
            let mut dedup = Dedup::default();
            // The newest ids are the ones kept when the cap shrank.
            for &key in t.ids.iter().skip(t.ids.len().saturating_sub(cap)) {
                dedup.remember(key, cap);
            }
            p.tenants.insert(
                Arc::from(t.name.as_str()),
                Tenant { stats: t.stats, last_seen: t.last_seen, dedup, admitted_since: t.admitted_since },
            );
        }
        p.tenants_refused = snap.tenants_refused;
        p.retired = snap.retired;
        p.tenants_retired = snap.tenants_retired;
        if let (Some(fresh), Some(saved)) = (&mut p.limiter, limiter) {
            fresh.resume_from(saved, snap.last_now.unwrap_or(Timestamp::MIN));
        }
        if snap.sampling.0 == p.config.sampling {
            match (&mut p.sampler, snap.sampler) {
                (Sampler::Hash(s), SamplerSnap::Hash(saved)) => *s = saved,
                (Sampler::Adaptive { sampler, .. }, SamplerSnap::Adaptive(saved)) => **sampler = saved,
                _ => {}
            }
        }
        if let (Some(fresh), Some(saved)) = (&p.ladder, snap.ladder.0)
            && fresh.config() == saved.config()
        {
            p.ladder = Some(saved);
            p.ladder_sampler = snap.ladder_sampler;
        }
        p.load = snap.load;
        if snap.windows.len() != rollups.len() {
            return Err(bad("window operators and rollups do not pair up".into()));
        }
        for (saved, rollup) in snap.windows.into_iter().zip(rollups) {
            let Some(stage) = p.stages.iter_mut().find(|s| *s.name == *saved.name) else { continue };
            restore_stage(stage, &saved.windows, rollup).map_err(|m| bad(format!("window {:?}: {m}", saved.name)))?;
        }
        for b in snap.boards {
            let Frame::Snapshot(board) = Frame::from_protobuf(&b.frame).map_err(|e| bad(e.to_string()))? else {
                return Err(bad("a board is not a snapshot frame".into()));
            };
            let topic = Arc::clone(&board.topic);
            // Boards of topics no longer configured are dropped, and a
            // board too large for a smaller `max_tiles` starts empty.
            if !p.stages.iter().any(|s| s.board.as_deref() == Some(&*topic)) {
                continue;
            }
            let board = match TileBoard::restore(board, p.config.boards.clone(), b.stats) {
                Ok(board) => board,
                Err(BoardError::Full { .. }) => TileBoard::new(Arc::clone(&topic), p.config.boards.clone()),
                Err(e) => return Err(bad(e.to_string())),
            };
            p.boards.insert((Arc::from(b.tenant.as_str()), topic), board);
        }
        p.board_errors = snap.board_errors;
        let alerts = &p.config.alerts;
        if let (Some(_), Some(bytes)) = (&p.evaluator, snap.evaluator) {
            p.evaluator =
                Some(Evaluator::restore(alerts.rules.clone(), alerts.limits, &bytes).map_err(|e| bad(e.to_string()))?);
        }
        if let (Some(_), Some(bytes)) = (&p.notifier, snap.notifier) {
            p.notifier = Some(
                Notifier::restore(alerts.notifier.clone(), &alerts.rules, &bytes).map_err(|e| bad(e.to_string()))?,
            );
        }
        if let Some(archive) = &mut p.archive {
            if let Some(seq) = snap.archive_seq {
                archive.resume_at(seq);
            }
            if let Some(stats) = snap.archive_stats {
                archive.resume_stats(stats);
            }
        }
        p.archive_errors = snap.archive_errors;
        p.pending_since = snap.pending_since;
        p.last_advance = snap.last_advance;
        p.last_now = snap.last_now;
        p.latency = snap.latency;
        p.admitted_pending = snap.admitted_pending;
        p.audit_dropped = snap.audit_dropped;
        p.errors_dropped = snap.errors_dropped;
        p.subscribers.frames_dropped = snap.subscriber_frames_dropped;
        p.subscribers.evictions = snap.subscribers_evicted;
        Ok(p)
    }
}

/// Restores one window operator (and its rollup) when its spec is the
/// configured one; otherwise it starts empty.
fn restore_stage(stage: &mut Stage, bytes: &[u8], rollup: Option<Rollup>) -> Result<(), String> {
    let windows = Windows::restore(bytes).map_err(|e| e.to_string())?;
    if windows.spec() != stage.windows.spec() {
        return Ok(());
    }
    stage.windows = windows;
    if let (Some(fresh), Some(saved)) = (&stage.rollup, rollup)
        && fresh.spec() == saved.spec()
    {
        stage.rollup = Some(saved);
    }
    Ok(())
}
