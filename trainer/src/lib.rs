//! `cxr-trainer` (library): the training companion's building blocks that do
//! not need a tensor framework: label tables and splits, uncertainty
//! policies, evaluation metrics, and post-hoc fitting of the bundle's
//! calibration, thresholds and OOD statistics. Images are always loaded
//! through `cxr-preprocess`, so trainer tensors equal the appliance's. The
//! burn model and training loop join these with the trainer issue. It must
//! not know axum or the CUDA kernels.

pub mod data;
mod error;
pub mod eval;
pub mod fit;

pub use error::TrainerError;
