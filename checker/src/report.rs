//! Verdicts as JSON (the `--json` contract) and as a short text summary.

use serde_json::{json, Value as Json};

use crate::check::{CheckResult, PartitionResult, Verdict};
use crate::history::{History, Operation};

/// Limit on operations listed per partition in reports, so a huge violation
/// does not produce a huge report.
pub const REPORT_OPERATIONS_MAX: usize = 200;

/// Limit on partitions listed under `failures`.
pub const REPORT_PARTITIONS_MAX: usize = 100;

/// One operation as JSON.
pub fn operation_json(op: &Operation) -> Json {
    json!({
        "id": op.id,
        "process": op.process,
        "f": op.f,
        "key": op.key,
        "input": op.input.to_json(),
        "output": op.output.to_json(),
        "status": op.status.as_str(),
        "invoke_time": op.invoke_time,
        "return_time": op.return_time,
        "line": op.line,
    })
}

fn partition_json(history: &History, p: &PartitionResult) -> Json {
    let ops = |ids: &[usize]| -> Vec<Json> {
        ids.iter()
            .take(REPORT_OPERATIONS_MAX)
            .filter_map(|&id| history.operations.get(id))
            .map(operation_json)
            .collect()
    };
    let prefix_tail_start = p.longest_prefix.len().saturating_sub(REPORT_OPERATIONS_MAX);
    json!({
        "key": p.key,
        "valid": p.verdict.to_json(),
        "unknown_reason": p.unknown_reason.map(|r| r.as_str()),
        "operations": p.operations,
        "unlinearizable": ops(&p.unlinearizable),
        "longest_prefix_length": p.longest_prefix.len(),
        "longest_prefix_tail": ops(&p.longest_prefix[prefix_tail_start..]),
        "state_after_prefix": p.state_after_prefix,
        "cache_entries": p.cache_entries,
        "elapsed_ms": p.elapsed.as_secs_f64() * 1000.0,
        "explanation": p.proof.as_ref().map(|v| v.explanation.as_str()),
        "decided_by": if p.decided_by_graph { "graph" } else { "search" },
    })
}

/// The `--json` object: `valid`, `operations`, `partitions`, `elapsed_ms`,
/// and for a violation the failing partitions with their unlinearizable
/// operations and longest linearizable prefix (last operations only), and
/// the graph pre-pass's explanations (`explanations`, and per failure
/// `explanation` and `decided_by`: `graph` or `search`).
pub fn to_json(history: &History, result: &CheckResult) -> Json {
    let failures: Vec<Json> = result
        .partition_results
        .iter()
        // For a violation, the failing keys (not the ones cancelled after it);
        // for unknown, the keys that ran out; at most REPORT_PARTITIONS_MAX.
        .filter(|p| p.verdict != Verdict::Linearizable && p.verdict == result.verdict)
        .take(REPORT_PARTITIONS_MAX)
        .map(|p| partition_json(history, p))
        .collect();
    let unlinearizable: Vec<Json> = result
        .violations()
        .flat_map(|p| p.unlinearizable.iter().take(REPORT_OPERATIONS_MAX))
        .filter_map(|&id| history.operations.get(id))
        .map(operation_json)
        .collect();
    let explanations: Vec<&str> = result
        .violations()
        .filter_map(|p| p.proof.as_ref())
        .take(REPORT_PARTITIONS_MAX)
        .map(|v| v.explanation.as_str())
        .collect();
    json!({
        "valid": result.verdict.to_json(),
        "model": result.model,
        "operations": result.operations,
        "partitions": result.partitions,
        "elapsed_ms": result.elapsed.as_secs_f64() * 1000.0,
        "unknown_reason": result.unknown_reason.map(|r| r.as_str()),
        "cache_entries": result.cache_entries,
        "memory_bytes": result.memory_bytes,
        "unlinearizable": unlinearizable,
        "explanations": explanations,
        "failures": failures,
    })
}

/// A few lines for a terminal.
pub fn summary(
    history: &History,
    result: &CheckResult,
    describe: &dyn Fn(&Operation) -> String,
) -> String {
    let mut out = String::new();
    let verdict = match result.verdict {
        Verdict::Linearizable => "linearizable".to_string(),
        Verdict::NotLinearizable => "NOT linearizable".to_string(),
        Verdict::Unknown => format!(
            "unknown ({})",
            result.unknown_reason.map_or("budget", |r| r.as_str())
        ),
    };
    out.push_str(&format!(
        "{verdict}: {} operations, {} partitions, model {}, {:.1} ms, {} cache entries, {} KiB\n",
        result.operations,
        result.partitions,
        result.model,
        result.elapsed.as_secs_f64() * 1000.0,
        result.cache_entries,
        result.memory_bytes / 1024
    ));
    for p in result.violations().take(10) {
        let key = p.key.as_deref().unwrap_or("(single object)");
        if let Some(proof) = &p.proof {
            let by = if p.decided_by_graph {
                "graph pre-pass (search stopped)"
            } else {
                "graph pre-pass"
            };
            out.push_str(&format!("key {key}: {by}: {}\n", proof.explanation));
        }
        out.push_str(&format!(
            "key {key}: linearized {} of {} operations; state then: {}\n",
            p.longest_prefix.len(),
            p.operations,
            p.state_after_prefix.as_deref().unwrap_or("?")
        ));
        for &id in p
            .longest_prefix
            .iter()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .iter()
            .rev()
        {
            if let Some(op) = history.operations.get(*id) {
                out.push_str(&format!("    ... {} (line {})\n", describe(op), op.line));
            }
        }
        for (i, &id) in p.unlinearizable.iter().take(10).enumerate() {
            if let Some(op) = history.operations.get(id) {
                let label = match (p.decided_by_graph, i) {
                    (true, _) => "        involved",
                    (false, 0) => "cannot linearize",
                    (false, _) => "  also illegal",
                };
                out.push_str(&format!("  {label}: {} (line {})\n", describe(op), op.line));
            }
        }
    }
    out
}
