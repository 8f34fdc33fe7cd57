//! Linearizable, exactly-once key/value service replicated by our Raft.
