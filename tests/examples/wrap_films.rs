//! Wrap films as 8-bit MONOCHROME2 DX DICOMs, with no view, body-part, age
//! or sex tags (`--tags none`) or all tagged as an adult chest PA
//! (`--tags adult-chest-pa`), the way an external test presents them:
//!
//! `cargo run -p cxr-tests --example wrap_films -- --tags none --out DIR FILE...`
//!
//! PNG and JPEG are read as grey; DICOMs of any modality through the
//! appliance's reader (first frame). Files that cannot be read are listed on
//! stderr and skipped.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use cxr_tests::wrap::{to_grey8, wrap_grey8, WrapTags};

fn grey(path: &Path) -> Result<(usize, usize, Vec<u8>), String> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("dcm"))
    {
        let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
        let r = cxr_dicom::read_any_modality(&bytes, &cxr_dicom::ReadLimits::default())
            .map_err(|e| e.to_string())?;
        return Ok((r.rows(), r.cols(), to_grey8(r.pixels())));
    }
    let img = image::open(path).map_err(|e| e.to_string())?.to_luma8();
    Ok((img.height() as usize, img.width() as usize, img.into_raw()))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut tags, mut out, mut files) = ("none".to_owned(), PathBuf::from("."), Vec::new());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tags" => tags = it.next().unwrap(),
            "--out" => out = PathBuf::from(it.next().unwrap()),
            _ => files.push(PathBuf::from(a)),
        }
    }
    std::fs::create_dir_all(&out).unwrap();
    for (i, f) in files.iter().enumerate() {
        let t = match tags.as_str() {
            "adult-chest-pa" => WrapTags::adult_chest_pa(i as u64),
            _ => WrapTags {
                serial: i as u64,
                ..WrapTags::default()
            },
        };
        match grey(f) {
            Ok((rows, cols, px)) if rows <= 65535 && cols <= 65535 => {
                let name = f.file_stem().unwrap().to_string_lossy();
                let bytes = wrap_grey8(rows as u16, cols as u16, &px, &t);
                std::fs::write(out.join(format!("{i:04}-{name}.dcm")), bytes).unwrap();
            }
            Ok(_) => eprintln!("{}: too large", f.display()),
            Err(e) => eprintln!("{}: {e}", f.display()),
        }
    }
}
