//! Label tables, splits and loading, on the shared NIH subset and on small
//! tables in each public format written here.
#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, HashSet};
use std::path::Path;

use cxr_preprocess::{prepare, InputSpec};
use cxr_tests::data::{scratch_dir, shared_file};
use cxr_trainer::data::{
    load_input, read_chexpert, read_generic, read_mimic, read_nih_data_entry, read_nih_subset,
    split_by_institution, split_by_patient, LabelValue, Split, SplitFractions,
};

#[test]
fn the_shared_nih_subset_reads_and_splits_by_patient() {
    let Some(csv) = shared_file("nih-chestxray14-subset/labels.csv") else {
        return;
    };
    let d = read_nih_subset(&csv).unwrap();
    assert_eq!(d.samples.len(), 1000);
    assert_eq!(d.patients().len(), 682);
    let pneumonia = d.labels.iter().position(|l| l == "Pneumonia").unwrap();
    assert_eq!(d.positives()[pneumonia], 500);
    assert_eq!(
        d.samples
            .iter()
            .filter(|s| s.age_years.is_some_and(|a| a < 18.0))
            .count(),
        95
    );
    assert!(d.samples.iter().all(|s| s.image.is_file()));

    let f = SplitFractions {
        validation: 0.15,
        test: 0.15,
    };
    let a = split_by_patient(&d, f, 7).unwrap();
    assert_eq!(a, split_by_patient(&d, f, 7).unwrap(), "fixed by the seed");
    assert_ne!(a, split_by_patient(&d, f, 8).unwrap());
    let mut side: HashMap<&str, Split> = HashMap::new();
    for (s, split) in d.samples.iter().zip(&a) {
        assert_eq!(
            *side.entry(&s.patient).or_insert(*split),
            *split,
            "patient {} on two sides",
            s.patient
        );
    }
    let patients_in =
        |want| side.values().filter(|s| **s == want).count() as f64 / side.len() as f64;
    assert!((patients_in(Split::Test) - 0.15).abs() < 0.05);
    assert!((patients_in(Split::Validation) - 0.15).abs() < 0.05);
}

/// The trainer's loading path against numbers worked out by hand, not
/// against the appliance's function (which it calls): an 8-bit PNG, 8 wide
/// and 4 high, value = column x 10, letterboxed to 8 x 8 and min-max
/// normalised, is rows 2..6 of column / 7 between rows of padding.
#[test]
fn a_trainer_tensor_matches_a_golden_worked_out_by_hand() {
    use cxr_preprocess::{AspectPolicy, Channels, ElementType, IntensityNorm};
    let dir = scratch_dir("trainer-golden");
    let png = dir.join("ramp.png");
    image::GrayImage::from_fn(8, 4, |x, _| image::Luma([(x * 10) as u8]))
        .save(&png)
        .unwrap();
    let spec = InputSpec {
        size: 8,
        channels: Channels::One,
        antialias: true,
        aspect: AspectPolicy::Letterbox,
        intensity: IntensityNorm {
            low_percentile: 0.0,
            high_percentile: 100.0,
            mean: 0.0,
            std: 1.0,
        },
        element: ElementType::F32,
    };
    let t = load_input(&png, &spec).unwrap();
    assert_eq!((t.channels, t.height, t.width), (1, 8, 8));
    for y in 0..8 {
        for x in 0..8 {
            let want = if (2..6).contains(&y) {
                x as f32 / 7.0
            } else {
                0.0
            };
            let got = t.data[y * 8 + x];
            assert!((got - want).abs() < 1e-6, "({y}, {x}): {got} vs {want}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn trainer_tensors_equal_the_appliance_tensors_for_the_same_file() {
    let (Some(png), Some(dcm)) = (
        shared_file("torchxrayvision-test-samples/00000001_000.png"),
        shared_file("torchxrayvision-test-samples/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"),
    ) else {
        return;
    };
    let spec = InputSpec {
        size: 224,
        ..InputSpec::default()
    };
    let appliance_dcm = prepare(
        &cxr_dicom::read_radiograph_file(&dcm, &cxr_dicom::ReadLimits::default()).unwrap(),
        &spec,
    )
    .unwrap();
    assert_eq!(load_input(&dcm, &spec).unwrap().data, appliance_dcm.data);
    let appliance_png = prepare(&cxr_preprocess::load_image_file(&png).unwrap(), &spec).unwrap();
    let trainer_png = load_input(&png, &spec).unwrap();
    assert_eq!(trainer_png.data, appliance_png.data);
    assert_eq!(trainer_png.data.len(), 224 * 224);
    assert_eq!(
        load_input(Path::new("/nonexistent.png"), &spec)
            .unwrap_err()
            .code(),
        "TRAINER_IO"
    );
    // A readable file the appliance's reader refuses is the image's fault,
    // not an I/O error, and says which reader refused it.
    let dir = scratch_dir("trainer-refused");
    let not_png = dir.join("not-an-image.png");
    std::fs::write(&not_png, b"this is not a PNG").unwrap();
    let e = load_input(&not_png, &spec).unwrap_err();
    assert_eq!(e.code(), "TRAINER_IMAGE_REFUSED", "{e}");
    assert!(e.to_string().contains("IMAGE_"), "{e}");
    assert!(!e.to_string().contains("permissions"), "{e}");
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn chexpert_mimic_nih_and_generic_tables_read_with_their_conventions() {
    let dir = scratch_dir("trainer-tables");
    let head = "Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,Fracture,Support Devices";
    let chex = write(&dir, "train.csv", &format!("{head}\n\
        CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,,,,,,,0.0,,,,1.0\n\
        CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg,Male,87,Frontal,AP,,,-1.0,1.0,,-1.0,-1.0,,-1.0,,-1.0,,1.0,\n\
        CheXpert-v1.0-small/train/patient00002/study1/view2_lateral.jpg,Male,83,Lateral,,,,,1.0,,,,,,,,,1.0,\n"));
    let d = read_chexpert(&chex, Path::new("/data")).unwrap();
    assert_eq!(d.samples.len(), 3);
    assert_eq!(d.patients(), vec!["patient00001", "patient00002"]);
    assert_eq!(d.samples[1].labels[2], LabelValue::Uncertain);
    assert_eq!(d.samples[1].labels[0], LabelValue::Missing);
    assert_eq!(d.samples[0].labels[9], LabelValue::Negative);
    assert_eq!(d.samples[2].view.as_deref(), Some("LATERAL"));
    assert_eq!(d.samples[0].sex, Some('F'));
    assert!(d.samples[0].image.starts_with("/data/CheXpert-v1.0-small"));
    let bad = write(&dir, "bad.csv", &format!("{head}\nCheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg,Male,50,Frontal,PA,2.0,,,,,,,,,,,,,\n"));
    let e = read_chexpert(&bad, Path::new("/data")).unwrap_err();
    assert_eq!(e.code(), "TRAINER_TABLE");
    assert!(e.to_string().contains("line 2"), "{e}");

    let labels_head = "subject_id,study_id,Atelectasis,Cardiomegaly,Consolidation,Edema,Enlarged Cardiomediastinum,Fracture,Lung Lesion,Lung Opacity,No Finding,Pleural Effusion,Pleural Other,Pneumonia,Pneumothorax,Support Devices";
    let mimic_labels = write(&dir, "chexpert.csv", &format!("{labels_head}\n10000032,50414267,,,,,,,,,1.0,,,,,\n10000764,57375967,,,1.0,,,,,,,,,-1.0,,\n"));
    let split = write(&dir, "split.csv", "dicom_id,study_id,subject_id,split\nd1,50414267,10000032,train\nd2,50414267,10000032,train\nd3,57375967,10000764,test\nd4,99999999,10000999,validate\n");
    let meta = write(&dir, "metadata.csv", "dicom_id,subject_id,study_id,ViewPosition\nd1,10000032,50414267,PA\nd2,10000032,50414267,LATERAL\nd3,10000764,57375967,AP\nd4,10000999,99999999,PA\n");
    let m = read_mimic(&meta, &split, &mimic_labels, Path::new("/mimic")).unwrap();
    assert_eq!(
        m.samples.len(),
        3,
        "the study without a labelled report is left out"
    );
    assert_eq!(m.samples[2].given_split, Some(Split::Test));
    assert_eq!(
        m.samples[0].image,
        Path::new("/mimic/files/p10/p10000032/s50414267/d1.jpg")
    );
    let pneumonia = m.labels.iter().position(|l| l == "Pneumonia").unwrap();
    assert_eq!(m.samples[2].labels[pneumonia], LabelValue::Uncertain);

    let entry = write(&dir, "Data_Entry_2017.csv", "Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position\n00000001_000.png,Cardiomegaly,0,1,058Y,M,PA\n00000001_001.png,Cardiomegaly|Emphysema,1,1,058Y,M,PA\n00000002_000.png,No Finding,0,2,81,F,AP\n");
    let n = read_nih_data_entry(&entry, Path::new("/nih/images")).unwrap();
    assert_eq!(
        n.samples[1]
            .labels
            .iter()
            .filter(|v| **v == LabelValue::Positive)
            .count(),
        2
    );
    assert_eq!(n.samples[0].age_years, Some(58.0));
    assert!(n.samples[2]
        .labels
        .iter()
        .all(|v| *v == LabelValue::Negative));
    let typo = write(
        &dir,
        "typo.csv",
        "Image Index,Finding Labels,Patient ID\na.png,Cardiomegally,1\n",
    );
    assert!(read_nih_data_entry(&typo, Path::new("/")).is_err());

    let generic = write(&dir, "generic.csv", "path,patient_id,institution,split,Effusion,Nodule\nimg/a.png,p1,site-a,train,1,\nimg/b.png,p2,site-b,test,0,-1\nimg/c.png,p3,,,1,0\n");
    let g = read_generic(&generic, "mine").unwrap();
    assert_eq!(g.labels, vec!["Effusion", "Nodule"]);
    assert_eq!(
        g.samples[1].labels,
        vec![LabelValue::Negative, LabelValue::Uncertain]
    );
    assert_eq!(g.samples[2].institution, "mine");
    assert_eq!(g.samples[0].image, dir.join("img/a.png"));
    let by_site = split_by_institution(&g, &["site-b"], 0.0, 1).unwrap();
    assert_eq!(by_site, vec![Split::Train, Split::Test, Split::Train]);
    let sides: HashSet<_> = by_site.iter().collect();
    assert_eq!(sides.len(), 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_loader_batches_in_parallel_caches_within_budget_and_repeats_by_seed() {
    use cxr_trainer::augment::AugmentConfig;
    use cxr_trainer::loader::{Example, Loader};
    let Some(csv) = shared_file("nih-chestxray14-subset/labels.csv") else {
        return;
    };
    let d = read_nih_subset(&csv).unwrap();
    let examples: Vec<Example> = d.samples[..12]
        .iter()
        .map(|s| Example {
            image: s.image.clone(),
            targets: s
                .labels
                .iter()
                .map(|v| f32::from(*v == LabelValue::Positive))
                .collect(),
            mask: vec![1.0; s.labels.len()],
        })
        .collect();
    let spec = InputSpec {
        size: 64,
        ..InputSpec::default()
    };
    let per = 64 * 64 * 4;
    let loader = Loader::new(examples, spec, 3, 5 * per);
    let order = loader.epoch_order(1, 0);
    assert_eq!(order, loader.epoch_order(1, 0));
    assert_ne!(order, loader.epoch_order(1, 1));
    let plain = loader.batch(&order[..6], None, 0).unwrap();
    assert_eq!(plain.images.len(), 6 * 64 * 64);
    assert_eq!(plain.targets.len(), 6 * 14);
    assert!(loader.cached_bytes() <= 5 * per);
    // The first image equals the appliance's tensor for the same file.
    let direct = load_input(&d.samples[order[0]].image, &spec).unwrap();
    assert_eq!(&plain.images[..64 * 64], &direct.data[..]);
    let aug = AugmentConfig::default();
    let a = loader.batch(&order[..6], Some(&aug), 9).unwrap();
    let b = loader.batch(&order[..6], Some(&aug), 9).unwrap();
    assert_eq!(a, b);
    assert_ne!(a.images, plain.images);
}

#[test]
fn the_kermany_table_reads_and_refuses_an_ungraded_film() {
    let dir = scratch_dir("kermany-table");
    let csv = dir.join("labels.csv");
    let head = "file,label,pneumonia,pneumonia_type,patient_id,view,age_group\n";
    std::fs::write(
        &csv,
        format!("{head}images/a.jpeg,NORMAL,0,,normal-1,frontal,child\nimages/b.jpeg,PNEUMONIA,1,virus,virus-2,frontal,child\n"),
    )
    .unwrap();
    let d = cxr_trainer::data::read_kermany_subset(&csv).unwrap();
    assert_eq!(d.samples.len(), 2);
    assert_eq!(d.samples[1].labels, vec![LabelValue::Positive]);
    assert_eq!(d.samples[1].institution, "kermany");
    // A blank or unknown grade is a damaged table, not a missing label.
    std::fs::write(
        &csv,
        format!("{head}images/a.jpeg,NORMAL,0,,normal-1,frontal,child\nimages/b.jpeg,PNEUMONIA,,virus,virus-2,frontal,child\n"),
    )
    .unwrap();
    let e = cxr_trainer::data::read_kermany_subset(&csv).unwrap_err();
    assert_eq!(e.code(), "TRAINER_TABLE");
    assert!(e.to_string().contains("line 3"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}
