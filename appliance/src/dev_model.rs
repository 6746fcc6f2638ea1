//! `dev-random-model`: a random-weight model and neutral parameters, for
//! trying `classify` end to end before a trained bundle exists. Never for
//! patients: the output is noise, and the params file says so.

use std::path::PathBuf;

use anyhow::Context;
use cxr_model::labels::NIH_FINDINGS;
use cxr_model::{onnx, VitSpec, Weights};

use cxr_bundle::ModelParams;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Preset {
    VitB16,
    VitS16,
    VitTi16,
    Tiny,
}

#[derive(Debug, clap::Args)]
pub struct DevModelArgs {
    #[arg(long, value_enum, default_value_t = Preset::VitB16)]
    preset: Preset,
    /// Input size, pixels (a multiple of the patch size).
    #[arg(long, default_value_t = 512)]
    size: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write the ONNX file.
    #[arg(long)]
    model: PathBuf,
    /// Where to write the parameters (TOML).
    #[arg(long)]
    params: PathBuf,
}

pub fn run(args: &DevModelArgs) -> anyhow::Result<()> {
    let labels = NIH_FINDINGS.len();
    let spec = match args.preset {
        Preset::VitB16 => VitSpec::vit_b16(args.size, labels),
        Preset::VitS16 => VitSpec::vit_s16(args.size, labels),
        Preset::VitTi16 => VitSpec::vit_ti16(args.size, labels),
        Preset::Tiny => VitSpec {
            image_size: args.size,
            labels,
            ..VitSpec::tiny()
        },
    };
    let weights = Weights::random(&spec, args.seed)?;
    std::fs::write(&args.model, onnx::write(&weights)?)
        .with_context(|| format!("writing {}", args.model.display()))?;
    let params = ModelParams::neutral(spec, NIH_FINDINGS.iter().map(|s| (*s).to_owned()).collect());
    let text = format!(
        "# RANDOM WEIGHTS, seed {}: for trying the pipeline only, never for patients.\n{}",
        args.seed,
        toml::to_string(&params)?
    );
    std::fs::write(&args.params, text)
        .with_context(|| format!("writing {}", args.params.display()))?;
    Ok(())
}
