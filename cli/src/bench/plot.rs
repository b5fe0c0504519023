//! `--plot FILE.svg`: latency percentiles and throughput per batch size, with the raw disk's
//! limit drawn as a reference line.

use std::path::Path;

use plotters::prelude::*;

use super::Report;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn find<'a>(rep: &'a Report, name: &str) -> Option<&'a super::Row> {
    rep.rows.iter().find(|r| r.name == name)
}

/// Draws the report into an SVG file.
///
/// # Errors
/// Writing the file.
pub fn svg(rep: &Report, path: &Path) -> Result<(), Error> {
    let root = SVGBackend::new(path, (1100, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let (left, right) = root.split_horizontally(550);

    // Left: latency percentiles of the durable-append workloads.
    let lat: Vec<(&str, &super::Row)> = [
        ("batch 1", "append batch=1"),
        ("batch 16", "append batch=16"),
        ("batch 256", "append batch=256"),
        ("2 writers", "concurrent appenders=2"),
        ("4 writers", "concurrent appenders=4"),
        ("8 writers", "concurrent appenders=8"),
    ]
    .iter()
    .filter_map(|(label, name)| find(rep, name).map(|r| (*label, r)))
    .collect();
    let ymax = lat.iter().map(|(_, r)| r.p999_us).fold(1.0f64, f64::max) * 1.2;
    let mut c = ChartBuilder::on(&left)
        .caption("durable append latency (µs)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(
            0f64..(lat.len().max(1) as f64 - 0.5),
            (1f64..ymax).log_scale(),
        )?;
    let labels: Vec<String> = lat.iter().map(|(l, _)| l.to_string()).collect();
    c.configure_mesh()
        .x_labels(lat.len().max(1))
        .x_label_formatter(&|x| {
            let i = x.round() as usize;
            if (x - i as f64).abs() < 0.01 {
                labels.get(i).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .y_desc("µs")
        .draw()?;
    for (name, color, pick) in [
        (
            "p50",
            &BLUE,
            (|r: &super::Row| r.p50_us) as fn(&super::Row) -> f64,
        ),
        ("p99", &RED, |r: &super::Row| r.p99_us),
        ("p99.9", &BLACK, |r: &super::Row| r.p999_us),
    ] {
        let pts: Vec<(f64, f64)> = lat
            .iter()
            .enumerate()
            .map(|(i, (_, r))| (i as f64, pick(r)))
            .collect();
        c.draw_series(LineSeries::new(pts.clone(), color))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        c.draw_series(pts.iter().map(|p| Circle::new(*p, 3, color.filled())))?;
    }
    if let Some(raw) = find(rep, "raw fdatasync 320B") {
        c.draw_series(LineSeries::new(
            vec![(0.0, raw.p50_us), (lat.len() as f64 - 0.5, raw.p50_us)],
            GREEN.stroke_width(2),
        ))?
        .label("raw fdatasync p50")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], GREEN));
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;

    // Right: throughput (MB/s) per batch size, with the raw disk's for the same bytes.
    let sizes: Vec<(u64, Option<&super::Row>, Option<&super::Row>)> = [1u64, 16, 256]
        .iter()
        .map(|&n| {
            let eng = find(rep, &format!("append batch={n}"));
            let raw = eng
                .and_then(|r| r.baseline.as_deref())
                .and_then(|b| find(rep, b));
            (n, eng, raw)
        })
        .collect();
    let big = find(rep, "append 1MiB batches + compaction");
    let big_raw = find(rep, "raw write+fdatasync 1MiB");
    let ymax = sizes
        .iter()
        .filter_map(|(_, e, r)| Some((*e)?.mb_per_sec.max((*r)?.mb_per_sec)))
        .chain(big.map(|b| b.mb_per_sec))
        .chain(big_raw.map(|b| b.mb_per_sec))
        .fold(1.0f64, f64::max)
        * 1.3;
    let mut c = ChartBuilder::on(&right)
        .caption("durable append throughput (MB/s)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            (0.5f64..4096.0 * 2.0).log_scale(),
            (0.1f64..ymax).log_scale(),
        )?;
    c.configure_mesh()
        .x_desc("entries of 256 B per batch (1 MiB batch at 4096)")
        .y_desc("MB/s")
        .draw()?;
    let pts = |f: fn(&super::Row) -> f64, raw: bool| -> Vec<(f64, f64)> {
        let mut v: Vec<(f64, f64)> = sizes
            .iter()
            .filter_map(|(n, e, r)| {
                Some((*n as f64, f(if raw { r.as_ref()? } else { e.as_ref()? })))
            })
            .collect();
        if let Some(b) = if raw { big_raw } else { big } {
            v.push((4096.0, f(b)));
        }
        v
    };
    let eng = pts(|r| r.mb_per_sec, false);
    let raw = pts(|r| r.mb_per_sec, true);
    c.draw_series(LineSeries::new(raw.clone(), GREEN.stroke_width(2)))?
        .label("raw write+fdatasync (same bytes)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], GREEN));
    c.draw_series(LineSeries::new(eng.clone(), &BLUE))?
        .label("raftwal store_logs")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLUE));
    c.draw_series(eng.iter().map(|p| Circle::new(*p, 3, BLUE.filled())))?;
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
