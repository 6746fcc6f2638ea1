//! The result picture: one greyscale image per study version for people
//! and for PACS viewers that cannot show an SR. It shows the model input
//! exactly as the engine saw it, the findings with probability, threshold
//! and call (an abstention shows its reason and no probability), the
//! gates, the model, and "AI result, unverified: not for diagnosis without
//! review" at the top and the bottom.
//!
//! Lettering is the 8x8 Basic Latin glyphs of `font8x8` (public domain data,
//! MIT crate) drawn at twice their size: compiled in, no font file, no
//! network. Characters outside printable ASCII are drawn as `?`.

use std::io::Cursor;

use image::GrayImage;

use crate::result::{Finding, StudyResult};
use crate::ReportError;

pub const WIDTH: u32 = 1280;
const MIN_HEIGHT: u32 = 760;
/// Each glyph is drawn at this multiple of 8 pixels.
const SCALE: u32 = 2;
const LINE: u32 = 8 * SCALE + 6;
const IMAGE_BOX: u32 = 512;
const MARGIN: u32 = 16;
const COLUMN_X: u32 = MARGIN * 2 + IMAGE_BOX;
/// Characters per line in the text column.
const COLUMN_CHARS: usize = ((WIDTH - COLUMN_X - MARGIN) / (8 * SCALE)) as usize;
const WARNING: &str = "AI RESULT, UNVERIFIED: NOT FOR DIAGNOSIS WITHOUT REVIEW";

/// What the picture shows besides the study result itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PictureFacts {
    /// The deciding instance's model input: width, height, 8-bit grey rows.
    pub image: Option<(u32, u32, Vec<u8>)>,
    /// One line per gate, e.g. `input: frontal_chest (passed)`.
    pub gates: Vec<String>,
    /// The engine that ran, and why it was chosen.
    pub engine: Option<String>,
    /// Whether the engine ran on the image (no gate stopped the study first).
    pub model_ran: bool,
}

fn glyph(c: char) -> [u8; 8] {
    let c = match c {
        '\u{2013}' | '\u{2014}' | '\u{2212}' => '-',
        '\u{2018}' | '\u{2019}' => '\'',
        '\u{201c}' | '\u{201d}' => '"',
        other => other,
    };
    let code = c as u32;
    let printable = (0x20..0x7f).contains(&code);
    font8x8::legacy::BASIC_LEGACY[if printable {
        code as usize
    } else {
        '?' as usize
    }]
}

/// Draw `text` with its top-left corner at (x, y), clipped to the picture.
fn write(img: &mut GrayImage, x: u32, y: u32, text: &str, shade: u8) {
    for (i, c) in text.chars().enumerate() {
        let rows = glyph(c);
        let left = x + i as u32 * 8 * SCALE;
        for (r, bits) in rows.iter().enumerate() {
            for b in 0..8u32 {
                if bits >> b & 1 == 0 {
                    continue;
                }
                for dy in 0..SCALE {
                    for dx in 0..SCALE {
                        let (px, py) = (left + b * SCALE + dx, y + r as u32 * SCALE + dy);
                        if px < img.width() && py < img.height() {
                            img.put_pixel(px, py, image::Luma([shade]));
                        }
                    }
                }
            }
        }
    }
}

fn fill(img: &mut GrayImage, y0: u32, y1: u32, shade: u8) {
    for y in y0..y1.min(img.height()) {
        for x in 0..img.width() {
            img.put_pixel(x, y, image::Luma([shade]));
        }
    }
}

/// The model input, scaled to fit the box (nearest neighbour: no pixel is
/// invented), framed.
fn draw_image(img: &mut GrayImage, facts: &PictureFacts, top: u32) {
    let Some((w, h, pixels)) = &facts.image else {
        write(
            img,
            MARGIN + 16,
            top + IMAGE_BOX / 2,
            "NO IMAGE: THE MODEL",
            200,
        );
        write(
            img,
            MARGIN + 16,
            top + IMAGE_BOX / 2 + LINE,
            "DID NOT SEE THIS STUDY",
            200,
        );
        return;
    };
    let (w, h) = (*w, *h);
    let expected = (w as usize).checked_mul(h as usize);
    if w == 0 || h == 0 || expected != Some(pixels.len()) {
        return;
    }
    let scale = (IMAGE_BOX as f32 / w as f32).min(IMAGE_BOX as f32 / h as f32);
    let (sw, sh) = ((w as f32 * scale) as u32, (h as f32 * scale) as u32);
    for y in 0..sh {
        for x in 0..sw {
            let sx = ((x as f32 / scale) as u32).min(w - 1);
            let sy = ((y as f32 / scale) as u32).min(h - 1);
            let v = pixels[sy as usize * w as usize + sx as usize];
            img.put_pixel(MARGIN + x, top + y, image::Luma([v]));
        }
    }
}

/// Split `text` into lines of at most `width` characters, at spaces where possible.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let mut word: String = word.to_owned();
        while word.chars().count() > width {
            let head: String = word.chars().take(width).collect();
            word = word.chars().skip(width).collect();
            if !line.is_empty() {
                lines.push(std::mem::take(&mut line));
            }
            lines.push(head);
        }
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > width {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

fn call_name(f: Finding) -> &'static str {
    match f {
        Finding::Present => "PRESENT",
        Finding::Absent => "absent",
        Finding::Indeterminate => "indeterminate",
    }
}

/// The text column, line by line.
fn column(result: &StudyResult, facts: &PictureFacts) -> Vec<String> {
    let h = &result.header;
    let mut lines = vec![
        format!("ACCESSION {}", h.accession_number.as_deref().unwrap_or("-")),
        format!("STUDY DATE {}", h.study_date.as_deref().unwrap_or("-")),
        format!("RESULT VERSION {}", result.version),
        String::new(),
    ];
    let abstained = !result.outcome.carries_calls();
    if abstained {
        lines.push(format!(
            "NO DECISION: {}",
            result.outcome.as_str().to_uppercase()
        ));
        if let Some(r) = &result.reason {
            lines.extend(wrap(&format!("{}: {}", r.code, r.message), COLUMN_CHARS));
        }
    } else {
        lines.push(result.outcome.as_str().to_uppercase());
        lines.extend(wrap(
            &result.findings_summary().to_uppercase(),
            COLUMN_CHARS,
        ));
    }
    for f in &result.flags {
        lines.push(format!("FLAG {}", f.as_str().to_uppercase()));
    }
    lines.push(String::new());
    lines.push(format!("{:<18} {:>5} {:>5} CALL", "FINDING", "PROB", "CUT"));
    for l in &result.labels {
        // An abstained study publishes no per-label probability anywhere.
        let probability = match (abstained, l.probability) {
            (false, Some(p)) => format!("{p:.3}"),
            _ => "-".into(),
        };
        // As on the page: an abstention shows no number, and a label with
        // no operating point shows none, never a threshold.
        let threshold = match (abstained, l.threshold) {
            (true, _) => "-".into(),
            (false, Some(t)) if t.is_finite() => format!("{t:.3}"),
            (false, _) => "NO OP".into(),
        };
        let name: String = l.label.chars().take(18).collect();
        lines.push(format!(
            "{name:<18} {probability:>5} {threshold:>5} {}",
            call_name(l.finding)
        ));
    }
    lines.push(String::new());
    lines.push("GATES".into());
    for g in &facts.gates {
        lines.extend(wrap(g, COLUMN_CHARS));
    }
    lines.push(String::new());
    if let Some(m) = &result.model {
        let digest: String = m.digest.chars().take(12).collect();
        lines.extend(wrap(
            &format!("MODEL {} v{} {digest}", m.model_id, m.version),
            COLUMN_CHARS,
        ));
    }
    if let Some(e) = &facts.engine {
        lines.extend(wrap(&format!("ENGINE {e}"), COLUMN_CHARS));
    }
    lines
}

/// Draw the picture of `result`.
pub fn draw(result: &StudyResult, facts: &PictureFacts) -> GrayImage {
    let lines = column(result, facts);
    let banner = LINE + 12;
    let body = (lines.len() as u32 * LINE).max(IMAGE_BOX) + 2 * MARGIN;
    let height = (2 * banner + body).max(MIN_HEIGHT);
    let mut img = GrayImage::new(WIDTH, height);
    fill(&mut img, 0, banner, 255);
    write(&mut img, MARGIN, 8, WARNING, 0);
    draw_image(&mut img, facts, banner + MARGIN);
    let caption = if facts.model_ran {
        "MODEL INPUT AS THE ENGINE SAW IT"
    } else {
        "INPUT AS PREPARED; MODEL NOT RUN"
    };
    write(
        &mut img,
        MARGIN,
        banner + MARGIN + IMAGE_BOX + 8,
        caption,
        200,
    );
    for (i, line) in lines.iter().enumerate() {
        write(
            &mut img,
            COLUMN_X,
            banner + MARGIN + i as u32 * LINE,
            line,
            235,
        );
    }
    fill(&mut img, height - banner, height, 255);
    write(&mut img, MARGIN, height - banner + 8, WARNING, 0);
    img
}

/// The picture as PNG.
pub fn encode_png(img: &GrayImage) -> Result<Vec<u8>, ReportError> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)
        .map_err(|e| ReportError::Encode {
            what: "the result picture",
            reason: e.to_string(),
        })?;
    Ok(out.into_inner())
}

/// Decode a model-input preview PNG to 8-bit grey rows.
pub fn grey_rows(png: &[u8]) -> Option<(u32, u32, Vec<u8>)> {
    let img = image::load_from_memory_with_format(png, image::ImageFormat::Png)
        .ok()?
        .into_luma8();
    Some((img.width(), img.height(), img.into_raw()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::result::{LabelResult, Reason, StudyHeader, StudyOutcome, RESULT_SCHEMA};

    fn result(outcome: &str, probability: Option<f32>) -> StudyResult {
        let outcome = if outcome == "decision" {
            StudyOutcome::Decision
        } else {
            StudyOutcome::Abstention
        };
        StudyResult {
            schema: RESULT_SCHEMA.into(),
            study_instance_uid: "1.2.3".into(),
            header: StudyHeader::default(),
            version: 1,
            previous: None,
            completed_unix_ms: 0,
            outcome,
            flags: Vec::new(),
            supersedes: None,
            sr: None,
            labels: vec![LabelResult {
                label: "Effusion".into(),
                finding: Finding::Present,
                probability,
                threshold: Some(0.5),
            }],
            reason: (outcome != StudyOutcome::Decision).then(|| Reason {
                code: "ABSTAIN_NOT_CHEST".into(),
                message: "not a chest radiograph".into(),
            }),
            decided_by: Vec::new(),
            instances: Vec::new(),
            model: None,
        }
    }

    #[test]
    fn an_abstention_shows_its_reason_and_no_probability() {
        let facts = PictureFacts::default();
        let decided = column(&result("decision", Some(0.8125)), &facts).join("\n");
        assert!(
            decided.contains("0.812") && decided.contains("0.500"),
            "{decided}"
        );
        let abstained = column(&result("abstention", Some(0.8125)), &facts).join("\n");
        assert!(!abstained.contains("0.812"), "{abstained}");
        assert!(abstained.contains("ABSTAIN_NOT_CHEST"));
    }

    #[test]
    fn the_picture_carries_the_warning_and_the_image_pixels() {
        let facts = PictureFacts {
            image: Some((4, 4, vec![77; 16])),
            ..PictureFacts::default()
        };
        let img = draw(&result("decision", Some(0.2)), &facts);
        assert_eq!(img.width(), WIDTH);
        // The banner is white with black lettering.
        assert_eq!(img.get_pixel(2, 2).0[0], 255);
        assert!((0..WIDTH).any(|x| img.get_pixel(x, 12).0[0] == 0));
        // The 4x4 input fills the box at its top-left.
        assert_eq!(
            img.get_pixel(MARGIN + 100, LINE + 12 + MARGIN + 100).0[0],
            77
        );
        let png = encode_png(&img).unwrap_or_default();
        assert!(png.starts_with(b"\x89PNG"));
    }

    #[test]
    fn long_text_wraps_at_spaces_and_splits_long_words() {
        assert_eq!(wrap("a bb ccc", 4), vec!["a bb", "ccc"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
    }
}
