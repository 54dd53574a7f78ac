//! How a room keeps its state in Durable Object storage: keys, values cut
//! into chunks below the per-value limit, the commit record, and the
//! binary records of the journals.
//!
//! Every key is under `es/`:
//!
//! | key | value |
//! | --- | --- |
//! | `es/meta` | the [`Meta`] commit record (postcard), written last |
//! | `es/s/{generation}/{i}` | chunk `i` of the pipeline snapshot of that generation |
//! | `es/j/{seq}/{i}` | an ingest accepted after the snapshot: time, tenant, content type, body |
//! | `es/a/{n}/{i}` | admitted events of one body, for the archive file still open (Protobuf) |
//! | `es/f/{n}/{i}` | a finished archive file not yet stored in the bucket |
//! | `es/n/{n}/{i}` | a notification not yet delivered (JSON) |
//!
//! Numbers are 16 hex digits so keys sort in order. A value is cut into
//! chunks of at most [`RoomConfig::max_value_bytes`](super::RoomConfig::max_value_bytes);
//! chunk 0 starts with the whole value's length, so a torn write is found.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::RoomStats;
use crate::time::Timestamp;

/// The commit record's key.
pub(super) const META: &str = "es/meta";
/// Everything the room stores is under this prefix.
pub const PREFIX: &str = "es/";

/// The version of [`Meta`] and of the records.
pub(super) const VERSION: u32 = 1;

/// The kinds of value, by key prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Snapshot,
    Journal,
    Archive,
    File,
    Note,
}

impl Kind {
    fn prefix(self) -> &'static str {
        match self {
            Kind::Snapshot => "es/s/",
            Kind::Journal => "es/j/",
            Kind::Archive => "es/a/",
            Kind::File => "es/f/",
            Kind::Note => "es/n/",
        }
    }

    fn of(key: &str) -> Option<Kind> {
        [Kind::Snapshot, Kind::Journal, Kind::Archive, Kind::File, Kind::Note]
            .into_iter()
            .find(|k| key.starts_with(k.prefix()))
    }
}

/// A value's place: its kind and number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Slot {
    pub(super) kind: Kind,
    pub(super) n: u64,
}

impl Slot {
    pub(super) fn new(kind: Kind, n: u64) -> Slot {
        Slot { kind, n }
    }

    fn chunk_key(self, i: u32) -> String {
        format!("{}{:016x}/{i:04}", self.kind.prefix(), self.n)
    }

    /// The keys of a value written in `chunks` chunks.
    pub(super) fn keys(self, chunks: u32) -> impl Iterator<Item = String> {
        (0..chunks).map(move |i| self.chunk_key(i))
    }

    /// Parses `es/x/{n}/{i}` into the slot and the chunk index.
    fn parse(key: &str) -> Option<(Slot, u32)> {
        let kind = Kind::of(key)?;
        let rest = key.get(kind.prefix().len()..)?;
        let (n, i) = rest.split_once('/')?;
        Some((Slot { kind, n: u64::from_str_radix(n, 16).ok()? }, i.parse().ok()?))
    }
}

/// Cuts `value` into chunks of at most `max` bytes (at least 64), the first
/// starting with the value's length; returns the key-value pairs.
pub(super) fn chunks(slot: Slot, value: &[u8], max: usize) -> Vec<(String, Bytes)> {
    let max = max.max(64);
    let mut whole = Vec::with_capacity(value.len() + 8);
    whole.extend_from_slice(&(value.len() as u64).to_le_bytes());
    whole.extend_from_slice(value);
    let whole = Bytes::from(whole);
    let mut out = Vec::with_capacity(whole.len().div_ceil(max));
    let mut at = 0;
    let mut i = 0u32;
    while at < whole.len() {
        let end = (at + max).min(whole.len());
        out.push((slot.chunk_key(i), whole.slice(at..end)));
        at = end;
        i += 1;
    }
    out
}

/// Values read back from storage, grouped by slot, with the chunk count of
/// each; values that are torn (a chunk missing, a wrong length) are left
/// out and their keys returned for deletion.
#[derive(Debug, Default)]
pub(super) struct Loaded {
    pub(super) meta: Option<Meta>,
    /// Why the commit record could not be read, if it could not.
    pub(super) meta_error: Option<MetaError>,
    pub(super) values: BTreeMap<Slot, (Bytes, u32)>,
    pub(super) torn: Vec<String>,
    /// Every key listed.
    pub(super) keys: Vec<String>,
}

/// A commit record that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum MetaError {
    /// Written by another version of the room.
    Version(u32),
    /// Unreadable.
    Corrupt(String),
}

impl Loaded {
    /// Groups `entries` (key, value) listed under [`PREFIX`].
    pub(super) fn from_entries(entries: impl IntoIterator<Item = (String, Bytes)>) -> Loaded {
        let mut loaded = Loaded::default();
        let mut parts: BTreeMap<Slot, BTreeMap<u32, (String, Bytes)>> = BTreeMap::new();
        for (key, value) in entries {
            loaded.keys.push(key.clone());
            if key == META {
                match Meta::decode(&value) {
                    Ok(meta) => loaded.meta = Some(meta),
                    Err(e) => loaded.meta_error = Some(e),
                }
            } else if let Some((slot, i)) = Slot::parse(&key) {
                parts.entry(slot).or_default().insert(i, (key, value));
            } else if key.starts_with(PREFIX) {
                loaded.torn.push(key);
            }
        }
        for (slot, chunks) in parts {
            let count = chunks.len() as u32;
            let contiguous = chunks.keys().copied().eq(0..count);
            let mut whole = Vec::new();
            for (_, value) in chunks.values() {
                whole.extend_from_slice(value);
            }
            let value = contiguous.then(|| split_length(&whole)).flatten();
            match value {
                Some(value) => {
                    loaded.values.insert(slot, (Bytes::copy_from_slice(value), count));
                }
                None => loaded.torn.extend(chunks.into_values().map(|(key, _)| key)),
            }
        }
        loaded
    }

    /// Takes the values of `kind`, in order.
    pub(super) fn take(&mut self, kind: Kind) -> Vec<(u64, Bytes, u32)> {
        let slots: Vec<Slot> = self.values.keys().filter(|s| s.kind == kind).copied().collect();
        slots
            .into_iter()
            .filter_map(|slot| self.values.remove(&slot).map(|(value, chunks)| (slot.n, value, chunks)))
            .collect()
    }
}

/// The value after its 8-byte length, if the length matches.
fn split_length(whole: &[u8]) -> Option<&[u8]> {
    let (head, rest) = whole.split_first_chunk::<8>()?;
    (u64::from_le_bytes(*head) == rest.len() as u64).then_some(rest)
}

/// The commit record: which snapshot is current and which journal
/// entries, archive rows, files and notifications belong with it. It is
/// written after everything it names, so a crash in between leaves the
/// previous commit in force.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Meta {
    pub(super) version: u32,
    /// The snapshot's generation, chunk count and size.
    pub(super) generation: u64,
    pub(super) chunks: u32,
    /// Ingests up to this sequence number (exclusive) are in the snapshot.
    pub(super) journal_next: u64,
    /// Archive rows `archive_from..archive_next` belong to files still open.
    pub(super) archive_from: u64,
    pub(super) archive_next: u64,
    /// The archive's file numbering at `archive_from`.
    pub(super) archive_file_seq: u64,
    /// Numbers of the next file and notification slots.
    pub(super) file_next: u64,
    pub(super) note_next: u64,
    /// When the snapshot was taken.
    pub(super) at: Option<Timestamp>,
    /// The room's counters.
    pub(super) stats: RoomStats,
}

impl Meta {
    pub(super) fn encode(&self) -> Bytes {
        let mut meta = self.clone();
        meta.version = VERSION;
        Bytes::from(postcard::to_allocvec(&meta).unwrap_or_default())
    }

    fn decode(bytes: &[u8]) -> Result<Meta, MetaError> {
        let (version, _) =
            postcard::take_from_bytes::<u32>(bytes).map_err(|e| MetaError::Corrupt(format!("commit record: {e}")))?;
        if version != VERSION {
            return Err(MetaError::Version(version));
        }
        postcard::from_bytes(bytes).map_err(|e| MetaError::Corrupt(format!("commit record: {e}")))
    }
}

/// A journaled ingest (`key` is the tenant), or a notification waiting
/// for delivery (`key` is the URL).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Record {
    pub(super) at: Timestamp,
    pub(super) key: String,
    pub(super) content_type: String,
    pub(super) body: Bytes,
}

impl Record {
    /// `at` (i64), then key and content type (u32 length, UTF-8 each),
    /// then the body.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 + self.key.len() + self.content_type.len() + self.body.len());
        out.extend_from_slice(&self.at.as_nanos().to_le_bytes());
        for text in [&self.key, &self.content_type] {
            out.extend_from_slice(&(text.len() as u32).to_le_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out.extend_from_slice(&self.body);
        out
    }

    pub(super) fn decode(bytes: &Bytes) -> Option<Record> {
        let (at, mut rest) = bytes.split_first_chunk::<8>()?;
        let at = Timestamp::from_nanos(i64::from_le_bytes(*at));
        let mut text = || -> Option<String> {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_le_bytes(*len) as usize;
            let value = std::str::from_utf8(tail.get(..len)?).ok()?.to_owned();
            rest = tail.get(len..)?;
            Some(value)
        };
        let key = text()?;
        let content_type = text()?;
        let body = bytes.slice(bytes.len() - rest.len()..);
        Some(Record { at, key, content_type, body })
    }
}

/// Admitted events of one body for the open archive files: `at` (i64)
/// then the events as a Protobuf batch.
pub(super) fn encode_archive_rows(at: Timestamp, events: &crate::event::EventBatch) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&at.as_nanos().to_le_bytes());
    crate::event::protobuf::encode(events, &mut out);
    out
}

/// The time and the Protobuf batch of an archive record.
pub(super) fn split_archive_rows(bytes: &Bytes) -> Option<(Timestamp, Bytes)> {
    let (at, _) = bytes.split_first_chunk::<8>()?;
    Some((Timestamp::from_nanos(i64::from_le_bytes(*at)), bytes.slice(8..)))
}

/// A finished archive file waiting for the bucket: its path, then its bytes.
pub(super) fn encode_file(path: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + path.len() + bytes.len());
    out.extend_from_slice(&(path.len() as u32).to_le_bytes());
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(bytes);
    out
}

pub(super) fn decode_file(value: &Bytes) -> Option<(String, Bytes)> {
    let (len, rest) = value.split_first_chunk::<4>()?;
    let len = u32::from_le_bytes(*len) as usize;
    let path = std::str::from_utf8(rest.get(..len)?).ok()?.to_owned();
    Some((path, value.slice(4 + len..)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "tests")]

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn chunked_values_read_back_whole(value in proptest::collection::vec(any::<u8>(), 0..2000), max in 64usize..700, n in any::<u64>()) {
            let slot = Slot::new(Kind::File, n);
            let parts = chunks(slot, &value, max);
            prop_assert!(parts.iter().all(|(_, v)| v.len() <= max));
            let mut loaded = Loaded::from_entries(parts.clone());
            prop_assert!(loaded.torn.is_empty());
            let values = loaded.take(Kind::File);
            prop_assert_eq!(values.len(), 1);
            prop_assert_eq!(&values[0].1[..], &value[..]);
            prop_assert_eq!(values[0].2 as usize, parts.len());
            // A missing chunk makes the value torn, never a wrong one.
            if parts.len() > 1 {
                let mut missing = parts.clone();
                missing.remove(parts.len() / 2);
                let loaded = Loaded::from_entries(missing);
                prop_assert!(loaded.values.is_empty());
                prop_assert_eq!(loaded.torn.len(), parts.len() - 1);
            }
        }

        #[test]
        fn records_round_trip(at in any::<i64>(), key in ".{0,20}", ct in ".{0,20}", body in proptest::collection::vec(any::<u8>(), 0..300)) {
            let entry = Record { at: Timestamp::from_nanos(at), key, content_type: ct, body: Bytes::from(body) };
            prop_assert_eq!(Record::decode(&Bytes::from(entry.encode())), Some(entry));
        }

        #[test]
        fn records_never_panic_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let bytes = Bytes::from(bytes);
            let _ = Record::decode(&bytes);
            let _ = decode_file(&bytes);
            let _ = split_archive_rows(&bytes);
            let _ = Meta::decode(&bytes);
        }
    }

    #[test]
    fn keys_sort_in_number_order() {
        let a = Slot::new(Kind::Journal, 9).chunk_key(0);
        let b = Slot::new(Kind::Journal, 10).chunk_key(0);
        assert!(a < b);
        assert_eq!(Slot::parse(&b), Some((Slot::new(Kind::Journal, 10), 0)));
        assert_eq!(Slot::parse("es/j/zz/0000"), None);
    }
}
