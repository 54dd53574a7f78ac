//! String interning for event batches.

use core::fmt;
use core::hash::BuildHasher;
use core::ops::Range;

use hashbrown::HashTable;

use crate::text::short_eq;

/// A handle to a string interned in a [`Symbols`] table.
///
/// Symbols are small (`u32`) and compare by value; two equal strings interned
/// in the same table get the same `Sym`. A `Sym` only means something
/// together with the table that issued it: the [`EventBatch`] it came from.
///
/// [`EventBatch`]: crate::event::EventBatch
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sym(u32);

impl Sym {
    /// The position of this symbol in its table (0, 1, 2, … in order of
    /// first interning), usable as a dense index into side tables.
    pub const fn index(self) -> usize {
        self.0 as usize
    }
}

/// An append-only table of distinct strings, each stored once.
///
/// Decoders intern tenants, streams, dim keys, dim values and field names, so
/// a string repeated in every event of a batch costs one copy and one hash
/// lookup per occurrence, and no allocation. [`Symbols::clear`] keeps the
/// allocated capacity for the next batch.
///
/// A table holds at most `u32::MAX` strings; interning more is not possible
/// within the memory any decoder limit allows.
#[derive(Clone)]
pub struct Symbols {
    text: String,
    spans: Vec<Range<usize>>,
    table: HashTable<u32>,
    hasher: foldhash::fast::RandomState,
    /// Symbols found recently, by a cheap key of their bytes ([`recent_slot`]):
    /// a string that repeats (a dim key, a tenant) is found with one
    /// comparison instead of a hash and a table probe. Always checked
    /// against the text, so a stale entry is only a miss.
    recent: Box<[u32; RECENT]>,
}

/// Entries of [`Symbols::recent`].
const RECENT: usize = 64;

impl Default for Symbols {
    fn default() -> Self {
        Symbols {
            text: String::new(),
            spans: Vec::new(),
            table: HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
            recent: Box::new([u32::MAX; RECENT]),
        }
    }
}

/// The [`Symbols::recent`] slot of `bytes`: length, first, middle and last
/// bytes, mixed.
#[inline]
fn recent_slot(bytes: &[u8]) -> usize {
    let n = bytes.len();
    let byte = |i: usize| usize::from(bytes.get(i).copied().unwrap_or(0));
    let mixed =
        n.wrapping_mul(0x9e37) ^ byte(0).wrapping_mul(31) ^ byte(n / 2).wrapping_mul(131) ^ byte(n.wrapping_sub(1));
    (mixed ^ (mixed >> 7)) % RECENT
}

impl fmt::Debug for Symbols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter().map(|(_, s)| s)).finish()
    }
}

impl Symbols {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// The symbol for `s`, adding `s` to the table if it is new.
    #[inline]
    pub fn intern(&mut self, s: &str) -> Sym {
        let slot = recent_slot(s.as_bytes());
        if let Some(sym) = self.recent_hit(slot, s.as_bytes()) {
            return sym;
        }
        let hash = self.hasher.hash_one(s.as_bytes());
        let sym = match self.find(hash, s.as_bytes()) {
            Some(sym) => sym,
            None => self.insert(hash, s),
        };
        self.remember(slot, sym);
        sym
    }

    /// The symbol for the UTF-8 text `bytes`. Bytes already in the table
    /// are known to be valid UTF-8, so only new strings are validated: the
    /// check runs once per distinct string, not once per occurrence.
    #[inline]
    pub(crate) fn intern_utf8(&mut self, bytes: &[u8]) -> Result<Sym, core::str::Utf8Error> {
        let slot = recent_slot(bytes);
        if let Some(sym) = self.recent_hit(slot, bytes) {
            return Ok(sym);
        }
        let hash = self.hasher.hash_one(bytes);
        let sym = match self.find(hash, bytes) {
            Some(sym) => sym,
            None => self.insert(hash, core::str::from_utf8(bytes)?),
        };
        self.remember(slot, sym);
        Ok(sym)
    }

    /// The symbol in `slot` of the recent cache, if its text is `bytes`.
    #[inline]
    fn recent_hit(&self, slot: usize, bytes: &[u8]) -> Option<Sym> {
        let recent = *self.recent.get(slot)?;
        let text = self.spans.get(recent as usize).and_then(|r| self.text.as_bytes().get(r.clone()))?;
        short_eq(text, bytes).then_some(Sym(recent))
    }

    #[inline]
    fn remember(&mut self, slot: usize, sym: Sym) {
        if let Some(r) = self.recent.get_mut(slot) {
            *r = sym.0;
        }
    }

    #[inline]
    fn find(&self, hash: u64, bytes: &[u8]) -> Option<Sym> {
        let Symbols { text, spans, table, .. } = self;
        table
            .find(hash, |&i| {
                spans.get(i as usize).and_then(|r| text.as_bytes().get(r.clone())).is_some_and(|t| short_eq(t, bytes))
            })
            .map(|&i| Sym(i))
    }

    fn insert(&mut self, hash: u64, s: &str) -> Sym {
        let Symbols { text, spans, table, hasher, .. } = self;
        let index = u32::try_from(spans.len()).unwrap_or(u32::MAX);
        let start = text.len();
        text.push_str(s);
        spans.push(start..text.len());
        table.insert_unique(hash, index, |&i| {
            let key = spans.get(i as usize).and_then(|r| text.as_bytes().get(r.clone())).unwrap_or_default();
            hasher.hash_one(key)
        });
        Sym(index)
    }

    /// The symbol for `s` if it has been interned.
    pub fn get(&self, s: &str) -> Option<Sym> {
        self.find(self.hasher.hash_one(s.as_bytes()), s.as_bytes())
    }

    /// The string behind `sym`, or `None` if `sym` was not issued by this
    /// table (or the table was cleared since).
    #[inline]
    pub fn resolve(&self, sym: Sym) -> Option<&str> {
        self.spans.get(sym.index()).and_then(|r| self.text.get(r.clone()))
    }

    /// The string behind a symbol this table issued; `""` for a foreign one.
    #[inline]
    pub(crate) fn str(&self, sym: Sym) -> &str {
        self.resolve(sym).unwrap_or_default()
    }

    /// Number of distinct strings.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Bytes of string data held (not counting the index).
    pub fn text_len(&self) -> usize {
        self.text.len()
    }

    /// Every symbol with its string, in the order they were interned.
    pub fn iter(&self) -> impl Iterator<Item = (Sym, &str)> + '_ {
        self.spans.iter().enumerate().map(|(i, r)| (Sym(i as u32), self.text.get(r.clone()).unwrap_or_default()))
    }

    /// Removes every string, keeping the allocations for reuse.
    pub fn clear(&mut self) {
        self.text.clear();
        self.spans.clear();
        self.table.clear();
        self.recent.fill(u32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable_and_dense() {
        let mut s = Symbols::new();
        let a = s.intern("region");
        let b = s.intern("eu-west");
        assert_eq!(s.intern("region"), a);
        assert_eq!((a.index(), b.index()), (0, 1));
        assert_eq!(s.resolve(b), Some("eu-west"));
        assert_eq!(s.get("eu-west"), Some(b));
        assert_eq!(s.get("nope"), None);
        assert_eq!(s.intern(""), Sym(2));
        assert_eq!(s.resolve(Sym(2)), Some(""));
        assert_eq!(s.len(), 3);
        s.clear();
        assert!(s.is_empty());
        assert_eq!(s.resolve(a), None);
        assert_eq!(s.intern("eu-west"), Sym(0));
    }

    #[test]
    fn many_strings_survive_growth() {
        let mut s = Symbols::new();
        let syms: Vec<_> = (0..10_000).map(|i| s.intern(&format!("device-{i}"))).collect();
        for (i, sym) in syms.iter().enumerate() {
            assert_eq!(s.resolve(*sym), Some(format!("device-{i}").as_str()));
            assert_eq!(s.intern(&format!("device-{i}")), *sym);
        }
    }
}
