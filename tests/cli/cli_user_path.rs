//! A new user's path, end to end: a folder of PNG images (written here) → `train --dataset
//! folder:PATH` → `info` shows the stored normalization and class names → `predict` on the
//! raw PNG files (CLI) and `Model::predict` on the decoded PNGs (library) → both agree with
//! `eval` on the same images.

use std::path::{Path, PathBuf};

use quadra::checkpoint::{read_tensors, Checkpoint};
use quadra::data::decode::load_sample;
use quadra::Tensor;

use crate::support::{argv, ok_json, ok_json_last, s, tempdir};

const CLASSES: [&str; 3] = ["bars", "dots", "ring"];

/// A 28×28 grey image of class `c`: a class pattern (bright on dark, as Fashion-MNIST) with
/// pixel noise from `seed`, so the classes are learnable and no two images are equal.
fn pattern(c: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut noise = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % 60) as i32
    };
    let mut px = vec![0u8; 28 * 28];
    for y in 0..28i32 {
        for x in 0..28i32 {
            let on = match c {
                0 => x % 7 < 3,
                1 => x % 6 < 2 && y % 6 < 2,
                _ => ((x - 14).pow(2) + (y - 14).pow(2) - 81).abs() < 25,
            };
            let base = if on { 170 } else { 20 };
            px[(y * 28 + x) as usize] = (base + noise()).clamp(0, 255) as u8;
        }
    }
    px
}

/// ROOT/{train,val}/<class>/<i>.png; returns the val files with their labels, in the
/// order the folder loader reads them (classes sorted, files sorted).
fn write_folder(root: &Path, train_per: usize, val_per: usize) -> Vec<(PathBuf, usize)> {
    let mut val = Vec::new();
    for (part, n) in [("train", train_per), ("val", val_per)] {
        for (c, name) in CLASSES.iter().enumerate() {
            let dir = root.join(part).join(name);
            std::fs::create_dir_all(&dir).unwrap();
            for i in 0..n {
                let seed = (c * 1000 + i) as u64 + if part == "val" { 500 } else { 0 };
                let p = dir.join(format!("{i:03}.png"));
                image::GrayImage::from_raw(28, 28, pattern(c, seed))
                    .unwrap()
                    .save(&p)
                    .unwrap();
                if part == "val" {
                    val.push((p, c));
                }
            }
        }
    }
    val
}

#[test]
fn train_on_a_png_folder_then_predict_raw_pngs_as_eval_scores_them() {
    let dir = tempdir("user-path");
    let root = dir.join("shapes");
    let val = write_folder(&root, 24, 6);
    let run_dir = dir.join("run");
    let dataset = format!("folder:{}", s(&root));
    ok_json(&argv(
        "train --model qcnn --dataset {} --epochs 2 --batch-size 16 --device cpu --output {} --json",
        &[&dataset, s(&run_dir)],
    ));
    let ck = run_dir.join("last.safetensors");

    // the checkpoint says what raw inputs get: the training images' mean/std, class names
    let info = ok_json_last(&argv("info {} --json", &[s(&ck)]));
    let mean = info["mean"].as_array().expect("info --json: mean");
    let std = info["std"].as_array().expect("info --json: std");
    assert_eq!((mean.len(), std.len()), (1, 1), "one grey channel: {info}");
    let m = mean[0].as_f64().unwrap();
    assert!(
        m > 0.05 && m < 0.6,
        "mean {m} of dark images with bright patterns"
    );
    assert_eq!(info["class_names"], serde_json::json!(CLASSES));

    // eval on the folder's val/ split
    let ev = ok_json_last(&argv("eval --checkpoint {} --json --device cpu", &[s(&ck)]));
    assert_eq!(ev["samples"], 18);
    let eval_acc = ev["accuracy"].as_f64().unwrap();
    assert!(
        eval_acc > 0.5,
        "the patterns are learnable in 2 epochs: {ev}"
    );

    // predict on the raw PNG files: one JSON object per file, with its class and name
    let logits_file = dir.join("logits.safetensors");
    let mut args = argv(
        "predict --checkpoint {} --json --device cpu --top-k 2 -o {}",
        &[s(&ck), s(&logits_file)],
    );
    let files: Vec<String> = val.iter().map(|(p, _)| s(p).to_string()).collect();
    args.extend(files.iter().map(|f| f.as_str()));
    let answers = ok_json(&args);
    assert_eq!(answers.len(), val.len());
    let mut correct = 0;
    for (a, (p, label)) in answers.iter().zip(&val) {
        assert_eq!(a["input"], s(p));
        let k = a["argmax"].as_u64().unwrap() as usize;
        assert_eq!(a["name"], CLASSES[k]);
        assert_eq!(a["top"][0]["class"], k as u64);
        assert_eq!(a["top"].as_array().unwrap().len(), 2);
        correct += (k == *label) as usize;
    }
    let predict_acc = correct as f64 / val.len() as f64;
    assert_eq!(
        predict_acc, eval_acc,
        "predict on the PNGs vs eval on the same images"
    );

    // the library: decode the PNGs, Model::predict (raw in), the same logits as the CLI's,
    // and Model::evaluate gives eval's loss
    let (_, model) = Checkpoint::load_model(&ck).unwrap();
    let mut xs = Vec::new();
    for (p, _) in &val {
        xs.extend(load_sample(p, [1, 28, 28]).unwrap());
    }
    let x = Tensor::from_vec(xs, &[val.len(), 1, 28, 28]).unwrap();
    let lib = model.predict(&x).unwrap();
    let (cli, _) = read_tensors(&logits_file).unwrap();
    let cli = &cli.iter().find(|(k, _)| k == "logits").unwrap().1;
    assert_eq!(lib.max_abs_diff(cli).unwrap(), 0.0, "library vs CLI logits");
    let labels: Vec<usize> = val.iter().map(|(_, l)| *l).collect();
    let out = model.evaluate(&x, &labels).unwrap();
    let eval_loss = ev["loss"].as_f64().unwrap();
    assert!(
        (out.loss - eval_loss).abs() <= 1e-6 * eval_loss.abs().max(1.0),
        "Model::evaluate loss {} vs eval {eval_loss}",
        out.loss
    );
    assert_eq!(out.correct, correct);

    // the normalization is really applied: the same pixels given as normalized inputs
    // answer other logits
    let raw = model.predict_normalized(&x).unwrap();
    assert!(raw.max_abs_diff(&lib).unwrap() > 1e-3);
}
