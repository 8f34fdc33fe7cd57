//! The comparison's `report.html`, rendered from `results.json` alone (so a stored run can be
//! re-rendered): headline ratios, how clients connect, the side-by-side table, then figures —
//! throughput per workload x clients, latency percentiles, HDR percentile curves, throughput
//! over each measured window, the open-loop latency against the offered rate — and the
//! per-request CPU profile. One self-contained page: inline CSS and SVG, no scripts.

use std::fmt::Write as _;

use serde_json::Value;

use super::plot::{self, BarSeries, LineSeries};
use crate::report::escape;

/// Colours per system, light to dark with the client count.
const OURS_SHADES: [&str; 4] = ["#93c5fd", "#3b82f6", "#1d4ed8", "#1e3a8a"];
const ETCD_SHADES: [&str; 4] = ["#fdba74", "#f97316", "#c2410c", "#7c2d12"];

fn shade(system: &str, index: usize) -> &'static str {
    let shades = if system == "ours" {
        &OURS_SHADES
    } else {
        &ETCD_SHADES
    };
    shades[index.min(shades.len() - 1)]
}

fn system_colour(system: &str) -> &'static str {
    shade(system, 2)
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f8;color:#1d1d28}
main{max-width:1240px;margin:0 auto;padding:18px 20px 40px}
h1{font-size:22px;margin:4px 0 12px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #dde;padding-bottom:4px}
h3{font-size:15px;margin:14px 0 4px}
section,figure{background:#fff;border:1px solid #e1e3ea;border-radius:8px;padding:12px 16px;margin:12px 0}
figcaption{font-weight:600;margin-bottom:4px}
table{border-collapse:collapse;margin:4px 0}td,th{padding:3px 10px;border-bottom:1px solid #eceef3;text-align:left;vertical-align:top}
th{font-weight:600;color:#555;background:#fafbfc}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
tr.ours td:first-child{border-left:4px solid #1d4ed8}tr.etcd td:first-child{border-left:4px solid #c2410c}
.plot{width:100%;height:auto;display:block}.tick{font-size:11px;fill:#555}.axis{font-size:12px;fill:#333}.value{font-size:10px;fill:#333}
.note{color:#666;font-size:12.5px}.connect{background:#fff7e6;border-color:#f5c26b}
.good{color:#2b9348;font-weight:700}.bad{color:#d00000;font-weight:700}
"#;

fn rows(results: &Value) -> Vec<&Value> {
    results["rows"]
        .as_array()
        .map(|r| r.iter().collect())
        .unwrap_or_default()
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn cell(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.digits$}"))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        other => other.to_string(),
    }
}

/// Distinct values of a row field, in first-seen order.
fn distinct(rows: &[&Value], field: &str) -> Vec<Value> {
    let mut seen: Vec<Value> = Vec::new();
    for row in rows {
        if !seen.contains(&row[field]) {
            seen.push(row[field].clone());
        }
    }
    seen
}

fn find<'a>(
    rows: &[&'a Value],
    system: &str,
    workload: &str,
    clients: &Value,
) -> Option<&'a Value> {
    rows.iter().copied().find(|r| {
        r["mode"] == "closed"
            && r["system"] == system
            && r["workload"] == workload
            && &r["clients"] == clients
    })
}

/// Renders the page from results.json.
pub fn render(results: &Value) -> String {
    let all = rows(results);
    let closed: Vec<&Value> = all
        .iter()
        .copied()
        .filter(|r| r["mode"] == "closed")
        .collect();
    let open: Vec<&Value> = all
        .iter()
        .copied()
        .filter(|r| r["mode"] == "open")
        .collect();
    let systems: Vec<String> = distinct(&all, "system").iter().map(text).collect();
    let workloads: Vec<String> = distinct(&closed, "workload").iter().map(text).collect();
    let clients = distinct(&closed, "clients");
    let setup = &results["setup"];
    let mut html = String::with_capacity(256 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>bench-compare: {}</title><style>{STYLE}</style></head><body><main><h1>Benchmark: {} side by side</h1>",
        escape(&systems.join(" vs ")),
        escape(&systems.join(" vs "))
    );
    headline(&mut html, &closed, &workloads, &clients);
    let _ = write!(
        html,
        r#"<section class="connect"><b>How clients connect:</b> {}<br><b>Reads:</b> {}</section>"#,
        escape(&text(&setup["connect_description"])),
        escape(&text(&setup["reads"]))
    );
    setup_section(&mut html, results);
    table_section(&mut html, &all);
    figures(&mut html, &closed, &systems, &workloads, &clients);
    open_section(&mut html, &open, &systems);
    profile_section(&mut html, &all);
    if let Some(errors) = results["errors"].as_array().filter(|e| !e.is_empty()) {
        html.push_str("<h2>Problems during the run</h2><section><ul>");
        for e in errors {
            let _ = write!(html, "<li>{}</li>", escape(&text(e)));
        }
        html.push_str("</ul></section>");
    }
    html.push_str("</main></body></html>\n");
    html
}

fn headline(html: &mut String, closed: &[&Value], workloads: &[String], clients: &[Value]) {
    let Some(top) = clients.iter().filter_map(Value::as_u64).max() else {
        return;
    };
    let top = Value::from(top);
    html.push_str(r#"<section><b>At the highest client count:</b><table><tr><th>workload</th><th class="num">ours ops/s</th><th class="num">etcd ops/s</th><th class="num">ours / etcd</th><th class="num">ours p99 ms</th><th class="num">etcd p99 ms</th></tr>"#);
    for w in workloads {
        let (Some(ours), Some(etcd)) =
            (find(closed, "ours", w, &top), find(closed, "etcd", w, &top))
        else {
            continue;
        };
        let (o, e) = (num(&ours["ops_per_sec"]), num(&etcd["ops_per_sec"]));
        let ratio = match (o, e) {
            (Some(o), Some(e)) if e > 0.0 => Some(o / e),
            _ => None,
        };
        let class = match ratio {
            Some(r) if r >= 2.0 => "good",
            Some(r) if r < 1.0 => "bad",
            _ => "",
        };
        let _ = write!(
            html,
            r#"<tr><td>{} × {top}</td><td class="num">{}</td><td class="num">{}</td><td class="num {class}">{}</td><td class="num">{}</td><td class="num">{}</td></tr>"#,
            escape(&w.to_uppercase()),
            cell(o, 0),
            cell(e, 0),
            ratio.map_or_else(|| "–".into(), |r| format!("{r:.2}×")),
            cell(num(&ours["p99_ms"]), 2),
            cell(num(&etcd["p99_ms"]), 2)
        );
    }
    html.push_str(r#"</table><p class="note">The goal: ours at least 2× etcd's throughput at no worse p99.</p></section>"#);
}

fn setup_section(html: &mut String, results: &Value) {
    let setup = &results["setup"];
    html.push_str("<h2>Setup</h2><section><table>");
    let mut line = |k: &str, v: String| {
        let _ = write!(
            html,
            "<tr><th>{}</th><td>{}</td></tr>",
            escape(k),
            escape(&v)
        );
    };
    let m = &setup["machine"];
    line(
        "machine",
        format!(
            "{} cores, {}, {} MiB, kernel {}, load at start {}",
            text(&m["cores"]),
            text(&m["cpu_model"]),
            text(&m["memory_mib"]),
            text(&m["kernel"]),
            text(&m["load_average_at_start"])
        ),
    );
    line("cluster", text(&setup["cluster"]));
    let v = &setup["versions"];
    line(
        "versions",
        format!(
            "control {} (git {}), {}, etcd-client crate {}",
            text(&v["control"]),
            text(&v["git"]),
            text(&v["etcd"]),
            text(&v["etcd_client_crate"])
        ),
    );
    line(
        "data",
        format!(
            "{} records of {} B preloaded; keys {} (constant {})",
            text(&setup["records"]),
            text(&setup["value_bytes"]),
            text(&setup["key_distribution"]),
            text(&setup["zipfian_constant"])
        ),
    );
    line(
        "closed loop",
        format!(
            "clients {}; warm-up {} s then {} s measured per cell; operation timeout {} s",
            text(&setup["clients"]),
            text(&setup["warmup_s"]),
            text(&setup["duration_s"]),
            text(&setup["op_timeout_s"])
        ),
    );
    let o = &setup["open_loop"];
    line(
        "open loop",
        format!(
            "workload {}, rates {}, {} workers, latency from the {}",
            text(&o["workload"]),
            text(&o["rates"]),
            text(&o["workers"]),
            text(&o["latency_from"])
        ),
    );
    line("load generator", text(&setup["client_runtime"]));
    line(
        "ours",
        format!(
            "{}; snapshot threshold {} B",
            text(&setup["ours"]["transport"]),
            text(&setup["ours"]["max_raft_state_bytes"])
        ),
    );
    line(
        "etcd",
        format!(
            "{}; {}",
            text(&setup["etcd"]["transport"]),
            text(&setup["etcd"]["flags"])
        ),
    );
    line("histograms", text(&setup["histograms"]));
    line("seed", text(&setup["seed"]));
    line("started", text(&setup["started_at"]));
    if let Some(systems) = results["systems"].as_object() {
        for (name, info) in systems {
            line(&format!("{name}: run"), info.to_string());
        }
    }
    html.push_str("</table></section>");
}

fn table_section(html: &mut String, all: &[&Value]) {
    html.push_str(r#"<h2>Side by side</h2><section><table id="results-table"><tr><th>system</th><th>workload</th><th>mode</th><th class="num">clients</th><th class="num">ops/s</th><th class="num">p50 ms</th><th class="num">p99 ms</th><th class="num">p99.9 ms</th><th class="num">max ms</th><th class="num">errors</th></tr>"#);
    let mut sorted: Vec<&Value> = all.to_vec();
    sorted.sort_by_key(|r| {
        (
            r["mode"] != "closed",
            text(&r["workload"]),
            r["clients"].as_u64().unwrap_or(0),
            r["target_rate"].as_f64().unwrap_or(0.0) as u64,
            text(&r["system"]) != "ours",
        )
    });
    for r in sorted {
        let mode = match r["target_rate"].as_f64() {
            Some(rate) => format!("open @{rate:.0}/s"),
            None => "closed".into(),
        };
        let errors = r["errors"].as_u64().unwrap_or(0) + r["unsent"].as_u64().unwrap_or(0);
        let _ = write!(
            html,
            r#"<tr class="{0}"><td>{0}</td><td>{1}</td><td>{2}</td><td class="num">{3}</td><td class="num">{4}</td><td class="num">{5}</td><td class="num">{6}</td><td class="num">{7}</td><td class="num">{8}</td><td class="num">{9}</td></tr>"#,
            escape(&text(&r["system"])),
            escape(&text(&r["workload"]).to_uppercase()),
            mode,
            text(&r["clients"]),
            cell(num(&r["ops_per_sec"]), 0),
            cell(num(&r["p50_ms"]), 2),
            cell(num(&r["p99_ms"]), 2),
            cell(num(&r["p999_ms"]), 2),
            cell(num(&r["max_ms"]), 1),
            errors
        );
    }
    html.push_str(r#"</table><p class="note">errors: operations that failed or timed out in the measured window (open loop: plus requests due but never sent).</p></section>"#);
}

fn figures(
    html: &mut String,
    closed: &[&Value],
    systems: &[String],
    workloads: &[String],
    clients: &[Value],
) {
    if closed.is_empty() {
        return;
    }
    let mut groups = Vec::new();
    let mut keys = Vec::new();
    for w in workloads {
        for c in clients {
            groups.push(format!("{} × {}", w.to_uppercase(), text(c)));
            keys.push((w.clone(), c.clone()));
        }
    }
    let series_of = |field: &str| -> Vec<BarSeries> {
        systems
            .iter()
            .map(|s| BarSeries {
                name: s.clone(),
                colour: system_colour(s),
                values: keys
                    .iter()
                    .map(|(w, c)| find(closed, s, w, c).and_then(|r| num(&r[field])))
                    .collect(),
            })
            .collect()
    };
    html.push_str("<h2>Closed loop</h2>");
    let _ = write!(
        html,
        r#"<figure id="throughput"><figcaption>Throughput (ok operations/s) per workload × clients</figcaption>{}</figure>"#,
        plot::grouped_bars(&groups, &series_of("ops_per_sec"), "ops/s", false)
    );
    for (field, id, name) in [
        ("p50_ms", "latency-p50", "p50"),
        ("p99_ms", "latency-p99", "p99"),
        ("p999_ms", "latency-p999", "p99.9"),
    ] {
        let _ = write!(
            html,
            r#"<figure id="{id}"><figcaption>Latency {name} (ms, log scale) per workload × clients</figcaption>{}</figure>"#,
            plot::grouped_bars(
                &groups,
                &series_of(field),
                &format!("{name} latency (ms)"),
                true
            )
        );
    }
    for w in workloads {
        let mut curves = Vec::new();
        let mut timeline = Vec::new();
        for s in systems {
            for (i, c) in clients.iter().enumerate() {
                let Some(r) = find(closed, s, w, c) else {
                    continue;
                };
                let name = format!("{s} × {}", text(c));
                let points: Vec<(f64, f64)> = r["latency_percentiles_ms"]
                    .as_array()
                    .map(|ps| {
                        ps.iter()
                            .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                            .filter(|(p, _)| *p < 100.0)
                            .map(|(p, ms)| (-(1.0 - p / 100.0).log10(), ms))
                            .collect()
                    })
                    .unwrap_or_default();
                curves.push(LineSeries {
                    name: name.clone(),
                    colour: shade(s, i + (4 - clients.len().min(4))),
                    dashed: s != "ours",
                    points,
                });
                let bin = r["throughput_over_time"]["bin_s"].as_f64().unwrap_or(1.0);
                let over_time: Vec<(f64, f64)> = r["throughput_over_time"]["ok_per_sec"]
                    .as_array()
                    .map(|v| {
                        v.iter()
                            .enumerate()
                            .filter_map(|(k, x)| Some(((k as f64 + 0.5) * bin, x.as_f64()?)))
                            .collect()
                    })
                    .unwrap_or_default();
                timeline.push(LineSeries {
                    name,
                    colour: shade(s, i + (4 - clients.len().min(4))),
                    dashed: s != "ours",
                    points: over_time,
                });
            }
        }
        let upper = w.to_uppercase();
        let _ = write!(
            html,
            r#"<figure id="percentiles-{w}"><figcaption>Workload {upper}: latency by percentile (HDR; x = nines: 0.3 = p50, 1 = p90, 2 = p99, 3 = p99.9, 4 = p99.99; etcd dashed)</figcaption>{}</figure>"#,
            plot::lines(
                &curves,
                "percentile (number of nines)",
                "latency (ms, log scale)",
                true
            )
        );
        let _ = write!(
            html,
            r#"<figure id="timeline-{w}"><figcaption>Workload {upper}: throughput over the measured window (etcd dashed)</figcaption>{}</figure>"#,
            plot::lines(
                &timeline,
                "seconds into the measured window",
                "ok ops/s",
                false
            )
        );
    }
}

fn open_section(html: &mut String, open: &[&Value], systems: &[String]) {
    if open.is_empty() {
        return;
    }
    html.push_str(
        r#"<h2>Open loop (fixed offered rate, latency from the intended send time)</h2>"#,
    );
    let mut latency = Vec::new();
    let mut achieved = Vec::new();
    for s in systems {
        let mine: Vec<&Value> = open
            .iter()
            .copied()
            .filter(|r| r["system"] == s.as_str())
            .collect();
        let pts = |field: &str| -> Vec<(f64, f64)> {
            mine.iter()
                .filter_map(|r| Some((r["target_rate"].as_f64()?, r[field].as_f64()?)))
                .collect()
        };
        for (field, name, index) in [
            ("p50_ms", "p50", 1),
            ("p99_ms", "p99", 2),
            ("p999_ms", "p99.9", 3),
        ] {
            latency.push(LineSeries {
                name: format!("{s} {name}"),
                colour: shade(s, index),
                dashed: s != "ours",
                points: pts(field),
            });
        }
        achieved.push(LineSeries {
            name: s.clone(),
            colour: system_colour(s),
            dashed: s != "ours",
            points: pts("ops_per_sec"),
        });
    }
    let _ = write!(
        html,
        r#"<figure id="open-loop"><figcaption>Latency against offered rate (ms, log scale; etcd dashed)</figcaption>{}</figure>"#,
        plot::lines(&latency, "offered rate (requests/s)", "latency (ms)", true)
    );
    let _ = write!(
        html,
        r#"<figure id="open-loop-achieved"><figcaption>Achieved against offered rate (a system that keeps up lies on the diagonal)</figcaption>{}</figure>"#,
        plot::lines(&achieved, "offered rate (requests/s)", "ok ops/s", false)
    );
    html.push_str(r#"<section><table><tr><th>system</th><th>workload</th><th class="num">offered /s</th><th class="num">achieved /s</th><th class="num">p50 ms</th><th class="num">p99 ms</th><th class="num">p99.9 ms</th><th class="num">send lag p99 ms</th><th class="num">errors</th><th class="num">unsent</th></tr>"#);
    for r in open {
        let _ = write!(
            html,
            r#"<tr class="{0}"><td>{0}</td><td>{1}</td><td class="num">{2}</td><td class="num">{3}</td><td class="num">{4}</td><td class="num">{5}</td><td class="num">{6}</td><td class="num">{7}</td><td class="num">{8}</td><td class="num">{9}</td></tr>"#,
            escape(&text(&r["system"])),
            escape(&text(&r["workload"]).to_uppercase()),
            cell(num(&r["target_rate"]), 0),
            cell(num(&r["ops_per_sec"]), 0),
            cell(num(&r["p50_ms"]), 2),
            cell(num(&r["p99_ms"]), 2),
            cell(num(&r["p999_ms"]), 2),
            cell(num(&r["send_lag_p99_ms"]), 2),
            text(&r["errors"]),
            text(&r["unsent"])
        );
    }
    html.push_str(r#"</table><p class="note">send lag: how late requests left against their intended time (the generator or the system fell behind); it is included in the latency.</p></section>"#);
}

fn profile_section(html: &mut String, all: &[&Value]) {
    if all.iter().all(|r| r["cpu"].is_null()) {
        return;
    }
    html.push_str(r#"<h2>Where the CPU goes (from /proc, over each measured window)</h2><section id="profile"><table><tr><th>system</th><th>workload</th><th>mode</th><th class="num">clients</th><th class="num">ops/s</th><th class="num">server CPU µs/op</th><th class="num">client CPU µs/op</th><th class="num">server voluntary switches/op</th><th class="num">server preemptions/op</th><th class="num">cores busy</th><th class="num">server threads</th></tr>"#);
    for r in all {
        let c = &r["cpu"];
        if c.is_null() {
            continue;
        }
        let _ = write!(
            html,
            r#"<tr class="{0}"><td>{0}</td><td>{1}</td><td>{2}</td><td class="num">{3}</td><td class="num">{4}</td><td class="num">{5}</td><td class="num">{6}</td><td class="num">{7}</td><td class="num">{8}</td><td class="num">{9}</td><td class="num">{10}</td></tr>"#,
            escape(&text(&r["system"])),
            escape(&text(&r["workload"]).to_uppercase()),
            match r["target_rate"].as_f64() {
                Some(rate) => format!("open @{rate:.0}"),
                None => "closed".into(),
            },
            text(&r["clients"]),
            cell(num(&r["ops_per_sec"]), 0),
            cell(num(&c["server_cpu_us_per_op"]), 1),
            cell(num(&c["client_cpu_us_per_op"]), 1),
            cell(num(&c["server_voluntary_switches_per_op"]), 2),
            cell(num(&c["server_involuntary_switches_per_op"]), 2),
            cell(num(&c["cores_busy"]), 2),
            text(&c["server_threads"])
        );
    }
    html.push_str(r#"</table><p class="note">Server CPU is summed over the three members' processes (all threads); client CPU is this load generator's. Voluntary switches are a thread blocking (hand-offs between threads, fsync, waiting for the network); preemptions are involuntary switches.</p></section>"#);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(system: &str, workload: &str, clients: u64, ops: f64) -> Value {
        json!({
            "system": system, "workload": workload, "clients": clients, "mode": "closed",
            "target_rate": null, "ops_per_sec": ops, "errors": 0, "unsent": 0,
            "p50_ms": 1.0, "p99_ms": 3.0, "p999_ms": 9.0, "max_ms": 12.0,
            "latency_percentiles_ms": [[50.0, 1.0], [99.0, 3.0], [99.9, 9.0], [100.0, 12.0]],
            "throughput_over_time": {"bin_s": 0.5, "ok_per_sec": [ops, ops]},
            "cpu": {"server_cpu_us_per_op": 80.0, "client_cpu_us_per_op": 20.0, "cores_busy": 1.8, "server_threads": 30},
        })
    }

    #[test]
    fn the_page_has_every_figure_and_the_connection_mode() {
        let mut open = row("etcd", "a", 64, 900.0);
        open["mode"] = json!("open");
        open["target_rate"] = json!(1000.0);
        let results = json!({
            "rows": [row("ours", "a", 1, 500.0), row("etcd", "a", 1, 400.0), row("ours", "a", 64, 9000.0), row("etcd", "a", 64, 3000.0), open],
            "setup": {"connect_description": "leader only <test>", "reads": "linearizable"},
            "errors": ["etcd: something <odd>"],
        });
        let html = render(&results);
        for id in [
            "throughput",
            "latency-p50",
            "latency-p99",
            "latency-p999",
            "percentiles-a",
            "timeline-a",
            "open-loop",
            "open-loop-achieved",
            "profile",
            "results-table",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "missing {id}");
        }
        assert!(html.contains("leader only &lt;test&gt;"));
        assert!(html.contains("something &lt;odd&gt;"));
        assert!(html.contains("3.00×"), "headline ratio at 64 clients");
        assert!(!html.contains("<script"));
        assert!(
            !html.contains("src=") && !html.contains("href="),
            "no external resources"
        );
    }
}
