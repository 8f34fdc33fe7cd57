//! The MapReduce run's `report.html`: verdicts, setup, a task-progress timeline with the
//! nemesis's faults shaded and leader changes marked, one lane per worker, and the event list.
//! Self-contained (inline CSS and SVG), like the linearizability report.

use std::fmt::Write as _;

use serde_json::Value;

use super::monitor::Sample;
use super::plan::MrFault;
use super::MrEvent;
use crate::report::escape;

/// Plot geometry, in SVG pixels.
const WIDTH: f64 = 960.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const PROGRESS_HEIGHT: f64 = 220.0;
const LANE_HEIGHT: f64 = 14.0;
/// At most this many worker lanes drawn (the rest are in the event table).
const LANES_MAX: usize = 60;

pub struct ReportInput<'a> {
    pub title: &'a str,
    pub results: &'a Value,
    pub samples: &'a [Sample],
    pub events: &'a [MrEvent],
}

fn fault_color(fault: MrFault) -> &'static str {
    match fault {
        MrFault::KillWorker => "#f0a040",
        MrFault::KillLeader => "#e05050",
        MrFault::PauseWorker => "#e0d040",
        MrFault::PauseLeader => "#d0a0e0",
        MrFault::PartitionLeader => "#8080e0",
    }
}

/// A fault's shaded span: (fault, start ns, end ns, label).
fn fault_spans(events: &[MrEvent], end: u64) -> Vec<(MrFault, u64, u64, String)> {
    let mut spans = Vec::new();
    for (i, event) in events.iter().enumerate() {
        if event.kind != "nemesis" || event.phase != "start" {
            continue;
        }
        let Some(fault) = event.fault else { continue };
        let stop = if fault.lasts() {
            events[i + 1..]
                .iter()
                .find(|e| e.kind == "nemesis" && e.phase == "stop" && e.fault == Some(fault))
                .map_or(end, |e| e.end_time)
        } else {
            // A kill is an instant: shade a sliver so it shows.
            event.end_time.max(event.time + end / 200)
        };
        let label = format!(
            "{} {}",
            fault.name(),
            event.process.clone().unwrap_or_default()
        );
        spans.push((fault, event.time, stop, label));
    }
    spans
}

pub fn render(input: &ReportInput) -> String {
    let end = input
        .events
        .iter()
        .map(|e| e.end_time)
        .chain(input.samples.iter().map(|s| s.time))
        .max()
        .unwrap_or(1)
        .max(1);
    let x = |t: u64| LEFT + (t as f64 / end as f64) * (WIDTH - LEFT - RIGHT);
    let valid = input.results["valid"].as_bool().unwrap_or(false);
    let mut page = String::new();
    let _ = write!(
        page,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title><style>\
         body{{font-family:sans-serif;margin:24px;max-width:1000px}}\
         .ok{{color:#080}}.bad{{color:#c00}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;font-size:13px;text-align:left}}\
         pre{{background:#f6f6f6;padding:8px;overflow:auto;font-size:12px}}\
         </style></head><body><h1>{title}: <span class=\"{class}\">{verdict}</span></h1>",
        title = escape(input.title),
        class = if valid { "ok" } else { "bad" },
        verdict = if valid { "valid" } else { "INVALID" },
    );
    page.push_str("<h2>Checks</h2><table><tr><th>check</th><th>verdict</th><th>detail</th></tr>");
    if let Some(checks) = input.results["checks"].as_object() {
        for (name, check) in checks {
            let ok = check["valid"].as_bool().unwrap_or(false);
            let detail = match name.as_str() {
                "output" => format!(
                    "{} lines expected, {} got; missing {}; unexpected {}",
                    check["expected_lines"],
                    check["actual_lines"],
                    check["missing"],
                    check["unexpected"]
                ),
                "early_exit" => check["message"].as_str().unwrap_or("").to_string(),
                "faults_happened" => format!("applied {}", check["applied"]),
                "workers_exit" => format!("not exited: {}", check["not_exited"]),
                "job_done" => format!("{} s", check["seconds"]),
                _ => check.to_string(),
            };
            let _ = write!(
                page,
                "<tr><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
                escape(name),
                if ok { "ok" } else { "bad" },
                if ok { "pass" } else { "FAIL" },
                escape(&detail)
            );
        }
    }
    page.push_str("</table>");
    let _ = write!(
        page,
        "<h2>Setup</h2><pre>{}</pre>",
        escape(&serde_json::to_string_pretty(&input.results["run"]).unwrap_or_default())
    );
    if let Some(errors) = input.results["errors"].as_array().filter(|e| !e.is_empty()) {
        let _ = write!(
            page,
            "<h2 class=\"bad\">Errors during the run</h2><pre>{}</pre>",
            escape(&serde_json::to_string_pretty(errors).unwrap_or_default())
        );
    }
    page.push_str("<h2>Task progress</h2><p>Maps (blue) and reduces (green) done, as the coordinator group reported them; tasks re-issued after a timeout (dashed grey). Shaded: nemesis faults (orange kill worker, red leader killed until restarted, yellow/violet pauses, blue partition). Ticks on top: a new leader.</p>");
    page.push_str(&progress_svg(input, end, &x));
    page.push_str("<h2>Workers</h2><p>One lane per worker process, from start to exit: green exited when the job was done, orange killed by the nemesis, red crashed (the crash app) or vanished, grey stopped by control.</p>");
    page.push_str(&lanes_svg(input, end, &x));
    page.push_str("<h2>Events</h2><table><tr><th>time (s)</th><th>kind</th><th>phase</th><th>fault</th><th>process</th><th>node</th><th>detail</th></tr>");
    for event in input.events {
        let _ = write!(
            page,
            "<tr><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
            event.time as f64 / 1e9,
            escape(&event.kind),
            escape(&event.phase),
            event.fault.map(MrFault::name).unwrap_or(""),
            escape(event.process.as_deref().unwrap_or("")),
            escape(event.node.as_deref().unwrap_or("")),
            escape(event.detail.as_deref().unwrap_or("")),
            event
                .error
                .as_ref()
                .map(|e| format!(" <b class=\"bad\">{}</b>", escape(e)))
                .unwrap_or_default()
        );
    }
    page.push_str("</table></body></html>\n");
    page
}

fn axis(svg: &mut String, end: u64, x: &dyn Fn(u64) -> f64, y: f64) {
    let seconds = end as f64 / 1e9;
    let step = [0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0]
        .into_iter()
        .find(|s| seconds / s <= 12.0)
        .unwrap_or(600.0);
    let mut t = 0.0;
    while t <= seconds {
        let px = x((t * 1e9) as u64);
        let _ = write!(
            svg,
            "<line x1=\"{px:.1}\" y1=\"{y}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"#999\"/><text x=\"{px:.1}\" y=\"{}\" font-size=\"10\" text-anchor=\"middle\">{t} s</text>",
            y + 4.0,
            y + 15.0
        );
        t += step;
    }
}

fn progress_svg(input: &ReportInput, end: u64, x: &dyn Fn(u64) -> f64) -> String {
    let total = input
        .samples
        .iter()
        .map(|s| u64::from(s.maps_total.max(s.reduces_total)).max(s.reissued))
        .max()
        .unwrap_or(1)
        .max(1);
    let top = 16.0;
    let bottom = top + PROGRESS_HEIGHT;
    let y = |v: f64| bottom - v / total as f64 * PROGRESS_HEIGHT;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{}\" font-family=\"sans-serif\">",
        bottom + 24.0
    );
    for (fault, from, to, label) in fault_spans(input.events, end) {
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{top}\" width=\"{:.1}\" height=\"{PROGRESS_HEIGHT}\" fill=\"{}\" opacity=\"0.35\"><title>{}</title></rect>",
            x(from),
            (x(to) - x(from)).max(1.5),
            fault_color(fault),
            escape(&label)
        );
    }
    for event in input.events.iter().filter(|e| e.kind == "leader") {
        let px = x(event.time);
        let _ = write!(
            svg,
            "<line x1=\"{px:.1}\" y1=\"{}\" x2=\"{px:.1}\" y2=\"{top}\" stroke=\"#333\"/><text x=\"{:.1}\" y=\"{}\" font-size=\"9\">{}</text>",
            top - 8.0,
            px + 2.0,
            top - 2.0,
            escape(event.process.as_deref().unwrap_or("").trim_start_matches("mr-"))
        );
    }
    let _ = write!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{bottom}\" x2=\"{}\" y2=\"{bottom}\" stroke=\"#333\"/><line x1=\"{LEFT}\" y1=\"{top}\" x2=\"{LEFT}\" y2=\"{bottom}\" stroke=\"#333\"/><text x=\"{}\" y=\"{}\" font-size=\"10\" text-anchor=\"end\">{total}</text><text x=\"{}\" y=\"{bottom}\" font-size=\"10\" text-anchor=\"end\">0</text>",
        WIDTH - RIGHT,
        LEFT - 4.0,
        top + 8.0,
        LEFT - 4.0
    );
    axis(&mut svg, end, x, bottom);
    type Series = fn(&Sample) -> f64;
    let series: [(Series, &str, &str); 3] = [
        (|s| f64::from(s.maps_done), "#2060d0", ""),
        (|s| f64::from(s.reduces_done), "#20a040", ""),
        (|s| s.reissued as f64, "#888", " stroke-dasharray=\"4 3\""),
    ];
    for (value, color, dash) in series {
        let mut points = String::new();
        let mut previous: Option<f64> = None;
        for sample in input.samples {
            let px = x(sample.time);
            let v = value(sample);
            if let Some(p) = previous {
                let _ = write!(points, "{px:.1},{:.1} ", y(p));
            }
            let _ = write!(points, "{px:.1},{:.1} ", y(v));
            previous = Some(v);
        }
        let _ = write!(
            svg,
            "<polyline points=\"{points}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"{dash}/>"
        );
    }
    svg.push_str("</svg>");
    svg
}

fn lanes_svg(input: &ReportInput, end: u64, x: &dyn Fn(u64) -> f64) -> String {
    let starts: Vec<&MrEvent> = input
        .events
        .iter()
        .filter(|e| e.kind == "worker" && e.phase == "start")
        .take(LANES_MAX)
        .collect();
    let height = starts.len() as f64 * LANE_HEIGHT + 24.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" font-family=\"sans-serif\">"
    );
    for (fault, from, to, label) in fault_spans(input.events, end) {
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"0\" width=\"{:.1}\" height=\"{}\" fill=\"{}\" opacity=\"0.25\"><title>{}</title></rect>",
            x(from),
            (x(to) - x(from)).max(1.5),
            height - 24.0,
            fault_color(fault),
            escape(&label)
        );
    }
    for (lane, start) in starts.iter().enumerate() {
        let name = start.process.clone().unwrap_or_default();
        let exit = input
            .events
            .iter()
            .find(|e| e.kind == "worker" && e.phase == "exit" && e.process.as_ref() == Some(&name));
        let killed = input.events.iter().find(|e| {
            e.kind == "nemesis"
                && e.fault == Some(MrFault::KillWorker)
                && e.error.is_none()
                && e.process.as_ref() == Some(&name)
        });
        let (stop, color, how) = match (killed, exit) {
            (Some(k), _) => (k.time, "#f0a040", "killed".to_string()),
            (None, Some(e)) => {
                let how = e.detail.clone().unwrap_or_default();
                let color = match how.as_str() {
                    "job-done" => "#40a060",
                    h if h.starts_with("stopped") => "#999",
                    _ => "#d04040",
                };
                (e.time, color, how)
            }
            (None, None) => (end, "#999", "running".into()),
        };
        let y = lane as f64 * LANE_HEIGHT + 2.0;
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{}\" fill=\"{color}\"><title>{} on {}: {}</title></rect><text x=\"{}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"end\">{}</text>",
            x(start.time),
            (x(stop) - x(start.time)).max(1.0),
            LANE_HEIGHT - 3.0,
            escape(&name),
            escape(start.node.as_deref().unwrap_or("")),
            escape(&how),
            LEFT - 4.0,
            y + LANE_HEIGHT - 5.0,
            escape(name.trim_start_matches("mr-"))
        );
    }
    axis(&mut svg, end, x, height - 24.0);
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(time: u64, kind: &str, phase: &str, fault: Option<MrFault>) -> MrEvent {
        let mut e = MrEvent::new(time, kind, phase);
        e.fault = fault;
        e.process = Some("mr-worker-1".into());
        e
    }

    #[test]
    fn lasting_faults_span_to_their_stop_and_kills_get_a_sliver() {
        let events = vec![
            event(1_000, "nemesis", "start", Some(MrFault::KillLeader)),
            event(1_500, "nemesis", "start", Some(MrFault::KillWorker)),
            event(3_000, "nemesis", "stop", Some(MrFault::KillLeader)),
        ];
        let spans = fault_spans(&events, 10_000);
        assert_eq!(spans.len(), 2);
        assert_eq!((spans[0].1, spans[0].2), (1_000, 3_000));
        assert_eq!((spans[1].1, spans[1].2), (1_500, 1_550));
    }

    #[test]
    fn page_shows_the_verdict_and_every_event() {
        let results = serde_json::json!({"valid": false, "checks": {"output": {"valid": false, "expected_lines": 3, "actual_lines": 2, "missing": ["b 2"], "unexpected": []}}, "run": {}});
        let events = vec![
            event(1_000, "worker", "start", None),
            event(5_000, "worker", "exit", None),
        ];
        let page = render(&ReportInput {
            title: "mr <wc>",
            results: &results,
            samples: &[],
            events: &events,
        });
        assert!(page.contains("INVALID"));
        assert!(page.contains("mr &lt;wc&gt;"));
        assert!(page.contains("b 2"));
        assert_eq!(page.matches("<td>mr-worker-1</td>").count(), 2);
    }
}
