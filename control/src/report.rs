//! The run's `report.html`: one self-contained page (inline CSS and SVG, no scripts from the
//! network) that answers, top to bottom, "did it pass?", "what was run?", "what did the
//! faults do to throughput and latency?", "how available was it?" and "what exactly went
//! wrong?". The checker's own visualisation is written beside it as `checker.html` and, when
//! a check failed or ran out of budget, embedded in an iframe (`srcdoc`), so the page still
//! opens from a copied folder without a server.
//!
//! The plots are hand-written SVG rather than a plotting crate: shading fault periods on two
//! aligned time axes and a log-scale scatter are a few dozen lines, and the output stays small
//! and crisp at any zoom.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde_json::Value;

use crate::analyze::Validity;
use crate::history::{Event, EventType};
use crate::nemesis::NemesisEvent;

/// At most this many points in the latency scatter; beyond it ok operations are thinned
/// evenly (fail and info are always drawn), keeping the page well under the size cap.
const SCATTER_POINTS_MAX: usize = 40_000;
/// At most this many throughput bars: long runs use wider bins.
const RATE_BINS_MAX: u64 = 400;
/// At most this many lost writes, and unexpected values, listed.
const LOST_LISTED_MAX: usize = 50;

/// Everything the page shows.
#[derive(Debug, Clone, Copy)]
pub struct ReportInput<'a> {
    /// results.json's `run` (what was run).
    pub run_info: &'a Value,
    /// The combined verdict.
    pub validity: Validity,
    /// results.json's `checks`.
    pub checks: &'a Value,
    pub events: &'a [Event],
    pub nemesis: &'a [NemesisEvent],
    /// The checker's HTML, embedded when present.
    pub checker_html: Option<&'a str>,
}

/// One completed operation.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletedOp {
    pub f: String,
    pub outcome: EventType,
    pub invoke: u64,
    pub complete: u64,
}

impl CompletedOp {
    pub fn latency_ns(&self) -> u64 {
        self.complete.saturating_sub(self.invoke)
    }
}

/// Pairs each completion with its process's outstanding invoke (unfinished invokes have no
/// completion time and are left out).
pub fn completed_ops(events: &[Event]) -> Vec<CompletedOp> {
    let mut outstanding: BTreeMap<u64, u64> = BTreeMap::new();
    let mut ops = Vec::new();
    for event in events {
        if event.kind == EventType::Invoke {
            outstanding.insert(event.process, event.time);
        } else if let Some(invoke) = outstanding.remove(&event.process) {
            ops.push(CompletedOp {
                f: event.f.clone(),
                outcome: event.kind,
                invoke,
                complete: event.time,
            });
        }
    }
    ops
}

/// One fault, from its start event to the end of its stop event (or the final heal, or the
/// end of the history when it was never stopped).
#[derive(Debug, Clone, PartialEq)]
pub struct FaultPeriod {
    pub start: u64,
    pub end: u64,
    pub label: String,
    pub kind: String,
}

/// Fault periods from the nemesis events, and the times of heal-all events.
pub fn fault_periods(nemesis: &[NemesisEvent], history_end: u64) -> (Vec<FaultPeriod>, Vec<u64>) {
    let mut open: Vec<FaultPeriod> = Vec::new();
    let mut periods = Vec::new();
    let mut heals = Vec::new();
    for event in nemesis {
        let kind = event.kind.map(|k| k.name().to_string()).unwrap_or_default();
        match event.phase.as_str() {
            "start" => open.push(FaultPeriod {
                start: event.time,
                end: history_end,
                label: event
                    .fault
                    .as_ref()
                    .map(|f| f.describe())
                    .unwrap_or_else(|| format!("{kind} {}", event.nodes.join(","))),
                kind,
            }),
            "stop" => {
                if let Some(i) = open.iter().position(|p| p.kind == kind) {
                    let mut period = open.remove(i);
                    period.end = event.end_time.max(event.time);
                    periods.push(period);
                }
            }
            "heal-all" => {
                let at = event.end_time.max(event.time);
                heals.push(at);
                for mut period in open.drain(..) {
                    period.end = at;
                    periods.push(period);
                }
            }
            _ => {}
        }
    }
    periods.append(&mut open);
    periods.sort_by_key(|p| p.start);
    (periods, heals)
}

/// Availability: ok over all completed operations (None when there were none).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Availability {
    pub overall: Option<f64>,
    pub faulty: Option<f64>,
    pub healed: Option<f64>,
}

/// Availability overall, for operations completing during a fault period, and the rest.
pub fn availability(ops: &[CompletedOp], periods: &[FaultPeriod]) -> Availability {
    let mut counts = [[0u64; 2]; 3]; // [overall, faulty, healed] x [ok, all]
    for op in ops {
        let during = periods
            .iter()
            .any(|p| p.start <= op.complete && op.complete < p.end);
        let ok = u64::from(op.outcome == EventType::Ok);
        for slot in [0, if during { 1 } else { 2 }] {
            counts[slot][0] += ok;
            counts[slot][1] += 1;
        }
    }
    let ratio = |[ok, all]: [u64; 2]| (all > 0).then(|| ok as f64 / all as f64);
    Availability {
        overall: ratio(counts[0]),
        faulty: ratio(counts[1]),
        healed: ratio(counts[2]),
    }
}

/// One row of the percentile table (milliseconds).
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyRow {
    pub label: String,
    pub count: u64,
    /// p50, p90, p99, p99.9, max.
    pub ms: [f64; 5],
}

/// Latency percentiles from HDR histograms (microsecond resolution, 3 significant digits):
/// ok operations per `f`, all ok operations, and all completions whatever their outcome.
pub fn latency_rows(ops: &[CompletedOp]) -> Vec<LatencyRow> {
    let new = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok();
    let mut per_f: BTreeMap<String, Option<Histogram<u64>>> = BTreeMap::new();
    let (mut ok_all, mut all) = (new(), new());
    for op in ops {
        let micros = (op.latency_ns() / 1000).clamp(1, 3_600_000_000);
        if let Some(h) = all.as_mut() {
            let _ = h.record(micros);
        }
        if op.outcome != EventType::Ok {
            continue;
        }
        if let Some(h) = ok_all.as_mut() {
            let _ = h.record(micros);
        }
        if let Some(h) = per_f.entry(op.f.clone()).or_insert_with(new).as_mut() {
            let _ = h.record(micros);
        }
    }
    let row = |label: String, h: &Option<Histogram<u64>>| {
        h.as_ref().filter(|h| !h.is_empty()).map(|h| LatencyRow {
            label,
            count: h.len(),
            ms: [
                h.value_at_quantile(0.5) as f64 / 1000.0,
                h.value_at_quantile(0.9) as f64 / 1000.0,
                h.value_at_quantile(0.99) as f64 / 1000.0,
                h.value_at_quantile(0.999) as f64 / 1000.0,
                h.max() as f64 / 1000.0,
            ],
        })
    };
    let mut rows: Vec<LatencyRow> = per_f
        .iter()
        .filter_map(|(f, h)| row(format!("{f} (ok)"), h))
        .collect();
    rows.extend(row("all ok".into(), &ok_all));
    rows.extend(row("all completions (ok, fail, info)".into(), &all));
    rows
}

/// HTML-escapes text (also fit for attribute values).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const OK_COLOUR: &str = "#2b9348";
const FAIL_COLOUR: &str = "#e85d04";
const INFO_COLOUR: &str = "#7b2cbf";

fn outcome_colour(outcome: EventType) -> &'static str {
    match outcome {
        EventType::Ok => OK_COLOUR,
        EventType::Fail => FAIL_COLOUR,
        _ => INFO_COLOUR,
    }
}

fn fault_colour(kind: &str) -> &'static str {
    match kind {
        "partition" => "#e63946",
        "kill" => "#f4a261",
        "pause" => "#4895ef",
        _ => "#888888",
    }
}

fn verdict_badge(valid: &Value) -> (&'static str, &'static str) {
    match valid {
        Value::Bool(true) => ("valid", "ok"),
        Value::Bool(false) => ("INVALID", "bad"),
        _ => ("unknown", "unk"),
    }
}

/// Plot geometry shared by both plots, so their time axes line up.
struct Frame {
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
    t_max: f64,
}

impl Frame {
    fn x(&self, seconds: f64) -> f64 {
        self.left + (self.width - self.left - self.right) * (seconds / self.t_max).clamp(0.0, 1.0)
    }

    fn plot_bottom(&self) -> f64 {
        self.height - self.bottom
    }

    /// Shaded fault periods (with labels), heal-all lines, and the time axis.
    fn background(&self, svg: &mut String, periods: &[FaultPeriod], heals: &[u64]) {
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#fcfcfd" stroke="#ccd"/>"##,
            self.left,
            self.top,
            self.width - self.left - self.right,
            self.plot_bottom() - self.top
        );
        for (i, p) in periods.iter().enumerate() {
            let (x0, x1) = (self.x(p.start as f64 / 1e9), self.x(p.end as f64 / 1e9));
            let colour = fault_colour(&p.kind);
            let _ = write!(
                svg,
                r#"<rect x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}" fill-opacity="0.13"><title>{}: {:.1} s – {:.1} s</title></rect>"#,
                self.top,
                (x1 - x0).max(1.0),
                self.plot_bottom() - self.top,
                escape(&p.label),
                p.start as f64 / 1e9,
                p.end as f64 / 1e9
            );
            // Alternate label rows so neighbouring short faults do not overprint; a label that
            // would run off the right edge ends at the edge instead.
            let right_edge = self.width - self.right - 3.0;
            let (x, anchor) = if x0 + 3.0 + 6.2 * p.label.chars().count() as f64 > right_edge {
                (right_edge, "end")
            } else {
                (x0 + 3.0, "start")
            };
            let _ = write!(
                svg,
                r#"<text x="{x:.1}" y="{:.1}" class="flabel" fill="{colour}" text-anchor="{anchor}">{}</text>"#,
                self.top + 12.0 + 12.0 * (i % 2) as f64,
                escape(&p.label)
            );
        }
        for &heal in heals {
            let x = self.x(heal as f64 / 1e9);
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#333" stroke-dasharray="4 3"><title>heal-all at {:.1} s</title></line><text x="{:.1}" y="{:.1}" class="flabel" fill="#333" text-anchor="end">heal-all</text>"##,
                self.top,
                self.plot_bottom(),
                heal as f64 / 1e9,
                x - 3.0,
                self.plot_bottom() - 6.0
            );
        }
        let step = nice_step(self.t_max / 10.0);
        let mut t = 0.0;
        while t <= self.t_max + 1e-9 {
            let x = self.x(t);
            let _ = write!(
                svg,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"##,
                self.plot_bottom(),
                self.plot_bottom() + 4.0,
                self.plot_bottom() + 16.0,
                trim_number(t)
            );
            t += step;
        }
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" class="axis" text-anchor="middle">time since start (s)</text>"#,
            (self.left + self.width - self.right) / 2.0,
            self.height - 4.0
        );
    }
}

/// 1, 2 or 5 times a power of ten, at least `raw`.
fn nice_step(raw: f64) -> f64 {
    if raw <= 0.0 || !raw.is_finite() {
        return 1.0;
    }
    let power = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * power)
}

fn trim_number(v: f64) -> String {
    if (v - v.round()).abs() < 1e-9 {
        format!("{}", v.round() as i64)
    } else {
        format!("{v:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

fn legend(svg: &mut String, frame: &Frame, items: &[(&str, &str)]) {
    let mut x = frame.width - frame.right - 90.0 * items.len() as f64;
    for (name, colour) in items {
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="4" width="10" height="10" fill="{colour}"/><text x="{:.1}" y="13" class="tick">{name}</text>"#,
            x + 14.0
        );
        x += 90.0;
    }
}

/// Stacked ok/fail/info completions per time bin.
fn throughput_svg(
    ops: &[CompletedOp],
    periods: &[FaultPeriod],
    heals: &[u64],
    t_max: f64,
) -> String {
    let bin = ((t_max / RATE_BINS_MAX as f64).ceil()).max(1.0);
    let bins = (t_max / bin).ceil().max(1.0) as usize;
    let mut counts = vec![[0u64; 3]; bins];
    for op in ops {
        let i = ((op.complete as f64 / 1e9 / bin) as usize).min(bins - 1);
        let slot = match op.outcome {
            EventType::Ok => 0,
            EventType::Fail => 1,
            _ => 2,
        };
        counts[i][slot] += 1;
    }
    let peak = counts
        .iter()
        .map(|c| c.iter().sum::<u64>())
        .max()
        .unwrap_or(0) as f64
        / bin;
    let y_step = nice_step(peak.max(1.0) / 5.0);
    let y_max = y_step * (peak / y_step).ceil().max(1.0);
    let frame = Frame {
        width: 1200.0,
        height: 300.0,
        left: 64.0,
        right: 16.0,
        top: 20.0,
        bottom: 36.0,
        t_max,
    };
    let y = |rate: f64| frame.plot_bottom() - (frame.plot_bottom() - frame.top) * (rate / y_max);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" class="plot">"#,
        frame.width, frame.height
    );
    frame.background(&mut svg, periods, heals);
    let step = nice_step(y_max / 5.0);
    let mut r = step;
    while r <= y_max + 1e-9 {
        let _ = write!(
            svg,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#e4e4ea"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
            frame.left,
            frame.width - frame.right,
            y(r),
            y(r),
            frame.left - 4.0,
            y(r) + 4.0,
            trim_number(r)
        );
        r += step;
    }
    let width = (frame.x(bin) - frame.x(0.0)).max(0.5);
    for (i, c) in counts.iter().enumerate() {
        let x = frame.x(i as f64 * bin);
        let mut base = 0.0;
        for (slot, colour) in [OK_COLOUR, FAIL_COLOUR, INFO_COLOUR].iter().enumerate() {
            if c[slot] == 0 {
                continue;
            }
            let rate = c[slot] as f64 / bin;
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{colour}"><title>{:.0}–{:.0} s: {} {}</title></rect>"#,
                y(base + rate),
                (width - 0.3).max(0.3),
                y(base) - y(base + rate),
                i as f64 * bin,
                (i + 1) as f64 * bin,
                c[slot],
                ["ok", "fail", "info"][slot]
            );
            base += rate;
        }
    }
    let _ = write!(
        svg,
        r#"<text transform="translate(14 {:.1}) rotate(-90)" class="axis" text-anchor="middle">completions / s</text>"#,
        (frame.top + frame.plot_bottom()) / 2.0
    );
    legend(
        &mut svg,
        &frame,
        &[
            ("ok", OK_COLOUR),
            ("fail", FAIL_COLOUR),
            ("info", INFO_COLOUR),
        ],
    );
    svg.push_str("</svg>");
    svg
}

/// Each completed operation's latency at its completion time, log-scale y.
fn latency_svg(ops: &[CompletedOp], periods: &[FaultPeriod], heals: &[u64], t_max: f64) -> String {
    let frame = Frame {
        width: 1200.0,
        height: 380.0,
        left: 64.0,
        right: 16.0,
        top: 20.0,
        bottom: 36.0,
        t_max,
    };
    let ms = |op: &CompletedOp| (op.latency_ns() as f64 / 1e6).max(1e-3);
    let (lo, hi) = ops.iter().fold((f64::MAX, f64::MIN), |(lo, hi), op| {
        (lo.min(ms(op)), hi.max(ms(op)))
    });
    let (lo, hi) = if ops.is_empty() {
        (1.0, 1000.0)
    } else {
        (lo, hi)
    };
    let (d_lo, d_hi) = (
        lo.log10().floor(),
        // Headroom above the slowest point so it does not sit under the fault labels.
        (hi * 3.0).log10().ceil().max(lo.log10().floor() + 1.0),
    );
    let y = |v: f64| {
        frame.plot_bottom()
            - (frame.plot_bottom() - frame.top) * ((v.log10() - d_lo) / (d_hi - d_lo))
    };
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" class="plot">"#,
        frame.width, frame.height
    );
    frame.background(&mut svg, periods, heals);
    let mut decade = d_lo;
    while decade <= d_hi + 1e-9 {
        let v = 10f64.powf(decade);
        let label = if v >= 1.0 {
            format!("{}", v.round() as i64)
        } else {
            trim_number(v)
        };
        let _ = write!(
            svg,
            r##"<line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#e4e4ea"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{label}</text>"##,
            frame.left,
            frame.width - frame.right,
            y(v),
            y(v),
            frame.left - 4.0,
            y(v) + 4.0
        );
        decade += 1.0;
    }
    let ok_count = ops.iter().filter(|o| o.outcome == EventType::Ok).count();
    let thin = ok_count.div_ceil(SCATTER_POINTS_MAX.max(1)).max(1);
    // Ok first so that the rarer fail and info points are drawn on top.
    let mut ok_seen = 0usize;
    for pass in [true, false] {
        for op in ops.iter().filter(|o| (o.outcome == EventType::Ok) == pass) {
            if pass {
                ok_seen += 1;
                if !ok_seen.is_multiple_of(thin) {
                    continue;
                }
            }
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="{}" fill="{}" fill-opacity="{}"/>"#,
                frame.x(op.complete as f64 / 1e9),
                y(ms(op)),
                if pass { "1.6" } else { "2.4" },
                outcome_colour(op.outcome),
                if pass { "0.45" } else { "0.8" }
            );
        }
    }
    let _ = write!(
        svg,
        r#"<text transform="translate(14 {:.1}) rotate(-90)" class="axis" text-anchor="middle">latency (ms, log scale)</text>"#,
        (frame.top + frame.plot_bottom()) / 2.0
    );
    legend(
        &mut svg,
        &frame,
        &[
            ("ok", OK_COLOUR),
            ("fail", FAIL_COLOUR),
            ("info", INFO_COLOUR),
        ],
    );
    svg.push_str("</svg>");
    if thin > 1 {
        svg.push_str(&format!(
            r#"<p class="note">{ok_count} ok operations: every {thin}th drawn; all fail and info drawn.</p>"#
        ));
    }
    svg
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{:.2} %", v * 100.0))
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(value_text).collect::<Vec<_>>().join(", "),
        Value::Null => "–".into(),
        other => other.to_string(),
    }
}

/// One line describing a check's details.
fn check_detail(name: &str, check: &Value) -> String {
    match name {
        "linearizable" => {
            let keys: Vec<String> = check["violations"]
                .as_array()
                .map(|v| v.iter().map(|p| value_text(&p["key"])).collect())
                .unwrap_or_default();
            let mut text = format!(
                "model {}, {} operations in {} partitions, checked in {} ms",
                value_text(&check["model"]),
                value_text(&check["operations"]),
                value_text(&check["partitions"]),
                value_text(&check["elapsed_ms"])
            );
            if !keys.is_empty() {
                text.push_str(&format!("; not linearizable: key(s) {}", keys.join(", ")));
            }
            if let Some(reason) = check["unknown_reason"].as_str() {
                text.push_str(&format!("; budget ran out ({reason})"));
            }
            text
        }
        "lost-writes" => {
            let mut text = format!(
                "{} acknowledged writes checked against the final reads of {} of {} written keys: {} lost, {} unexpected values; {} unknown (info) writes may or may not appear",
                value_text(&check["acknowledged_checked"]),
                value_text(&check["keys_read"]),
                value_text(&check["keys_written"]),
                value_text(&check["lost_count"]),
                value_text(&check["unexpected_count"]),
                value_text(&check["unknown_writes"]),
            );
            let unread = check["keys_unread"].as_array().map_or(0, Vec::len);
            if unread > 0 {
                text.push_str(&format!(
                    "; {unread} written keys had no ok final read, so {} acknowledged writes could not be checked",
                    value_text(&check["acknowledged_unchecked"])
                ));
            }
            if check["final_read_phase"] == Value::Bool(false) {
                text.push_str("; the history has no final-read phase");
            }
            text
        }
        "history" => {
            let problems = check["problems"].as_array().map_or(0, Vec::len);
            if problems == 0 {
                "well-formed (every completion pairs with an invoke)".into()
            } else {
                format!("{problems} problem(s): {}", value_text(&check["problems"]))
            }
        }
        _ => String::new(),
    }
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f8;color:#1d1d28}
main{max-width:1240px;margin:0 auto;padding:18px 20px 40px}
h1{font-size:22px;margin:4px 0 12px}h2{font-size:17px;margin:26px 0 8px;border-bottom:1px solid #dde;padding-bottom:4px}
section{background:#fff;border:1px solid #e1e3ea;border-radius:8px;padding:12px 16px;margin:12px 0}
.badge{display:inline-block;padding:3px 12px;border-radius:14px;font-weight:700;color:#fff;letter-spacing:.02em}
.ok{background:#2b9348}.bad{background:#d00000}.unk{background:#8d8d99}
.big{font-size:24px;padding:6px 20px;margin-right:12px}
table{border-collapse:collapse;margin:4px 0}td,th{padding:4px 12px;border-bottom:1px solid #eceef3;text-align:left;vertical-align:top}
th{font-weight:600;color:#555;background:#fafbfc}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.plot{width:100%;height:auto;display:block}.tick{font-size:11px;fill:#555}.axis{font-size:12px;fill:#333}.flabel{font-size:11px;font-weight:600}
.note{color:#666;font-size:12.5px}code{background:#f0f1f5;padding:1px 4px;border-radius:3px}
iframe{width:100%;height:900px;border:1px solid #ccd;border-radius:6px;background:#fff}
.lost{font-family:ui-monospace,monospace;font-size:12.5px;word-break:break-all}
"#;

/// Seconds on the test's clock, from nanoseconds in a JSON number.
fn seconds_text(ns: &Value) -> String {
    ns.as_u64()
        .map_or_else(|| "–".into(), |ns| format!("{:.3} s", ns as f64 / 1e9))
}

/// The "Lost acknowledged writes" section: the counts, every lost write (key, value,
/// process, when) and every unexpected value, up to [`LOST_LISTED_MAX`] rows each.
fn lost_writes_section(lost: &Value) -> String {
    let mut html = String::from("<h2>Lost acknowledged writes</h2><section>");
    html.push_str(r#"<p class="note">After the last fault was healed and the recovery period passed, the generator stopped and fresh processes read every key that was ever written (retrying until a read succeeded); those reads are in the history, so the linearizability checker judged them too. Every acknowledged write must be accounted for by its key's final read: kv: every acknowledged append appears in the final value unless a put that may have come later replaced it, and every acknowledged put is the value's first part or one that part may have replaced; register: the final read is a value that could have been written last. Unknown (info) writes may or may not appear.</p>"#);
    let _ = write!(
        html,
        "<p>{}</p>",
        escape(&check_detail("lost-writes", lost))
    );
    let rows = |name: &str| lost[name].as_array().cloned().unwrap_or_default();
    let lost_rows = rows("lost");
    if !lost_rows.is_empty() {
        html.push_str("<table><tr><th>key</th><th>write</th><th>value</th><th>process</th><th>invoked</th><th>acknowledged</th><th>final read</th></tr>");
        for row in lost_rows.iter().take(LOST_LISTED_MAX) {
            let _ = write!(
                html,
                r#"<tr><td>{}</td><td>{}</td><td class="lost">{}</td><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td><td class="lost">{}</td></tr>"#,
                escape(&value_text(&row["key"])),
                escape(&value_text(&row["f"])),
                escape(&value_text(&row["value"])),
                escape(&value_text(&row["process"])),
                seconds_text(&row["invoke_time"]),
                seconds_text(&row["complete_time"]),
                escape(&value_text(&row["final_read"]))
            );
        }
        html.push_str("</table>");
    }
    let unexpected_rows = rows("unexpected");
    if !unexpected_rows.is_empty() {
        html.push_str("<p><b>Unexpected values in final reads</b></p><table><tr><th>key</th><th>value</th><th>why</th><th>final read</th></tr>");
        for row in unexpected_rows.iter().take(LOST_LISTED_MAX) {
            let _ = write!(
                html,
                r#"<tr><td>{}</td><td class="lost">{}</td><td>{}</td><td class="lost">{}</td></tr>"#,
                escape(&value_text(&row["key"])),
                escape(&value_text(&row["value"])),
                escape(&value_text(&row["reason"])),
                escape(&value_text(&row["final_read"]))
            );
        }
        html.push_str("</table>");
    }
    let listed = lost_rows.len().min(LOST_LISTED_MAX) + unexpected_rows.len().min(LOST_LISTED_MAX);
    let total =
        lost["lost_count"].as_u64().unwrap_or(0) + lost["unexpected_count"].as_u64().unwrap_or(0);
    if total as usize > listed {
        let _ = write!(
            html,
            r#"<p class="note">{} more in results.json.</p>"#,
            total as usize - listed
        );
    }
    html.push_str("</section>");
    html
}

/// Renders the page.
pub fn render(input: &ReportInput) -> String {
    let ops = completed_ops(input.events);
    let history_end = input.events.iter().map(|e| e.time).max().unwrap_or(0);
    let nemesis_end = input
        .nemesis
        .iter()
        .map(|e| e.end_time.max(e.time))
        .max()
        .unwrap_or(0);
    let (periods, heals) = fault_periods(input.nemesis, history_end.max(nemesis_end));
    let t_max = (history_end.max(nemesis_end) as f64 / 1e9).max(1.0);
    let info = input.run_info;
    let title = format!(
        "{} — {}",
        info["test"].as_str().unwrap_or("run"),
        match input.validity {
            Validity::Valid => "valid",
            Validity::Invalid => "INVALID",
            Validity::Unknown => "unknown",
        }
    );
    let mut html = String::with_capacity(256 * 1024);
    let _ = write!(
        html,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head><body><main>",
        escape(&title)
    );
    // Verdict.
    let (word, class) = verdict_badge(&input.validity.to_json());
    let _ = write!(
        html,
        r#"<h1>{}</h1><section><span class="badge big {class}">{word}</span>"#,
        escape(info["test"].as_str().unwrap_or("test run"))
    );
    let errors: Vec<String> = info["errors"]
        .as_array()
        .map(|e| e.iter().map(value_text).collect())
        .unwrap_or_default();
    if info["interrupted"] == Value::Bool(true) {
        html.push_str(r#"<span class="badge unk">interrupted</span> "#);
    }
    html.push_str("<table><tr><th>check</th><th>verdict</th><th>details</th></tr>");
    if let Some(checks) = input.checks.as_object() {
        for (name, check) in checks {
            let (word, class) = verdict_badge(&check["valid"]);
            let _ = write!(
                html,
                r#"<tr><td><b>{}</b></td><td><span class="badge {class}">{word}</span></td><td>{}</td></tr>"#,
                escape(name),
                escape(&check_detail(name, check))
            );
        }
    }
    html.push_str("</table>");
    if !errors.is_empty() {
        html.push_str(r#"<p><b>Run errors</b> (a run that could not do its job is no evidence: the test's verdict is at best unknown):</p><ul>"#);
        for e in &errors {
            let _ = write!(html, "<li>{}</li>", escape(e));
        }
        html.push_str("</ul>");
    }
    html.push_str("</section>");
    // Setup.
    html.push_str("<h2>Test setup</h2><section><table>");
    if let Some(map) = info.as_object() {
        for (k, v) in map.iter().filter(|(k, _)| k.as_str() != "errors") {
            let _ = write!(
                html,
                "<tr><th>{}</th><td>{}</td></tr>",
                escape(k),
                escape(&value_text(v))
            );
        }
    }
    let counts = |outcome: EventType| ops.iter().filter(|o| o.outcome == outcome).count();
    let _ = write!(
        html,
        "<tr><th>operations</th><td>{} completed: {} ok, {} fail, {} info; history spans {:.1} s</td></tr>",
        ops.len(),
        counts(EventType::Ok),
        counts(EventType::Fail),
        counts(EventType::Info),
        history_end as f64 / 1e9
    );
    let _ = write!(
        html,
        "<tr><th>faults</th><td>{}</td></tr></table></section>",
        if periods.is_empty() {
            "none".to_string()
        } else {
            escape(
                &periods
                    .iter()
                    .map(|p| {
                        format!(
                            "{} ({:.1}–{:.1} s)",
                            p.label,
                            p.start as f64 / 1e9,
                            p.end as f64 / 1e9
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        }
    );
    // Plots.
    html.push_str(r#"<h2>Throughput</h2><section><p class="note">Completions per second by outcome, stacked; shaded bands are fault periods (hover for details), the dashed line is the final heal.</p>"#);
    html.push_str(&throughput_svg(&ops, &periods, &heals, t_max));
    html.push_str(r#"</section><h2>Latency</h2><section><p class="note">Each completed operation at its completion time.</p>"#);
    html.push_str(&latency_svg(&ops, &periods, &heals, t_max));
    html.push_str("</section>");
    // Percentiles.
    html.push_str(r#"<h2>Latency percentiles (HDR histograms, ms)</h2><section><table><tr><th>operations</th><th class="num">count</th><th class="num">p50</th><th class="num">p90</th><th class="num">p99</th><th class="num">p99.9</th><th class="num">max</th></tr>"#);
    for row in latency_rows(&ops) {
        let _ = write!(
            html,
            r#"<tr><td>{}</td><td class="num">{}</td>"#,
            escape(&row.label),
            row.count
        );
        for v in row.ms {
            let _ = write!(html, r#"<td class="num">{v:.2}</td>"#);
        }
        html.push_str("</tr>");
    }
    html.push_str("</table></section>");
    // Availability.
    let a = availability(&ops, &periods);
    let _ = write!(
        html,
        r#"<h2>Availability</h2><section><p class="note">Fraction of completed operations that were ok; "during faults" counts operations completing inside a shaded period.</p><table><tr><th>overall</th><th>during faults</th><th>healed</th></tr><tr><td class="num">{}</td><td class="num">{}</td><td class="num">{}</td></tr></table></section>"#,
        percent(a.overall),
        percent(a.faulty),
        percent(a.healed)
    );
    // Lost writes.
    let lost = &input.checks["lost-writes"];
    if lost.is_object() {
        html.push_str(&lost_writes_section(lost));
    }
    // The checker's visualisation.
    html.push_str("<h2>Linearizability checker</h2><section>");
    let lin = &input.checks["linearizable"];
    match (input.checker_html, &lin["valid"]) {
        (Some(checker), valid) if *valid != Value::Bool(true) => {
            html.push_str(r#"<p class="note">The checker's visualisation of the keys it could not linearize (also in <a href="checker.html">checker.html</a>).</p>"#);
            let _ = write!(
                html,
                r#"<iframe sandbox="allow-scripts" srcdoc="{}"></iframe>"#,
                escape(checker)
            );
        }
        _ => html.push_str(r#"<p>Every key's history is linearizable. The checker's page: <a href="checker.html">checker.html</a>.</p>"#),
    }
    html.push_str("</section></main></body></html>\n");
    html
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::{Fault, NemesisKind};
    use serde_json::json;

    fn event(process: u64, kind: EventType, f: &str, time: u64) -> Event {
        let mut e = Event::new(process, kind, f, Some("k"), Value::Null);
        e.time = time;
        e
    }

    fn nemesis(time: u64, phase: &str, kind: Option<NemesisKind>) -> NemesisEvent {
        NemesisEvent {
            time,
            end_time: time + 10,
            phase: phase.into(),
            kind,
            nodes: vec!["n1".into()],
            fault: kind.map(|_| Fault::Kill {
                nodes: vec!["n1".into()],
            }),
            error: None,
        }
    }

    #[test]
    fn fault_periods_pair_start_and_stop_and_close_at_the_heal() {
        let events = [
            nemesis(100, "start", Some(NemesisKind::Kill)),
            nemesis(200, "stop", Some(NemesisKind::Kill)),
            nemesis(300, "start", Some(NemesisKind::Pause)),
            nemesis(400, "heal-all", None),
        ];
        let (periods, heals) = fault_periods(&events, 1000);
        assert_eq!(periods.len(), 2);
        assert_eq!((periods[0].start, periods[0].end), (100, 210));
        assert_eq!(periods[0].label, "kill n1");
        assert_eq!((periods[1].start, periods[1].end), (300, 410));
        assert_eq!(heals, vec![410]);
    }

    #[test]
    fn availability_splits_faulty_and_healed() {
        let ops = completed_ops(&[
            event(0, EventType::Invoke, "get", 0),
            event(0, EventType::Ok, "get", 50),
            event(1, EventType::Invoke, "get", 60),
            event(1, EventType::Info, "get", 150),
            event(2, EventType::Invoke, "get", 160),
            event(2, EventType::Ok, "get", 170),
        ]);
        let periods = [FaultPeriod {
            start: 100,
            end: 200,
            label: "x".into(),
            kind: "kill".into(),
        }];
        let a = availability(&ops, &periods);
        assert_eq!(a.healed, Some(1.0));
        assert_eq!(a.faulty, Some(0.5));
        assert!((a.overall.unwrap() - 2.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn latency_rows_cover_each_f_and_overall() {
        let ops = completed_ops(&[
            event(0, EventType::Invoke, "get", 0),
            event(0, EventType::Ok, "get", 2_000_000),
            event(1, EventType::Invoke, "put", 0),
            event(1, EventType::Ok, "put", 8_000_000),
            event(2, EventType::Invoke, "put", 0),
            event(2, EventType::Fail, "put", 90_000_000),
        ]);
        let rows = latency_rows(&ops);
        let labels: Vec<&str> = rows.iter().map(|r| r.label.as_str()).collect();
        assert_eq!(
            labels,
            [
                "get (ok)",
                "put (ok)",
                "all ok",
                "all completions (ok, fail, info)"
            ]
        );
        assert!((rows[0].ms[0] - 2.0).abs() < 0.01, "{:?}", rows[0]);
        assert!((rows[3].ms[4] - 90.0).abs() < 0.1, "{:?}", rows[3]);
        assert_eq!(rows[3].count, 3);
    }

    #[test]
    fn the_page_shows_verdict_plots_and_the_violation() {
        let events = [
            event(0, EventType::Invoke, "put", 0),
            event(0, EventType::Ok, "put", 2_000_000_000),
        ];
        let checks = json!({"linearizable": {"valid": false, "violations": [{"key": "k"}]}});
        let page = render(&ReportInput {
            run_info: &json!({"test": "t<1>"}),
            validity: Validity::Invalid,
            checks: &checks,
            events: &events,
            nemesis: &[nemesis(100, "start", Some(NemesisKind::Kill))],
            checker_html: Some("<p class=\"x\">violation</p>"),
        });
        assert!(page.contains("INVALID"));
        assert!(page.contains("t&lt;1&gt;"));
        assert!(page.contains("kill n1"));
        assert!(page.contains("&lt;p class=&quot;x&quot;&gt;violation"));
        assert_eq!(page.matches("<svg").count(), 2);
        // Self-contained: nothing fetched from the network.
        assert!(!page.contains("src=\"http") && !page.contains("href=\"http"));
    }

    #[test]
    fn the_lost_writes_section_lists_each_lost_write_and_unexpected_value() {
        let checks = json!({"lost-writes": {
            "valid": false, "final_read_phase": true, "keys_written": 3, "keys_read": 3,
            "keys_unread": [], "acknowledged_checked": 40, "acknowledged_unchecked": 0,
            "unknown_writes": 2, "lost_count": 1, "unexpected_count": 1,
            "lost": [{"key": "k7", "f": "append", "value": "x3-12", "process": 3,
                      "invoke_time": 1_500_000_000u64, "complete_time": 1_750_000_000u64,
                      "final_read": "x1-1"}],
            "unexpected": [{"key": "k8", "value": "x9-9", "final_read": "x9-9",
                            "reason": "never <written>"}],
        }});
        let page = render(&ReportInput {
            run_info: &json!({"test": "t"}),
            validity: Validity::Invalid,
            checks: &checks,
            events: &[],
            nemesis: &[],
            checker_html: None,
        });
        let section = &page[page.find("Lost acknowledged writes").unwrap()..];
        assert!(
            section.contains("40 acknowledged writes checked"),
            "{section}"
        );
        assert!(section.contains("3 of 3 written keys"), "{section}");
        for text in [
            "k7",
            "x3-12",
            "1.500 s",
            "1.750 s",
            "k8",
            "never &lt;written&gt;",
        ] {
            assert!(section.contains(text), "{text} missing from {section}");
        }
    }
}
