//! Shard controller (Lab 4A), replicated by our Raft.
