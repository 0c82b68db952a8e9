//! SVG chart of a report: one small bar chart ("panel") per (workload, phase, param), laid out as a
//! grid of small multiples. Every driver keeps the same colour and the same slot in every panel, so
//! a reader compares drivers at a glance; the legend at the top maps colours to drivers.
//!
//! Only plotters' SVG backend is used, without its "ttf" feature: text is written as SVG `<text>`
//! and laid out by the viewer, so no font files or fontconfig/freetype are needed to render. The
//! flip side is that plotters cannot measure text, so long strings are wrapped or shortened here
//! with a conservative width estimate ([`text_width`]).

use crate::report::{Report, Stats, Unit};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use std::path::Path;

const PANEL_W: u32 = 360;
const PANEL_H: u32 = 260;
const MAX_COLS: usize = 3;
/// The header (environment, legend) needs room even when there are only one or two panels.
const MIN_W: u32 = 720;
const PAD: i32 = 12;
const FONT: &str = "sans-serif";

/// Tableau 10: distinct hues that stay apart for most colour-blind readers. Cycles past 10.
const PALETTE: [RGBColor; 10] = [
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
const INK: RGBColor = RGBColor(0x22, 0x22, 0x22);
const MUTED: RGBColor = RGBColor(0x77, 0x77, 0x77);
const GRID: RGBColor = RGBColor(0xe4, 0xe4, 0xe4);
const WARN: RGBColor = RGBColor(0xb0, 0x3a, 0x2e);

/// Writes the chart of `report` to `path` as one SVG file.
pub fn render_svg(report: &Report, path: &Path) -> Result<(), String> {
    let svg = render_svg_string(report)?;
    std::fs::write(path, svg).map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The chart of `report` as an SVG document.
pub fn render_svg_string(report: &Report) -> Result<String, String> {
    let (drivers, panels) = panels(report);
    let cols = panels.len().clamp(1, MAX_COLS);
    let rows = panels.len().div_ceil(MAX_COLS);
    let width = (cols as u32 * PANEL_W).max(MIN_W);

    let header = header_lines(report, width);
    let legend = legend_layout(&drivers, width);
    let legend_rows = legend.iter().map(|item| item.row + 1).max().unwrap_or(0);
    let header_h =
        PAD as u32 + header.iter().map(|l| l.size as u32 + 6).sum::<u32>() + legend_rows * 20 + 6;
    let footer = footer_lines(report, width);
    let footer_h = if footer.is_empty() {
        0
    } else {
        footer.len() as u32 * 16 + PAD as u32
    };
    // An empty report still gets its header, so the reader sees where nothing was measured.
    let body_h = if panels.is_empty() {
        80
    } else {
        rows as u32 * PANEL_H
    };
    let height = header_h + body_h + footer_h;

    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let (top, rest) = root.split_vertically(header_h);
        let (body, bottom) = rest.split_vertically(body_h);

        let mut y = PAD;
        for line in &header {
            let style = font(line.size, line.bold).color(&line.color);
            top.draw(&Text::new(line.text.as_str(), (PAD, y), style))
                .map_err(err)?;
            y += line.size as i32 + 6;
        }
        for item in &legend {
            let (x, ly) = (item.x, y + item.row as i32 * 20);
            let colour = PALETTE[item.slot % PALETTE.len()];
            top.draw(&Rectangle::new(
                [(x, ly), (x + 12, ly + 12)],
                colour.filled(),
            ))
            .map_err(err)?;
            let style = font(12.0, false).color(&INK);
            top.draw(&Text::new(item.text.as_str(), (x + 17, ly), style))
                .map_err(err)?;
        }

        if panels.is_empty() {
            let style = font(18.0, false)
                .color(&MUTED)
                .pos(Pos::new(HPos::Center, VPos::Center));
            body.draw(&Text::new("no results", (width as i32 / 2, 40), style))
                .map_err(err)?;
        } else {
            // Exactly PANEL_W per column, whatever the total width, so panels look alike.
            let (grid, _) = body.split_horizontally(cols as u32 * PANEL_W);
            let areas = grid.split_evenly((rows, cols));
            for (panel, area) in panels.iter().zip(areas.iter()) {
                draw_panel(area, panel, &drivers)?;
            }
        }

        for (i, line) in footer.iter().enumerate() {
            let style = font(11.0, false).color(&MUTED);
            bottom
                .draw(&Text::new(line.as_str(), (PAD, 4 + i as i32 * 16), style))
                .map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(svg)
}

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing the chart: {e}")
}

/// A font whose SVG `font-size` is `px`: plotters writes `size / 1.24` into the SVG, so undo that
/// here to keep sizes (and the width estimates based on them) in real pixels.
fn font(px: f64, bold: bool) -> TextStyle<'static> {
    let style = if bold {
        FontStyle::Bold
    } else {
        FontStyle::Normal
    };
    TextStyle::from(FontDesc::new(FontFamily::Name(FONT), px * 1.24, style))
}

/// Upper bound of the rendered width of `text` in a sans-serif face: 0.6 em per character covers
/// digits and most lower-case letters; capitals run wider, so keep a margin where it matters.
fn text_width(text: &str, px: f64) -> f64 {
    text.chars().count() as f64 * px * 0.6
}

/// Greedy word wrap so that each line stays within `max_px` at `px`.
fn wrap(text: &str, px: f64, max_px: f64) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ').filter(|w| !w.is_empty()) {
        let candidate = if line.is_empty() {
            word.to_string()
        } else {
            format!("{line} {word}")
        };
        if !line.is_empty() && text_width(&candidate, px) > max_px {
            lines.push(std::mem::replace(&mut line, word.to_string()));
        } else {
            line = candidate;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// `text`, shortened with "…" if needed to fit `max_px` at `px`.
fn ellipsize(text: &str, px: f64, max_px: f64) -> String {
    if text_width(text, px) <= max_px {
        return text.to_string();
    }
    let keep = ((max_px / (px * 0.6)) as usize).saturating_sub(1);
    let mut s: String = text.chars().take(keep).collect();
    s.push('…');
    s
}

struct Line {
    text: String,
    size: f64,
    bold: bool,
    color: RGBColor,
}

fn header_lines(report: &Report, width: u32) -> Vec<Line> {
    let max_px = width as f64 - 2.0 * PAD as f64;
    let env = &report.environment;
    let cfg = &report.config;

    let mut title = String::from("blkdrv driver benchmark");
    let mut run = Vec::new();
    if !cfg.scale.is_empty() {
        run.push(format!("scale {}", cfg.scale));
    }
    if cfg.runs > 0 {
        run.push(format!(
            "{} run{} per phase",
            cfg.runs,
            if cfg.runs == 1 { "" } else { "s" }
        ));
    }
    if !run.is_empty() {
        title = format!("{title}: {}", run.join(", "));
    }

    let mut facts = Vec::new();
    if !env.kernel.is_empty() {
        facts.push(format!("kernel {}", env.kernel));
    }
    if !env.cpu.is_empty() {
        facts.push(env.cpu.clone());
    }
    if env.cpus > 0 {
        facts.push(format!("{} cpus", env.cpus));
    }
    if !env.backing.is_empty() {
        facts.push(format!("on {}", env.backing));
    }

    let mut lines = Vec::new();
    let mut push = |text: &str, size: f64, bold: bool, color: RGBColor| {
        for t in wrap(text, size, max_px) {
            lines.push(Line {
                text: t,
                size,
                bold,
                color,
            });
        }
    };
    push(&title, 16.0, true, INK);
    if !facts.is_empty() {
        push(&facts.join(" · "), 12.0, false, INK);
    }
    if env.vm {
        push(
            "(VM, software emulation: compare ratios, not absolute times)",
            12.0,
            true,
            WARN,
        );
    }
    if !report.results.is_empty() {
        push(
            "bar: median of the runs · whisker: min to max · lower is better for times",
            11.0,
            false,
            MUTED,
        );
    }
    lines
}

struct LegendItem {
    slot: usize,
    text: String,
    x: i32,
    row: u32,
}

/// One legend entry per driver, left to right, wrapping onto more rows when they do not fit.
fn legend_layout(drivers: &[String], width: u32) -> Vec<LegendItem> {
    let (mut x, mut row) = (PAD, 0);
    let mut items = Vec::new();
    for (slot, name) in drivers.iter().enumerate() {
        let text = ellipsize(name, 12.0, 200.0);
        let w = 17 + text_width(&text, 12.0).ceil() as i32 + 18;
        if x > PAD && x + w > width as i32 - PAD {
            x = PAD;
            row += 1;
        }
        items.push(LegendItem { slot, text, x, row });
        x += w;
    }
    items
}

/// Drivers or workloads that could not run: said on the chart too, so a missing bar is explained.
fn footer_lines(report: &Report, width: u32) -> Vec<String> {
    const MAX: usize = 6;
    let max_px = width as f64 - 2.0 * PAD as f64;
    let mut lines: Vec<String> = report
        .skipped
        .iter()
        .take(MAX)
        .map(|s| {
            let what = match &s.workload {
                Some(w) => format!("{} / {w}", s.driver),
                None => s.driver.clone(),
            };
            ellipsize(&format!("not run: {what}: {}", s.reason), 11.0, max_px)
        })
        .collect();
    if report.skipped.len() > MAX {
        lines.push(format!(
            "… and {} more not run (see the JSON report)",
            report.skipped.len() - MAX
        ));
    }
    lines
}

/// One small chart: the samples of every driver for one (workload, phase, param).
struct Panel {
    title: String,
    unit: Unit,
    /// Indexed by driver slot; `None` where that driver has no samples here.
    stats: Vec<Option<Stats>>,
    /// Per driver: measured, but the event never happened (space never came back).
    never: Vec<bool>,
}

/// Drivers (in first-appearance order) and panels (in first-appearance order of their key).
fn panels(report: &Report) -> (Vec<String>, Vec<Panel>) {
    let mut drivers: Vec<String> = Vec::new();
    for row in &report.results {
        if !drivers.contains(&row.driver) {
            drivers.push(row.driver.clone());
        }
    }
    // The unit is part of the key only so that a (never expected) mix of units under one name
    // gets two panels instead of one with a meaningless axis.
    type Key<'a> = (&'a str, &'a str, &'a str, Unit);
    let mut keys: Vec<Key> = Vec::new();
    let mut samples: Vec<Vec<Vec<f64>>> = Vec::new();
    for row in &report.results {
        let key = (
            row.workload.as_str(),
            row.phase.as_str(),
            row.param.as_str(),
            row.unit,
        );
        let k = match keys.iter().position(|k| *k == key) {
            Some(k) => k,
            None => {
                keys.push(key);
                samples.push(vec![Vec::new(); drivers.len()]);
                keys.len() - 1
            }
        };
        let d = drivers.iter().position(|d| *d == row.driver).unwrap_or(0);
        // A driver measured twice for the same panel: pool the samples rather than drop one.
        samples[k][d].extend_from_slice(row.samples());
    }
    // The same order as the table: workload order, then phases as first measured.
    let order = crate::panels(report);
    let rank = |k: &Key| {
        order
            .iter()
            .position(|(w, p, q)| w == k.0 && p == k.1 && q == k.2)
            .unwrap_or(usize::MAX)
    };
    let mut pairs: Vec<(Key, Vec<Vec<f64>>)> = keys.into_iter().zip(samples).collect();
    pairs.sort_by_key(|(k, _)| rank(k));
    let panels = pairs
        .into_iter()
        .map(|((workload, phase, param, unit), per_driver)| Panel {
            title: if param.is_empty() {
                format!("{workload} · {phase}")
            } else {
                format!("{workload} · {phase} ({param})")
            },
            unit,
            // Infinite samples ("did not happen in time") cannot be drawn: a median that is
            // one says "timeout" in the slot (as the table does); otherwise the bar and
            // whisker show the finite samples.
            stats: per_driver
                .iter()
                .map(|s| {
                    if Stats::of(s).is_some_and(|st| st.median.is_infinite()) {
                        return None;
                    }
                    let finite: Vec<f64> = s.iter().copied().filter(|x| x.is_finite()).collect();
                    Stats::of(&finite)
                })
                .collect(),
            never: per_driver
                .iter()
                .map(|s| Stats::of(s).is_some_and(|st| st.median.is_infinite()))
                .collect(),
        })
        .collect();
    (drivers, panels)
}

/// The display unit for a panel: a factor from the row's unit and the axis label.
fn display_unit(unit: Unit, largest: f64) -> (f64, &'static str) {
    match unit {
        Unit::Bytes => (1.0 / (1024.0 * 1024.0), "space (MiB)"),
        Unit::Seconds if largest >= 1.0 || largest == 0.0 => (1.0, "time (s)"),
        Unit::Seconds if largest >= 1e-3 => (1e3, "time (ms)"),
        Unit::Seconds => (1e6, "time (µs)"),
    }
}

/// Three significant digits at most: enough to compare bars, short enough to sit above one.
fn short_number(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        return "0".into();
    }
    let decimals = (2 - a.log10().floor() as i32).clamp(0, 6) as usize;
    trim_zeros(format!("{v:.decimals$}"))
}

/// "4.10" -> "4.1", "31.0" -> "31": less ink for the same information.
fn trim_zeros(s: String) -> String {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Axis tick label: one more decimal than the tick spacing needs (plotters may pick steps such as
/// 0.25), then trailing zeros trimmed.
fn tick_label(v: f64, span: f64) -> String {
    let step = span / 5.0;
    if v.abs() < step * 1e-6 {
        return "0".into();
    }
    let decimals = ((-step.log10()).ceil().max(0.0) as usize + 1).min(8);
    trim_zeros(format!("{v:.decimals$}"))
}

fn draw_panel(
    area: &DrawingArea<SVGBackend, Shift>,
    panel: &Panel,
    drivers: &[String],
) -> Result<(), String> {
    const Y_LABELS_W: u32 = 58;
    const MARGIN: u32 = 10;
    let n = drivers.len().max(1);

    let largest = panel
        .stats
        .iter()
        .flatten()
        .map(|s| s.max.abs().max(s.min.abs()))
        .fold(0.0, f64::max);
    let (factor, desc) = display_unit(panel.unit, largest);
    let stats: Vec<Option<Stats>> = panel
        .stats
        .iter()
        .map(|s| {
            s.map(|s| Stats {
                min: s.min * factor,
                median: s.median * factor,
                max: s.max * factor,
            })
        })
        .collect();
    let lo = stats.iter().flatten().map(|s| s.min).fold(0.0, f64::min);
    let hi = stats.iter().flatten().map(|s| s.max).fold(0.0, f64::max);
    // Bars start at zero; the 15% headroom holds the value labels. An all-zero panel would give
    // an empty range, so fall back to a unit range then.
    let y_lo = if lo < 0.0 { lo * 1.15 } else { 0.0 };
    let y_hi = if hi > 0.0 {
        hi * 1.15
    } else if y_lo < 0.0 {
        -y_lo * 0.1
    } else {
        1.0
    };
    let span = y_hi - y_lo;

    let title_max = (PANEL_W - 2 * MARGIN) as f64;
    let title_px = if text_width(&panel.title, 13.0) <= title_max {
        13.0
    } else {
        11.0
    };
    let title = ellipsize(&panel.title, title_px, title_max);

    let mut chart = ChartBuilder::on(area)
        .margin(MARGIN)
        .caption(title, font(title_px, true).color(&INK))
        .x_label_area_size(0)
        .y_label_area_size(Y_LABELS_W)
        .build_cartesian_2d(0.0..n as f64, y_lo..y_hi)
        .map_err(err)?;
    // No x labels: driver names do not fit under narrow bars; slots and colours are the same in
    // every panel and the legend names them.
    let ticks = |v: &f64| tick_label(*v, span);
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .y_labels(5)
        .y_label_formatter(&ticks)
        .y_desc(desc)
        .label_style(font(10.0, false).color(&INK))
        .axis_desc_style(font(11.0, false).color(&INK))
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .axis_style(MUTED)
        .draw()
        .map_err(err)?;

    let plot_w = (PANEL_W - 2 * MARGIN - Y_LABELS_W) as f64;
    let slot_px = plot_w / n as f64;
    let label = font(10.0, false).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (i, s) in stats.iter().enumerate() {
        let x = i as f64 + 0.5;
        let Some(s) = s else {
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((x, 0.0))
                        + Text::new(
                            if panel.never.get(i).copied().unwrap_or(false) {
                                "timeout"
                            } else {
                                "n/a"
                            },
                            (0, -3),
                            label.clone().color(&MUTED),
                        ),
                ))
                .map_err(err)?;
            continue;
        };
        let colour = PALETTE[i % PALETTE.len()];
        chart
            .draw_series(std::iter::once(Rectangle::new(
                [(x - 0.35, 0.0), (x + 0.35, s.median)],
                colour.filled(),
            )))
            .map_err(err)?;
        if s.max > s.min {
            let whisker = INK.stroke_width(1);
            let cap = 0.12;
            chart
                .draw_series([
                    PathElement::new(vec![(x, s.min), (x, s.max)], whisker),
                    PathElement::new(vec![(x - cap, s.min), (x + cap, s.min)], whisker),
                    PathElement::new(vec![(x - cap, s.max), (x + cap, s.max)], whisker),
                ])
                .map_err(err)?;
        }
        let value = short_number(s.median);
        // Skip the number rather than let it run into the neighbouring bar's.
        if text_width(&value, 10.0) <= slot_px - 4.0 {
            chart
                .draw_series(std::iter::once(
                    EmptyElement::at((x, s.max.max(s.median).max(0.0)))
                        + Text::new(value, (0, -3), label.clone().color(&INK)),
                ))
                .map_err(err)?;
        }
    }
    // Zero line, drawn last so it stays visible under short bars.
    chart
        .draw_series(std::iter::once(PathElement::new(
            vec![(0.0, 0.0), (n as f64, 0.0)],
            INK.stroke_width(1),
        )))
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Environment, ResultRow, RunConfig, Skipped};

    fn row(
        driver: &str,
        workload: &str,
        phase: &str,
        param: &str,
        unit: Unit,
        v: &[f64],
    ) -> ResultRow {
        ResultRow::new(driver, workload, phase, param, unit, v.to_vec())
    }

    fn report(results: Vec<ResultRow>) -> Report {
        Report {
            schema: crate::report::SCHEMA,
            environment: Environment {
                kernel: "6.1.0-18-amd64".into(),
                cpu: "Intel(R) Xeon(R) CPU E5-2680 v4 @ 2.40GHz".into(),
                cpus: 4,
                vm: true,
                backing: "loopback files on ext4 (/var/tmp/bench)".into(),
                ..Default::default()
            },
            config: RunConfig {
                scale: "quick".into(),
                runs: 5,
                ..Default::default()
            },
            results,
            skipped: vec![],
        }
    }

    fn two_by_two() -> Report {
        report(vec![
            row(
                "vfs",
                "create",
                "blkdrv",
                "parent 1 MiB",
                Unit::Seconds,
                &[0.012, 0.010, 0.015],
            ),
            row(
                "btrfs",
                "create",
                "blkdrv",
                "parent 1 MiB",
                Unit::Seconds,
                &[0.002, 0.003, 0.0025],
            ),
            row(
                "vfs",
                "density",
                "pool_used",
                "",
                Unit::Bytes,
                &[3.0e8, 3.1e8],
            ),
            row(
                "btrfs",
                "density",
                "pool_used",
                "",
                Unit::Bytes,
                &[2.0e7, 2.0e7],
            ),
        ])
    }

    /// The contents of the SVG's `<text>` elements, trimmed (plotters ends each with a newline).
    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|t| {
                let body = &t[t.find('>')? + 1..t.find("</text>")?];
                Some(body.trim().replace("&amp;", "&"))
            })
            .collect()
    }

    #[test]
    fn renders_every_driver_and_panel_title() {
        let svg = render_svg_string(&two_by_two()).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
        let texts = texts(&svg);
        for exact in [
            "vfs",
            "btrfs",
            "create · blkdrv (parent 1 MiB)",
            "density · pool_used",
            "time (ms)",
            "space (MiB)",
        ] {
            assert!(
                texts.iter().any(|t| t == exact),
                "missing {exact:?} in {texts:?}"
            );
        }
        // The environment lines may wrap anywhere between words.
        let all = texts.join(" ");
        for part in [
            "kernel 6.1.0-18-amd64",
            "4 cpus",
            "scale quick",
            "5 runs",
            "compare ratios, not absolute times",
        ] {
            assert!(all.contains(part), "missing {part:?} in {all:?}");
        }
        assert!(!svg.contains("NaN") && !svg.contains("inf\""));
    }

    #[test]
    fn empty_report_says_no_results() {
        let svg = render_svg_string(&Report::default()).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(texts(&svg).iter().any(|t| t == "no results"));
    }

    #[test]
    fn zeros_and_missing_drivers_do_not_break_the_axes() {
        let r = report(vec![
            row("vfs", "remove", "raw", "", Unit::Seconds, &[0.0, 0.0]),
            row("btrfs", "remove", "raw", "", Unit::Seconds, &[]),
            row("vfs", "density", "freed", "", Unit::Bytes, &[0.0]),
            row("dm", "density", "freed", "", Unit::Bytes, &[0.0]),
        ]);
        let svg = render_svg_string(&r).unwrap();
        assert!(!svg.contains("NaN") && !svg.contains("inf\""));
        assert!(
            texts(&svg).iter().any(|t| t == "n/a"),
            "absent drivers are marked"
        );
    }

    #[test]
    fn picks_a_readable_time_unit() {
        assert_eq!(display_unit(Unit::Seconds, 2.5).1, "time (s)");
        assert_eq!(display_unit(Unit::Seconds, 0.0042).1, "time (ms)");
        assert_eq!(display_unit(Unit::Seconds, 4.2e-5).1, "time (µs)");
        assert_eq!(display_unit(Unit::Seconds, 0.0).1, "time (s)");
        assert_eq!(display_unit(Unit::Bytes, 1.0).1, "space (MiB)");
        assert_eq!(short_number(123.456), "123");
        assert_eq!(short_number(1.23456), "1.23");
        assert_eq!(short_number(4.1), "4.1");
        assert_eq!(short_number(31.0), "31");
        assert_eq!(short_number(0.0123456), "0.0123");
        assert_eq!(tick_label(0.25, 1.15), "0.25");
        assert_eq!(tick_label(200.0, 1150.0), "200");
    }

    #[test]
    fn panels_follow_workload_order_and_skips_are_shown() {
        let mut r = two_by_two();
        r.results.swap(0, 2);
        r.skipped.push(Skipped {
            driver: "devicemapper".into(),
            workload: None,
            reason: "dm_thin_pool module not loaded".into(),
        });
        let (drivers, panels) = panels(&r);
        assert_eq!(drivers, ["vfs", "btrfs"]);
        // Measured density first, but create comes first in the workload order (as in the table).
        assert_eq!(panels[0].title, "create · blkdrv (parent 1 MiB)");
        assert_eq!(panels[1].title, "density · pool_used");
        let svg = render_svg_string(&r).unwrap();
        assert!(svg.contains("not run: devicemapper: dm_thin_pool module not loaded"));
    }

    #[test]
    fn long_environment_lines_wrap() {
        let lines = wrap(&"word ".repeat(100), 12.0, 300.0);
        assert!(lines.len() > 1);
        assert!(lines.iter().all(|l| text_width(l, 12.0) <= 300.0));
    }

    #[test]
    fn render_svg_writes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        render_svg(&two_by_two(), &path).unwrap();
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("<svg"));
    }
}
