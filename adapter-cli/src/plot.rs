//! Charts of range query results: SVG or PNG files, and text charts for terminals.

use std::path::Path;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, ensure, Context};
use chrono::{DateTime, Utc};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use promql::value::{Point, Series, Timestamp, Value};

/// The error for anything but a matrix.
const NEEDS_RANGE: &str = "--plot-out needs a range query (--start --end --step)";
/// The chart's size in pixels, without the legend below it.
const CHART_SIZE: (u32, u32) = (1200, 600);
/// Legend rows drawn at most; further series are counted in a last row.
const MAX_LEGEND_ROWS: usize = 40;
/// Height of a legend row in pixels.
const LEGEND_ROW: u32 = 20;
/// Legend names longer than this many characters are cut with `…`.
const MAX_NAME_CHARS: usize = 110;
/// The font family every text of the chart uses (registered from an embedded font).
const FONT: &str = "sans-serif";

/// Tableau 10, then plotters' 99-color palette.
const COLORS: [RGBColor; 10] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xed, 0xc9, 0x48),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0xff, 0x9d, 0xa7),
    RGBColor(0x9c, 0x75, 0x5f),
    RGBColor(0xba, 0xb0, 0xac),
];

/// Draws a range result as an SVG or PNG chart (by extension) with axes, UTC time labels
/// and a legend of the series names.
pub fn write_plot(value: &Value, path: &Path, title: &str) -> anyhow::Result<()> {
    let Value::Matrix(series) = value else { bail!(NEEDS_RANGE) };
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    let legend = legend_rows(series);
    let legend_height = if legend.is_empty() { 0 } else { legend.len() as u32 * LEGEND_ROW + 20 };
    let size = (CHART_SIZE.0, CHART_SIZE.1 + legend_height);
    register_font()?;
    let written = match ext.as_deref() {
        Some("svg") => {
            let root = SVGBackend::new(path, size).into_drawing_area();
            draw(&root, series, &legend, title)?;
            root.present().map_err(|e| anyhow!("{e}"))
        }
        Some("png") => {
            let root = BitMapBackend::new(path, size).into_drawing_area();
            draw(&root, series, &legend, title)?;
            root.present().map_err(|e| anyhow!("{e}"))
        }
        _ => bail!("--plot-out {}: unknown image type; name a .svg or .png file", path.display()),
    };
    written.with_context(|| format!("writing {}", path.display()))
}

/// Registers the embedded font for plotters' `ab_glyph` text rendering, once.
fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
            && plotters::style::register_font(FONT, FontStyle::Bold, dejavu::sans::bold()).is_ok()
    });
    ensure!(ok, "the embedded chart font could not be loaded");
    Ok(())
}

/// One legend row: a series index and its name, or `None` and a "… more" text.
type LegendRow = (Option<usize>, String);

fn legend_rows(series: &[Series]) -> Vec<LegendRow> {
    let shown = if series.len() > MAX_LEGEND_ROWS { MAX_LEGEND_ROWS - 1 } else { series.len() };
    let mut rows: Vec<LegendRow> =
        series[..shown].iter().enumerate().map(|(i, s)| (Some(i), series_name(s, MAX_NAME_CHARS))).collect();
    if shown < series.len() {
        rows.push((None, format!("… and {} more series", series.len() - shown)));
    }
    rows
}

fn color(i: usize) -> RGBColor {
    match COLORS.get(i) {
        Some(c) => *c,
        None => {
            let c = Palette99::pick(i).to_rgba();
            RGBColor(c.0, c.1, c.2)
        }
    }
}

/// Draws chart and legend on `root`.
fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    series: &[Series],
    legend: &[LegendRow],
    title: &str,
) -> anyhow::Result<()> {
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| anyhow!("drawing the chart: {e}");
    root.fill(&WHITE).map_err(e)?;
    let (upper, lower) = root.split_vertically(CHART_SIZE.1);

    let (x0, x1) = time_range(series);
    let (y0, y1) = padded(value_range(series));
    let ticks = time_ticks(x0, x1, 8);
    let tick_step = ticks.get(1).zip(ticks.first()).map_or(x1 - x0, |(b, a)| b - a);
    let mut builder = ChartBuilder::on(&upper);
    builder.margin(15).margin_right(30).x_label_area_size(45).y_label_area_size(80);
    if !title.is_empty() {
        builder.caption(title, (FONT, 26));
    }
    let mut chart = builder.build_cartesian_2d((x0..x1).with_key_points(ticks), y0..y1).map_err(e)?;
    let x_format = |t: &i64| format_tick(*t, tick_step, x1 - x0);
    let y_format = |v: &f64| format_number(*v);
    let x_desc = format!("UTC, {} to {}", format_time(x0), format_time(x1));
    chart
        .configure_mesh()
        .max_light_lines(1)
        .light_line_style(RGBColor(0xf2, 0xf2, 0xf2))
        .bold_line_style(RGBColor(0xdd, 0xdd, 0xdd))
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        .y_labels(8)
        .x_desc(x_desc)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 16))
        .draw()
        .map_err(e)?;

    let gap = max_gap(series);
    for (i, s) in series.iter().enumerate() {
        let style = color(i).stroke_width(2);
        for seg in segments(&s.points, gap) {
            if let [p] = seg {
                chart.draw_series([Circle::new((p.t, p.v), 2, style.filled())]).map_err(e)?;
            } else {
                chart.draw_series(LineSeries::new(seg.iter().map(|p| (p.t, p.v)), style)).map_err(e)?;
            }
        }
    }
    if series.iter().all(|s| s.points.iter().all(|p| !p.v.is_finite())) {
        let (w, h) = upper.dim_in_pixel();
        let text = if series.is_empty() { "no series" } else { "no finite values" };
        upper.draw(&Text::new(text, (w as i32 / 2 - 40, h as i32 / 2), (FONT, 18))).map_err(e)?;
    }

    for (row, (index, name)) in legend.iter().enumerate() {
        let y = 10 + (row as u32 * LEGEND_ROW) as i32;
        if let Some(i) = index {
            let style = color(*i).stroke_width(3);
            lower.draw(&PathElement::new([(95, y + 9), (125, y + 9)], style)).map_err(e)?;
        }
        lower.draw(&Text::new(name.as_str(), (135, y + 1), (FONT, 17))).map_err(e)?;
    }
    Ok(())
}

/// The time span of all points, widened when it is a single instant.
fn time_range(series: &[Series]) -> (Timestamp, Timestamp) {
    let times = series.iter().flat_map(|s| s.points.iter().map(|p| p.t));
    let (min, max) = times.fold((Timestamp::MAX, Timestamp::MIN), |(lo, hi), t| (lo.min(t), hi.max(t)));
    if min > max {
        (0, 60_000)
    } else if min == max {
        (min - 30_000, max + 30_000)
    } else {
        (min, max)
    }
}

/// The range of the finite values, widened when empty or a single value.
fn value_range(series: &[Series]) -> (f64, f64) {
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.v)).filter(|v| v.is_finite());
    let (min, max) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if min > max {
        (0.0, 1.0)
    } else if min == max {
        let d = if min == 0.0 { 1.0 } else { min.abs() * 0.1 };
        (min - d, max + d)
    } else {
        (min, max)
    }
}

/// 5% of room above and below.
fn padded((lo, hi): (f64, f64)) -> (f64, f64) {
    let d = (hi - lo) * 0.05;
    (lo - d, hi + d)
}

/// Round UTC times in `[x0, x1]`, at most about `max` of them.
fn time_ticks(x0: Timestamp, x1: Timestamp, max: i64) -> Vec<Timestamp> {
    const S: i64 = 1_000;
    const STEPS: [i64; 24] = [
        S,
        2 * S,
        5 * S,
        10 * S,
        15 * S,
        30 * S,
        60 * S,
        2 * 60 * S,
        5 * 60 * S,
        10 * 60 * S,
        15 * 60 * S,
        30 * 60 * S,
        3600 * S,
        2 * 3600 * S,
        3 * 3600 * S,
        6 * 3600 * S,
        12 * 3600 * S,
        86_400 * S,
        2 * 86_400 * S,
        7 * 86_400 * S,
        14 * 86_400 * S,
        30 * 86_400 * S,
        91 * 86_400 * S,
        365 * 86_400 * S,
    ];
    let span = x1 - x0;
    let step = STEPS.into_iter().find(|s| span / s <= max).unwrap_or_else(|| (span / max).max(1));
    let first = x0.div_euclid(step) * step + if x0.rem_euclid(step) == 0 { 0 } else { step };
    let mut ticks = Vec::new();
    let mut t = first;
    while t <= x1 && ticks.len() < 64 {
        ticks.push(t);
        t += step;
    }
    ticks
}

/// A tick label: seconds only when ticks are less than a minute apart, the date only
/// when the chart spans more than a day.
fn format_tick(t: Timestamp, step: i64, span: i64) -> String {
    let format = if step >= 86_400_000 {
        "%Y-%m-%d"
    } else if span > 86_400_000 {
        "%m-%d %H:%M"
    } else if step < 60_000 {
        "%H:%M:%S"
    } else {
        "%H:%M"
    };
    DateTime::<Utc>::from_timestamp_millis(t).map_or_else(|| t.to_string(), |d| d.format(format).to_string())
}

/// `2024-01-01 00:30:00`.
fn format_time(t: Timestamp) -> String {
    DateTime::<Utc>::from_timestamp_millis(t)
        .map_or_else(|| t.to_string(), |d| d.format("%Y-%m-%d %H:%M:%S").to_string())
}

/// A short number for axis labels: `0`, `12.5`, `0.003`, `1.23e9`.
fn format_number(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let a = v.abs();
    if !(1e-3..1e6).contains(&a) {
        return format!("{v:.2e}");
    }
    let decimals = if a >= 100.0 { 1 } else { 3 };
    let s = format!("{v:.decimals$}");
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.') } else { &s };
    if s == "-0" {
        "0".into()
    } else {
        s.into()
    }
}

/// The series name for a legend, cut to `max` characters with `…`.
fn series_name(s: &Series, max: usize) -> String {
    let name = s.labels.metric_string();
    let name = if name.is_empty() { "{}".to_owned() } else { name };
    truncate(&name, max)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

/// The largest distance between neighbouring points that is not a gap: one and a half
/// times the smallest distance between points (the query's step).
fn max_gap(series: &[Series]) -> i64 {
    let step = series
        .iter()
        .flat_map(|s| s.points.windows(2).map(|w| w[1].t - w[0].t))
        .filter(|d| *d > 0)
        .min()
        .unwrap_or(i64::MAX / 2);
    step.saturating_add(step / 2)
}

/// The runs of finite points with no gap wider than `gap`.
fn segments(points: &[Point], gap: i64) -> Vec<&[Point]> {
    let mut out = Vec::new();
    let mut start = None;
    for (i, p) in points.iter().enumerate() {
        match start {
            _ if !p.v.is_finite() => {
                if let Some(s) = start.take() {
                    out.push(&points[s..i]);
                }
            }
            None => start = Some(i),
            Some(s) if p.t - points[i - 1].t > gap => {
                out.push(&points[s..i]);
                start = Some(i);
            }
            Some(_) => {}
        }
    }
    if let Some(s) = start {
        out.push(&points[s..]);
    }
    out
}

/// A line chart for a terminal, exactly `height` lines of `width` characters, legend
/// included.
pub fn terminal_plot(value: &Value, width: usize, height: usize) -> String {
    let lines = match value {
        Value::Matrix(series) => text_chart(series, width, height),
        _ => vec!["(a chart needs a range query: --start --end --step)".to_owned()],
    };
    let mut out = String::with_capacity((width + 1) * height * 3);
    for i in 0..height {
        let line = lines.get(i).map_or("", String::as_str);
        let mut n = 0;
        for c in line.chars().take(width) {
            out.push(c);
            n += 1;
        }
        out.extend(std::iter::repeat_n(' ', width - n));
        out.push('\n');
    }
    out
}

/// Marks of the series when there are several.
const MARKS: [char; 12] = ['*', '+', 'o', 'x', '#', '@', '%', '&', '=', '$', '~', '^'];
/// Chart rows kept at least, before legend rows are given up.
const MIN_CHART_ROWS: usize = 3;

fn text_chart(series: &[Series], width: usize, height: usize) -> Vec<String> {
    // Legend rows: as many as fit below a minimal chart (two axis lines under it).
    let room = height.saturating_sub(MIN_CHART_ROWS + 2);
    let legend: Vec<String> = if series.is_empty() {
        vec!["(no series)".to_owned()]
    } else if series.len() <= room {
        series.iter().enumerate().map(|(i, s)| legend_line(series.len(), i, s, width)).collect()
    } else {
        let shown = room.saturating_sub(1);
        let mut rows: Vec<String> =
            series[..shown].iter().enumerate().map(|(i, s)| legend_line(series.len(), i, s, width)).collect();
        rows.push(format!("… and {} more series", series.len() - shown));
        rows
    };
    let legend = &legend[..legend.len().min(room.max(1))];
    let rows = height.saturating_sub(legend.len() + 2).max(1);

    let (x0, x1) = time_range(series);
    let (y0, y1) = value_range(series);
    let (top, bottom) = (format_number(y1), format_number(y0));
    let label_width = top.chars().count().max(bottom.chars().count());
    let cols = width.saturating_sub(label_width + 1).max(1);

    let grid = if series.len() == 1 {
        braille_grid(&series[0], cols, rows, (x0, x1), (y0, y1))
    } else {
        mark_grid(series, cols, rows, (x0, x1), (y0, y1))
    };
    let mut lines = Vec::with_capacity(rows + 2 + legend.len());
    for (r, cells) in grid.iter().enumerate() {
        let (label, axis) = match r {
            0 => (top.as_str(), '┤'),
            r if r + 1 == rows => (bottom.as_str(), '┤'),
            _ => ("", '│'),
        };
        lines.push(format!("{label:>label_width$}{axis}{}", cells.iter().collect::<String>()));
    }
    lines.push(format!("{:label_width$}└{}", "", "─".repeat(cols)));
    lines.push(format!("{:label_width$} {}", "", time_labels(x0, x1, cols)));
    lines.extend(legend.iter().cloned());
    lines
}

fn legend_line(count: usize, i: usize, s: &Series, width: usize) -> String {
    let mark = if count == 1 { '⣿' } else { MARKS[i % MARKS.len()] };
    format!("{mark} {}", series_name(s, width.saturating_sub(2)))
}

/// The first time at the left and the last at the right of `cols` columns, as much of
/// them as fits.
fn time_labels(x0: Timestamp, x1: Timestamp, cols: usize) -> String {
    let fmt = |t: Timestamp, f: &str| {
        DateTime::<Utc>::from_timestamp_millis(t).map_or_else(|| t.to_string(), |d| d.format(f).to_string())
    };
    let same_day = x0.div_euclid(86_400_000) == x1.div_euclid(86_400_000);
    let candidates = [
        (
            fmt(x0, "%Y-%m-%d %H:%M:%S"),
            fmt(x1, if same_day { "%H:%M:%S UTC" } else { "%Y-%m-%d %H:%M:%S UTC" }),
        ),
        (fmt(x0, "%Y-%m-%d %H:%M:%S"), fmt(x1, if same_day { "%H:%M:%S" } else { "%m-%d %H:%M:%S" })),
        (fmt(x0, "%H:%M:%S"), fmt(x1, "%H:%M:%S")),
        (fmt(x0, "%H:%M"), fmt(x1, "%H:%M")),
    ];
    for (left, right) in candidates {
        let used = left.chars().count() + right.chars().count();
        if used < cols {
            return format!("{left}{}{right}", " ".repeat(cols - used));
        }
    }
    fmt(x0, "%H:%M")
}

/// Maps a time to a position in `0..n`.
fn scale_x(t: Timestamp, (x0, x1): (Timestamp, Timestamp), n: usize) -> i64 {
    let f = (t - x0) as f64 / (x1 - x0).max(1) as f64;
    (f * (n as f64 - 1.0)).round() as i64
}

/// Maps a value to a position in `0..n`, 0 at the top.
fn scale_y(v: f64, (y0, y1): (f64, f64), n: usize) -> i64 {
    let f = (y1 - v) / (y1 - y0);
    (f * (n as f64 - 1.0)).round() as i64
}

/// The points of a line from `a` to `b` (Bresenham), both ends included.
fn line_points((mut x, mut y): (i64, i64), (x1, y1): (i64, i64), mut plot: impl FnMut(i64, i64)) {
    let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
    let (sx, sy) = (if x < x1 { 1 } else { -1 }, if y < y1 { 1 } else { -1 });
    let mut err = dx + dy;
    loop {
        plot(x, y);
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// Draws every segment of `points` as lines through `plot`, in a `w`×`h` grid.
fn draw_lines(
    points: &[Point],
    gap: i64,
    (w, h): (usize, usize),
    xr: (Timestamp, Timestamp),
    yr: (f64, f64),
    mut plot: impl FnMut(usize, usize),
) {
    let mut put = |x: i64, y: i64| {
        if (0..w as i64).contains(&x) && (0..h as i64).contains(&y) {
            plot(x as usize, y as usize);
        }
    };
    for seg in segments(points, gap) {
        let mut prev: Option<(i64, i64)> = None;
        for p in seg {
            let at = (scale_x(p.t, xr, w), scale_y(p.v, yr, h));
            match prev {
                Some(from) => line_points(from, at, &mut put),
                None => put(at.0, at.1),
            }
            prev = Some(at);
        }
    }
}

/// One series in braille: each character holds 2×4 dots.
fn braille_grid(
    s: &Series,
    cols: usize,
    rows: usize,
    xr: (Timestamp, Timestamp),
    yr: (f64, f64),
) -> Vec<Vec<char>> {
    // Dot bits of a braille cell by (column, row).
    const BITS: [[u8; 4]; 2] = [[0x01, 0x02, 0x04, 0x40], [0x08, 0x10, 0x20, 0x80]];
    let mut dots = vec![vec![0u8; cols]; rows];
    let gap = max_gap(std::slice::from_ref(s));
    draw_lines(&s.points, gap, (cols * 2, rows * 4), xr, yr, |x, y| {
        dots[y / 4][x / 2] |= BITS[x % 2][y % 4];
    });
    dots.into_iter()
        .map(|row| {
            row.into_iter()
                .map(|b| if b == 0 { ' ' } else { char::from_u32(0x2800 + u32::from(b)).unwrap_or('?') })
                .collect()
        })
        .collect()
}

/// Several series, one mark character each.
fn mark_grid(
    series: &[Series],
    cols: usize,
    rows: usize,
    xr: (Timestamp, Timestamp),
    yr: (f64, f64),
) -> Vec<Vec<char>> {
    let mut grid = vec![vec![' '; cols]; rows];
    let gap = max_gap(series);
    for (i, s) in series.iter().enumerate() {
        let mark = MARKS[i % MARKS.len()];
        draw_lines(&s.points, gap, (cols, rows), xr, yr, |x, y| grid[y][x] = mark);
    }
    grid
}

#[cfg(test)]
mod tests {
    use promql::Labels;

    use super::*;

    /// 2024-01-01T00:00:00Z.
    const T0: i64 = 1_704_067_200_000;

    fn matrix() -> Value {
        let wave = |f: fn(f64) -> f64| -> Vec<Point> {
            (0..=60).map(|i| Point { t: T0 + i * 60_000, v: f(i as f64 / 10.0) }).collect()
        };
        let mut gappy = wave(|x| 1.0 + x.cos());
        gappy.retain(|p| !(T0 + 20 * 60_000..T0 + 25 * 60_000).contains(&p.t));
        gappy[40].v = f64::NAN;
        Value::Matrix(vec![
            Series {
                labels: Labels::from_pairs([
                    ("__name__", "http_requests_total"),
                    ("job", "api"),
                    ("path", "/a&b<c>"),
                ]),
                points: wave(|x| 2.0 + x.sin()),
            },
            Series { labels: Labels::from_pairs([("job", "db")]), points: gappy },
            Series {
                labels: Labels::from_pairs([("__name__", "up"), ("instance", "x".repeat(300).as_str())]),
                points: wave(|x| x / 3.0),
            },
        ])
    }

    fn xml_escape(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', "&apos;")
    }

    /// A scratch directory for one test, removed when dropped.
    struct Dir(std::path::PathBuf);

    impl Dir {
        fn join(&self, name: &str) -> std::path::PathBuf {
            self.0.join(name)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            std::fs::remove_dir_all(&self.0).ok();
        }
    }

    fn out_dir(test: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("promql-cli-plot-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    #[test]
    fn svg_has_the_legend_names() {
        let dir = out_dir("svg");
        let path = dir.join("chart.svg");
        let value = matrix();
        write_plot(&value, &path, "sum(rate(http_requests_total[5m]))").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..100]);
        assert!(svg.len() > 1000);
        let Value::Matrix(series) = &value else { unreachable!() };
        for s in series {
            let name = series_name(s, MAX_NAME_CHARS);
            assert!(svg.contains(&format!(">\n{}\n</text>", xml_escape(&name))), "no legend entry {name}");
        }
        // The long name is cut.
        assert!(svg.contains("up{instance=&quot;xxxx"), "long name");
        assert!(!svg.contains(&"x".repeat(200)));
        assert!(svg.contains("sum(rate(http_requests_total[5m]))"), "title");
        assert!(svg.contains(">\n00:30\n</text>"), "time tick");
        assert!(svg.contains("UTC, 2024-01-01 00:00:00 to 2024-01-01 01:00:00"), "axis description");
    }

    #[test]
    fn png_is_written_with_text() {
        let dir = out_dir("png");
        let path = dir.join("chart.png");
        write_plot(&matrix(), &path, "requests").unwrap();
        let png = std::fs::read(&path).unwrap();
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
        assert!(png.len() > 10_000, "{} bytes", png.len());
        // Kept for a look when PROMQL_CLI_KEEP_PLOT is set.
        if let Some(keep) = std::env::var_os("PROMQL_CLI_KEEP_PLOT") {
            std::fs::copy(&path, keep).unwrap();
        }
    }

    #[test]
    fn many_series_fold_into_a_count() {
        let series: Vec<Series> = (0..50)
            .map(|i| Series {
                labels: Labels::from_pairs([("i", i.to_string())]),
                points: vec![Point { t: T0, v: i as f64 }, Point { t: T0 + 60_000, v: 1.0 }],
            })
            .collect();
        let rows = legend_rows(&series);
        assert_eq!(rows.len(), MAX_LEGEND_ROWS);
        assert_eq!(rows.last().unwrap().1, "… and 11 more series");
        let dir = out_dir("many");
        let path = dir.join("many.svg");
        write_plot(&Value::Matrix(series), &path, "").unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().contains("… and 11 more series"));
    }

    #[test]
    fn empty_and_single_point_charts() {
        let dir = out_dir("empty");
        write_plot(&Value::Matrix(vec![]), &dir.join("empty.svg"), "nothing").unwrap();
        let one = Value::Matrix(vec![Series {
            labels: Labels::from_pairs([("__name__", "up")]),
            points: vec![Point { t: T0, v: 1.0 }],
        }]);
        write_plot(&one, &dir.join("one.png"), "").unwrap();
        assert!(std::fs::metadata(dir.join("one.png")).unwrap().len() > 0);
    }

    #[test]
    fn refuses_instant_results_and_other_extensions() {
        let dir = out_dir("refuse");
        let err = write_plot(&Value::Vector(vec![]), &dir.join("x.svg"), "").unwrap_err();
        assert_eq!(err.to_string(), "--plot-out needs a range query (--start --end --step)");
        let err = write_plot(&Value::Scalar { t: 0, v: 1.0 }, &dir.join("x.png"), "").unwrap_err();
        assert_eq!(err.to_string(), NEEDS_RANGE);
        let err = write_plot(&matrix(), &dir.join("x.jpg"), "").unwrap_err();
        assert!(err.to_string().contains("name a .svg or .png file"), "{err}");
        assert!(!dir.join("x.jpg").exists());
        let err = write_plot(&matrix(), &dir.join("no/such/dir/x.svg"), "").unwrap_err();
        assert!(format!("{err:#}").starts_with("writing "), "{err:#}");
    }

    fn assert_size(text: &str, width: usize, height: usize) {
        assert!(text.ends_with('\n') || height == 0);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), height, "{text}");
        for l in lines {
            assert_eq!(l.chars().count(), width, "{l:?}");
        }
    }

    #[test]
    fn terminal_plot_has_size_axes_and_legend() {
        let text = terminal_plot(&matrix(), 100, 24);
        println!("{text}");
        assert_size(&text, 100, 24);
        let Value::Matrix(series) = matrix() else { unreachable!() };
        for (i, s) in series.iter().enumerate() {
            let name = s.labels.metric_string();
            let prefix: String = name.chars().take(60).collect();
            assert!(text.contains(&format!("{} {prefix}", MARKS[i])), "no legend entry {name}");
        }
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("3┤"), "max label: {}", lines[0]);
        // The minimum is 0 (the third series starts at 0).
        assert!(lines.iter().any(|l| l.starts_with("0┤")), "min label");
        assert!(text.contains("2024-01-01 00:00:00"), "start time");
        assert!(text.contains("01:00:00 UTC"), "end time");
        for mark in &MARKS[..3] {
            assert!(lines[..lines.len() - 5].iter().any(|l| l.contains(*mark)), "no {mark} in the chart");
        }
    }

    #[test]
    fn terminal_plot_single_series_is_braille() {
        let Value::Matrix(mut series) = matrix() else { unreachable!() };
        series.truncate(1);
        let text = terminal_plot(&Value::Matrix(series), 60, 12);
        println!("{text}");
        assert_size(&text, 60, 12);
        assert!(text.chars().any(|c| ('\u{2801}'..='\u{28ff}').contains(&c)));
        assert!(text.contains("⣿ http_requests_total{job=\"api\", path=\"/a&b<c>\"}"), "{text}");
    }

    #[test]
    fn terminal_plot_small_sizes_and_many_series() {
        let many: Vec<Series> = (0..30)
            .map(|i| Series {
                labels: Labels::from_pairs([("i", i.to_string())]),
                points: vec![Point { t: T0, v: i as f64 }, Point { t: T0 + 60_000, v: 0.0 }],
            })
            .collect();
        let text = terminal_plot(&Value::Matrix(many), 40, 20);
        assert_size(&text, 40, 20);
        assert!(text.contains("… and 16 more series"), "{text}");
        for (w, h) in [(0, 0), (1, 1), (5, 3), (10, 40), (200, 2)] {
            assert_size(&terminal_plot(&matrix(), w, h), w, h);
        }
        assert_size(&terminal_plot(&Value::Matrix(vec![]), 30, 8), 30, 8);
        let text = terminal_plot(&Value::Scalar { t: 0, v: 1.0 }, 80, 3);
        assert_size(&text, 80, 3);
        assert!(text.starts_with("(a chart needs a range query"));
    }

    #[test]
    fn segments_break_at_gaps_and_non_finite_values() {
        let p = |t: i64, v: f64| Point { t, v };
        let points = [p(0, 1.0), p(10, 1.0), p(20, f64::NAN), p(30, 1.0), p(40, 2.0), p(70, 1.0), p(80, 1.0)];
        let lens: Vec<usize> = segments(&points, 15).iter().map(|s| s.len()).collect();
        assert_eq!(lens, [2, 2, 2]);
        assert_eq!(
            time_ticks(T0 + 1, T0 + 3_600_000, 8),
            (1..=6).map(|i| T0 + i * 600_000).collect::<Vec<_>>()
        );
        assert_eq!(format_number(1234.5678), "1234.6");
        assert_eq!(format_number(0.000_012), "1.20e-5");
        assert_eq!(format_number(-2.5), "-2.5");
    }
}
