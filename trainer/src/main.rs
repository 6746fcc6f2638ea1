//! `cxr-trainer`: the training companion: `pretrain`, `train`, `finalize`, `fit-gate`, `evaluate`,
//! `keygen`, `lock`, and `bench-step` for training throughput.
//! `anyhow` is used here (a binary) only.

mod lock;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use cxr_board::KeyRole;
use cxr_bundle::BundleSigner;

#[derive(Debug, Parser)]
#[command(
    name = "cxr-trainer",
    version,
    about = "Chest X-ray classifier: training companion"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    Release,
    Development,
}

/// Where tensors live. `flex` and `cuda` need the build features of the
/// same names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendChoice {
    Ndarray,
    Flex,
    Cuda,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum PrecisionChoice {
    F32,
    Bf16,
}

impl From<PrecisionChoice> for cxr_trainer::vit::Precision {
    fn from(p: PrecisionChoice) -> Self {
        match p {
            PrecisionChoice::F32 => Self::F32,
            PrecisionChoice::Bf16 => Self::Bf16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Preset {
    /// The demo model (width 96, depth 4, patch 16).
    Demo,
    VitTi16,
    VitS16,
    VitB16,
}

/// One node of a multi-node run: every node runs `train` with the same
/// config and --devices, its own --node-rank and addresses.
#[derive(Debug, clap::Args)]
struct ClusterArgs {
    /// Nodes in the run (one process each); 1 trains on this node alone.
    #[arg(long, default_value_t = 1)]
    nodes: u32,
    /// This node's rank, 0 to --nodes - 1 (each node its own).
    #[arg(long)]
    node_rank: Option<u32>,
    /// The orchestrator (`cxr-trainer orchestrate`), as ws://HOST:PORT.
    #[arg(long)]
    orchestrator: Option<String>,
    /// Where the other nodes reach this one, as ws://HOST:PORT (PORT is --data-port).
    #[arg(long)]
    node_address: Option<String>,
    /// The port this node serves its tensors on, to the other nodes.
    #[arg(long)]
    data_port: Option<u16>,
    /// Seconds a node waits for every other to join before it gives up.
    #[arg(long, default_value_t = 600)]
    join_timeout: u64,
}

impl ClusterArgs {
    fn cluster(self) -> anyhow::Result<Option<cxr_trainer::parallel::Cluster>> {
        if self.nodes <= 1 {
            anyhow::ensure!(
                self.node_rank.is_none()
                    && self.orchestrator.is_none()
                    && self.node_address.is_none()
                    && self.data_port.is_none(),
                "--node-rank, --orchestrator, --node-address and --data-port need --nodes 2 or more"
            );
            return Ok(None);
        }
        let missing = |flag: &str| anyhow::anyhow!("--nodes {} needs {flag}", self.nodes);
        let data_port = self.data_port.ok_or_else(|| missing("--data-port"))?;
        // burn serves the node's tensors from a task that only logs a port
        // it cannot bind.
        ensure_port_free(data_port, "--data-port")?;
        Ok(Some(cxr_trainer::parallel::Cluster {
            nodes: self.nodes,
            node_rank: self.node_rank.ok_or_else(|| missing("--node-rank"))?,
            orchestrator: self.orchestrator.ok_or_else(|| missing("--orchestrator"))?,
            node_address: self.node_address.ok_or_else(|| missing("--node-address"))?,
            data_port,
            join_timeout: std::time::Duration::from_secs(self.join_timeout),
        }))
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write a new Ed25519 key pair: NAME.key (secret, 0600) and NAME.pub.toml.
    Keygen {
        /// Development keys must be named dev-…; release keys must not.
        #[arg(long)]
        name: String,
        #[arg(long, value_enum)]
        role: Role,
        /// Folder for the two files (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Lock an ONNX model and its decision parameters into a signed bundle.
    Lock(Box<lock::LockArgs>),
    /// Fit the content gate (is this a frontal chest film?) and write
    /// content-gate.onnx, content-gate.toml and its report for `lock`.
    FitGate(Box<cxr_trainer::gate::FitGateArgs>),
    /// Run a verified bundle's deployed decision (the appliance's study
    /// path) over a labelled set; write report.json and report.md.
    Evaluate(Box<cxr_trainer::evaluate::EvaluateArgs>),
    /// Fit calibration, thresholds and OOD statistics on the validation split
    /// of a run, evaluate on its test split, and write model.onnx,
    /// params.toml, model-card.md and report.{json,md} for `lock`. Several
    /// runs make an ensemble: each member is calibrated alone, then the
    /// ensemble as a whole; model-2.onnx… and ensemble.toml are written too.
    Finalize {
        /// The run folder written by `train`; repeat for an ensemble (2 to 5
        /// runs of the same data, split, model and input).
        #[arg(long = "run", required = true)]
        run: Vec<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// Studies to score as out of distribution (other body parts,
        /// modalities); those the guarded ingest refuses are listed as such.
        #[arg(long = "ood")]
        ood: Vec<PathBuf>,
    },
    /// Train the ViT from a TOML configuration (see trainer/configs/).
    Train {
        #[arg(long)]
        config: PathBuf,
        /// Run folder: checkpoints, log.jsonl, report.
        #[arg(long)]
        out: PathBuf,
        /// Continue from the run folder's last checkpoint.
        #[arg(long)]
        resume: bool,
        #[arg(long, value_enum, default_value = "ndarray")]
        backend: BackendChoice,
        /// Data-parallel over this many devices of the backend (GPUs 0..N
        /// on CUDA; worker threads on the CPU), through burn's collective
        /// all-reduce; optim.batch_size is shared among them.
        #[arg(long, default_value_t = 1)]
        devices: u16,
        #[command(flatten)]
        cluster: ClusterArgs,
    },
    /// Pair the nodes of a multi-node training run (burn's global
    /// collective orchestrator): listens on every interface at --port
    /// until interrupted; start a fresh one for every run. See the
    /// trainer's README on several nodes.
    Orchestrate {
        #[arg(long)]
        port: u16,
    },
    /// Pretrain the ViT encoder as a masked autoencoder on unlabelled films
    /// (see trainer/configs/demo-mae.toml); a training config starts from
    /// it with `init = { from = "mae", path = "OUT/mae.safetensors" }`.
    Pretrain {
        #[arg(long)]
        config: PathBuf,
        /// Run folder: mae.safetensors, the optimiser state, the log.
        #[arg(long)]
        out: PathBuf,
        /// Continue after the epoch the run folder's checkpoint records.
        #[arg(long)]
        resume: bool,
        #[arg(long, value_enum, default_value = "ndarray")]
        backend: BackendChoice,
    },
    /// Time whole training steps on synthetic data (one JSON line):
    /// images/s, and the forward-only time of the same model as a baseline.
    BenchStep {
        #[arg(long, value_enum, default_value = "demo")]
        preset: Preset,
        #[arg(long, default_value_t = 128)]
        image_size: usize,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        steps: usize,
        /// The EMA takes the weights every this many steps (as `optim.ema_every`).
        #[arg(long, default_value_t = 1)]
        ema_every: usize,
        /// The products' precision (as `optim.precision`; bf16 needs cuda or flex).
        #[arg(long, value_enum, default_value = "f32")]
        precision: PrecisionChoice,
        #[arg(long, value_enum, default_value = "ndarray")]
        backend: BackendChoice,
    },
}

/// Run `$body` with `$B` bound to the chosen autodiff backend type and
/// `$dev` to its default device.
macro_rules! with_backend {
    ($choice:expr, |$B:ident, $dev:ident| $body:expr) => {
        match $choice {
            BackendChoice::Ndarray => {
                type $B = burn::backend::Autodiff<burn::backend::NdArray<f32>>;
                let $dev = Default::default();
                $body
            }
            #[cfg(feature = "flex")]
            BackendChoice::Flex => {
                type $B = burn::backend::Autodiff<burn::backend::Flex>;
                let $dev = Default::default();
                $body
            }
            #[cfg(feature = "cuda")]
            BackendChoice::Cuda => {
                type $B = burn::backend::Autodiff<burn::backend::Cuda>;
                // burn's CUDA runtime panics (in a worker thread, then here)
                // when there is no GPU or driver: turn that into an error.
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let $dev = Default::default();
                    $body
                }))
                .unwrap_or_else(|_| {
                    Err(anyhow::anyhow!(
                        "burn's CUDA backend failed (no GPU or no NVIDIA driver on this machine?); fix: run on a GPU machine, or use --backend ndarray"
                    ))
                })
            }
            #[allow(unreachable_patterns)]
            other => Err(anyhow::anyhow!(
                "backend {other:?} is not in this build; rebuild with `--features {}`",
                format!("{other:?}").to_lowercase()
            )),
        }
    };
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Keygen { name, role, out } => keygen(&name, role, &out),
        Command::Lock(args) => lock::run(&args),
        Command::Evaluate(args) => cxr_trainer::evaluate::run(&args)
            .map(|r| println!("{}", serde_json::json!({ "studies": r.studies, "coverage": r.coverage, "outcomes": r.outcomes })))
            .map_err(Into::into),
        Command::FitGate(args) => cxr_trainer::gate::run(&args)
            .map(|r| println!("{}", serde_json::json!({ "cuts": r.cuts, "validation_acceptance": r.validation_acceptance, "results": r.results.iter().map(|x| (x.source.clone(), x.accepted)).collect::<Vec<_>>() })))
            .map_err(Into::into),
        Command::Finalize { run, out, ood } => {
            type Cpu = burn::backend::NdArray<f32>;
            cxr_trainer::finalize::finalize_runs::<Cpu>(&run, &out, &ood, &Default::default())
                .map(|r| println!("{}", serde_json::json!({ "macro_auroc": r.macro_auroc, "macro_auprc": r.macro_auprc, "coverage": r.test.coverage, "ood_kept": r.ood.candidates.iter().filter(|c| c.kept).map(|c| c.kind.name()).collect::<Vec<_>>(), "out": out })))
                .map_err(Into::into)
        }
        Command::Train {
            config,
            out,
            resume,
            backend,
            devices,
            cluster,
        } => cluster
            .cluster()
            .and_then(|cluster| train(&config, &out, (resume, devices, cluster), backend)),
        Command::Orchestrate { port } => orchestrate(port),
        Command::Pretrain {
            config,
            out,
            resume,
            backend,
        } => pretrain(&config, &out, resume, backend),
        Command::BenchStep {
            preset,
            image_size,
            batch,
            steps,
            ema_every,
            precision,
            backend,
        } => bench_step(
            preset,
            image_size,
            (batch, steps, ema_every, precision.into()),
            backend,
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cxr-trainer: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn train(
    config: &std::path::Path,
    out: &std::path::Path,
    (resume, devices, cluster): (bool, u16, Option<cxr_trainer::parallel::Cluster>),
    backend: BackendChoice,
) -> anyhow::Result<()> {
    anyhow::ensure!(devices >= 1, "--devices must be 1 or more");
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let config: cxr_trainer::config::TrainConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    let report = with_backend!(backend, |B, device| {
        let kind = burn::tensor::backend::DeviceOps::id(&device).type_id;
        let present = <B as burn::tensor::backend::Backend>::device_count(kind);
        // CPU backends run every worker on the one CPU; a GPU backend needs
        // a device per worker.
        if backend == BackendChoice::Cuda && usize::from(devices) > present {
            anyhow::bail!("--devices {devices}, but this machine has {present} CUDA device(s)");
        }
        let devices = numbered_devices::<B>(&device, devices);
        Ok(cxr_trainer::train::train_across::<B>(
            &config,
            out,
            resume,
            &devices,
            cluster.as_ref(),
        )?)
    })?;
    std::fs::write(out.join("config.toml"), &text)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// burn's servers only log a port they cannot bind: binding it first, on
/// every interface as they do, makes that an error before anything starts.
fn ensure_port_free(port: u16, flag: &str) -> anyhow::Result<()> {
    anyhow::ensure!(port > 0, "{flag} must be a port number above 0");
    std::net::TcpListener::bind(("0.0.0.0", port))
        .map(drop)
        .with_context(|| format!("{flag} {port} is not free on this machine"))
}

/// burn's global orchestrator on `port` until SIGINT or SIGTERM.
fn orchestrate(port: u16) -> anyhow::Result<()> {
    ensure_port_free(port, "--port")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the orchestrator's runtime")?;
    eprintln!("orchestrating on port {port} (every interface) until interrupted");
    runtime.block_on(burn_collective::start_global_orchestrator(port));
    Ok(())
}

/// Devices 0..n of the kind `first` is (the same CPU for every worker on
/// the CPU backends).
fn numbered_devices<B: burn::tensor::backend::Backend>(
    first: &B::Device,
    n: u16,
) -> Vec<B::Device> {
    use burn::tensor::backend::{Device, DeviceId, DeviceOps};
    let kind = first.id().type_id;
    (0..n)
        .map(|i| B::Device::from_id(DeviceId::new(kind, i)))
        .collect()
}

fn pretrain(
    config: &std::path::Path,
    out: &std::path::Path,
    resume: bool,
    backend: BackendChoice,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let config: cxr_trainer::pretrain::PretrainConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", config.display()))?;
    let report = with_backend!(backend, |B, device| Ok(
        cxr_trainer::pretrain::pretrain::<B>(&config, out, resume, &device)?
    ))?;
    std::fs::write(out.join("pretrain-config.toml"), &text)?;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn bench_step(
    preset: Preset,
    image_size: usize,
    (batch, steps, ema_every, precision): (usize, usize, usize, cxr_trainer::vit::Precision),
    backend: BackendChoice,
) -> anyhow::Result<()> {
    use cxr_model::VitSpec;
    let labels = 14;
    let spec = match preset {
        Preset::Demo => VitSpec {
            patch: 16,
            width: 96,
            depth: 4,
            heads: 3,
            mlp_ratio: 4,
            in_channels: 1,
            image_size,
            labels,
        },
        Preset::VitTi16 => VitSpec::vit_ti16(image_size, labels),
        Preset::VitS16 => VitSpec::vit_s16(image_size, labels),
        Preset::VitB16 => VitSpec::vit_b16(image_size, labels),
    };
    spec.validate()?;
    let name = format!("{backend:?}").to_lowercase();
    let timing = with_backend!(backend, |B, device| Ok(
        cxr_trainer::bench::time_train_steps::<B>(
            &name,
            spec,
            (batch, steps, ema_every, precision),
            &device
        )?
    ))?;
    println!("{}", serde_json::to_string(&timing)?);
    Ok(())
}

fn keygen(name: &str, role: Role, out: &std::path::Path) -> anyhow::Result<()> {
    let role = match role {
        Role::Release => KeyRole::Release,
        Role::Development => KeyRole::Development,
    };
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let signer = BundleSigner::generate(name, role)?;
    let (secret, public) = signer.write_files(out)?;
    println!(
        "{}",
        serde_json_line(&[
            ("key_id", cxr_bundle::hex::encode(&signer.key_id())),
            ("role", role.as_str().to_owned()),
            ("secret_key", secret.display().to_string()),
            ("public_key", public.display().to_string()),
        ])
    );
    Ok(())
}

/// A flat JSON object of strings, without pulling serde_json into the trainer.
fn serde_json_line(pairs: &[(&str, String)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k:?}: {:?}", v))
        .collect();
    format!("{{{}}}", body.join(", "))
}
