//! Figures, drawn once per backend: PNG through the bitmap backend with a bundled DejaVu Sans (no
//! fontconfig, no fonts installed on the machine), and SVG for inlining in report.html.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;

use crate::Error;

/// DejaVu Sans, bundled so that PNGs look the same on every machine (licence in assets/).
const FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Size of every figure, in pixels.
pub const SIZE: (u32, u32) = (960, 540);

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// The colour of the `i`-th series.
pub fn color(i: usize) -> RGBColor {
    COLORS[i % COLORS.len()]
}

const GB: f64 = 1e9;

/// One cumulative distribution: a label and the sorted finished times out of `total`.
#[derive(Clone, Debug)]
pub struct Cdf {
    /// The legend entry.
    pub label: String,
    /// Finished times, seconds, ascending.
    pub sorted: Vec<f64>,
    /// Everything counted, finished or not: the curve tops out at `sorted.len() / total`.
    pub total: usize,
}

/// What a figure shows; each variant draws on either backend.
#[derive(Clone, Debug)]
pub enum Chart {
    /// Histogram of per-blob download time in `bucket_s` buckets.
    Histogram {
        /// The figure's caption.
        title: String,
        /// Download times, seconds.
        durations: Vec<f64>,
        /// Bucket width, seconds.
        bucket_s: f64,
    },
    /// CDFs of per-host image completion, with the lower bound as a vertical line.
    Cdf {
        /// The figure's caption.
        title: String,
        /// One curve per run.
        cdfs: Vec<Cdf>,
        /// Where to draw the lower bound, seconds; none if `None`.
        lower_bound_s: Option<f64>,
    },
    /// Throughput and origin egress (GB/s) over downloads in progress, against time.
    Timeseries {
        /// The figure's caption.
        title: String,
        /// End of each interval, seconds.
        time_s: Vec<f64>,
        /// Aggregate throughput per interval, bytes/s (drawn in GB/s).
        throughput: Vec<f64>,
        /// Origin egress per interval, bytes/s (drawn in GB/s).
        origin_egress: Vec<f64>,
        /// Blob downloads in progress at the end of each interval.
        active: Vec<u64>,
    },
    /// Payload bytes by where they came from.
    Bars {
        /// The figure's caption.
        title: String,
        /// (locality, bytes), in drawing order (drawn in GB).
        bars: Vec<(String, u64)>,
    },
    /// A metric's mean per category (an axis value, or a case) with its 95 % confidence interval as
    /// a bar, one series per combination of the other axes.
    Intervals {
        /// The figure's caption.
        title: String,
        /// What the categories are (an axis's key path, or "case").
        x_desc: String,
        /// The metric, with its unit.
        y_desc: String,
        /// The categories, left to right.
        categories: Vec<String>,
        /// One per combination of the other axes.
        series: Vec<IntervalSeries>,
    },
    /// Per-case CDFs of per-host image completion pooled over seeds, each with the band between the
    /// lowest and the highest of its seeds' CDFs.
    CdfBands {
        /// The figure's caption.
        title: String,
        /// One per case.
        bands: Vec<CdfBand>,
    },
    /// Rack uplink utilisation over time: the least, median and most loaded rack per interval.
    Racks {
        /// The figure's caption.
        title: String,
        /// End of each interval, seconds.
        time_s: Vec<f64>,
        /// The least utilised rack uplink per interval, 0–1.
        min: Vec<f64>,
        /// The median rack uplink utilisation per interval, 0–1.
        median: Vec<f64>,
        /// The most utilised rack uplink per interval, 0–1.
        max: Vec<f64>,
        /// Racks in the topology, for the axis label.
        racks: usize,
    },
}

/// One case of [`Chart::CdfBands`], evaluated on a common grid of times.
#[derive(Clone, Debug)]
pub struct CdfBand {
    /// The legend entry.
    pub label: String,
    /// The grid, seconds, ascending.
    pub x: Vec<f64>,
    /// Hosts complete by each time over all seeds' hosts, 0–1.
    pub pooled: Vec<f64>,
    /// The lowest seed's share at each time.
    pub lo: Vec<f64>,
    /// The highest seed's share at each time.
    pub hi: Vec<f64>,
}

/// One series of [`Chart::Intervals`].
#[derive(Clone, Debug)]
pub struct IntervalSeries {
    /// The legend entry (the other axes' values), empty for a single series.
    pub label: String,
    /// Per category: (mean, interval low, interval high), or `None` where no run gave a value.
    pub points: Vec<Option<(f64, f64, f64)>>,
}

impl Chart {
    /// Draws the chart to `png` and returns it as an SVG document.
    pub fn render(&self, png: &Path) -> Result<String, Error> {
        register_font();
        let plot_err = |e: String| Error::Plot { file: png.to_path_buf(), msg: e };
        {
            let root = BitMapBackend::new(png, SIZE).into_drawing_area();
            self.draw(&root).map_err(plot_err)?;
            root.present().map_err(|e| plot_err(e.to_string()))?;
        }
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
            self.draw(&root).map_err(plot_err)?;
            root.present().map_err(|e| plot_err(e.to_string()))?;
        }
        Ok(svg)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Result<(), String>
    where
        DB::ErrorType: 'static,
    {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let r = match self {
            Chart::Histogram { title, durations, bucket_s } => histogram(root, title, durations, *bucket_s),
            Chart::Cdf { title, cdfs, lower_bound_s } => cdf(root, title, cdfs, *lower_bound_s),
            Chart::Timeseries { title, time_s, throughput, origin_egress, active } => {
                timeseries(root, title, time_s, throughput, origin_egress, active)
            }
            Chart::Bars { title, bars: b } => bars(root, title, b),
            Chart::CdfBands { title, bands } => cdf_bands(root, title, bands),
            Chart::Intervals { title, x_desc, y_desc, categories, series } => {
                intervals(root, title, x_desc, y_desc, categories, series)
            }
            Chart::Racks { title, time_s, min, median, max, racks: n } => racks(
                root,
                title,
                time_s,
                [("most loaded rack", max), ("median rack", median), ("least loaded rack", min)],
                *n,
            ),
        };
        r.map_err(|e| e.to_string())
    }
}

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bundled font is valid; a failure here would be a build defect.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn caption() -> TextStyle<'static> {
    (FAMILY, 24).into_font().into()
}

fn legend_box<'a, DB: DrawingBackend + 'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
    position: SeriesLabelPosition,
) -> DrawResult<DB> {
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.5))
        .label_font((FAMILY, 15))
        .draw()
}

fn line_legend(c: RGBColor) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
}

fn box_legend(c: RGBColor) -> impl Fn((i32, i32)) -> Rectangle<(i32, i32)> {
    move |(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], c.filled())
}

/// A tick label: no trailing zeros ("2", "2.5", "0.25").
fn tick(v: &f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A "nice" upper end for an axis starting at zero.
/// A chart of seconds (x) by a share of hosts (y).
type SecondsByShare<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The axes of a per-host completion CDF: seconds across to `x_end`, the share of hosts up to 1.
fn completion_axes<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    title: &str,
    x_end: f64,
    y_desc: &str,
) -> Result<SecondsByShare<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let mut chart = ChartBuilder::on(root)
        .caption(title, caption())
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_end, 0.0..1.02)?;
    chart
        .configure_mesh()
        .x_desc("image completion per host (s)")
        .x_label_formatter(&tick)
        .y_desc(y_desc)
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .axis_desc_style((FAMILY, 17))
        .label_style((FAMILY, 14))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    Ok(chart)
}

fn headroom(max: f64) -> f64 {
    if max.is_finite() && max > 0.0 { max * 1.08 } else { 1.0 }
}

fn histogram<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    durations: &[f64],
    bucket_s: f64,
) -> DrawResult<DB> {
    let longest = durations.iter().copied().fold(0.0, f64::max);
    let buckets = ((longest / bucket_s).floor() as usize + 1).max(1);
    let mut counts = vec![0u64; buckets];
    for d in durations {
        counts[((d / bucket_s).floor() as usize).min(buckets - 1)] += 1;
    }
    let x_max = buckets as f64 * bucket_s;
    let y_max = counts.iter().copied().max().unwrap_or(0) as f64;
    let mut chart = ChartBuilder::on(root)
        .caption(title, caption())
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..headroom(y_max))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels((buckets + 1).min(16))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .x_desc(format!("download time per blob (s), {bucket_s} s buckets"))
        .y_desc("number of blob downloads")
        .axis_desc_style((FAMILY, 17))
        .label_style((FAMILY, 14))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    let c = color(0);
    chart
        .draw_series(counts.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| {
            let x0 = i as f64 * bucket_s;
            Rectangle::new([(x0, 0.0), (x0 + bucket_s, *n as f64)], c.mix(0.85).filled())
        }))?
        .label(format!("blob downloads ({} complete)", durations.len()))
        .legend(box_legend(c));
    chart.draw_series(counts.iter().enumerate().filter(|(_, n)| **n > 0).map(|(i, n)| {
        let x0 = i as f64 * bucket_s;
        Rectangle::new([(x0, 0.0), (x0 + bucket_s, *n as f64)], BLACK.mix(0.6).stroke_width(1))
    }))?;
    legend_box(&mut chart, SeriesLabelPosition::UpperRight)
}

fn racks<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    time_s: &[f64],
    series: [(&str, &Vec<f64>); 3],
    n: usize,
) -> DrawResult<DB> {
    let t_max = headroom(time_s.last().copied().unwrap_or(0.0)) / 1.08;
    let t_max = if t_max > 0.0 { t_max } else { 1.0 };
    let mut chart = ChartBuilder::on(root)
        .caption(title, caption())
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..1.1)?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .x_label_formatter(&tick)
        .y_desc(format!("rack uplink utilisation ({n} racks)"))
        .y_label_formatter(&|v| format!("{:.0}%", v * 100.0))
        .axis_desc_style((FAMILY, 17))
        .label_style((FAMILY, 14))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    for (i, (label, ys)) in series.into_iter().enumerate() {
        let col = color(i);
        chart
            .draw_series(LineSeries::new(
                time_s.iter().zip(ys.iter()).map(|(t, y)| (*t, *y)),
                col.stroke_width(2),
            ))?
            .label(label)
            .legend(line_legend(col));
    }
    legend_box(&mut chart, SeriesLabelPosition::UpperRight)
}

fn cdf<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    cdfs: &[Cdf],
    lower_bound_s: Option<f64>,
) -> DrawResult<DB> {
    let longest =
        cdfs.iter().filter_map(|c| c.sorted.last().copied()).fold(lower_bound_s.unwrap_or(0.0), f64::max);
    let x_end = headroom(longest);
    let mut chart = completion_axes(root, title, x_end, "hosts complete (% of all hosts)")?;
    for (i, c) in cdfs.iter().enumerate() {
        let n = c.total.max(1) as f64;
        let mut points = Vec::with_capacity(2 * c.sorted.len() + 1);
        for (k, t) in c.sorted.iter().enumerate() {
            points.push((*t, k as f64 / n));
            points.push((*t, (k + 1) as f64 / n));
        }
        // Hosts that never completed keep the curve below 100 % to the right edge.
        if c.sorted.len() < c.total {
            points.push((x_end, c.sorted.len() as f64 / n));
        }
        let col = color(i);
        let label = if c.sorted.len() < c.total {
            format!("{} ({} of {} hosts complete)", c.label, c.sorted.len(), c.total)
        } else {
            format!("{} ({} hosts)", c.label, c.total)
        };
        chart
            .draw_series(LineSeries::new(points, col.stroke_width(2)))?
            .label(label)
            .legend(line_legend(col));
    }
    if let Some(t) = lower_bound_s {
        chart
            .draw_series(LineSeries::new([(t, 0.0), (t, 1.02)], BLACK.stroke_width(2)))?
            .label(format!("lower bound {t:.3} s"))
            .legend(line_legend(RGBColor(0, 0, 0)));
    }
    legend_box(&mut chart, SeriesLabelPosition::LowerRight)
}

fn timeseries<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    time_s: &[f64],
    throughput: &[f64],
    origin_egress: &[f64],
    active: &[u64],
) -> DrawResult<DB> {
    let root = root.titled(title, caption())?;
    let (top, bottom) = root.split_vertically(root.dim_in_pixel().1 * 58 / 100);
    let t_max = headroom(time_s.last().copied().unwrap_or(0.0)) / 1.08;
    let t_max = if t_max > 0.0 { t_max } else { 1.0 };
    let rate_max = throughput.iter().chain(origin_egress).copied().fold(0.0, f64::max) / GB;
    let mut chart = ChartBuilder::on(&top)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..headroom(rate_max))?;
    chart
        .configure_mesh()
        .y_desc("payload rate (GB/s)")
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .axis_desc_style((FAMILY, 17))
        .label_style((FAMILY, 14))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    for (i, (label, ys)) in
        [("aggregate throughput", throughput), ("origin egress", origin_egress)].into_iter().enumerate()
    {
        let col = color(i);
        chart
            .draw_series(LineSeries::new(
                time_s.iter().zip(ys).map(|(t, y)| (*t, y / GB)),
                col.stroke_width(2),
            ))?
            .label(label)
            .legend(line_legend(col));
    }
    legend_box(&mut chart, SeriesLabelPosition::UpperRight)?;

    let active_max = active.iter().copied().max().unwrap_or(0) as f64;
    let mut chart = ChartBuilder::on(&bottom)
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..t_max, 0.0..headroom(active_max))?;
    chart
        .configure_mesh()
        .x_desc("time since start (s)")
        .x_label_formatter(&tick)
        .y_desc("downloads")
        .y_label_formatter(&|v| format!("{v:.0}"))
        .axis_desc_style((FAMILY, 17))
        .label_style((FAMILY, 14))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    let col = color(2);
    chart
        .draw_series(LineSeries::new(
            time_s.iter().zip(active).map(|(t, a)| (*t, *a as f64)),
            col.stroke_width(2),
        ))?
        .label("blob downloads in progress")
        .legend(line_legend(col));
    legend_box(&mut chart, SeriesLabelPosition::UpperRight)
}

fn bars<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    bars: &[(String, u64)],
) -> DrawResult<DB> {
    let total: u64 = bars.iter().map(|(_, b)| b).sum();
    let y_max = bars.iter().map(|(_, b)| *b as f64 / GB).fold(0.0, f64::max);
    // A segmented range 0..k has k + 1 segments.
    let last = bars.len().saturating_sub(1) as u32;
    let names: Vec<String> = bars.iter().map(|(n, _)| n.clone()).collect();
    let mut chart = ChartBuilder::on(root)
        .caption(title, caption())
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d((0u32..last).into_segmented(), 0.0..headroom(y_max) * 1.1)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_desc("where the payload came from")
        .y_desc("payload received (GB)")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .y_label_formatter(&tick)
        .axis_desc_style((FAMILY, 17))
        .label_style((FAMILY, 15))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    for (i, (name, b)) in bars.iter().enumerate() {
        let col = color(i);
        let gb = *b as f64 / GB;
        let share = if total > 0 { *b as f64 / total as f64 * 100.0 } else { 0.0 };
        let x = i as u32;
        let mut bar =
            Rectangle::new([(SegmentValue::Exact(x), 0.0), (SegmentValue::Exact(x + 1), gb)], col.filled());
        bar.set_margin(0, 0, 20, 20);
        chart
            .draw_series(std::iter::once(bar))?
            .label(format!("{name}: {gb:.2} GB ({share:.1}%)"))
            .legend(box_legend(col));
    }
    legend_box(&mut chart, SeriesLabelPosition::UpperRight)
}

fn intervals<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    categories: &[String],
    series: &[IntervalSeries],
) -> DrawResult<DB> {
    let k = categories.len().max(1);
    let y_max = series.iter().flat_map(|s| s.points.iter().flatten()).map(|p| p.2).fold(0.0, f64::max);
    // Ticks fall on whole numbers (one per category for up to about 20 categories); only those
    // are labelled.
    let x_range = -0.5..k as f64 - 0.5;
    let mut chart = ChartBuilder::on(root)
        .caption(title, caption())
        .margin(16)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(x_range, 0.0..headroom(y_max))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(k + 1)
        .x_desc(x_desc)
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                categories.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc(y_desc)
        .y_label_formatter(&tick)
        .axis_desc_style((FAMILY, 17))
        .label_style((FAMILY, 14))
        .light_line_style(RGBColor(240, 240, 240))
        .draw()?;
    let m = series.len().max(1) as f64;
    for (i, s) in series.iter().enumerate() {
        let col = color(i);
        // Series side by side around each category, so their bars do not hide one another.
        let dx = (i as f64 - (m - 1.0) / 2.0) * (0.5 / m);
        let at = |c: usize| c as f64 + dx;
        let line: Vec<(f64, f64)> =
            s.points.iter().enumerate().filter_map(|(c, p)| p.map(|p| (at(c), p.0))).collect();
        let drawn = chart.draw_series(LineSeries::new(line, col.mix(0.5).stroke_width(1)))?;
        if !s.label.is_empty() {
            drawn.label(s.label.clone()).legend(line_legend(col));
        }
        for (c, p) in s.points.iter().enumerate() {
            let Some((mean, lo, hi)) = *p else { continue };
            let x = at(c);
            let cap = 0.08 / m;
            chart.draw_series([
                PathElement::new(vec![(x, lo), (x, hi)], col.stroke_width(2)),
                PathElement::new(vec![(x - cap, lo), (x + cap, lo)], col.stroke_width(2)),
                PathElement::new(vec![(x - cap, hi), (x + cap, hi)], col.stroke_width(2)),
            ])?;
            chart.draw_series(std::iter::once(Circle::new((x, mean), 4, col.filled())))?;
        }
    }
    if series.iter().any(|s| !s.label.is_empty()) {
        legend_box(&mut chart, SeriesLabelPosition::UpperRight)?;
    }
    Ok(())
}

fn cdf_bands<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    bands: &[CdfBand],
) -> DrawResult<DB> {
    let x_end = headroom(bands.iter().filter_map(|b| b.x.last().copied()).fold(0.0, f64::max));
    let mut chart = completion_axes(root, title, x_end, "hosts complete (all seeds pooled)")?;
    for (i, b) in bands.iter().enumerate() {
        let col = color(i);
        let mut outline: Vec<(f64, f64)> = b.x.iter().copied().zip(b.hi.iter().copied()).collect();
        outline.extend(b.x.iter().copied().zip(b.lo.iter().copied()).rev());
        chart.draw_series(std::iter::once(Polygon::new(outline, col.mix(0.18).filled())))?;
        chart
            .draw_series(LineSeries::new(
                b.x.iter().copied().zip(b.pooled.iter().copied()),
                col.stroke_width(2),
            ))?
            .label(b.label.clone())
            .legend(line_legend(col));
    }
    legend_box(&mut chart, SeriesLabelPosition::LowerRight)
}
