//! Deterministic simulator: N Raft nodes under virtual time with a seeded RNG.
