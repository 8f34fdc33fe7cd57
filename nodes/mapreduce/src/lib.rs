//! MapReduce (Lab 1) with a Raft-replicated coordinator.
