//! Inline SVG charts for the comparison report, in the manner of the test report
//! ([`crate::report`]): hand-written SVG strings, no scripts, no network, crisp at any zoom.
//! Two shapes cover every figure: grouped bars (one group per workload x clients, one bar per
//! series) and lines over a shared x axis. Both take a linear or log10 y axis.

use std::fmt::Write as _;

use crate::report::escape;

/// Series colours, in order (ours first, etcd second, then spares).
pub const PALETTE: [&str; 6] = [
    "#1d4ed8", "#d97706", "#059669", "#9333ea", "#dc2626", "#0891b2",
];

/// A y axis: the data range mapped onto pixels, with tick values.
#[derive(Debug, Clone)]
struct Axis {
    log: bool,
    low: f64,
    high: f64,
    ticks: Vec<f64>,
}

/// A step of 1, 2 or 5 x 10^k that splits `span` into about `parts` pieces.
fn round_step(span: f64, parts: f64) -> f64 {
    let raw = span / parts.max(1.0);
    if !(raw.is_finite() && raw > 0.0) {
        return 1.0;
    }
    let magnitude = 10f64.powi(raw.log10().floor() as i32);
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, log: bool) -> Axis {
        let positive: Vec<f64> = values.filter(|v| v.is_finite() && *v > 0.0).collect();
        let max = positive.iter().copied().fold(0.0, f64::max);
        if log {
            let min = positive.iter().copied().fold(f64::MAX, f64::min);
            let (min, max) = if positive.is_empty() {
                (1.0, 10.0)
            } else {
                (min, max)
            };
            let low = min.log10().floor();
            let high = max.log10().ceil().max(low + 1.0);
            let ticks = (low as i32..=high as i32).map(|e| 10f64.powi(e)).collect();
            Axis {
                log,
                low: 10f64.powf(low),
                high: 10f64.powf(high),
                ticks,
            }
        } else {
            let step = round_step(max.max(1e-9), 5.0);
            let high = (max / step).ceil().max(1.0) * step;
            let count = (high / step).round() as usize;
            Axis {
                log,
                low: 0.0,
                high,
                ticks: (0..=count).map(|i| i as f64 * step).collect(),
            }
        }
    }

    /// 0 at the bottom of the plot, 1 at the top.
    fn fraction(&self, v: f64) -> f64 {
        if self.log {
            let v = v.max(self.low);
            ((v.log10() - self.low.log10()) / (self.high.log10() - self.low.log10()))
                .clamp(0.0, 1.0)
        } else {
            (v / self.high).clamp(0.0, 1.0)
        }
    }
}

/// A number as an axis or bar label: no trailing zeros, thousands as `k`.
pub fn label(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 || (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        let text = format!("{v:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Plot area geometry.
struct Area {
    width: f64,
    height: f64,
    left: f64,
    right: f64,
    top: f64,
    bottom: f64,
}

impl Area {
    fn standard(height: f64) -> Area {
        Area {
            width: 1200.0,
            height,
            left: 70.0,
            right: 16.0,
            top: 28.0,
            bottom: 52.0,
        }
    }
    fn plot_width(&self) -> f64 {
        self.width - self.left - self.right
    }
    fn plot_bottom(&self) -> f64 {
        self.height - self.bottom
    }
    fn y(&self, axis: &Axis, v: f64) -> f64 {
        self.plot_bottom() - (self.plot_bottom() - self.top) * axis.fraction(v)
    }

    /// Opens the SVG and draws the frame, horizontal grid, y labels and axis titles.
    fn open(&self, axis: &Axis, y_title: &str, x_title: &str) -> String {
        let mut svg = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" class="plot">"#,
            self.width, self.height
        );
        let _ = write!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#fcfcfd" stroke="#ccd"/>"##,
            self.left,
            self.top,
            self.plot_width(),
            self.plot_bottom() - self.top
        );
        for &t in &axis.ticks {
            let y = self.y(axis, t);
            let _ = write!(
                svg,
                r##"<line x1="{:.1}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e4e4ea"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
                self.left,
                self.width - self.right,
                self.left - 5.0,
                y + 4.0,
                label(t)
            );
        }
        let _ = write!(
            svg,
            r#"<text transform="translate(16 {:.1}) rotate(-90)" class="axis" text-anchor="middle">{}</text><text x="{:.1}" y="{:.1}" class="axis" text-anchor="middle">{}</text>"#,
            (self.top + self.plot_bottom()) / 2.0,
            escape(y_title),
            self.left + self.plot_width() / 2.0,
            self.height - 6.0,
            escape(x_title)
        );
        svg
    }

    fn legend(&self, svg: &mut String, names: &[(String, &str)]) {
        let mut x = self.left + 4.0;
        for (name, colour) in names {
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="8" width="11" height="11" fill="{colour}"/><text x="{:.1}" y="18" class="tick">{}</text>"#,
                x + 15.0,
                escape(name)
            );
            x += 24.0 + 7.0 * name.chars().count() as f64;
        }
    }
}

/// A named series of values (one per group, None where missing) with its colour.
#[derive(Debug, Clone)]
pub struct BarSeries {
    pub name: String,
    pub colour: &'static str,
    pub values: Vec<Option<f64>>,
}

/// Grouped bars: for each group, one bar per series, each labelled with its value.
pub fn grouped_bars(groups: &[String], series: &[BarSeries], y_title: &str, log: bool) -> String {
    let area = Area::standard(360.0);
    let axis = Axis::new(
        series
            .iter()
            .flat_map(|s| s.values.iter().flatten().copied()),
        log,
    );
    let mut svg = area.open(&axis, y_title, "");
    let group_width = area.plot_width() / groups.len().max(1) as f64;
    let bar_width = (group_width * 0.8 / series.len().max(1) as f64).min(60.0);
    for (g, group) in groups.iter().enumerate() {
        let centre = area.left + group_width * (g as f64 + 0.5);
        let first = centre - bar_width * series.len() as f64 / 2.0;
        for (s, one) in series.iter().enumerate() {
            let Some(v) = one.values.get(g).copied().flatten() else {
                continue;
            };
            let x = first + bar_width * s as f64;
            let y = area.y(&axis, v);
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} {}: {}</title></rect>"#,
                (bar_width - 2.0).max(1.0),
                (area.plot_bottom() - y).max(0.5),
                one.colour,
                escape(&one.name),
                escape(group),
                label(v)
            );
            if bar_width >= 18.0 {
                let _ = write!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" class="value" text-anchor="middle">{}</text>"#,
                    x + bar_width / 2.0 - 1.0,
                    y - 3.0,
                    label(v)
                );
            }
        }
        let _ = write!(
            svg,
            r#"<text x="{centre:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"#,
            area.plot_bottom() + 16.0,
            escape(group)
        );
    }
    let names: Vec<(String, &str)> = series.iter().map(|s| (s.name.clone(), s.colour)).collect();
    area.legend(&mut svg, &names);
    svg.push_str("</svg>");
    svg
}

/// A named polyline with its colour; `dashed` tells two kinds of series apart.
#[derive(Debug, Clone)]
pub struct LineSeries {
    pub name: String,
    pub colour: &'static str,
    pub dashed: bool,
    pub points: Vec<(f64, f64)>,
}

/// Lines over a linear x axis, with a dot at every point.
pub fn lines(series: &[LineSeries], x_title: &str, y_title: &str, log: bool) -> String {
    let area = Area::standard(340.0);
    let axis = Axis::new(
        series.iter().flat_map(|s| s.points.iter().map(|p| p.1)),
        log,
    );
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(0.0, f64::max)
        .max(1e-9);
    let x_step = round_step(x_max, 8.0);
    let x_high = (x_max / x_step).ceil().max(1.0) * x_step;
    let x = |v: f64| area.left + area.plot_width() * (v / x_high).clamp(0.0, 1.0);
    let mut svg = area.open(&axis, y_title, x_title);
    let mut t = 0.0;
    while t <= x_high + 1e-9 {
        let _ = write!(
            svg,
            r##"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="#999"/><text x="{0:.1}" y="{3:.1}" class="tick" text-anchor="middle">{4}</text>"##,
            x(t),
            area.plot_bottom(),
            area.plot_bottom() + 4.0,
            area.plot_bottom() + 16.0,
            label(t)
        );
        t += x_step;
    }
    for one in series {
        let points: Vec<String> = one
            .points
            .iter()
            .filter(|p| !log || p.1 > 0.0)
            .map(|&(px, py)| format!("{:.1},{:.1}", x(px), area.y(&axis, py)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{}><title>{}</title></polyline>"#,
            points.join(" "),
            one.colour,
            if one.dashed {
                r#" stroke-dasharray="6 4""#
            } else {
                ""
            },
            escape(&one.name)
        );
        for &(px, py) in one.points.iter().filter(|p| !log || p.1 > 0.0) {
            let _ = write!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="2.6" fill="{}"><title>{}: {} at {}</title></circle>"#,
                x(px),
                area.y(&axis, py),
                one.colour,
                escape(&one.name),
                label(py),
                label(px)
            );
        }
    }
    let names: Vec<(String, &str)> = series.iter().map(|s| (s.name.clone(), s.colour)).collect();
    area.legend(&mut svg, &names);
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_cover_the_data_with_round_ticks() {
        let linear = Axis::new([3.0, 7300.0].into_iter(), false);
        assert_eq!(linear.low, 0.0);
        assert!(
            linear.high >= 7300.0 && linear.high <= 10_000.0,
            "{linear:?}"
        );
        let log = Axis::new([0.4, 23.0].into_iter(), true);
        assert_eq!(log.ticks, vec![0.1, 1.0, 10.0, 100.0]);
        assert!(log.fraction(0.1) == 0.0 && log.fraction(100.0) == 1.0);
        assert_eq!(round_step(7300.0, 5.0), 2000.0);
        assert_eq!(label(12_345.0), "12k");
        assert_eq!(label(0.25), "0.25");
    }

    #[test]
    fn charts_draw_every_value_and_escape_names() {
        let svg = grouped_bars(
            &["a x1".into(), "a x64".into()],
            &[
                BarSeries {
                    name: "ours <kv>".into(),
                    colour: PALETTE[0],
                    values: vec![Some(1200.0), Some(9000.0)],
                },
                BarSeries {
                    name: "etcd".into(),
                    colour: PALETTE[1],
                    values: vec![Some(800.0), None],
                },
            ],
            "ops/s",
            false,
        );
        assert_eq!(
            svg.matches("<rect x=").count(),
            1 + 3 + 2,
            "frame, 3 bars, 2 legend keys"
        );
        assert!(svg.contains("ours &lt;kv&gt;"));
        let svg = lines(
            &[LineSeries {
                name: "ours".into(),
                colour: PALETTE[0],
                dashed: true,
                points: vec![(0.0, 1.0), (1.0, 10.0), (2.0, 0.0)],
            }],
            "s",
            "ms",
            true,
        );
        assert_eq!(
            svg.matches("<circle").count(),
            2,
            "a zero cannot sit on a log axis"
        );
        assert!(svg.contains("stroke-dasharray"));
    }
}
