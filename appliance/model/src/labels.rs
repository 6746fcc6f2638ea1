//! Label sets the model family is trained on. One list, so the appliance's
//! development model and the trainer's NIH readers cannot drift apart.

/// The 14 NIH ChestX-ray14 findings, in the NIH order.
pub const NIH_FINDINGS: [&str; 14] = [
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
];
