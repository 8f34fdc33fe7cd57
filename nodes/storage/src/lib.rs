//! Write-ahead log and snapshot files with checksums, group commit and torn-tail recovery.
