//! Whether two instances of one Study Instance UID are of one patient.
//! PatientID must match exactly; PatientName after normalising case,
//! spaces and empty trailing components; BirthDate, Sex and
//! AccessionNumber where both instances carry them. A missing value never
//! conflicts: a modality that leaves a tag out says nothing about it.

use crate::result::StudyHeader;

/// `DOE^JOHN^^^` and ` doe ^ john ` are one name: components trimmed,
/// upper case, inner runs of spaces as one, empty trailing components gone.
pub fn normalised_name(name: &str) -> String {
    let mut parts: Vec<String> = name
        .split('^')
        .map(|c| {
            c.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .to_uppercase()
        })
        .collect();
    while parts.last().is_some_and(String::is_empty) {
        parts.pop();
    }
    parts.join("^")
}

fn present(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// The first attribute on which `a` and `b` name different patients (or
/// different studies, for AccessionNumber), or `None` when they agree.
pub fn patient_conflict(a: &StudyHeader, b: &StudyHeader) -> Option<&'static str> {
    if let (Some(x), Some(y)) = (present(&a.patient_id), present(&b.patient_id)) {
        if x != y {
            return Some("PatientID");
        }
    }
    let names = (present(&a.patient_name), present(&b.patient_name));
    if let (Some(x), Some(y)) = names {
        if normalised_name(x) != normalised_name(y) {
            return Some("PatientName");
        }
    }
    for (field, x, y) in [
        (
            "PatientBirthDate",
            &a.patient_birth_date,
            &b.patient_birth_date,
        ),
        ("PatientSex", &a.patient_sex, &b.patient_sex),
        ("AccessionNumber", &a.accession_number, &b.accession_number),
    ] {
        if let (Some(x), Some(y)) = (present(x), present(y)) {
            if x != y {
                return Some(field);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(id: Option<&str>, name: Option<&str>) -> StudyHeader {
        StudyHeader {
            patient_id: id.map(Into::into),
            patient_name: name.map(Into::into),
            ..StudyHeader::default()
        }
    }

    #[test]
    fn names_compare_after_normalising_and_ids_exactly() {
        assert_eq!(normalised_name(" doe ^ john  paul^^^"), "DOE^JOHN PAUL");
        let a = header(Some("PAT-A"), Some("Doe^John"));
        assert_eq!(
            patient_conflict(&a, &header(Some("PAT-A"), Some("DOE^JOHN^^"))),
            None
        );
        assert_eq!(
            patient_conflict(&a, &header(Some("PAT-B"), Some("Doe^John"))),
            Some("PatientID")
        );
        assert_eq!(
            patient_conflict(&a, &header(Some("pat-a"), None)),
            Some("PatientID"),
            "IDs match exactly"
        );
        assert_eq!(
            patient_conflict(&a, &header(None, None)),
            None,
            "a missing ID never conflicts"
        );
        assert_eq!(
            patient_conflict(&a, &header(Some("PAT-A"), Some("Roe^Jane"))),
            Some("PatientName")
        );
        assert_eq!(
            patient_conflict(&a, &header(Some("PAT-A"), None)),
            None,
            "a missing name never conflicts"
        );
    }

    #[test]
    fn other_attributes_conflict_only_where_both_are_present() {
        let mut a = header(Some("P"), None);
        let mut b = a.clone();
        a.patient_sex = Some("F".into());
        assert_eq!(patient_conflict(&a, &b), None);
        b.patient_sex = Some("M".into());
        assert_eq!(patient_conflict(&a, &b), Some("PatientSex"));
        b.patient_sex = Some("F".into());
        a.accession_number = Some("A1".into());
        b.accession_number = Some("A2".into());
        assert_eq!(patient_conflict(&a, &b), Some("AccessionNumber"));
        b.accession_number = None;
        a.patient_birth_date = Some("19700101".into());
        b.patient_birth_date = Some("19700102".into());
        assert_eq!(patient_conflict(&a, &b), Some("PatientBirthDate"));
    }
}
