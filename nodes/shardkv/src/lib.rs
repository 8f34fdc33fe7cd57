//! Sharded KV (Lab 4B), replicated by our Raft.
