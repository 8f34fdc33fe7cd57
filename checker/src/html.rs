//! Self-contained HTML report of a check (pure apart from [`write_report`]).
//!
//! One file, no network: inline CSS, a small inline script, and the data as
//! JSON. Each partition (key) is a timeline with a lane per process and each
//! operation a bar from its invocation to its return (an `info` operation is
//! open-ended, in its own colour). The linearization the search reached is
//! drawn as order numbers on the bars and a line through increasing
//! linearization points; the operations that could not be linearized are red.
//! Hovering a bar shows the operation.
//!
//! Big histories are where visualisations fail (porcupine's can reach
//! gigabytes), so the report is bounded: only failing keys are expanded, the
//! others are listed and drawn on demand, a failing key is cut to a window
//! of operations around the failure, and the data stops at
//! [`ReportOptions::max_bytes`] with a note saying what was left out.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::check::{CheckResult, PartitionResult, Verdict};
use crate::history::{History, Status};
use crate::model::describe_operation;

/// Default cap on the report's size.
pub const DEFAULT_MAX_BYTES: usize = 5 << 20;
/// Default number of operations shown on each side of a failure.
pub const DEFAULT_WINDOW_OPERATIONS: usize = 300;

/// How to render.
#[derive(Clone, Debug)]
pub struct ReportOptions {
    /// Upper bound on the HTML's size in bytes.
    pub max_bytes: usize,
    /// Operations kept before and after the first unlinearizable operation
    /// of a failing key.
    pub window_operations: usize,
    /// An explanation to show on top; `None` shows the graph pre-pass's
    /// proofs from the result, if any.
    pub explanation: Option<String>,
}

impl Default for ReportOptions {
    fn default() -> ReportOptions {
        ReportOptions {
            max_bytes: DEFAULT_MAX_BYTES,
            window_operations: DEFAULT_WINDOW_OPERATIONS,
            explanation: None,
        }
    }
}

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write report {path}: {source}")]
pub struct HtmlError {
    /// The report's path.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// Renders the report with default options (the model's name is `result.model`).
pub fn render(history: &History, result: &CheckResult) -> String {
    render_with(history, result, &ReportOptions::default())
}

/// Writes the report (default options) to `path`.
pub fn write_report(path: &Path, history: &History, result: &CheckResult) -> Result<(), HtmlError> {
    write_report_with(path, history, result, &ReportOptions::default())
}

/// Writes the report to `path`.
pub fn write_report_with(
    path: &Path,
    history: &History,
    result: &CheckResult,
    options: &ReportOptions,
) -> Result<(), HtmlError> {
    std::fs::write(path, render_with(history, result, options)).map_err(|source| HtmlError {
        path: path.to_path_buf(),
        source,
    })
}

/// Text safe inside HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn verdict_word(v: Verdict) -> &'static str {
    match v {
        Verdict::Linearizable => "linearizable",
        Verdict::NotLinearizable => "NOT linearizable",
        Verdict::Unknown => "unknown",
    }
}

/// Most lanes drawn one per process; beyond, operations are packed into lanes.
const PROCESS_LANES_MAX: usize = 40;

/// Longest description of one operation kept in the report.
const DESCRIPTION_CHARS_MAX: usize = 300;

/// The JSON of one partition's timeline, and the note on what was cut.
fn partition_data(
    history: &History,
    partition: &PartitionResult,
    ids: &[usize],
    window: Option<usize>,
) -> serde_json::Value {
    let ops = &history.operations;
    let bad: BTreeSet<usize> = partition.unlinearizable.iter().copied().collect();
    let order: HashMap<usize, usize> = partition
        .longest_prefix
        .iter()
        .enumerate()
        .map(|(i, &id)| (id, i + 1))
        .collect();
    // Cut a failing key to a window around its first unlinearizable op.
    let mut shown: Vec<usize> = ids.to_vec();
    let mut note = String::new();
    if let Some(w) = window {
        if shown.len() > 2 * w + 1 {
            let centre_id = bad
                .iter()
                .next()
                .copied()
                .or_else(|| partition.longest_prefix.last().copied());
            let centre = centre_id
                .and_then(|c| shown.iter().position(|&id| id == c))
                .unwrap_or(shown.len() / 2);
            let start = centre.saturating_sub(w);
            let end = (centre + w + 1).min(shown.len());
            note = format!(
                "showing operations {}..{} of {} around the failure; {} earlier and {} later left out",
                start + 1,
                end,
                shown.len(),
                start,
                shown.len() - end
            );
            shown = shown[start..end].to_vec();
            // Keep every unlinearizable op even if outside the window.
            for &b in &bad {
                if !shown.contains(&b) && ids.contains(&b) {
                    shown.push(b);
                }
            }
            shown.sort_unstable();
        }
    }
    // Dense x positions over the shown ops' event positions.
    let mut positions: Vec<usize> = Vec::with_capacity(shown.len() * 2);
    for &id in &shown {
        positions.push(ops[id].invoke_index);
        if let Some(r) = ops[id].return_index {
            positions.push(r);
        }
    }
    positions.sort_unstable();
    positions.dedup();
    let x_of = |p: usize| positions.binary_search(&p).unwrap_or_else(|i| i);
    let mut processes: Vec<i64> = shown.iter().map(|&id| ops[id].process).collect();
    processes.sort_unstable();
    processes.dedup();
    // A lane per process, unless there are too many (many keys, or processes
    // renamed after info operations): then pack operations into the fewest
    // lanes that keep each lane's operations apart (the hover names the process).
    let (lane_names, lane_by_op): (Vec<String>, HashMap<usize, usize>) =
        if processes.len() <= PROCESS_LANES_MAX {
            let names = processes.iter().map(|p| format!("process {p}")).collect();
            let lanes = shown
                .iter()
                .map(|&id| (id, processes.binary_search(&ops[id].process).unwrap_or(0)))
                .collect();
            (names, lanes)
        } else {
            let mut lane_end: Vec<usize> = Vec::new();
            let mut lanes = HashMap::new();
            for &id in &shown {
                let start = x_of(ops[id].invoke_index);
                let end = ops[id].return_index.map_or(usize::MAX, x_of);
                let lane = match lane_end.iter().position(|&e| e < start) {
                    Some(l) => l,
                    None => {
                        lane_end.push(0);
                        lane_end.len() - 1
                    }
                };
                lane_end[lane] = end;
                lanes.insert(id, lane);
            }
            let names = (0..lane_end.len()).map(|l| format!("lane {l}")).collect();
            (names, lanes)
        };
    let rows: Vec<serde_json::Value> = shown
        .iter()
        .map(|&id| {
            let op = &ops[id];
            let status = match op.status {
                Status::Ok => "o",
                Status::Info => "i",
                Status::Fail => "f",
            };
            let mut text = format!("op {id}: {}", describe_operation(op));
            if op.line > 0 {
                let _ = write!(text, " (line {})", op.line);
            }
            if let (Some(a), Some(b)) = (op.invoke_time, op.return_time) {
                let _ = write!(text, " [{:.3} ms]", (b - a) as f64 / 1e6);
            }
            if text.chars().count() > DESCRIPTION_CHARS_MAX {
                text = text.chars().take(DESCRIPTION_CHARS_MAX).collect::<String>() + "…";
            }
            serde_json::json!([
                id,
                lane_by_op.get(&id).copied().unwrap_or(0),
                x_of(op.invoke_index),
                op.return_index.map_or(-1, |r| x_of(r) as i64),
                status,
                order.get(&id).copied().unwrap_or(0),
                u8::from(bad.contains(&id)),
                text
            ])
        })
        .collect();
    serde_json::json!({
        "lanes": lane_names,
        "width": positions.len(),
        "rows": rows,
        "note": note,
    })
}

/// Renders the report; see the module doc.
pub fn render_with(history: &History, result: &CheckResult, options: &ReportOptions) -> String {
    let model = result.model.as_str();
    let mut by_key: HashMap<Option<&str>, Vec<usize>> = HashMap::new();
    for op in &history.operations {
        by_key.entry(op.key.as_deref()).or_default().push(op.id);
    }
    // Failing keys first, then unknown, then the rest; each in key order.
    let mut partitions: Vec<&PartitionResult> = result.partition_results.iter().collect();
    partitions.sort_by_key(|p| {
        let rank = match p.verdict {
            Verdict::NotLinearizable => 0,
            Verdict::Unknown => 1,
            Verdict::Linearizable => 2,
        };
        (rank, p.key.clone())
    });
    // Reserve room for the page itself; the rest is the data budget.
    let budget = options.max_bytes.saturating_sub(PAGE_BYTES_RESERVED);
    // First the summary rows (at most a quarter of the budget), so every
    // key is at least listed; then timelines, failing keys first.
    let mut used = 0usize;
    let mut entries: Vec<(serde_json::Value, &PartitionResult, &[usize])> = Vec::new();
    for p in &partitions {
        let ids: &[usize] = by_key.get(&p.key.as_deref()).map_or(&[], |v| v.as_slice());
        let entry = serde_json::json!({
            "key": p.key.clone().unwrap_or_else(|| "(single object)".to_string()),
            "verdict": verdict_word(p.verdict),
            "failing": p.verdict == Verdict::NotLinearizable,
            "operations": ids.len(),
            "elapsed_ms": p.elapsed.as_secs_f64() * 1e3,
            "state": p.state_after_prefix.clone().unwrap_or_default(),
            "prefix": p.longest_prefix.len(),
            "data": serde_json::Value::Null,
        });
        let size = entry.to_string().len();
        if used + size > budget / 4 {
            break;
        }
        used += size;
        entries.push((entry, p, ids));
    }
    let window = options.window_operations;
    let mut left_out = 0usize;
    for (entry, p, ids) in &mut entries {
        // Skip the work when even a lean estimate would not fit.
        let estimate = ids.len().min(2 * window + 1) * OPERATION_BYTES_MIN;
        if used + estimate > budget {
            left_out += 1;
            continue;
        }
        let data = partition_data(history, p, ids, Some(window));
        let size = data.to_string().len();
        if used + size <= budget {
            used += size;
            entry["data"] = data;
        } else {
            left_out += 1;
        }
    }
    let entries: Vec<serde_json::Value> = entries.into_iter().map(|(e, _, _)| e).collect();
    let omitted_rows = partitions.len() - entries.len();
    let summary = serde_json::json!({
        "model": model,
        "verdict": verdict_word(result.verdict),
        "operations": result.operations,
        "partitions": result.partitions,
        "elapsed_ms": result.elapsed.as_secs_f64() * 1e3,
        "left_out": left_out,
        "omitted_rows": omitted_rows,
        "max_bytes": options.max_bytes,
        // Given one, else the graph pre-pass's proofs of the failing keys.
        "explanation": options.explanation.clone().unwrap_or_else(|| {
            result
                .violations()
                .filter_map(|p| p.proof.as_ref())
                .take(10)
                .map(|v| v.explanation.as_str())
                .collect::<Vec<_>>()
                .join("\n\n")
        }),
        "partitions_list": entries,
    });
    let json = summary.to_string().replace("</", "<\\/");
    let mut html = String::with_capacity(json.len() + PAGE_BYTES_RESERVED);
    let title = format!("checker: {} — {}", model, verdict_word(result.verdict));
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{CSS}</style></head>\n<body>\n<noscript>This report draws its timelines with JavaScript; the data is in the page source.</noscript>\n<div id=\"app\"></div>\n<script type=\"application/json\" id=\"data\">{json}</script>\n<script>{SCRIPT}</script>\n</body></html>\n",
        escape(&title)
    );
    html
}

/// Fewest bytes one operation takes in the data (ids, positions, a short description).
const OPERATION_BYTES_MIN: usize = 60;

/// Bytes the page around the data takes (CSS, script, headers), with room.
const PAGE_BYTES_RESERVED: usize = 16 * 1024;

const CSS: &str = r#"
body{font:14px/1.4 system-ui,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 8px} h2{font-size:16px;margin:0}
.bad{color:#b00020} .good{color:#1b7f3b} .unk{color:#a06000}
pre.expl{background:#fff3f3;border:1px solid #e0b0b0;padding:8px;white-space:pre-wrap}
details{background:#fff;border:1px solid #ddd;border-radius:4px;margin:8px 0;padding:6px 10px}
summary{cursor:pointer}
.note{color:#666;font-style:italic;margin:4px 0}
.legend span{display:inline-block;margin-right:14px}
.sw{display:inline-block;width:14px;height:10px;margin-right:4px;vertical-align:middle}
.scroll{overflow-x:auto;max-width:100%}
svg text{font:10px monospace}
"#;

const SCRIPT: &str = r#"
(function(){
const D=JSON.parse(document.getElementById('data').textContent);
const app=document.getElementById('app');
const el=(t,a,c)=>{const e=document.createElement(t);for(const k in (a||{}))e.setAttribute(k,a[k]);if(c!==undefined)e.textContent=c;return e;};
const NS='http://www.w3.org/2000/svg';
const sv=(t,a)=>{const e=document.createElementNS(NS,t);for(const k in a)e.setAttribute(k,a[k]);return e;};
const cls=v=>v.startsWith('NOT')?'bad':(v==='linearizable'?'good':'unk');
const h=el('h1');h.append('Model ',el('code',{},D.model),' — ');h.append(el('span',{class:cls(D.verdict)},D.verdict));app.append(h);
app.append(el('div',{},D.operations+' operations, '+D.partitions+' partitions, checked in '+D.elapsed_ms.toFixed(1)+' ms'));
if(D.explanation){app.append(el('pre',{class:'expl'},D.explanation));}
const lg=el('div',{class:'legend'});
[['#4a7fb5','ok'],['#e69500','info (unknown outcome, open-ended)'],['#9e9e9e','fail'],['#d32f2f','cannot be linearized'],['#2e7d32','linearization (order, points)']].forEach(([c,t])=>{const s=el('span');const w=el('span',{class:'sw'});w.style.background=c;s.append(w,t);lg.append(s);});
app.append(lg);
if(D.left_out>0||D.omitted_rows>0)app.append(el('div',{class:'note'},'Size cap '+(D.max_bytes/1048576).toFixed(1)+' MB: '+D.left_out+' keys listed without their timeline, '+D.omitted_rows+' keys not listed.'));
function draw(p,box){
  const d=p.data;if(!d){box.append(el('div',{class:'note'},'timeline left out (size cap)'));return;}
  if(d.note)box.append(el('div',{class:'note'},d.note));
  const lane=22,left=90,step=Math.max(6,Math.min(28,1400/Math.max(1,d.width))),W=left+step*(d.width+2),H=20+lane*d.lanes.length+10;
  const s=sv('svg',{width:W,height:H});
  d.lanes.forEach((pr,i)=>{const t=sv('text',{x:4,y:20+i*lane+14});t.textContent=pr;s.append(t);
    s.append(sv('line',{x1:left,x2:W,y1:20+i*lane+lane-2,y2:20+i*lane+lane-2,stroke:'#eee'}));});
  const pts=[];
  d.rows.forEach(r=>{const [id,ln,x0,x1,st,ord,bad,text]=r;
    const X0=left+step*x0,X1=x1<0?W-4:left+step*x1,Y=20+ln*lane+3;
    const col=bad?'#d32f2f':st==='i'?'#e69500':st==='f'?'#9e9e9e':'#4a7fb5';
    const g=sv('g',{});const rc=sv('rect',{x:X0,y:Y,width:Math.max(3,X1-X0),height:lane-8,rx:3,fill:col,'fill-opacity':bad?0.9:0.55,stroke:bad?'#7f0000':col,'stroke-width':bad?2:1});
    if(st==='i')rc.setAttribute('stroke-dasharray','4 2');
    const ti=sv('title',{});ti.textContent=text+(ord?'\nlinearized #'+ord:'')+(bad?'\nCANNOT BE LINEARIZED':'');g.append(rc,ti);
    if(ord){const t=sv('text',{x:X0+2,y:Y+10,fill:'#000'});t.textContent='#'+ord;g.append(t);pts.push([ord,X0,X1,Y+(lane-8)/2]);}
    s.append(g);});
  pts.sort((a,b)=>a[0]-b[0]);let last=-1e9;const line=[];
  pts.forEach(([o,a,b,y])=>{let x=Math.max(a+1,last+0.5);if(x>b)x=b;last=x;line.push(x.toFixed(1)+','+y);});
  if(line.length>1)s.append(sv('polyline',{points:line.join(' '),fill:'none',stroke:'#2e7d32','stroke-width':1.5,'stroke-opacity':0.8}));
  pts.forEach(([o,a,b,y],i)=>{const [x]=line[i].split(',');s.append(sv('circle',{cx:x,cy:y,r:2.5,fill:'#2e7d32'}));});
  const sc=el('div',{class:'scroll'});sc.append(s);box.append(sc);
}
D.partitions_list.forEach(p=>{
  const det=el('details');const sm=el('summary');
  sm.append(el('b',{},'key '+p.key),' — ',el('span',{class:cls(p.verdict)},p.verdict),' · '+p.operations+' ops · linearized prefix '+p.prefix+(p.state?' · state after prefix: '+p.state:'')+' · '+p.elapsed_ms.toFixed(2)+' ms');
  det.append(sm);let drawn=false;
  const go=()=>{if(!drawn){drawn=true;draw(p,det);}};
  det.addEventListener('toggle',()=>{if(det.open)go();});
  if(p.failing){det.open=true;go();}
  app.append(det);
});
})();
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{generate, Anomaly, GenerateConfig, GeneratedModel};
    use crate::{check_history, Options};

    fn checked(operations: usize, keys: usize, seed: u64) -> (History, CheckResult) {
        let config = GenerateConfig {
            anomaly: Some(Anomaly::StaleRead),
            ..GenerateConfig::new(GeneratedModel::Register, 8, keys, operations, seed)
        };
        println!("SEED={seed}");
        let g = generate(&config);
        let result = check_history(&g.history, &config.model.model_kind(), &Options::default())
            .expect("generated histories are well-formed");
        (g.history, result)
    }

    /// The page data as the script will read it.
    fn data(html: &str) -> serde_json::Value {
        let start = html.find("id=\"data\">").expect("data block") + "id=\"data\">".len();
        let end = start + html[start..].find("</script>").expect("end of data");
        serde_json::from_str(&html[start..end]).expect("data is JSON")
    }

    #[test]
    fn failing_key_comes_first_expanded_with_its_culprit() {
        let (history, result) = checked(600, 5, 11);
        assert_eq!(result.verdict, Verdict::NotLinearizable);
        let html = render(&history, &result);
        assert!(html.starts_with("<!DOCTYPE html>"));
        assert!(
            !html.contains("<script src") && !html.contains("<link"),
            "no external resources"
        );
        let d = data(&html);
        let first = &d["partitions_list"][0];
        assert_eq!(first["failing"], true);
        assert_eq!(d["partitions_list"].as_array().map(Vec::len), Some(5));
        let rows = first["data"]["rows"]
            .as_array()
            .expect("failing key has a timeline");
        let flagged: Vec<u64> = rows
            .iter()
            .filter(|r| r[6] == 1)
            .filter_map(|r| r[0].as_u64())
            .collect();
        let blamed = &result
            .violations()
            .next()
            .expect("a violation")
            .unlinearizable;
        assert!(!flagged.is_empty());
        assert!(
            flagged.iter().all(|id| blamed.contains(&(*id as usize))),
            "{flagged:?} vs {blamed:?}"
        );
        // Linearized operations carry their order numbers 1..=prefix.
        let prefix = first["prefix"].as_u64().expect("prefix");
        let max_order = rows.iter().filter_map(|r| r[5].as_u64()).max().unwrap_or(0);
        assert_eq!(max_order, prefix);
    }

    #[test]
    fn stays_under_the_size_cap_and_says_what_it_left_out() {
        let (history, result) = checked(20_000, 50, 12);
        let options = ReportOptions {
            max_bytes: 96 * 1024,
            window_operations: 100,
            explanation: Some("</script><b>not markup</b>".into()),
        };
        let html = render_with(&history, &result, &options);
        assert!(html.len() <= options.max_bytes, "{} bytes", html.len());
        assert!(
            !html.contains("</script><b>"),
            "the explanation must not close the script"
        );
        let d = data(&html);
        assert!(d["left_out"].as_u64().unwrap_or(0) > 0);
        assert_eq!(d["explanation"], "</script><b>not markup</b>");
        let first = &d["partitions_list"][0];
        assert_eq!(first["failing"], true);
        assert!(
            !first["data"].is_null(),
            "the failing key keeps its timeline"
        );
        let shown = first["data"]["rows"].as_array().map_or(0, Vec::len);
        assert!(shown <= 2 * 100 + 1 + 3, "{shown} rows");
        assert!(first["data"]["note"]
            .as_str()
            .unwrap_or("")
            .contains("left out"));
    }
}
