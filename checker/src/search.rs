//! The search: Wing & Gong's algorithm with Lowe's just-in-time
//! linearization and memoisation, as porcupine implements it, for one partition.
//!
//! The history is a doubly linked list of call and return entries in
//! real-time order. The search repeatedly takes the first call entry whose
//! operation is legal in the current state, "lifts" it (and its return)
//! out of the list and pushes it on a stack; when it meets a return entry
//! first, that operation should already have been linearized, so it pops
//! and tries the next candidate. A cache of (set of linearized operations,
//! state) pairs already explored prunes repeated work.
//!
//! What is different from porcupine, and why:
//!
//! * Operations with an unknown outcome (`info`, never completed) have no
//!   return entry at all, and the search succeeds as soon as every
//!   *definite* operation is linearized: the rest "never happened". This is
//!   how "may take effect at any time after invocation, or never" is exact
//!   for every model, including ones where an unknown op is not legal in
//!   every final state (a mutex acquire).
//! * States are interned to `u32` ids, and each operation remembers its
//!   last (state -> next state) transition, so backtracking over the same
//!   step costs no model call and no allocation.
//! * The cache key's hash is maintained incrementally (Zobrist hashing: one
//!   random word per operation, XORed in and out), and the bitset is stored
//!   compactly: definite operations are numbered first, in call order, so the
//!   linearized set is "all of a prefix, plus a window": only the window is
//!   stored and compared. Memory per cache entry therefore tracks the
//!   concurrency, not the length, of the history.
//! * The cache prunes by dominance, not only equality: a configuration with
//!   the same definite ops and state as an explored one, plus some extra
//!   optional ops, can only do less (optional ops may be left out). Without
//!   this, every subset of pending unknown-outcome ops whose effect a later
//!   `put` erases would replay the whole rest of the history.
//! * The time and memory budgets, and a shared stop flag, are checked inside
//!   the loop every [`BUDGET_CHECK_INTERVAL_STEPS`] iterations.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use crate::check::{UnknownReason, Verdict};
use crate::model::Model;

/// How many loop iterations pass between two looks at the clock and the memory counter.
pub const BUDGET_CHECK_INTERVAL_STEPS: u64 = 1024;

/// How far back (in optional ops) to look for an identical optional op.
const TWIN_SCAN_MAX: usize = 256;

/// Pending ops checked with `may_become_legal` only when at most this many
/// ops are invoked between the first pending return and theirs.
const LOOKAHEAD_OPS_MAX: usize = 64;

/// Observers not yet invoked that are checked with `may_become_legal` at each node.
const FUTURE_OBSERVERS: usize = 2;

/// The same bound for those future observers: larger, because one read after
/// a long run of appends is what prunes the run's orders.
const FUTURE_LOOKAHEAD_OPS_MAX: usize = 256;

const NONE: u32 = u32::MAX;
const ILLEGAL: u32 = u32::MAX - 1;
const HEAD: u32 = 0;

/// An operation of one partition, prepared for the search.
#[derive(Clone, Debug)]
pub struct PreparedOp<O> {
    /// Id in `History::operations`.
    pub id: usize,
    /// The model's prepared operation.
    pub op: O,
    /// Position of the invoke in the history's event order.
    pub call: usize,
    /// Position of the completion; `None` for an unknown outcome (+infinity, may be left out).
    pub ret: Option<usize>,
}

/// Shared limits for all partitions of one check.
#[derive(Debug)]
pub struct Budget {
    /// Wall-clock deadline.
    pub deadline: Option<Instant>,
    /// Set to stop every search (another partition failed, or a budget ran out).
    pub stop: AtomicBool,
    /// Why `stop` was set (an [`UnknownReason`] as u8 + 1; 0 = not set).
    pub stop_reason: AtomicUsize,
    /// Bytes all caches hold together.
    pub memory_used_bytes: AtomicUsize,
    /// Peak of `memory_used_bytes`.
    pub memory_peak_bytes: AtomicUsize,
    /// The cap on `memory_used_bytes`.
    pub memory_max_bytes: usize,
}

impl Budget {
    /// A budget with these limits.
    pub fn new(deadline: Option<Instant>, memory_max_bytes: usize) -> Budget {
        Budget {
            deadline,
            stop: AtomicBool::new(false),
            stop_reason: AtomicUsize::new(0),
            memory_used_bytes: AtomicUsize::new(0),
            memory_peak_bytes: AtomicUsize::new(0),
            memory_max_bytes,
        }
    }

    /// Stops every search, remembering the first reason.
    pub fn stop(&self, reason: UnknownReason) {
        let code = match reason {
            UnknownReason::Timeout => 1,
            UnknownReason::Memory => 2,
            UnknownReason::Cancelled => 3,
        };
        let _ = self
            .stop_reason
            .compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
        self.stop.store(true, Ordering::SeqCst);
    }

    /// The reason given to the first `stop`, if any.
    pub fn stop_reason(&self) -> Option<UnknownReason> {
        match self.stop_reason.load(Ordering::SeqCst) {
            1 => Some(UnknownReason::Timeout),
            2 => Some(UnknownReason::Memory),
            3 => Some(UnknownReason::Cancelled),
            _ => None,
        }
    }
}

/// What the search of one partition found.
#[derive(Clone, Debug)]
pub struct SearchOutcome {
    /// The verdict.
    pub verdict: Verdict,
    /// Why it is unknown.
    pub unknown_reason: Option<UnknownReason>,
    /// The deepest linearization (history ids), or the full one when linearizable.
    pub longest_prefix: Vec<usize>,
    /// Operations that could not be linearized after the prefix (history ids).
    pub unlinearizable: Vec<usize>,
    /// The model state after the prefix.
    pub state_after_prefix: Option<String>,
    /// Cache entries created.
    pub cache_entries: usize,
    /// Bytes held by the cache and state table at the end.
    pub memory_bytes: usize,
}

/// FxHash: a fast non-cryptographic hasher for interning states (no DoS concern here).
#[derive(Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        for &b in chunks.remainder() {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, i: u64) {
        self.hash = (self.hash.rotate_left(5) ^ i).wrapping_mul(FX_SEED);
    }

    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }

    fn finish(&self) -> u64 {
        self.hash
    }
}

/// SplitMix64's output function: a good 64-bit mixer.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The set of linearized operations: definite ops `0..definite` as a
/// prefix-plus-window bitset, unknown-outcome ops after them.
struct Linearized {
    words: Vec<u64>,
    definite_words: usize,
    last_definite_mask: u64,
    definite: usize,
    /// Every definite word below `lo` is full.
    lo: usize,
    /// Every definite word at or above `hi` is zero.
    hi: usize,
    zobrist: Vec<u64>,
    hash: u64,
}

impl Linearized {
    fn new(definite: usize, total: usize) -> Linearized {
        let definite_words = definite.div_ceil(64);
        let info_words = (total - definite).div_ceil(64);
        let rem = definite % 64;
        Linearized {
            words: vec![0; definite_words + info_words],
            definite_words,
            last_definite_mask: if rem == 0 { !0 } else { (1u64 << rem) - 1 },
            definite,
            lo: 0,
            hi: 0,
            zobrist: (0..total as u64)
                .map(|i| mix(i ^ 0xa076_1d64_78bd_642f))
                .collect(),
            hash: 0,
        }
    }

    fn full(&self, w: usize) -> u64 {
        if w + 1 == self.definite_words {
            self.last_definite_mask
        } else {
            !0
        }
    }

    fn word_of(&self, i: usize) -> (usize, u64) {
        if i < self.definite {
            (i >> 6, 1u64 << (i & 63))
        } else {
            let j = i - self.definite;
            (self.definite_words + (j >> 6), 1u64 << (j & 63))
        }
    }

    fn set(&mut self, i: usize) {
        let (w, bit) = self.word_of(i);
        self.words[w] |= bit;
        if i < self.definite {
            // Only definite ops are hashed: entries that differ in optional
            // ops share a probe chain, where dominance is checked.
            self.hash ^= self.zobrist[i];
            if w >= self.hi {
                self.hi = w + 1;
            }
            while self.lo < self.definite_words && self.words[self.lo] == self.full(self.lo) {
                self.lo += 1;
            }
        }
    }

    fn clear(&mut self, i: usize) {
        let (w, bit) = self.word_of(i);
        self.words[w] &= !bit;
        if i < self.definite {
            self.hash ^= self.zobrist[i];
            if w < self.lo {
                self.lo = w;
            }
            while self.hi > self.lo && self.words[self.hi - 1] == 0 {
                self.hi -= 1;
            }
        }
    }

    fn contains(&self, i: usize) -> bool {
        let (w, bit) = self.word_of(i);
        self.words[w] & bit != 0
    }

    fn header(&self) -> u64 {
        (self.lo as u64) | ((self.hi as u64) << 32)
    }

    fn encoded_len(&self) -> usize {
        1 + self.hi.saturating_sub(self.lo) + (self.words.len() - self.definite_words)
    }

    fn window(&self) -> &[u64] {
        if self.hi > self.lo {
            &self.words[self.lo..self.hi]
        } else {
            &[]
        }
    }

    fn info(&self) -> &[u64] {
        &self.words[self.definite_words..]
    }

    /// True when `stored` has the same definite ops and a subset of the
    /// optional ops: then this configuration is dominated by the stored one
    /// (an optional op may always be left out), so exploring it is useless.
    fn dominated_by(&self, stored: &[u64]) -> bool {
        if stored.first() != Some(&self.header()) {
            return false;
        }
        let window = self.window();
        let info = self.info();
        stored.len() == 1 + window.len() + info.len()
            && &stored[1..1 + window.len()] == window
            && stored[1 + window.len()..]
                .iter()
                .zip(info)
                .all(|(old, new)| old & !new == 0)
    }

    fn encode_into(&self, arena: &mut Vec<u64>) {
        // One reservation and word-by-word copies: the slices are a few
        // words, and `extend_from_slice` calls out to memcpy for each (about
        // 2% of a small check's instructions under callgrind).
        arena.reserve(self.encoded_len());
        arena.push(self.header());
        for &w in self.window().iter().chain(self.info()) {
            arena.push(w);
        }
    }
}

#[derive(Clone, Copy)]
struct CacheEntry {
    hash: u64,
    state: u32,
    offset: u32,
}

/// Open-addressing set of (linearized set, state) pairs.
struct Cache {
    slots: Vec<u32>,
    entries: Vec<CacheEntry>,
    arena: Vec<u64>,
}

impl Cache {
    /// A cache sized for a partition of `ops` operations (it grows as needed).
    fn new(ops: usize) -> Cache {
        let slots = (2 * ops).next_power_of_two().clamp(64, 1 << 16);
        Cache {
            slots: vec![NONE; slots],
            entries: Vec::with_capacity(slots / 2),
            arena: Vec::with_capacity(slots),
        }
    }

    fn bytes(&self) -> usize {
        self.slots.len() * 4 + self.entries.capacity() * 16 + self.arena.capacity() * 8
    }

    /// Inserts (`linearized`, `state`) unless it is dominated by an entry
    /// (same definite ops and state, a subset of the optional ops); true if
    /// it was inserted, i.e. the configuration is worth exploring.
    fn insert(&mut self, linearized: &Linearized, state: u32) -> bool {
        let hash = linearized.hash ^ mix(u64::from(state));
        let mask = self.slots.len() - 1;
        let mut slot = (hash as usize) & mask;
        loop {
            let index = self.slots[slot];
            if index == NONE {
                break;
            }
            let entry = self.entries[index as usize];
            if entry.hash == hash && entry.state == state {
                let start = entry.offset as usize;
                let end = start + linearized.encoded_len();
                if end <= self.arena.len() && linearized.dominated_by(&self.arena[start..end]) {
                    return false;
                }
            }
            slot = (slot + 1) & mask;
        }
        let offset = self.arena.len() as u32;
        linearized.encode_into(&mut self.arena);
        self.slots[slot] = self.entries.len() as u32;
        self.entries.push(CacheEntry {
            hash,
            state,
            offset,
        });
        if self.entries.len() * 2 > self.slots.len() {
            self.grow();
        }
        true
    }

    fn grow(&mut self) {
        let capacity = self.slots.len() * 2;
        let mask = capacity - 1;
        let mut slots = vec![NONE; capacity];
        for (i, entry) in self.entries.iter().enumerate() {
            let mut slot = (entry.hash as usize) & mask;
            while slots[slot] != NONE {
                slot = (slot + 1) & mask;
            }
            slots[slot] = i as u32;
        }
        self.slots = slots;
    }
}

/// States a search makes room for up front (a small partition's all).
const STATES_INITIAL: usize = 32;

/// Interned model states: an open-addressing table that keeps each
/// state's hash, so growing it never rehashes a state (kv states are long strings).
struct States<S> {
    /// Heap bytes the states own (strings), as the model counts them.
    heap_bytes: usize,
    slots: Vec<u32>,
    hashes: Vec<u64>,
    states: Vec<S>,
}

impl<S: Clone + Eq + Hash> States<S> {
    fn new() -> States<S> {
        States {
            heap_bytes: 0,
            slots: vec![NONE; 1 << 8],
            // Room for the states of a small partition: growing from empty
            // reallocates both vectors several times in every search.
            hashes: Vec::with_capacity(STATES_INITIAL),
            states: Vec::with_capacity(STATES_INITIAL),
        }
    }

    fn intern(&mut self, state: S, heap_bytes: impl Fn(&S) -> usize) -> u32 {
        let mut hasher = FxHasher::default();
        state.hash(&mut hasher);
        let hash = mix(hasher.finish());
        let mask = self.slots.len() - 1;
        let mut slot = (hash as usize) & mask;
        loop {
            let id = self.slots[slot];
            if id == NONE {
                break;
            }
            if self.hashes[id as usize] == hash && self.states[id as usize] == state {
                return id;
            }
            slot = (slot + 1) & mask;
        }
        let id = self.states.len() as u32;
        self.heap_bytes += heap_bytes(&state);
        self.slots[slot] = id;
        self.hashes.push(hash);
        self.states.push(state);
        if self.states.len() * 2 > self.slots.len() {
            let capacity = self.slots.len() * 2;
            let mask = capacity - 1;
            let mut slots = vec![NONE; capacity];
            for (id, &hash) in self.hashes.iter().enumerate() {
                let mut slot = (hash as usize) & mask;
                while slots[slot] != NONE {
                    slot = (slot + 1) & mask;
                }
                slots[slot] = id as u32;
            }
            self.slots = slots;
        }
        id
    }

    fn bytes(&self) -> usize {
        self.heap_bytes
            + self.slots.len() * 4
            + self.hashes.capacity() * 8
            + self.states.capacity() * std::mem::size_of::<S>()
    }
}

/// The entry list (dancing links over call and return entries).
struct Entries {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// Local op of each entry (index 0 is the head sentinel).
    op: Vec<u32>,
    is_call: Vec<bool>,
    call_entry: Vec<u32>,
    return_entry: Vec<u32>,
}

impl Entries {
    fn new(calls: &[usize], returns: &[Option<usize>]) -> Entries {
        let n = calls.len();
        // Entries in position order, each tagged (op << 1 | is_return).
        // Positions are distinct event indices. When they are dense (one
        // partition holding most of a history) a bucket pass orders them,
        // else a sort of packed (position, tag) keys.
        let mut low = usize::MAX;
        let mut high = 0usize;
        let mut count_events = 0usize;
        for p in calls.iter().chain(returns.iter().flatten()) {
            low = low.min(*p);
            high = high.max(*p);
            count_events += 1;
        }
        let count = count_events + 1;
        let mut entries = Entries {
            next: Vec::with_capacity(count),
            prev: Vec::with_capacity(count),
            op: Vec::with_capacity(count),
            is_call: Vec::with_capacity(count),
            call_entry: vec![NONE; n],
            return_entry: vec![NONE; n],
        };
        entries.op.push(NONE);
        entries.is_call.push(false);
        let place = |entries: &mut Entries, tag: u64| {
            let (op, is_call) = ((tag >> 1) as u32, tag & 1 == 0);
            let e = entries.op.len() as u32;
            entries.op.push(op);
            entries.is_call.push(is_call);
            if is_call {
                entries.call_entry[op as usize] = e;
            } else {
                entries.return_entry[op as usize] = e;
            }
        };
        let tags = || {
            let calls = calls.iter().enumerate().map(|(i, &c)| (c, (i as u64) << 1));
            let rets = returns
                .iter()
                .enumerate()
                .filter_map(|(i, r)| r.map(|r| (r, ((i as u64) << 1) | 1)));
            calls.chain(rets)
        };
        let mut placed = false;
        if count_events > 0 && high - low < 4 * count_events {
            let mut buckets: Vec<u64> = vec![u64::MAX; high - low + 1];
            let mut distinct = true;
            for (p, tag) in tags() {
                let slot = &mut buckets[p - low];
                distinct &= *slot == u64::MAX;
                *slot = tag;
            }
            if distinct {
                for &tag in buckets.iter().filter(|&&t| t != u64::MAX) {
                    place(&mut entries, tag);
                }
                placed = true;
            }
        }
        if !placed && high < (1 << 32) && n < (1 << 31) {
            // Sparse but small positions: sort (position << 32 | tag) words.
            let mut keyed: Vec<u64> = tags().map(|(p, tag)| ((p as u64) << 32) | tag).collect();
            keyed.sort_unstable();
            if keyed.windows(2).all(|w| w[0] >> 32 != w[1] >> 32) {
                for key in keyed {
                    place(&mut entries, key & 0xffff_ffff);
                }
                placed = true;
            }
        }
        if !placed {
            // A call sorts before a return at a tie.
            let mut keyed: Vec<(usize, u64)> = tags().collect();
            keyed.sort_unstable_by_key(|&(p, tag)| (p, tag & 1));
            for (_, tag) in keyed {
                place(&mut entries, tag);
            }
        }
        entries
            .next
            .extend((1..count as u32).chain(std::iter::once(NONE)));
        entries.prev.push(NONE);
        entries.prev.extend(0..(count - 1) as u32);
        entries
    }

    fn remove(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = n;
        if n != NONE {
            self.prev[n as usize] = p;
        }
    }

    fn reinsert(&mut self, e: u32) {
        let (p, n) = (self.prev[e as usize], self.next[e as usize]);
        self.next[p as usize] = e;
        if n != NONE {
            self.prev[n as usize] = e;
        }
    }

    fn lift(&mut self, op: u32) {
        self.remove(self.call_entry[op as usize]);
        let r = self.return_entry[op as usize];
        if r != NONE {
            self.remove(r);
        }
    }

    fn unlift(&mut self, op: u32) {
        let r = self.return_entry[op as usize];
        if r != NONE {
            self.reinsert(r);
        }
        self.reinsert(self.call_entry[op as usize]);
    }
}

/// A second opinion the search asks for once, after `after_steps`
/// iterations, when a partition turns out expensive: the graph pre-pass.
/// `run` returning `true` means the partition is proven not linearizable
/// (by a sound argument of its own), and the search stops with that verdict.
pub struct Probe<'a> {
    /// Iterations before asking (rounded up to [`BUDGET_CHECK_INTERVAL_STEPS`]).
    pub after_steps: u64,
    /// The check; called at most once.
    pub run: &'a mut dyn FnMut() -> bool,
}

/// Checks one partition.
pub fn search<M: Model>(model: &M, ops: &[PreparedOp<M::Op>], budget: &Budget) -> SearchOutcome {
    search_probed(model, ops, budget, None)
}

/// Checks one partition, asking `probe` once if the search runs long.
pub fn search_probed<M: Model>(
    model: &M,
    ops: &[PreparedOp<M::Op>],
    budget: &Budget,
    probe: Option<Probe<'_>>,
) -> SearchOutcome {
    if let Some(outcome) = sequential(model, ops) {
        return outcome;
    }
    // Unknown-outcome ops nothing could observe are left out up front.
    let optional: Vec<bool> = ops.iter().map(|o| o.ret.is_none()).collect();
    if !optional.contains(&true) {
        return search_prepared(model, ops, budget, probe);
    }
    let prepared: Vec<&M::Op> = ops.iter().map(|o| &o.op).collect();
    let drop = model.unobservable_unknowns(&prepared, &optional);
    if drop.iter().any(|&d| d) {
        let kept: Vec<PreparedOp<M::Op>> = ops
            .iter()
            .zip(&drop)
            .filter(|(o, &d)| !(d && o.ret.is_none()))
            .map(|(o, _)| o.clone())
            .collect();
        return search_prepared(model, &kept, budget, probe);
    }
    search_prepared(model, ops, budget, probe)
}

/// A partition whose operations do not overlap at all (each returns before
/// the next is invoked) and all completed has one possible order: step
/// through it, no search needed. `None` when the partition is not like that.
/// This is the common case for a key only one client uses.
fn sequential<M: Model>(model: &M, ops: &[PreparedOp<M::Op>]) -> Option<SearchOutcome> {
    let mut previous_return = None;
    for op in ops {
        let ret = op.ret?;
        if previous_return.is_some_and(|r| r >= op.call) || ret < op.call {
            return None;
        }
        previous_return = Some(ret);
    }
    let mut state = model.init();
    let mut heap = model.state_heap_bytes(&state);
    for (k, op) in ops.iter().enumerate() {
        match model.step_owned(state, &op.op) {
            Ok(next) => {
                state = next;
                heap = heap.max(model.state_heap_bytes(&state));
            }
            Err(unchanged) => {
                state = unchanged;
                return Some(SearchOutcome {
                    verdict: Verdict::NotLinearizable,
                    unknown_reason: None,
                    longest_prefix: ops[..k].iter().map(|o| o.id).collect(),
                    unlinearizable: vec![op.id],
                    state_after_prefix: Some(model.describe_state(&state)),
                    cache_entries: 0,
                    memory_bytes: heap,
                });
            }
        }
    }
    Some(SearchOutcome {
        verdict: Verdict::Linearizable,
        unknown_reason: None,
        longest_prefix: ops.iter().map(|o| o.id).collect(),
        unlinearizable: Vec::new(),
        state_after_prefix: Some(model.describe_state(&state)),
        cache_entries: 0,
        memory_bytes: heap,
    })
}

fn search_prepared<M: Model>(
    model: &M,
    ops: &[PreparedOp<M::Op>],
    budget: &Budget,
    mut probe: Option<Probe<'_>>,
) -> SearchOutcome {
    // Local numbering: definite operations first, in call order, then unknown-outcome ones.
    // Partitions come in call order (a history's operations are in invocation
    // order), so this is a stable split, not a sort, in the usual case.
    let order: Vec<usize> = if ops.windows(2).all(|w| w[0].call < w[1].call) {
        let mut order = Vec::with_capacity(ops.len());
        order.extend((0..ops.len()).filter(|&i| ops[i].ret.is_some()));
        order.extend((0..ops.len()).filter(|&i| ops[i].ret.is_none()));
        order
    } else {
        let mut order: Vec<usize> = (0..ops.len()).collect();
        order.sort_unstable_by_key(|&i| (ops[i].ret.is_none(), ops[i].call, i));
        order
    };
    let definite = ops.iter().filter(|o| o.ret.is_some()).count();
    let calls: Vec<usize> = order.iter().map(|&i| ops[i].call).collect();
    let returns: Vec<Option<usize>> = order.iter().map(|&i| ops[i].ret).collect();
    let local = |i: u32| &ops[order[i as usize]];
    // The prepared ops in local numbering, so `via` slices are copied, not gathered.
    let lops: Vec<&M::Op> = order.iter().map(|&i| &ops[i].op).collect();

    // For each optional op, the previous optional op (in call order) with an identical effect.
    let mut twin_before: Vec<u32> = vec![NONE; ops.len()];
    for (i, twin) in twin_before.iter_mut().enumerate().skip(definite) {
        // Only the immediately previous twin is valid here; a bounded scan
        // that misses it just leaves the op unpruned.
        let lowest = definite.max(i.saturating_sub(TWIN_SCAN_MAX));
        if let Some(j) = (lowest..i).rev().find(|&j| lops[j] == lops[i]) {
            *twin = j as u32;
        }
    }
    // Definite ops whose legality the lookahead checks (reads), in call order.
    let observer: Vec<bool> = (0..ops.len())
        .map(|i| i < definite && model.observes(lops[i]))
        .collect();
    let observers: Vec<u32> = (0..definite as u32)
        .filter(|&i| observer[i as usize])
        .collect();
    let mut entries = Entries::new(&calls, &returns);
    let mut linearized = Linearized::new(definite, ops.len());
    let mut cache = Cache::new(ops.len());
    let mut states: States<M::State> = States::new();
    let mut memo: Vec<(u32, u32)> = vec![(NONE, NONE); ops.len()];
    let mut stack: Vec<(u32, u32)> = Vec::with_capacity(ops.len());
    let mut state = states.intern(model.init(), |s| model.state_heap_bytes(s));
    let mut remaining = definite;

    let mut best_depth: Option<usize> = None;
    let mut best_prefix: Vec<u32> = Vec::with_capacity(ops.len());
    // How many leading entries of `stack` and `best_prefix` are equal.
    let mut best_agree = 0usize;
    let mut best_blocked: Vec<u32> = Vec::new();
    let mut best_state = state;

    let mut reported_bytes = 0usize;
    let mut iterations: u64 = 0;

    let finish = |verdict: Verdict,
                  reason: Option<UnknownReason>,
                  prefix: &[u32],
                  blocked: &[u32],
                  state: Option<&M::State>,
                  cache: &Cache,
                  bytes: usize| SearchOutcome {
        verdict,
        unknown_reason: reason,
        longest_prefix: prefix.iter().map(|&i| local(i).id).collect(),
        unlinearizable: blocked.iter().map(|&i| local(i).id).collect(),
        state_after_prefix: state.map(|s| model.describe_state(s)),
        cache_entries: cache.entries.len(),
        memory_bytes: bytes,
    };

    // Candidate order at each node: definite ops in call order (as
    // porcupine walks its list), then optional ones newest first (see
    // `open_frame`). Any order is correct, but this one matters for speed:
    // in plain call order every node first retries every old pending op that
    // never happened (etcd_002: 144 ms in porcupine, ~35 us here).
    // The candidates of every open node, and per node (start, cursor) into it.
    let mut candidates: Vec<u32> = Vec::with_capacity(16 * ops.len().min(1 << 14));
    let mut frames: Vec<(u32, u32)> = Vec::with_capacity(ops.len() + 1);
    let mut optional_scratch: Vec<u32> = Vec::new();
    // Definite ops in call order, then optional ones newest first: a
    // recently invoked unknown-outcome op is the likeliest to have just
    // taken effect, while old ones that the search keeps skipping probably
    // never happened. Oldest-first here makes a stuck node try every subset
    // of long-dead ops before the one that matters. The entry list is in
    // call order already, so this is a split, not a sort.
    let open_frame = |entries: &Entries,
                      candidates: &mut Vec<u32>,
                      frames: &mut Vec<(u32, u32)>,
                      optional_scratch: &mut Vec<u32>| {
        let start = candidates.len();
        let mut e = entries.next[HEAD as usize];
        while e != NONE && entries.is_call[e as usize] {
            let op = entries.op[e as usize];
            if (op as usize) < definite {
                candidates.push(op);
            } else {
                optional_scratch.push(op);
            }
            e = entries.next[e as usize];
        }
        for &op in optional_scratch.iter().rev() {
            candidates.push(op);
        }
        optional_scratch.clear();
        frames.push((start as u32, start as u32));
        // The first return entry (NONE if none): the earliest pending return.
        e
    };
    let _ = open_frame(
        &entries,
        &mut candidates,
        &mut frames,
        &mut optional_scratch,
    );
    let mut via: Vec<&M::Op> = Vec::with_capacity(FUTURE_LOOKAHEAD_OPS_MAX + 64);

    loop {
        if remaining == 0 {
            let prefix: Vec<u32> = stack.iter().map(|&(op, _)| op).collect();
            let bytes = cache.bytes() + states.bytes();
            budget
                .memory_used_bytes
                .fetch_sub(reported_bytes, Ordering::Relaxed);
            return finish(
                Verdict::Linearizable,
                None,
                &prefix,
                &[],
                Some(&states.states[state as usize]),
                &cache,
                bytes,
            );
        }
        iterations += 1;
        if iterations.is_multiple_of(BUDGET_CHECK_INTERVAL_STEPS) {
            let bytes = cache.bytes() + states.bytes();
            let total = if bytes >= reported_bytes {
                budget
                    .memory_used_bytes
                    .fetch_add(bytes - reported_bytes, Ordering::Relaxed)
                    + (bytes - reported_bytes)
            } else {
                budget
                    .memory_used_bytes
                    .fetch_sub(reported_bytes - bytes, Ordering::Relaxed)
                    - (reported_bytes - bytes)
            };
            reported_bytes = bytes;
            budget.memory_peak_bytes.fetch_max(total, Ordering::Relaxed);
            // Cache offsets are u32 words: past that, treat it as out of memory.
            let arena_full = cache.arena.len() > (u32::MAX as usize) - (1 << 24);
            let reason = if total > budget.memory_max_bytes || arena_full {
                Some(UnknownReason::Memory)
            } else if budget.deadline.is_some_and(|d| Instant::now() >= d) {
                Some(UnknownReason::Timeout)
            } else if budget.stop.load(Ordering::Relaxed) {
                Some(budget.stop_reason().unwrap_or(UnknownReason::Cancelled))
            } else {
                None
            };
            let proven = match probe.take() {
                Some(p) if iterations >= p.after_steps => (p.run)(),
                other => {
                    probe = other;
                    false
                }
            };
            if proven {
                budget
                    .memory_used_bytes
                    .fetch_sub(reported_bytes, Ordering::Relaxed);
                if best_depth.is_none_or(|d| stack.len() > d) {
                    best_prefix = stack.iter().map(|&(op, _)| op).collect();
                    best_blocked.clear();
                    best_state = state;
                }
                return finish(
                    Verdict::NotLinearizable,
                    None,
                    &best_prefix,
                    &best_blocked,
                    Some(&states.states[best_state as usize]),
                    &cache,
                    bytes,
                );
            }
            if let Some(reason) = reason {
                if reason != UnknownReason::Cancelled {
                    budget.stop(reason);
                }
                budget
                    .memory_used_bytes
                    .fetch_sub(reported_bytes, Ordering::Relaxed);
                if best_depth.is_none_or(|d| stack.len() > d) {
                    best_prefix = stack.iter().map(|&(op, _)| op).collect();
                    best_blocked.clear();
                    best_state = state;
                }
                return finish(
                    Verdict::Unknown,
                    Some(reason),
                    &best_prefix,
                    &best_blocked,
                    Some(&states.states[best_state as usize]),
                    &cache,
                    bytes,
                );
            }
        }

        let frame = frames.len() - 1;
        let (_, cursor) = frames[frame];
        if (cursor as usize) < candidates.len() {
            frames[frame].1 += 1;
            let op = candidates[cursor as usize];
            let (from, to) = memo[op as usize];
            let next = if from == state {
                to
            } else {
                let to = match model.step(&states.states[state as usize], lops[op as usize]) {
                    Some(s) => states.intern(s, |s| model.state_heap_bytes(s)),
                    None => ILLEGAL,
                };
                memo[op as usize] = (state, to);
                to
            };
            // An optional (unknown-outcome) op that leaves the state as it is
            // is dominated by not taking it; and of identical optional ops, only
            // the earliest-invoked untaken one needs trying (swap symmetry).
            let optional = (op as usize) >= definite;
            let dominated = optional
                && (next == state || {
                    let twin = twin_before[op as usize];
                    twin != NONE && !linearized.contains(twin as usize)
                });
            if next != ILLEGAL && !dominated {
                linearized.set(op as usize);
                if cache.insert(&linearized, next) {
                    stack.push((op, state));
                    state = next;
                    entries.lift(op);
                    if !optional {
                        remaining -= 1;
                    }
                    // Abandon the node at once if an op that must still be
                    // linearized can no longer become legal (model hook).
                    // Only observers (reads) can fail that test; the ops
                    // that may come before an op x are the candidates plus
                    // the ops invoked between the earliest pending return
                    // (`e`) and x's return.
                    let e = open_frame(
                        &entries,
                        &mut candidates,
                        &mut frames,
                        &mut optional_scratch,
                    );
                    if e != NONE {
                        let blocking = entries.op[e as usize];
                        let start = frames[frames.len() - 1].0 as usize;
                        let current = &states.states[state as usize];
                        let first_return = returns[blocking as usize].unwrap_or(usize::MAX);
                        let frontier = candidates.len() - start;
                        via.clear();
                        let mut dead = false;
                        // `may_become_legal` is monotone in `via`: legal
                        // with none means legal with any, so `via` is only
                        // built when that cheap test fails.
                        if observer[blocking as usize]
                            && !model.may_become_legal(current, lops[blocking as usize], &[])
                        {
                            via.extend(candidates[start..].iter().map(|&c| lops[c as usize]));
                            dead = !model.may_become_legal(current, lops[blocking as usize], &via);
                        }
                        let range = |lo: usize, hi: usize, x_return: usize| {
                            let slice = &calls[lo..hi];
                            lo + slice.partition_point(|&c| c < first_return)
                                ..lo + slice.partition_point(|&c| c < x_return)
                        };
                        // Pending observers, then the next few not yet
                        // invoked (a read at the end of a run of appends
                        // fixes their order long before it is invoked).
                        // Future observers only while no observer is
                        // pending: a pending read prunes as well, sooner.
                        let any_pending = observer[blocking as usize]
                            || candidates[start..].iter().any(|&x| observer[x as usize]);
                        let first_future = if any_pending {
                            observers.len()
                        } else {
                            observers.partition_point(|&o| calls[o as usize] < first_return)
                        };
                        let pending = candidates[start..]
                            .iter()
                            .copied()
                            .filter(|&x| x != blocking && observer[x as usize]);
                        let future = observers[first_future..]
                            .iter()
                            .copied()
                            .take(FUTURE_OBSERVERS);
                        for x in pending.chain(future) {
                            if dead {
                                break;
                            }
                            let Some(x_return) = returns[x as usize] else {
                                continue;
                            };
                            if model.may_become_legal(current, lops[x as usize], &[]) {
                                continue;
                            }
                            let later_definite = range(0, definite, x_return);
                            let later_optional = range(definite, ops.len(), x_return);
                            let later = later_definite.len() + later_optional.len();
                            let limit =
                                if (x as usize) < definite && calls[x as usize] > first_return {
                                    FUTURE_LOOKAHEAD_OPS_MAX
                                } else {
                                    LOOKAHEAD_OPS_MAX
                                };
                            if later > limit {
                                continue;
                            }
                            if via.is_empty() && frontier > 0 {
                                via.extend(candidates[start..].iter().map(|&c| lops[c as usize]));
                            }
                            via.truncate(frontier);
                            via.extend_from_slice(&lops[later_definite]);
                            via.extend_from_slice(&lops[later_optional]);
                            dead = !model.may_become_legal(current, lops[x as usize], &via);
                        }
                        if dead {
                            let last = frames.len() - 1;
                            frames[last].1 = candidates.len() as u32;
                        }
                    }
                    continue;
                }
                linearized.clear(op as usize);
            }
            continue;
        }

        // Every candidate failed: the earliest pending return cannot be met
        // from here. Remember the deepest point, then backtrack.
        if best_depth.is_none_or(|d| stack.len() > d) {
            best_depth = Some(stack.len());
            // Only the part of the stack that changed since the last copy.
            best_prefix.truncate(best_agree);
            best_prefix.extend(stack[best_agree..].iter().map(|&(op, _)| op));
            best_agree = stack.len();
            best_state = state;
            best_blocked.clear();
            let mut e = entries.next[HEAD as usize];
            while e != NONE && entries.is_call[e as usize] {
                e = entries.next[e as usize];
            }
            if e != NONE {
                let blocking = entries.op[e as usize];
                best_blocked.push(blocking);
                let current = &states.states[state as usize];
                let start = frames[frame].0 as usize;
                for &candidate in &candidates[start..] {
                    if (candidate as usize) < definite
                        && candidate != blocking
                        && model.step(current, lops[candidate as usize]).is_none()
                    {
                        best_blocked.push(candidate);
                    }
                }
            }
        }
        let (start, _) = frames.pop().unwrap_or((0, 0));
        candidates.truncate(start as usize);
        let Some((op, previous)) = stack.pop() else {
            let bytes = cache.bytes() + states.bytes();
            budget
                .memory_used_bytes
                .fetch_sub(reported_bytes, Ordering::Relaxed);
            return finish(
                Verdict::NotLinearizable,
                None,
                &best_prefix,
                &best_blocked,
                Some(&states.states[best_state as usize]),
                &cache,
                bytes,
            );
        };
        best_agree = best_agree.min(stack.len());
        linearized.clear(op as usize);
        state = previous;
        entries.unlift(op);
        if (op as usize) < definite {
            remaining += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::register::{Register, RegisterOp, Scalar};

    /// Builds ops from (call, return, op) triples; a `None` return is unknown.
    fn ops(list: &[(usize, Option<usize>, RegisterOp)]) -> Vec<PreparedOp<RegisterOp>> {
        list.iter()
            .enumerate()
            .map(|(id, (call, ret, op))| PreparedOp {
                id,
                op: op.clone(),
                call: *call,
                ret: *ret,
            })
            .collect()
    }

    fn w(v: i64) -> RegisterOp {
        RegisterOp::Write(Scalar::Int(v))
    }

    fn r(v: i64) -> RegisterOp {
        RegisterOp::Read(Scalar::Int(v))
    }

    fn run(list: &[(usize, Option<usize>, RegisterOp)]) -> SearchOutcome {
        let budget = Budget::new(None, usize::MAX);
        search(
            &Register::cas_register(&crate::Value::Int(0)),
            &ops(list),
            &budget,
        )
    }

    #[test]
    fn concurrent_write_may_be_seen_or_not() {
        // write 1 overlaps both reads: read 0 then read 1 is fine.
        let out = run(&[(0, Some(5), w(1)), (1, Some(2), r(0)), (3, Some(4), r(1))]);
        assert_eq!(out.verdict, Verdict::Linearizable);
        assert_eq!(out.longest_prefix, vec![1, 0, 2]);
    }

    #[test]
    fn stale_read_after_completed_write_is_caught() {
        // write 1 completes before the read of 0 starts.
        let out = run(&[(0, Some(1), w(1)), (2, Some(3), r(0))]);
        assert_eq!(out.verdict, Verdict::NotLinearizable);
        assert_eq!(out.longest_prefix, vec![0]);
        assert_eq!(out.unlinearizable, vec![1]);
        assert_eq!(out.state_after_prefix.as_deref(), Some("1"));
    }

    #[test]
    fn unknown_write_may_happen_late_or_never() {
        // An info write of 1 invoked first; reads see 0, then 1, then... never
        // reading 1 is fine too.
        let late = run(&[(0, None, w(1)), (1, Some(2), r(0)), (3, Some(4), r(1))]);
        assert_eq!(late.verdict, Verdict::Linearizable);
        let never = run(&[(0, None, w(1)), (1, Some(2), r(0)), (3, Some(4), r(0))]);
        assert_eq!(never.verdict, Verdict::Linearizable);
        // But it cannot take effect before its invocation.
        let early = run(&[(0, Some(1), r(1)), (2, None, w(1))]);
        assert_eq!(early.verdict, Verdict::NotLinearizable);
    }

    #[test]
    fn unknown_write_cannot_be_undone() {
        // Once a read saw the unknown write, a later read cannot see the old value.
        let out = run(&[(0, None, w(1)), (1, Some(2), r(1)), (3, Some(4), r(0))]);
        assert_eq!(out.verdict, Verdict::NotLinearizable);
    }

    #[test]
    fn identical_unknown_writes_are_interchangeable() {
        // Many identical pending writes: the twin rule keeps this tiny.
        let mut list = Vec::new();
        for i in 0..40 {
            list.push((i, None, w(1)));
        }
        list.push((100, Some(101), r(1)));
        list.push((102, Some(103), w(2)));
        list.push((104, Some(105), r(1)));
        let out = run(&list);
        assert_eq!(out.verdict, Verdict::Linearizable);
        assert!(
            out.cache_entries < 20,
            "cache entries {}",
            out.cache_entries
        );
    }

    /// A counter whose reads the search cannot look ahead to (no
    /// `observes`): the worst case, every subset of concurrent adds is a
    /// distinct state.
    struct Sum;

    #[derive(Clone, Debug, PartialEq)]
    enum SumOp {
        Add(u64),
        Read(u64),
    }

    impl Model for Sum {
        type State = u64;
        type Op = SumOp;
        fn name(&self) -> &'static str {
            "sum"
        }
        fn init(&self) -> u64 {
            0
        }
        fn prepare(
            &self,
            op: &crate::history::Operation,
        ) -> Result<Option<SumOp>, crate::model::ModelError> {
            Err(crate::model::ModelError::unknown_f(op, "sum"))
        }
        fn step(&self, state: &u64, op: &SumOp) -> Option<u64> {
            match op {
                SumOp::Add(k) => Some(state.wrapping_add(*k)),
                SumOp::Read(v) => (v == state).then_some(*state),
            }
        }
        fn describe_state(&self, state: &u64) -> String {
            state.to_string()
        }
    }

    /// A hard history: `n` concurrent adds of distinct powers of two, then a
    /// read of a sum no subset gives: never linearizable, but the search
    /// must try every subset of the adds to know.
    fn hard_history(n: usize) -> Vec<PreparedOp<SumOp>> {
        let mut list: Vec<PreparedOp<SumOp>> = (0..n)
            .map(|i| PreparedOp {
                id: i,
                op: SumOp::Add(1 << i),
                call: i,
                ret: Some(10 * n + i),
            })
            .collect();
        list.push(PreparedOp {
            id: n,
            op: SumOp::Read(u64::MAX),
            call: 11 * n + 1,
            ret: Some(11 * n + 2),
        });
        list
    }

    #[test]
    fn time_budget_gives_unknown() {
        let budget = Budget::new(Some(Instant::now() + Duration::from_millis(50)), usize::MAX);
        let started = Instant::now();
        let out = search(&Sum, &hard_history(40), &budget);
        assert_eq!(out.verdict, Verdict::Unknown);
        assert_eq!(out.unknown_reason, Some(UnknownReason::Timeout));
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(budget.stop.load(Ordering::SeqCst));
    }

    #[test]
    fn memory_budget_gives_unknown() {
        let budget = Budget::new(None, 1 << 20);
        let out = search(&Sum, &hard_history(40), &budget);
        assert_eq!(out.verdict, Verdict::Unknown);
        assert_eq!(out.unknown_reason, Some(UnknownReason::Memory));
        assert!(out.memory_bytes >= 1 << 20, "{}", out.memory_bytes);
        assert!(out.memory_bytes < 64 << 20, "{}", out.memory_bytes);
    }

    #[test]
    fn stop_flag_cancels() {
        let budget = Budget::new(None, usize::MAX);
        budget.stop(UnknownReason::Cancelled);
        let out = search(&Sum, &hard_history(40), &budget);
        assert_eq!(out.verdict, Verdict::Unknown);
        assert_eq!(out.unknown_reason, Some(UnknownReason::Cancelled));
    }

    #[test]
    fn linearized_window_tracks_prefix() {
        let mut l = Linearized::new(200, 203);
        for i in 0..130 {
            l.set(i);
        }
        assert_eq!((l.lo, l.hi), (2, 3));
        l.set(201);
        l.clear(5);
        assert_eq!((l.lo, l.hi), (0, 3));
        assert!(l.contains(201) && !l.contains(5) && l.contains(6));
        l.set(5);
        for i in 130..200 {
            l.set(i);
        }
        assert_eq!(l.lo, 4);
        assert_eq!(l.hi, 4);
        let mut arena = Vec::new();
        l.encode_into(&mut arena);
        assert!(l.dominated_by(&arena));
        l.set(202);
        assert!(l.dominated_by(&arena), "more optional ops: still dominated");
        l.clear(201);
        assert!(!l.dominated_by(&arena), "fewer optional ops: not dominated");
        l.set(201);
        l.clear(199);
        assert!(!l.dominated_by(&arena));
    }
}
