//! Readers for the label tables of the public chest X-ray datasets, and a
//! documented generic CSV. Images are not opened here: the loader reads them
//! through `cxr-preprocess`, like the appliance.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{Dataset, LabelValue, Sample, Split};
use crate::TrainerError;

/// The 14 ChestX-ray14 findings, in the NIH order (and the appliance's).
pub use cxr_model::labels::NIH_FINDINGS;

/// The 14 CheXpert observations (also MIMIC-CXR-JPG's label columns).
pub const CHEXPERT_OBSERVATIONS: [&str; 14] = [
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
];

/// A CSV file with its header, rows as strings.
struct Table {
    path: PathBuf,
    columns: HashMap<String, usize>,
    rows: Vec<(u64, csv::StringRecord)>,
}

impl Table {
    fn read(path: &Path) -> Result<Self, TrainerError> {
        let io = |e: csv::Error| TrainerError::io("reading", path, e);
        let mut r = csv::ReaderBuilder::new()
            .flexible(false)
            .from_path(path)
            .map_err(io)?;
        let columns = r
            .headers()
            .map_err(io)?
            .iter()
            .enumerate()
            .map(|(i, h)| (h.trim().to_owned(), i))
            .collect();
        let mut rows = Vec::new();
        for (i, rec) in r.records().enumerate() {
            let rec = rec.map_err(|e| TrainerError::Table {
                path: path.to_owned(),
                line: i as u64 + 2,
                problem: e.to_string(),
                fix: "every row needs as many fields as the header",
            })?;
            rows.push((i as u64 + 2, rec));
        }
        Ok(Table {
            path: path.to_owned(),
            columns,
            rows,
        })
    }

    fn column(&self, name: &str) -> Result<usize, TrainerError> {
        self.columns
            .get(name)
            .copied()
            .ok_or_else(|| TrainerError::Table {
                path: self.path.clone(),
                line: 1,
                problem: format!("no column `{name}`"),
                fix: "use the table as the dataset publishes it",
            })
    }

    fn optional(&self, name: &str) -> Option<usize> {
        self.columns.get(name).copied()
    }

    fn bad(&self, line: u64, problem: String) -> TrainerError {
        TrainerError::Table {
            path: self.path.clone(),
            line,
            problem,
            fix: "correct the value (labels are 1, 0, -1 or blank)",
        }
    }

    fn label(
        &self,
        line: u64,
        rec: &csv::StringRecord,
        col: usize,
    ) -> Result<LabelValue, TrainerError> {
        let text = rec.get(col).unwrap_or("");
        LabelValue::parse(text).ok_or_else(|| self.bad(line, format!("label value `{text}`")))
    }
}

fn field(rec: &csv::StringRecord, col: Option<usize>) -> Option<&str> {
    col.and_then(|c| rec.get(c))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

fn age(text: Option<&str>) -> Option<f32> {
    // NIH writes "058Y" in Data_Entry_2017 and plain numbers elsewhere.
    let t = text?.trim_end_matches(['Y', 'y']);
    t.parse::<f32>().ok().filter(|a| (0.0..=130.0).contains(a))
}

fn sex(text: Option<&str>) -> Option<char> {
    match text?.to_ascii_uppercase().as_str() {
        "M" | "MALE" => Some('M'),
        "F" | "FEMALE" => Some('F'),
        "O" | "OTHER" => Some('O'),
        _ => None,
    }
}

/// The shared NIH subset's `labels.csv`: `file`, the 14 findings as 0/1,
/// `patient_id`, `age`, `sex`, `view`. Paths are relative to the CSV.
pub fn read_nih_subset(csv: &Path) -> Result<Dataset, TrainerError> {
    let t = Table::read(csv)?;
    let root = csv.parent().unwrap_or(Path::new("."));
    let cols: Vec<usize> = NIH_FINDINGS
        .iter()
        .map(|f| t.column(f))
        .collect::<Result<_, _>>()?;
    let (file, patient) = (t.column("file")?, t.column("patient_id")?);
    let (a, s, v) = (t.optional("age"), t.optional("sex"), t.optional("view"));
    let mut samples = Vec::with_capacity(t.rows.len());
    for (line, rec) in &t.rows {
        let labels = cols
            .iter()
            .map(|c| t.label(*line, rec, *c))
            .collect::<Result<_, _>>()?;
        samples.push(Sample {
            image: root.join(field(rec, Some(file)).ok_or_else(|| t.bad(*line, "no file".into()))?),
            patient: field(rec, Some(patient))
                .ok_or_else(|| t.bad(*line, "no patient_id".into()))?
                .to_owned(),
            institution: "nih".into(),
            age_years: age(field(rec, a)),
            sex: sex(field(rec, s)),
            view: field(rec, v).map(str::to_owned),
            given_split: None,
            labels,
        });
    }
    Ok(Dataset {
        name: "nih-chestxray14-subset".into(),
        labels: NIH_FINDINGS.iter().map(|s| (*s).to_owned()).collect(),
        samples,
    })
}

/// NIH's `Data_Entry_2017.csv`: `Image Index`, `Finding Labels` (`|`-joined,
/// or `No Finding`), `Patient ID`, `Patient Age`, `Patient Gender`,
/// `View Position`. Images are in `images_dir`.
pub fn read_nih_data_entry(csv: &Path, images_dir: &Path) -> Result<Dataset, TrainerError> {
    let t = Table::read(csv)?;
    let (img, find, pat) = (
        t.column("Image Index")?,
        t.column("Finding Labels")?,
        t.column("Patient ID")?,
    );
    let (a, s, v) = (
        t.optional("Patient Age"),
        t.optional("Patient Gender"),
        t.optional("View Position"),
    );
    let mut samples = Vec::with_capacity(t.rows.len());
    for (line, rec) in &t.rows {
        let findings = field(rec, Some(find)).unwrap_or("No Finding");
        let named: Vec<&str> = findings.split('|').map(str::trim).collect();
        for n in &named {
            if *n != "No Finding" && !NIH_FINDINGS.contains(n) {
                return Err(t.bad(*line, format!("unknown finding `{n}`")));
            }
        }
        let labels = NIH_FINDINGS
            .iter()
            .map(|f| {
                if named.contains(f) {
                    LabelValue::Positive
                } else {
                    LabelValue::Negative
                }
            })
            .collect();
        samples.push(Sample {
            image: images_dir
                .join(field(rec, Some(img)).ok_or_else(|| t.bad(*line, "no Image Index".into()))?),
            patient: field(rec, Some(pat))
                .ok_or_else(|| t.bad(*line, "no Patient ID".into()))?
                .to_owned(),
            institution: "nih".into(),
            age_years: age(field(rec, a)),
            sex: sex(field(rec, s)),
            view: field(rec, v).map(str::to_owned),
            given_split: None,
            labels,
        });
    }
    Ok(Dataset {
        name: "nih-chestxray14".into(),
        labels: NIH_FINDINGS.iter().map(|s| (*s).to_owned()).collect(),
        samples,
    })
}

/// CheXpert `train.csv`/`valid.csv`: `Path` (e.g.
/// `CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg`, taken
/// relative to `root`), `Sex`, `Age`, `Frontal/Lateral`, `AP/PA`, and the 14
/// observations as 1.0, 0.0, -1.0 or blank.
pub fn read_chexpert(csv: &Path, root: &Path) -> Result<Dataset, TrainerError> {
    let t = Table::read(csv)?;
    let path = t.column("Path")?;
    let cols: Vec<usize> = CHEXPERT_OBSERVATIONS
        .iter()
        .map(|f| t.column(f))
        .collect::<Result<_, _>>()?;
    let (a, s, fl, appa) = (
        t.optional("Age"),
        t.optional("Sex"),
        t.optional("Frontal/Lateral"),
        t.optional("AP/PA"),
    );
    let mut samples = Vec::with_capacity(t.rows.len());
    for (line, rec) in &t.rows {
        let p = field(rec, Some(path)).ok_or_else(|| t.bad(*line, "no Path".into()))?;
        let patient = p
            .split('/')
            .find(|c| c.starts_with("patient"))
            .ok_or_else(|| t.bad(*line, format!("no patientNNNNN folder in `{p}`")))?;
        let view = match (field(rec, fl), field(rec, appa)) {
            (Some("Lateral"), _) => Some("LATERAL".to_owned()),
            (_, Some(v)) => Some(v.to_owned()),
            _ => None,
        };
        samples.push(Sample {
            image: root.join(p),
            patient: patient.to_owned(),
            institution: "stanford".into(),
            age_years: age(field(rec, a)),
            sex: sex(field(rec, s)),
            view,
            given_split: None,
            labels: cols
                .iter()
                .map(|c| t.label(*line, rec, *c))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(Dataset {
        name: "chexpert".into(),
        labels: CHEXPERT_OBSERVATIONS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        samples,
    })
}

/// MIMIC-CXR-JPG: `mimic-cxr-2.0.0-metadata.csv` (`dicom_id`, `subject_id`,
/// `study_id`, `ViewPosition`), `-split.csv` (`dicom_id`, `split`:
/// train/validate/test) and `-chexpert.csv` (`subject_id`, `study_id`, the 14
/// observations). Images at `root/files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg`.
pub fn read_mimic(
    metadata: &Path,
    split: &Path,
    chexpert: &Path,
    root: &Path,
) -> Result<Dataset, TrainerError> {
    let labels_t = Table::read(chexpert)?;
    let (ls, lst) = (labels_t.column("subject_id")?, labels_t.column("study_id")?);
    let cols: Vec<usize> = CHEXPERT_OBSERVATIONS
        .iter()
        .map(|f| labels_t.column(f))
        .collect::<Result<_, _>>()?;
    let mut by_study: HashMap<String, Vec<LabelValue>> = HashMap::new();
    for (line, rec) in &labels_t.rows {
        let key = format!(
            "{}/{}",
            field(rec, Some(ls)).unwrap_or(""),
            field(rec, Some(lst)).unwrap_or("")
        );
        let values = cols
            .iter()
            .map(|c| labels_t.label(*line, rec, *c))
            .collect::<Result<_, _>>()?;
        by_study.insert(key, values);
    }
    let split_t = Table::read(split)?;
    let (sd, ss) = (split_t.column("dicom_id")?, split_t.column("split")?);
    let mut splits = HashMap::new();
    for (line, rec) in &split_t.rows {
        let s = match field(rec, Some(ss)) {
            Some("train") => Split::Train,
            Some("validate") => Split::Validation,
            Some("test") => Split::Test,
            other => return Err(split_t.bad(*line, format!("split `{}`", other.unwrap_or("")))),
        };
        splits.insert(field(rec, Some(sd)).unwrap_or("").to_owned(), s);
    }
    let meta = Table::read(metadata)?;
    let (md, msub, mst) = (
        meta.column("dicom_id")?,
        meta.column("subject_id")?,
        meta.column("study_id")?,
    );
    let mv = meta.optional("ViewPosition");
    let mut samples = Vec::new();
    for (line, rec) in &meta.rows {
        let (d, sub, st) = (
            field(rec, Some(md)),
            field(rec, Some(msub)),
            field(rec, Some(mst)),
        );
        let (Some(d), Some(sub), Some(st)) = (d, sub, st) else {
            return Err(meta.bad(
                *line,
                "dicom_id, subject_id and study_id are required".into(),
            ));
        };
        // Studies without a labelled report are not part of the labelled set.
        let Some(labels) = by_study.get(&format!("{sub}/{st}")) else {
            continue;
        };
        let prefix = sub.get(..2).unwrap_or(sub);
        samples.push(Sample {
            image: root.join(format!("files/p{prefix}/p{sub}/s{st}/{d}.jpg")),
            patient: sub.to_owned(),
            institution: "bidmc".into(),
            age_years: None,
            sex: None,
            view: field(rec, mv).map(str::to_owned),
            given_split: splits.get(d).copied(),
            labels: labels.clone(),
        });
    }
    Ok(Dataset {
        name: "mimic-cxr-jpg".into(),
        labels: CHEXPERT_OBSERVATIONS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        samples,
    })
}

/// The generic table. Required columns: `path` (relative to the CSV) and
/// `patient_id`. Optional: `institution`, `age`, `sex`, `view`, `split`
/// (train/validation/test). Every other column is a label: 1, 0, -1
/// (uncertain) or blank (missing).
pub fn read_generic(csv: &Path, name: &str) -> Result<Dataset, TrainerError> {
    const KNOWN: [&str; 7] = [
        "path",
        "patient_id",
        "institution",
        "age",
        "sex",
        "view",
        "split",
    ];
    let t = Table::read(csv)?;
    let root = csv.parent().unwrap_or(Path::new("."));
    let (p, pat) = (t.column("path")?, t.column("patient_id")?);
    let (inst, a, s, v, sp) = (
        t.optional("institution"),
        t.optional("age"),
        t.optional("sex"),
        t.optional("view"),
        t.optional("split"),
    );
    let mut label_cols: Vec<(String, usize)> = t
        .columns
        .iter()
        .filter(|(n, _)| !KNOWN.contains(&n.as_str()))
        .map(|(n, i)| (n.clone(), *i))
        .collect();
    label_cols.sort_by_key(|(_, i)| *i);
    if label_cols.is_empty() {
        return Err(t.bad(1, "no label columns".into()));
    }
    let mut samples = Vec::with_capacity(t.rows.len());
    for (line, rec) in &t.rows {
        let given_split = match field(rec, sp) {
            None => None,
            Some("train") => Some(Split::Train),
            Some("validation") => Some(Split::Validation),
            Some("test") => Some(Split::Test),
            Some(other) => return Err(t.bad(*line, format!("split `{other}`"))),
        };
        samples.push(Sample {
            image: root.join(field(rec, Some(p)).ok_or_else(|| t.bad(*line, "no path".into()))?),
            patient: field(rec, Some(pat))
                .ok_or_else(|| t.bad(*line, "no patient_id".into()))?
                .to_owned(),
            institution: field(rec, inst).unwrap_or(name).to_owned(),
            age_years: age(field(rec, a)),
            sex: sex(field(rec, s)),
            view: field(rec, v).map(str::to_owned),
            given_split,
            labels: label_cols
                .iter()
                .map(|(_, c)| t.label(*line, rec, *c))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(Dataset {
        name: name.to_owned(),
        labels: label_cols.into_iter().map(|(n, _)| n).collect(),
        samples,
    })
}

/// The Kermany subset's table: Pneumonia only, every film a child's.
pub fn read_kermany_subset(csv: &Path) -> Result<Dataset, TrainerError> {
    let root = csv.parent().unwrap_or(Path::new("."));
    let mut reader =
        csv::Reader::from_path(csv).map_err(|e| TrainerError::io("reading", csv, e))?;
    let headers = reader
        .headers()
        .map_err(|e| TrainerError::io("reading", csv, e))?
        .clone();
    let col = |name: &str| {
        headers.iter().position(|h| h == name).ok_or_else(|| {
            TrainerError::invalid(
                "Kermany labels",
                format!("no `{name}` column"),
                "pass the subset's labels.csv",
            )
        })
    };
    let (file, patient, pneumonia) = (col("file")?, col("patient_id")?, col("pneumonia")?);
    let mut samples = Vec::new();
    for rec in reader.records() {
        let rec = rec.map_err(|e| TrainerError::io("reading", csv, e))?;
        // Every film of the subset is graded: anything but 0 or 1 is a
        // damaged table, not a missing label.
        let value = match rec.get(pneumonia).map(str::trim) {
            Some("1") => LabelValue::Positive,
            Some("0") => LabelValue::Negative,
            other => {
                return Err(TrainerError::Table {
                    path: csv.to_owned(),
                    line: rec.position().map_or(0, |p| p.line()),
                    problem: format!("pneumonia is {:?}, not 0 or 1", other.unwrap_or("")),
                    fix: "restore the subset's labels.csv",
                })
            }
        };
        samples.push(Sample {
            image: root.join(rec.get(file).unwrap_or_default()),
            patient: rec.get(patient).unwrap_or_default().to_owned(),
            institution: "kermany".into(),
            age_years: None,
            sex: None,
            view: None,
            given_split: None,
            labels: vec![value],
        });
    }
    Ok(Dataset {
        name: "kermany-paediatric-cxr-subset".into(),
        labels: vec!["Pneumonia".into()],
        samples,
    })
}
