//! The sharded store (shard controller + replica groups) as a database under test.
//!
//! * [`layout`]: which daemons run where (pure);
//! * [`db`]: those daemons' lifecycle on the nodes, several per node, by pid file;
//! * [`generator`]: the `shardkv` workload's operations (the `kv` model's history);
//! * [`reconfig`]: the reconfiguration nemesis (Join / Leave / Move on a seeded schedule);
//! * [`run`]: the `shardkv` test driver (faults and reconfigurations together, then heal,
//!   join every group, recover, final reads, check);
//! * [`unavailability`]: how long a shard was unserved around a move, from the history.

pub mod bench;
pub mod client;
pub mod db;
pub mod generator;
pub mod layout;
pub mod reconfig;
pub mod run;
pub mod unavailability;
