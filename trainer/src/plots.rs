//! The evaluation report's pictures as PNG, drawn with `plotters` into an
//! RGB buffer and encoded by `image`: no Python, no system fonts (DejaVu Sans
//! is compiled in), so a report renders the same on every machine.

use std::path::Path;
use std::sync::OnceLock;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

use crate::eval::{ReliabilityBin, WithCi};
use crate::TrainerError;

/// One label's ROC curve.
#[derive(Debug, Clone)]
pub struct RocPanel {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub auroc: Option<WithCi>,
    pub positives: usize,
    pub negatives: usize,
}

/// One label's coverage-risk curve and where the shipped rule sits on it.
#[derive(Debug, Clone)]
pub struct RiskCurve {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// `(coverage, risk)` of the deployed calls (gates and Uncertain band).
    pub deployed: Option<(f64, f64)>,
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;
type DrawResult = Result<(), Box<dyn std::error::Error>>;

const FONT: &str = "sans-serif";

fn register_font() -> Result<(), TrainerError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    ok.then_some(()).ok_or_else(|| {
        TrainerError::invalid(
            "plot font",
            "the compiled-in DejaVu Sans did not load".into(),
            "rebuild the trainer",
        )
    })
}

/// Draw a `width`×`height` picture with `draw` and write it as PNG.
fn render(
    path: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&Area<'_>) -> DrawResult,
) -> Result<(), TrainerError> {
    register_font()?;
    let mut buf = vec![255u8; width as usize * height as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (width, height)).into_drawing_area();
        draw(&root)
            .and_then(|()| root.present().map_err(Into::into))
            .map_err(|e| {
                TrainerError::invalid("plot", e.to_string(), "report this with the data used")
            })?;
    }
    let picture = image::RgbImage::from_raw(width, height, buf)
        .ok_or_else(|| TrainerError::invalid("plot", "buffer size".into(), "report this"))?;
    // Best compression: the reports are committed beside their Markdown.
    let file = std::fs::File::create(path).map_err(|e| TrainerError::io("creating", path, e))?;
    let encoder = image::codecs::png::PngEncoder::new_with_quality(
        std::io::BufWriter::new(file),
        image::codecs::png::CompressionType::Best,
        image::codecs::png::FilterType::Adaptive,
    );
    picture
        .write_with_encoder(encoder)
        .map_err(|e| TrainerError::io("writing", path, e))
}

fn colour(i: usize) -> RGBColor {
    const COLOURS: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
        RGBColor(255, 127, 14),
        RGBColor(23, 190, 207),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
    ];
    COLOURS[i % COLOURS.len()]
}

fn auroc_text(a: &Option<WithCi>) -> String {
    match a {
        Some(w) if w.resamples > 0 => format!("AUROC {:.3} ({:.3}-{:.3})", w.value, w.low, w.high),
        Some(w) => format!("AUROC {:.3} (no interval)", w.value),
        None => "AUROC -".into(),
    }
}

type UnitChart<'a, 'b> =
    ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A unit square chart with its axes and the grey diagonal (chance for a
/// ROC curve, perfect calibration for a reliability diagram).
fn unit_square<'a, 'b>(
    area: &'a Area<'b>,
    title: &str,
    title_size: u32,
    (x_desc, y_desc): (&str, &str),
) -> Result<UnitChart<'a, 'b>, Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, title_size))
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(42)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_labels(6)
        .y_labels(6)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 12))
        .light_line_style(WHITE.mix(0.0))
        .draw()?;
    chart.draw_series(LineSeries::new(
        [(0.0, 0.0), (1.0, 1.0)],
        RGBColor(150, 150, 150),
    ))?;
    Ok(chart)
}

fn roc_panel(area: &Area<'_>, p: &RocPanel) -> DrawResult {
    let title = format!("{} (+{} / -{})", p.label, p.positives, p.negatives);
    let mut chart = unit_square(area, &title, 16, ("1 - specificity", "sensitivity"))?;
    chart.draw_series(LineSeries::new(
        p.points.iter().copied(),
        colour(0).stroke_width(2),
    ))?;
    // Bottom right, below the chance line, where a useful curve never runs.
    let (w, h) = area.dim_in_pixel();
    area.draw(&Text::new(
        auroc_text(&p.auroc),
        (w as i32 - 200, h as i32 - 62),
        (FONT, 13).into_font().color(&BLACK),
    ))?;
    Ok(())
}

/// Per-label ROC curves, four to a row, each with its AUROC and interval.
pub fn roc_grid(path: &Path, panels: &[RocPanel]) -> Result<(), TrainerError> {
    let columns = panels.len().clamp(1, 4);
    let rows = panels.len().div_ceil(columns).max(1);
    let size = (320 * columns as u32, 320 * rows as u32);
    render(path, size, |root| {
        root.fill(&WHITE)?;
        let cells = root.split_evenly((rows, columns));
        for (cell, panel) in cells.iter().zip(panels) {
            roc_panel(cell, panel)?;
        }
        Ok(())
    })
}

fn reliability_panel(area: &Area<'_>, title: &str, bins: &[ReliabilityBin]) -> DrawResult {
    let axes = (
        "predicted probability (bin mean)",
        "observed positive share",
    );
    let mut chart = unit_square(area, title, 17, axes)?;
    let total: usize = bins.iter().map(|b| b.count).sum::<usize>().max(1);
    // Bars of each bin's share of the studies, along the bottom.
    chart.draw_series(bins.iter().map(|b| {
        let h = 0.25 * b.count as f64 / total as f64;
        Rectangle::new([(b.low, 0.0), (b.high, h)], colour(5).mix(0.35).filled())
    }))?;
    chart.draw_series(LineSeries::new(
        bins.iter().map(|b| (b.predicted, b.observed)),
        colour(1).stroke_width(2),
    ))?;
    chart.draw_series(
        bins.iter()
            .map(|b| Circle::new((b.predicted, b.observed), 4, colour(1).filled())),
    )?;
    Ok(())
}

/// Reliability before and after the bundle's temperature scaling, side by
/// side, each titled with its ECE.
pub fn reliability_pair(
    path: &Path,
    before: (&[ReliabilityBin], Option<f64>),
    after: (&[ReliabilityBin], Option<f64>),
) -> Result<(), TrainerError> {
    let title = |name: &str, ece: Option<f64>| match ece {
        Some(e) => format!("{name} (ECE {e:.3})"),
        None => name.to_owned(),
    };
    render(path, (1000, 500), |root| {
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(500);
        reliability_panel(
            &left,
            &title("before temperature scaling", before.1),
            before.0,
        )?;
        reliability_panel(&right, &title("after (as deployed)", after.1), after.0)?;
        Ok(())
    })
}

/// Coverage-risk curves, one per label, with the shipped rule's point.
pub fn coverage_risk(path: &Path, curves: &[RiskCurve]) -> Result<(), TrainerError> {
    let top = curves
        .iter()
        .flat_map(|c| c.points.iter().map(|p| p.1).chain(c.deployed.map(|d| d.1)))
        .fold(0.05f64, f64::max)
        .min(1.0)
        * 1.1;
    render(path, (900, 560), |root| {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(
                "Coverage and risk: most confident studies first (line); the shipped rule (cross)",
                (FONT, 17),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..1f64, 0f64..top)?;
        chart
            .configure_mesh()
            .x_desc("coverage (share of studies with the label known that get a call)")
            .y_desc("risk (share of those calls that are wrong)")
            .label_style((FONT, 12))
            .axis_desc_style((FONT, 13))
            .light_line_style(WHITE.mix(0.0))
            .draw()?;
        for (i, c) in curves.iter().enumerate() {
            let style = colour(i).stroke_width(2);
            chart
                .draw_series(LineSeries::new(c.points.iter().copied(), style))?
                .label(c.label.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], style));
            if let Some(d) = c.deployed {
                chart.draw_series([Cross::new(d, 7, colour(i).stroke_width(3))])?;
            }
        }
        chart
            .configure_series_labels()
            .label_font((FONT, 13))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()?;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ink(path: &Path) -> (u32, u32, usize) {
        let p = image::open(path).unwrap().to_rgb8();
        let coloured = p.pixels().filter(|px| px.0 != [255, 255, 255]).count();
        (p.width(), p.height(), coloured)
    }

    #[test]
    fn each_picture_is_a_png_with_something_drawn() {
        let dir = std::env::temp_dir().join(format!("cxr-plots-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let roc = RocPanel {
            label: "Pneumonia".into(),
            points: vec![(0.0, 0.0), (0.2, 0.7), (1.0, 1.0)],
            auroc: Some(WithCi {
                value: 0.8,
                low: 0.7,
                high: 0.9,
                resamples: 500,
            }),
            positives: 10,
            negatives: 30,
        };
        let panels = vec![roc.clone(); 5];
        roc_grid(&dir.join("roc.png"), &panels).unwrap();
        // The curve itself is drawn: the same panels without it have less ink.
        let bare = RocPanel {
            points: Vec::new(),
            ..roc.clone()
        };
        roc_grid(&dir.join("bare.png"), &vec![bare; 5]).unwrap();
        assert!(ink(&dir.join("roc.png")).2 > ink(&dir.join("bare.png")).2 + 500);
        assert_eq!(ink(&dir.join("roc.png")).0, 1280);
        assert_eq!(ink(&dir.join("roc.png")).1, 640);
        let bins = crate::eval::reliability(&[0.1, 0.4, 0.8], &[0.0, 1.0, 1.0], &[1.0; 3], 10);
        reliability_pair(&dir.join("rel.png"), (&bins, Some(0.2)), (&bins, None)).unwrap();
        let curve = RiskCurve {
            label: "Pneumonia".into(),
            points: vec![(0.1, 0.0), (0.5, 0.2), (0.9, 0.3)],
            deployed: Some((0.4, 0.1)),
        };
        coverage_risk(&dir.join("risk.png"), &[curve]).unwrap();
        for name in ["roc.png", "rel.png", "risk.png"] {
            let (w, h, coloured) = ink(&dir.join(name));
            // Axes, text and curves: a real share of the picture, not a blank.
            assert!(coloured > (w * h) as usize / 200, "{name}: {coloured}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
