//! Wrap grey pixels as a minimal DICOM Part 10 file (explicit VR little
//! endian, 8-bit MONOCHROME2, DX): the way an external test set presents
//! films from other sources, with the tags missing or set on purpose.

/// The tags to write; `None` leaves a tag out.
#[derive(Debug, Clone, Default)]
pub struct WrapTags {
    pub body_part: Option<String>,
    pub view_position: Option<String>,
    /// DICOM age string, e.g. `045Y`.
    pub age: Option<String>,
    pub sex: Option<String>,
    /// A number that makes the UIDs unique.
    pub serial: u64,
}

impl WrapTags {
    /// Every film tagged as an adult chest PA, whatever it shows.
    pub fn adult_chest_pa(serial: u64) -> Self {
        WrapTags {
            body_part: Some("CHEST".into()),
            view_position: Some("PA".into()),
            age: Some("045Y".into()),
            sex: Some("F".into()),
            serial,
        }
    }
}

fn element(out: &mut Vec<u8>, group: u16, elem: u16, vr: &[u8; 2], value: &[u8]) {
    let mut v = value.to_vec();
    if v.len() % 2 == 1 {
        v.push(if vr == b"UI" || vr == b"OB" { 0 } else { b' ' });
    }
    out.extend_from_slice(&group.to_le_bytes());
    out.extend_from_slice(&elem.to_le_bytes());
    out.extend_from_slice(vr);
    if matches!(vr, b"OB" | b"OW" | b"UN" | b"SQ" | b"UT") {
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    } else {
        out.extend_from_slice(&(v.len() as u16).to_le_bytes());
    }
    out.extend_from_slice(&v);
}

fn us(value: u16) -> [u8; 2] {
    value.to_le_bytes()
}

/// A DX DICOM of `rows x cols` 8-bit grey pixels (0 black) with `tags`.
pub fn wrap_grey8(rows: u16, cols: u16, pixels: &[u8], tags: &WrapTags) -> Vec<u8> {
    const DX: &str = "1.2.840.10008.5.1.4.1.1.1.1";
    const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
    let instance = format!("1.2.826.0.1.3680043.10.1234.{}", tags.serial + 1);
    let study = format!("1.2.826.0.1.3680043.10.1235.{}", tags.serial + 1);
    let series = format!("1.2.826.0.1.3680043.10.1236.{}", tags.serial + 1);
    let mut meta = Vec::new();
    element(&mut meta, 0x0002, 0x0001, b"OB", &[0, 1]);
    element(&mut meta, 0x0002, 0x0002, b"UI", DX.as_bytes());
    element(&mut meta, 0x0002, 0x0003, b"UI", instance.as_bytes());
    element(&mut meta, 0x0002, 0x0010, b"UI", EXPLICIT_LE.as_bytes());
    let mut out = vec![0u8; 128];
    out.extend_from_slice(b"DICM");
    element(
        &mut out,
        0x0002,
        0x0000,
        b"UL",
        &(meta.len() as u32).to_le_bytes(),
    );
    out.extend_from_slice(&meta);
    element(&mut out, 0x0008, 0x0016, b"UI", DX.as_bytes());
    element(&mut out, 0x0008, 0x0018, b"UI", instance.as_bytes());
    element(&mut out, 0x0008, 0x0060, b"CS", b"DX");
    if let Some(sex) = &tags.sex {
        element(&mut out, 0x0010, 0x0040, b"CS", sex.as_bytes());
    }
    if let Some(age) = &tags.age {
        element(&mut out, 0x0010, 0x1010, b"AS", age.as_bytes());
    }
    if let Some(part) = &tags.body_part {
        element(&mut out, 0x0018, 0x0015, b"CS", part.as_bytes());
    }
    if let Some(view) = &tags.view_position {
        element(&mut out, 0x0018, 0x5101, b"CS", view.as_bytes());
    }
    element(&mut out, 0x0020, 0x000D, b"UI", study.as_bytes());
    element(&mut out, 0x0020, 0x000E, b"UI", series.as_bytes());
    element(&mut out, 0x0028, 0x0002, b"US", &us(1));
    element(&mut out, 0x0028, 0x0004, b"CS", b"MONOCHROME2");
    element(&mut out, 0x0028, 0x0010, b"US", &us(rows));
    element(&mut out, 0x0028, 0x0011, b"US", &us(cols));
    element(&mut out, 0x0028, 0x0100, b"US", &us(8));
    element(&mut out, 0x0028, 0x0101, b"US", &us(8));
    element(&mut out, 0x0028, 0x0102, b"US", &us(7));
    element(&mut out, 0x0028, 0x0103, b"US", &us(0));
    element(&mut out, 0x7FE0, 0x0010, b"OB", pixels);
    out
}

/// Linear grey values scaled to 8 bits between their minimum and maximum.
pub fn to_grey8(values: &[f32]) -> Vec<u8> {
    let (lo, hi) = values
        .iter()
        .fold((f32::MAX, f32::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let span = (hi - lo).max(1e-6);
    values
        .iter()
        .map(|v| (((v - lo) / span) * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect()
}
