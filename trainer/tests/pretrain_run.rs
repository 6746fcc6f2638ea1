//! MAE pretraining of a tiny encoder on the shared films through the
//! `cxr-trainer pretrain` command, its resume, and a fine-tuning run's
//! start from the checkpoint.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

use cxr_model::{VitSpec, Weights};
use cxr_tests::data::{scratch_dir, shared_file};
use cxr_trainer::config::TrainConfig;
use cxr_trainer::init::Init;
use cxr_trainer::prepared::Prepared;
use cxr_trainer::pretrain::{MaeCheckpoint, PretrainConfig};

/// The demo configs shrunk to a 32 px, one-block model.
fn tiny(text: &str, nih: &Path, kermany: &Path, train_config: &Path) -> String {
    text.replace(
        "../shared/data/nih-chestxray14-subset/labels.csv",
        nih.to_str().unwrap(),
    )
    .replace(
        "../shared/data/kermany-paediatric-cxr-subset/labels.csv",
        kermany.to_str().unwrap(),
    )
    .replace(
        "trainer/configs/demo-nih.toml",
        train_config.to_str().unwrap(),
    )
    .replace("patch = 16", "patch = 8")
    .replace("width = 96", "width = 16")
    .replace("depth = 4", "depth = 1")
    .replace("heads = 3", "heads = 2")
    .replace("decoder_width = 64", "decoder_width = 8")
    .replace("decoder_depth = 2", "decoder_depth = 1")
    .replace("image_size = 128", "image_size = 32")
    .replace("epochs = 12", "epochs = 1")
    .replace("batch_size = 64", "batch_size = 256")
}

fn pretrain(config: &Path, out: &Path, resume: bool) -> serde_json::Value {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cxr-trainer"));
    cmd.args(["pretrain", "--config"])
        .arg(config)
        .arg("--out")
        .arg(out);
    if resume {
        cmd.arg("--resume");
    }
    let run = cmd.output().unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    serde_json::from_slice(&run.stdout).unwrap()
}

#[test]
fn pretrain_resume_and_fine_tune_from_the_encoder() {
    let (Some(nih), Some(kermany)) = (
        shared_file("nih-chestxray14-subset/labels.csv"),
        shared_file("kermany-paediatric-cxr-subset/labels.csv"),
    ) else {
        return;
    };
    let dir = scratch_dir("pretrain-run");
    let train_path = dir.join("train.toml");
    let train_text = tiny(
        include_str!("../configs/demo-nih.toml"),
        &nih,
        &kermany,
        &train_path,
    );
    std::fs::write(&train_path, &train_text).unwrap();
    let mae_path = dir.join("mae.toml");
    let mae_text = tiny(
        include_str!("../configs/demo-mae.toml"),
        &nih,
        &kermany,
        &train_path,
    );
    std::fs::write(&mae_path, &mae_text).unwrap();
    let config: PretrainConfig = toml::from_str(&mae_text).unwrap();

    // The NIH films are the fine-tuning run's training and validation
    // patients only: none of its test films, no child.
    let train: TrainConfig = toml::from_str(&train_text).unwrap();
    let prepared = Prepared::load(&train.data, train.seed).unwrap();
    let nih_films = config.films[0].films().unwrap();
    let test_films: Vec<_> = prepared
        .indices(cxr_trainer::data::Split::Test)
        .into_iter()
        .map(|i| prepared.dataset.samples[i].image.clone())
        .collect();
    assert!(!test_films.is_empty());
    assert!(test_films.iter().all(|f| !nih_films.contains(f)));
    assert!(prepared
        .held_out()
        .iter()
        .all(|&i| !nih_films.contains(&prepared.dataset.samples[i].image)));
    assert!(nih_films.len() > 500, "{}", nih_films.len());

    let run = dir.join("run");
    let first = pretrain(&mae_path, &run, false);
    assert_eq!(first["films"], serde_json::json!([nih_films.len(), 624]));
    assert_eq!(first["epochs_run"], 1);
    assert!(first["last_epoch_loss"]
        .as_f64()
        .is_some_and(|l| l.is_finite() && l > 0.0));
    let checkpoint = MaeCheckpoint::read(&run.join("mae.safetensors")).unwrap();
    assert_eq!(checkpoint.epoch, 0);
    assert!(run.join("mae-optimizer-0.bin").is_file());

    // Resume runs the second epoch only, from the saved weights and moments.
    std::fs::write(&mae_path, mae_text.replace("epochs = 1", "epochs = 2")).unwrap();
    let second = pretrain(&mae_path, &run, true);
    assert_eq!(second["epochs_run"], 1);
    assert_eq!(second["steps"], 2 * first["steps"].as_u64().unwrap());
    let resumed = MaeCheckpoint::read(&run.join("mae.safetensors")).unwrap();
    assert_eq!(resumed.epoch, 1);
    assert_ne!(
        resumed.tensors["blocks.0.attn.qkv.weight"],
        checkpoint.tensors["blocks.0.attn.qkv.weight"]
    );
    assert!(run.join("mae-optimizer-1.bin").is_file());
    assert!(!run.join("mae-optimizer-0.bin").exists());
    // The resumed run kept the AdamW moments: it ends where two epochs
    // straight do (restarted moments would not).
    let straight = dir.join("straight");
    pretrain(&mae_path, &straight, false);
    let straight = MaeCheckpoint::read(&straight.join("mae.safetensors")).unwrap();
    for (name, (_, values)) in &straight.tensors {
        let gap = cxr_bundle::rel_l2(values, &resumed.tensors[name].1);
        assert!(gap < 1e-6, "{name}: resumed vs straight rel L2 {gap:.3e}");
    }
    // Other films (here: half the batch size) do not resume the run.
    std::fs::write(
        &mae_path,
        mae_text
            .replace("epochs = 1", "epochs = 3")
            .replace("batch_size = 256", "batch_size = 128"),
    )
    .unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cxr-trainer"));
    let refused = cmd
        .args(["pretrain", "--resume", "--config"])
        .arg(&mae_path)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("resume with the films and batch size")
    );
    let log = std::fs::read_to_string(run.join("pretrain-log.jsonl")).unwrap();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("\"event\":\"epoch\""))
            .count(),
        2
    );

    // A fine-tuning run starts from the encoder, at another image size,
    // with a fresh 14-label head.
    let spec = VitSpec {
        image_size: 48,
        ..train.model
    };
    let init = Init::Mae {
        path: run.join("mae.safetensors"),
    };
    let (weights, note) = init.weights(&spec, 5).unwrap();
    assert!(
        note.starts_with("MAE encoder") && note.contains("epoch 2"),
        "{note}"
    );
    assert!(note.contains("fresh: head.bias, head.weight"), "{note}");
    let get = |w: &Weights, n: &str| w.get(n).unwrap().to_vec();
    for name in [
        "blocks.0.attn.qkv.weight",
        "patch_embed.proj.weight",
        "norm.weight",
        "cls_token",
    ] {
        assert_eq!(get(&weights, name), resumed.tensors[name].1, "{name}");
    }
    assert_eq!(
        get(&weights, "pos_embed").len(),
        (1 + 36) * train.model.width
    );
    let random = Weights::random(&spec, 5).unwrap();
    assert_eq!(get(&weights, "head.weight"), get(&random, "head.weight"));

    // Another architecture, or a checkpoint `pretrain` did not write, is
    // refused.
    let wide = VitSpec { width: 32, ..spec };
    let e = init.weights(&wide, 5).unwrap_err().to_string();
    assert!(
        e.contains("fine-tune the architecture that was pretrained"),
        "{e}"
    );
    let plain = dir.join("plain.safetensors");
    let bytes =
        cxr_model::write_safetensors(random.iter(), &std::collections::BTreeMap::new()).unwrap();
    std::fs::write(&plain, bytes).unwrap();
    let e = Init::Mae { path: plain }
        .weights(&spec, 5)
        .unwrap_err()
        .to_string();
    assert!(e.contains("metadata format is not cxr-mae"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
