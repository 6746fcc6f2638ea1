//! A whole (tiny) run on the shared NIH subset: train, resume, finalize,
//! and the finalized files lock into a bundle the appliance verifies.
#![allow(clippy::unwrap_used)]

use burn::backend::{Autodiff, NdArray};
use cxr_bundle::ModelParams;
use cxr_tests::data::{scratch_dir, shared_file};
use cxr_tests::dicom_net::{free_port, wait_until};
use cxr_trainer::config::TrainConfig;
use cxr_trainer::train::train;
use std::time::Duration;

/// The demo's config on the shared subset at `csv`, shrunk to a 32 px,
/// one-block model trained for one epoch.
fn tiny_demo(csv: &std::path::Path) -> String {
    include_str!("../configs/demo-nih.toml")
        .replace(
            "../shared/data/nih-chestxray14-subset/labels.csv",
            csv.to_str().unwrap(),
        )
        .replace("patch = 16", "patch = 8")
        .replace("width = 96", "width = 16")
        .replace("depth = 4", "depth = 1")
        .replace("heads = 3", "heads = 2")
        .replace("image_size = 128", "image_size = 32")
        .replace("epochs = 12", "epochs = 1")
}

#[test]
fn train_resume_and_finalize_a_tiny_model_on_the_nih_subset() {
    let Some(csv) = shared_file("nih-chestxray14-subset/labels.csv") else {
        return;
    };
    let text = tiny_demo(&csv)
        .replace("batch_size = 32", "batch_size = 64")
        // The fine-tuning knobs: layer-wise LR decay and balanced positive
        // weights (their effect on the numbers is checked by unit tests).
        // The EMA every 3 steps, and SWA from the first epoch.
        .replace(
            "ema_decay = 0.99",
            "ema_decay = 0.99\nlayer_decay = 0.8\nema_every = 3\nswa_start_epoch = 0",
        )
        .replace(
            "loss = { loss = \"bce\" }",
            "loss = { loss = \"bce\" }\npos_weight = { mode = \"balanced\", max = 20.0 }",
        );
    let mut config: TrainConfig = toml::from_str(&text).unwrap();
    let dir = scratch_dir("train-run");
    let run = dir.join("run");
    let device = Default::default();
    let report = train::<Autodiff<NdArray<f32>>>(&config, &run, false, &device).unwrap();
    assert_eq!(report.epochs_run, 1);
    assert!(
        report.train_images > 400 && report.validation_images > 100,
        "{report:?}"
    );
    for f in [
        "best.onnx",
        "best.json",
        "last.onnx",
        "last-ema.onnx",
        "last-swa.onnx",
        "last.json",
        "log.jsonl",
        "optimizer-0.bin",
    ] {
        assert!(run.join(f).is_file(), "{f}");
    }
    let weights_in = |d: &std::path::Path, name: &str| {
        let bytes = std::fs::read(d.join(name)).unwrap();
        let w = cxr_model::onnx::read_weights(&bytes, &config.model).unwrap();
        w.iter()
            .flat_map(|(_, _, v)| v.to_vec())
            .collect::<Vec<f32>>()
    };
    let first_epoch = weights_in(&run, "last.onnx");
    assert_eq!(
        weights_in(&run, "last-swa.onnx"),
        first_epoch,
        "SWA of one snapshot"
    );
    // Resume continues at the next epoch.
    config.optim.epochs = 2;
    let resumed = train::<Autodiff<NdArray<f32>>>(&config, &run, true, &device).unwrap();
    assert_eq!(resumed.epochs_run, 1);
    assert_eq!(resumed.steps, 2 * report.steps);
    let log = std::fs::read_to_string(run.join("log.jsonl")).unwrap();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("\"event\":\"epoch\""))
            .count(),
        2
    );
    assert!(log.contains("\"val_macro_auprc_ema\""));
    // Resuming keeps the AdamW moments: one epoch plus a resumed one gives
    // the weights of two epochs straight (restarted moments would not).
    let straight = dir.join("straight");
    train::<Autodiff<NdArray<f32>>>(&config, &straight, false, &device).unwrap();
    for name in ["last.onnx", "last-ema.onnx", "last-swa.onnx"] {
        let gap = cxr_bundle::rel_l2(&weights_in(&run, name), &weights_in(&straight, name));
        assert!(gap < 1e-6, "resumed vs straight {name}: rel L2 {gap:.3e}");
    }
    // SWA is the mean of the two epochs' end weights.
    let mean: Vec<f32> = first_epoch
        .iter()
        .zip(weights_in(&run, "last.onnx"))
        .map(|(a, b)| (a + b) / 2.0)
        .collect();
    let gap = cxr_bundle::rel_l2(&weights_in(&run, "last-swa.onnx"), &mean);
    assert!(
        gap < 1e-6,
        "SWA vs the mean of the epochs: rel L2 {gap:.3e}"
    );
    // keep = "swa": the SWA mean is the model, whatever validates best.
    let mut swa_config = config.clone();
    swa_config.optim.keep = cxr_trainer::config::Keep::Swa;
    let kept = dir.join("keep-swa");
    train::<Autodiff<NdArray<f32>>>(&swa_config, &kept, false, &device).unwrap();
    assert_eq!(
        weights_in(&kept, "best.onnx"),
        weights_in(&kept, "last-swa.onnx")
    );
    let best: serde_json::Value =
        serde_json::from_slice(&std::fs::read(kept.join("best.json")).unwrap()).unwrap();
    assert_eq!(
        (best["source"].as_str(), best["epoch"].as_u64()),
        (Some("swa"), Some(1))
    );
    let last: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("last.json")).unwrap()).unwrap();
    assert_eq!(last["swa_models"], 2);
    assert!(last["val_macro_auroc_swa"].is_number(), "{last}");

    let out = dir.join("final");
    let png = shared_file("torchxrayvision-test-samples/00000001_000.png").unwrap();
    let not_dicom = dir.join("not-dicom.dcm");
    std::fs::write(&not_dicom, b"DICM? no: a text file named .dcm").unwrap();
    let r = cxr_trainer::finalize::finalize::<NdArray<f32>>(
        &run,
        &out,
        &[png, not_dicom, dir.join("missing.dcm")],
        &device,
    )
    .unwrap();
    assert_eq!(r.ood_files.len(), 3);
    assert_eq!(r.ood_files[0].outcome, "scored");
    let refused = &r.ood_files[1].outcome;
    assert!(
        refused.starts_with("refused at ingest (DICOM_"),
        "{refused}"
    );
    assert!(!refused.contains("permissions"), "{refused}");
    let missing = &r.ood_files[2].outcome;
    assert!(missing.starts_with("not read: reading "), "{missing}");
    assert_eq!(r.test.labels.len(), 14);
    assert_eq!(r.images.held_out, 95, "patients under 18 are held out");
    let params =
        ModelParams::from_toml(&std::fs::read_to_string(out.join("params.toml")).unwrap()).unwrap();
    // Every candidate OOD score is judged; exactly the kept ones ship.
    assert_eq!(r.ood.candidates.len(), 3);
    let kept = r.ood.candidates.iter().filter(|c| c.kept).count();
    assert_eq!(params.ood.terms.len(), kept);
    assert_eq!(
        params.feature_stats.is_some(),
        params
            .ood
            .terms
            .iter()
            .any(|t| t.kind == cxr_core::ood::OodScoreKind::Mahalanobis)
    );
    // The deployed rule was run on the test patients, label by label, and
    // summarised by `evaluate`'s code, pictures included.
    assert_eq!(r.test.labels.len(), 14);
    assert!(r.test.coverage > 0.0 && r.test.coverage <= 1.0);
    assert!(r.test.studies > 100);
    assert_eq!(r.test.studies, r.images.test, "one row per test image");
    let md = std::fs::read_to_string(out.join("test-evaluation.md")).unwrap();
    for png in ["roc.png", "reliability.png", "coverage-risk.png"] {
        assert!(md.contains(&format!("(test-evaluation/{png})")), "{md}");
        assert!(out.join("test-evaluation").join(png).is_file(), "{png}");
    }
    // A label without both classes in validation stays uncalibrated.
    for (fit, t) in r.calibration.iter().zip(&params.temperatures) {
        assert!(fit.calibrated || *t == 1.0, "{fit:?}");
    }
    let card = std::fs::read_to_string(out.join("model-card.md")).unwrap();
    assert!(card.contains("not for clinical use") && card.contains("| Pneumonia |"));
    assert!(card.contains("Operating points as deployed") && card.contains("coverage"));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The whole training loop on two devices (CPU workers) takes the steps
/// one device takes: the same weights and EMA after an epoch, and in the
/// log the same losses.
#[test]
fn training_on_two_devices_matches_one_device() {
    let Some(csv) = shared_file("nih-chestxray14-subset/labels.csv") else {
        return;
    };
    let text = tiny_demo(&csv).replace("ema_decay = 0.99", "ema_decay = 0.9\naccumulate = 2");
    let config: TrainConfig = toml::from_str(&text).unwrap();
    let dir = scratch_dir("train-two-devices");
    let run = |devices: usize| {
        let out = dir.join(format!("on-{devices}"));
        let devices = vec![Default::default(); devices];
        cxr_trainer::train::train_on::<Autodiff<NdArray<f32>>>(&config, &out, false, &devices)
            .unwrap();
        out
    };
    let (one, two) = (run(1), run(2));
    assert_same_run(&one, &two, &config, "1 vs 2 devices");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two run folders hold the same weights and EMA (relative L2 under
/// 1e-5), and their logs the same losses, step for step.
fn assert_same_run(a: &std::path::Path, b: &std::path::Path, config: &TrainConfig, what: &str) {
    for name in ["last.onnx", "last-ema.onnx"] {
        let weights = |d: &std::path::Path| {
            let bytes = std::fs::read(d.join(name)).unwrap();
            let w = cxr_model::onnx::read_weights(&bytes, &config.model).unwrap();
            w.iter()
                .flat_map(|(_, _, v)| v.to_vec())
                .collect::<Vec<f32>>()
        };
        let gap = cxr_bundle::rel_l2(&weights(a), &weights(b));
        assert!(gap < 1e-5, "{name}, {what}: rel L2 {gap:.3e}");
    }
    let losses = |d: &std::path::Path| -> Vec<f64> {
        std::fs::read_to_string(d.join("log.jsonl"))
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event"] == "step")
            .filter_map(|v| v["loss"].as_f64())
            .collect()
    };
    let (x, y) = (losses(a), losses(b));
    assert!(
        x.len() > 5 && x.len() == y.len(),
        "{what}: {} vs {} steps",
        x.len(),
        y.len()
    );
    for (p, q) in x.iter().zip(&y) {
        assert!((p - q).abs() < 1e-5, "{what}: loss {p} vs {q}");
    }
}

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One node's part in a two-node run: its config, rank, and devices.
type NodeRun<'a> = (&'a std::path::Path, u32, u16);

/// Runs `cxr-trainer train` as nodes of one two-node run (a process each,
/// burn's global collective over WebSockets on this machine, `cxr-trainer
/// orchestrate` pairing them), node k as `nodes[k]` says, with `extra`
/// arguments, into `dir/node-k`; each node's exit status and stderr.
fn run_two_nodes(
    dir: &std::path::Path,
    nodes: &[NodeRun<'_>],
    extra: &[&str],
) -> Vec<(bool, String)> {
    let orchestrator_port = free_port();
    let _orchestrator = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_cxr-trainer"))
            .args(["orchestrate", "--port", &orchestrator_port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let listening = wait_until(Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", orchestrator_port)).is_ok()
    });
    assert!(listening, "the orchestrator never listened");
    let mut nodes: Vec<Killed> = (0..nodes.len())
        .map(|k| {
            let (config, rank, devices) = nodes[k];
            let port = free_port().to_string();
            let stderr = std::fs::File::create(dir.join(format!("node-{k}.log"))).unwrap();
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_cxr-trainer"));
            c.arg("train").arg("--config").arg(config);
            c.arg("--out").arg(dir.join(format!("node-{k}")));
            c.args(["--devices", &devices.to_string()]);
            c.args(["--nodes", "2", "--node-rank", &rank.to_string()]);
            c.args(extra);
            c.args([
                "--orchestrator",
                &format!("ws://127.0.0.1:{orchestrator_port}"),
            ]);
            c.args([
                "--node-address",
                &format!("ws://127.0.0.1:{port}"),
                "--data-port",
                &port,
            ]);
            Killed(
                c.stdout(std::process::Stdio::null())
                    .stderr(stderr)
                    .spawn()
                    .unwrap(),
            )
        })
        .collect();
    let exited = |n: &mut Killed| n.0.try_wait().unwrap();
    let all_exited = wait_until(Duration::from_secs(300), || {
        nodes.iter_mut().all(|n| exited(n).is_some())
    });
    let log = |k: usize| std::fs::read_to_string(dir.join(format!("node-{k}.log"))).unwrap();
    assert!(
        all_exited,
        "a node is still running: {}",
        (0..nodes.len())
            .map(log)
            .collect::<Vec<_>>()
            .join("\n---\n")
    );
    (0..nodes.len())
        .map(|k| (exited(&mut nodes[k]).is_some_and(|s| s.success()), log(k)))
        .collect()
}

fn write_tiny_config(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Two nodes of two workers each (real processes, a real orchestrator,
/// burn's global all-reduce once) check that they start from one config
/// and weights and hold every global rank once: on different seeds, or
/// both as node 0, both are refused; alone, a node gives up after its join
/// timeout; on the same config both join, agree,
/// and then stop with the error naming burn 0.21's stalling global
/// collective, rather than hang.
#[test]
fn two_nodes_check_their_start_and_stop_before_burns_stall() {
    let Some(csv) = shared_file("nih-chestxray14-subset/labels.csv") else {
        return;
    };
    let text = tiny_demo(&csv);
    let dir = scratch_dir("train-two-nodes-start");
    let same = write_tiny_config(&dir, "tiny.toml", &text);
    let seed = text.lines().find(|l| l.starts_with("seed = ")).unwrap();
    let other = write_tiny_config(&dir, "other-seed.toml", &text.replacen(seed, "seed = 1", 1));
    for (ok, log) in run_two_nodes(&dir, &[(&same, 0, 2), (&other, 1, 2)], &[]) {
        assert!(
            !ok && log.contains("different configs, data or weights"),
            "{log}"
        );
    }
    for (ok, log) in run_two_nodes(&dir, &[(&same, 0, 2), (&same, 0, 2)], &[]) {
        assert!(!ok && log.contains("rank 0 joined 2 times"), "{log}");
    }
    // A node whose partner never comes gives up instead of waiting forever.
    for (ok, log) in run_two_nodes(&dir, &[(&same, 0, 1)], &["--join-timeout", "3"]) {
        assert!(
            !ok && log.contains("not every node joined within 3 s"),
            "{log}"
        );
    }
    for (ok, log) in run_two_nodes(&dir, &[(&same, 0, 2), (&same, 1, 2)], &[]) {
        assert!(
            !ok && log.contains("the nodes joined and agree on the run"),
            "{log}"
        );
        assert!(log.contains("stalls on the second sum"), "{log}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Two nodes end the epoch with the weights, EMA and losses of one process
/// on the whole batch; each node's run folder holds them.
#[test]
#[ignore = "burn 0.21's global all-reduce stalls on its second sum, so the nodes stop after joining; run with --ignored once burn's collective is fixed and that stop removed"]
fn two_nodes_match_one_process() {
    let Some(csv) = shared_file("nih-chestxray14-subset/labels.csv") else {
        return;
    };
    let text = tiny_demo(&csv);
    let config: TrainConfig = toml::from_str(&text).unwrap();
    let dir = scratch_dir("train-two-nodes");
    let config_path = write_tiny_config(&dir, "tiny.toml", &text);
    let single = std::process::Command::new(env!("CARGO_BIN_EXE_cxr-trainer"))
        .arg("train")
        .arg("--config")
        .arg(&config_path)
        .arg("--out")
        .arg(dir.join("one"))
        .output()
        .unwrap();
    assert!(
        single.status.success(),
        "{}",
        String::from_utf8_lossy(&single.stderr)
    );
    for (rank, (ok, log)) in run_two_nodes(&dir, &[(&config_path, 0, 1), (&config_path, 1, 1)], &[])
        .into_iter()
        .enumerate()
    {
        assert!(ok, "node {rank}: {log}");
        let node = dir.join(format!("node-{rank}"));
        assert_same_run(
            &dir.join("one"),
            &node,
            &config,
            &format!("1 process vs node {rank} of 2"),
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Ensemble members train with other seeds on one split: `split_seed`
/// fixes the patient split whatever the run's seed.
#[test]
fn split_seed_keeps_the_split_across_seeds() {
    let Some(csv) = shared_file("nih-chestxray14-subset/labels.csv") else {
        return;
    };
    let text = include_str!("../configs/recipe-v2/seed-2.toml").replace(
        "../shared/data/nih-chestxray14-subset/labels.csv",
        csv.to_str().unwrap(),
    );
    let member: TrainConfig = toml::from_str(&text).unwrap();
    let demo = TrainConfig {
        seed: 20261127,
        data: cxr_trainer::config::DataConfig {
            split_seed: None,
            ..member.data.clone()
        },
        ..member.clone()
    };
    let split = |c: &TrainConfig| {
        cxr_trainer::prepared::Prepared::load(&c.data, c.seed)
            .unwrap()
            .split
    };
    assert_ne!(member.seed, demo.seed);
    assert_eq!(split(&member), split(&demo));
    let unpinned = TrainConfig {
        data: demo.data.clone(),
        ..member.clone()
    };
    assert_ne!(
        split(&unpinned),
        split(&demo),
        "the seed alone moves the split"
    );
}

/// Two tiny runs that differ only in their seed, finalized together and
/// locked with `lock --ensemble`: each is calibrated alone, the bundle
/// carries both with their own golden vectors and verifies, and the
/// appliance runs them as one ensemble engine. A run on another patient
/// split is refused.
#[test]
fn an_ensemble_of_two_runs_finalizes_locks_and_runs_as_one_bundle() {
    let Some(csv) = shared_file("nih-chestxray14-subset/labels.csv") else {
        return;
    };
    let text = tiny_demo(&csv).replace("batch_size = 32", "batch_size = 64");
    let first: TrainConfig = toml::from_str(&text).unwrap();
    let second = TrainConfig {
        seed: first.seed + 1,
        data: cxr_trainer::config::DataConfig {
            split_seed: Some(first.seed),
            ..first.data.clone()
        },
        ..first.clone()
    };
    let elsewhere = TrainConfig {
        seed: first.seed + 2,
        ..first.clone()
    };
    let dir = scratch_dir("ensemble-run");
    let device = Default::default();
    let runs: Vec<_> = [("a", &first), ("b", &second), ("c", &elsewhere)]
        .into_iter()
        .map(|(name, config)| {
            let run = dir.join(name);
            train::<Autodiff<NdArray<f32>>>(config, &run, false, &device).unwrap();
            run
        })
        .collect();
    let out = dir.join("final");
    let refused = cxr_trainer::finalize::finalize_runs::<NdArray<f32>>(
        &[runs[0].clone(), runs[2].clone()],
        &out,
        &[],
        &device,
    )
    .unwrap_err();
    assert!(
        refused.to_string().contains("another patient split"),
        "{refused}"
    );

    let r = cxr_trainer::finalize::finalize_runs::<NdArray<f32>>(&runs[..2], &out, &[], &device)
        .unwrap();
    assert_eq!(r.ensemble.len(), 2);
    let list = out.join(cxr_trainer::finalize::ENSEMBLE_FILE);
    let file: cxr_trainer::finalize::EnsembleFile =
        toml::from_str(&std::fs::read_to_string(&list).unwrap()).unwrap();
    assert_eq!(file.member, r.ensemble);
    assert_eq!(file.member[1].onnx, "model-2.onnx");
    assert_eq!(
        std::fs::read(out.join("model-2.onnx")).unwrap(),
        std::fs::read(runs[1].join("best.onnx")).unwrap()
    );
    // Each member is calibrated alone: as its own single-model finalize would.
    cxr_trainer::finalize::finalize::<NdArray<f32>>(&runs[1], &dir.join("b-alone"), &[], &device)
        .unwrap();
    let alone =
        ModelParams::from_toml(&std::fs::read_to_string(dir.join("b-alone/params.toml")).unwrap())
            .unwrap();
    assert_eq!(file.member[1].temperatures, alone.temperatures);
    assert_eq!(file.member[1].calibrated, alone.calibrated);
    assert!(!dir.join("b-alone").join("ensemble.toml").exists());
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("An ensemble of 2 runs"), "{md}");

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let bundle = dir.join("ensemble.cxrb");
    let lock = |models: &[&str], params: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_cxr-trainer"))
            .arg("lock")
            .args(models)
            .args(["--params", params.to_str().unwrap()])
            .args([
                "--key",
                root.join("demo/keys/dev-demo.key").to_str().unwrap(),
            ])
            .args([
                "--content-gate",
                root.join("demo/content-gate").to_str().unwrap(),
            ])
            .args([
                "--model-id",
                "ensemble-test",
                "--version",
                "1",
                "--board",
                "dev-x86",
            ])
            .args(["--out", bundle.to_str().unwrap()])
            .output()
            .unwrap()
    };
    // The ensemble's parameters with one of its models alone, and another
    // model's parameters with the ensemble, are refused.
    let first_alone = out.join("model.onnx");
    let wrong = lock(
        &["--onnx", first_alone.to_str().unwrap()],
        &out.join("params.toml"),
    );
    assert!(!wrong.status.success());
    let why = String::from_utf8_lossy(&wrong.stderr);
    assert!(why.contains("were fitted for the ensemble"), "{why}");
    let wrong = lock(
        &["--ensemble", list.to_str().unwrap()],
        &dir.join("b-alone/params.toml"),
    );
    let why = String::from_utf8_lossy(&wrong.stderr);
    assert!(why.contains("not fitted for the ensemble"), "{why}");
    let locked = lock(
        &["--ensemble", list.to_str().unwrap()],
        &out.join("params.toml"),
    );
    assert!(
        locked.status.success(),
        "{}",
        String::from_utf8_lossy(&locked.stderr)
    );
    let trust = cxr_bundle::TrustStore::load(&root.join("../board-config/dev-keys")).unwrap();
    let b = cxr_bundle::verify(
        std::fs::read(&bundle).unwrap(),
        &trust,
        &cxr_board::BoardProfile::builtin("dev-x86").unwrap(),
        &cxr_bundle::VersionFloors::new(),
    )
    .unwrap();
    assert_eq!(b.models().len(), 2);
    assert_eq!(
        b.models()[1].calibration.unwrap().temperatures,
        file.member[1].temperatures
    );
    assert!(b.model_card().contains("## Ensemble"));
    let (selection, _) =
        cxr_engine::select_for_bundle(&b, cxr_engine::EnginePreference::Tract, 1, &[]).unwrap();
    assert_eq!(selection.engine.name(), "ensemble");
    std::fs::remove_dir_all(&dir).unwrap();
}
