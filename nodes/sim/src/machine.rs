//! The service seam: what a replicated state machine must offer to run in the
//! simulator. KV, shard controller and shard KV implement this trait to run
//! their tests under the simulator's faults.

use raft::Index;
use std::fmt::Debug;

/// A deterministic state machine replicated by Raft.
///
/// The simulator creates one per node (and a fresh one after every restart),
/// restores it from the node's persisted snapshot, and applies committed
/// commands in log order. Implementations must be deterministic: the same
/// snapshot followed by the same commands must give the same outputs and the
/// same next snapshot on every node, or the run is not replayable.
pub trait StateMachine {
    /// What applying a command returns to the client that proposed it.
    type Output: Clone + Debug;

    /// Applies the committed command at `index` (never a no-op entry: those
    /// are consumed by the simulator). Indexes increase by one between calls,
    /// except across a [`StateMachine::restore`].
    fn apply(&mut self, index: Index, command: &[u8]) -> Self::Output;

    /// Serialises everything applied so far.
    fn snapshot(&self) -> Vec<u8>;

    /// Replaces the whole state with a snapshot produced by
    /// [`StateMachine::snapshot`] on some node.
    fn restore(&mut self, snapshot: &[u8]);
}

/// The service of the Raft lab tests: a replicated log of opaque commands.
///
/// It keeps only the number of commands applied and a running digest of them,
/// so its snapshot is 16 bytes however long the log; the digest makes any
/// divergence (a bad snapshot, a skipped or repeated command) visible when
/// two nodes at the same index are compared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogMachine {
    pub commands_applied: u64,
    pub digest: u64,
    pub last_index: Index,
}

impl LogMachine {
    fn mix(digest: u64, index: Index, command: &[u8]) -> u64 {
        // FNV-1a over the index and the bytes: cheap and order-sensitive.
        let mut hash = digest ^ 0xcbf2_9ce4_8422_2325;
        for byte in index.to_le_bytes().iter().chain(command) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        hash
    }
}

impl StateMachine for LogMachine {
    /// The digest after this command.
    type Output = u64;

    fn apply(&mut self, index: Index, command: &[u8]) -> u64 {
        self.commands_applied += 1;
        self.digest = Self::mix(self.digest, index, command);
        self.last_index = index;
        self.digest
    }

    fn snapshot(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(24);
        bytes.extend_from_slice(&self.commands_applied.to_le_bytes());
        bytes.extend_from_slice(&self.digest.to_le_bytes());
        bytes.extend_from_slice(&self.last_index.to_le_bytes());
        bytes
    }

    fn restore(&mut self, snapshot: &[u8]) {
        let word = |at: usize| -> u64 {
            snapshot
                .get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes)
                .unwrap_or(0)
        };
        self.commands_applied = word(0);
        self.digest = word(8);
        self.last_index = word(16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_then_restore_continues_identically() {
        let mut a = LogMachine::default();
        a.apply(1, b"x");
        a.apply(2, b"y");
        let mut b = LogMachine::default();
        b.restore(&a.snapshot());
        assert_eq!(a.apply(3, b"z"), b.apply(3, b"z"));
        assert_eq!(a, b);
    }

    #[test]
    fn different_histories_give_different_digests() {
        let mut a = LogMachine::default();
        let mut b = LogMachine::default();
        a.apply(1, b"x");
        b.apply(1, b"y");
        assert_ne!(a.digest, b.digest);
    }
}
