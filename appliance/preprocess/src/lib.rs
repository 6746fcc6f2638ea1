//! `cxr-preprocess`: the single definition of what the model sees.
//!
//! [`prepare`] turns a [`Radiograph`] into a [`ModelInput`] under an
//! [`InputSpec`] (size, channels, antialiased resize, aspect policy, intensity
//! normalisation, element type); [`tta_view`] makes the test-time views; and
//! [`load_image`] reads dataset PNG/JPEG files into a `Radiograph`, so the
//! trainer and the appliance call the very same code. It must not know DICOM
//! parsing or engines.

mod error;
mod intensity;
mod load;
mod prepare;
mod resize;
mod spec;
mod tta;

pub use cxr_radiograph::Radiograph;
pub use error::PreprocessError;
pub use load::{load_image, load_image_file};
pub use prepare::{prepare, preview_png, ModelInput};
pub use spec::{AspectPolicy, Channels, ElementType, InputSpec, IntensityNorm};
pub use tta::{tta_view, TtaView};
