//! `cxr-trainer` (library): the training companion. Label tables and splits,
//! uncertainty policies, the burn ViT (canonical `cxr-model` names), losses,
//! optimisation pieces, evaluation metrics, and post-hoc fitting of the
//! bundle's calibration, thresholds and OOD statistics, and the content gate. Images are always
//! loaded through `cxr-preprocess`, so trainer tensors equal the appliance's.
//! It must not know axum or the CUDA kernels.

pub mod augment;
pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod data;
mod error;
pub mod eval;
pub mod evaluate;
pub mod finalize;
pub mod fit;
pub mod forward;
pub mod gate;
pub mod groups;
pub mod init;
pub mod loader;
pub mod loss;
pub mod mae;
pub mod optim;
pub mod parallel;
pub mod plots;
pub mod prepared;
pub mod pretrain;
pub mod rng;
pub mod train;
pub mod vit;

pub use error::TrainerError;
