//! Jepsen-style control process: clusters, SSH, nemesis, workloads, histories, reports.
