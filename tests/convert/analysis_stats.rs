//! Statistics of known tensors (hand values), the per-layer analysis of a small model,
//! feature maps and their charts. The model-running tests hold `support::serial()` (as
//! they held a lock of their own when this file was a binary by itself).

use quadra::analysis::{self, plot, slice_stats, tensor_stats, StatKind};
use quadra::Tensor;

use crate::support::{assert_png_svg, serial, tempdir};

#[test]
fn stats_of_known_tensors() {
    // [1, 2, 3, 4]: mean 2.5, population variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25;
    // 3 bins of width 1 over [1, 4]: {1}, {2}, {3, 4}
    let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0], &[2, 2]).unwrap();
    let s = tensor_stats(&t, 3).unwrap();
    assert_eq!(s.count, 4);
    assert!((s.mean - 2.5).abs() < 1e-12);
    assert!((s.std - 1.25f64.sqrt()).abs() < 1e-12);
    assert_eq!((s.min, s.max), (1.0, 4.0));
    assert_eq!(s.histogram.counts, vec![1, 1, 2]);
    assert_eq!(s.extreme_share, 0.0);

    // 99 zeros and one 100: mean 1, std sqrt(100 - 1) = 9.95; only 100 is beyond 3σ
    let mut v = vec![0.0f64; 99];
    v.push(100.0);
    let s = slice_stats(&v, 10);
    assert!((s.mean - 1.0).abs() < 1e-12);
    assert!((s.std - 99f64.sqrt()).abs() < 1e-12);
    assert!((s.extreme_share - 0.01).abs() < 1e-12);
    assert_eq!(s.histogram.counts[0], 99);
    assert_eq!(s.histogram.counts[9], 1);

    // non-finite values are counted apart; a constant tensor has one full bin
    let s = slice_stats(&[f32::NAN, 2.0, f32::INFINITY, 2.0], 4);
    assert_eq!((s.count, s.non_finite), (2, 2));
    assert_eq!((s.mean, s.std), (2.0, 0.0));
    assert_eq!(s.histogram.counts, vec![2, 0, 0, 0]);
    let e = slice_stats::<f32>(&[], 4);
    assert_eq!(e.count, 0);
}

#[test]
fn analysis_covers_every_layer_and_parameter() {
    let _g = serial();
    let spec = quadra::models::get("qcnn", None, 10).unwrap();
    let r = analysis::analyze_spec(&spec, 4, 0, 32, 1).unwrap();
    let acts: Vec<_> = r
        .of_kind(StatKind::Activation)
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(
        acts,
        ["conv1", "bn1", "relu1", "pool1", "conv2", "bn2", "relu2", "pool2", "flatten", "fc"]
    );
    let conv1 = r.entries.iter().find(|e| e.name == "conv1").unwrap();
    assert_eq!(conv1.shape, vec![4, 16, 28, 28]);
    assert!(conv1.quadratic);
    assert_eq!(
        conv1.stats.histogram.counts.iter().sum::<u64>(),
        4 * 16 * 28 * 28
    );
    let weights = r.of_kind(StatKind::Weight).count();
    let grads: Vec<_> = r.of_kind(StatKind::Gradient).collect();
    assert!(
        weights > 0 && grads.len() == weights,
        "one gradient per parameter"
    );
    assert!(grads.iter().any(|g| g.stats.std > 0.0));
    assert!(grads
        .iter()
        .filter(|g| g.name.starts_with("conv1."))
        .all(|g| g.layer == "conv1"));
    assert!(r.loss.is_finite());
}

#[test]
fn feature_maps_and_charts() {
    let _g = serial();
    let cnn = quadra::models::get("cnn", None, 10).unwrap();
    let qcnn = quadra::models::get("qcnn", None, 10).unwrap();
    let maps = analysis::feature_map_comparison(&[&cnn, &qcnn], "relu1", 2, 8, 3).unwrap();
    assert_eq!(maps.len(), 3);
    assert_eq!(
        (maps[0].model.as_str(), maps[0].height, maps[0].width),
        ("input", 28, 28)
    );
    assert_eq!((maps[1].model.as_str(), maps[1].channels), ("cnn", 16));
    assert_eq!(maps[2].model, "qcnn");
    assert_eq!(maps[2].values.len(), 28 * 28);

    // an unknown layer is an error that lists the layers with spatial outputs
    let (model, data) = analysis::train_briefly(&cnn, 0, 2, 1).unwrap();
    let (x, _) = data.batch(1, 1).unwrap();
    let err = analysis::channel_mean_map(&model, &x, "fc")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`fc`") && err.contains("conv1") && err.contains("relu2"),
        "{err}"
    );

    let dir = tempdir("analysis");
    let files = plot::write_feature_maps("maps", &maps, &dir.join("maps")).unwrap();
    assert_png_svg(&files);
    // each map's colour scale is shown and named
    let svg = std::fs::read_to_string(dir.join("maps.svg")).unwrap();
    assert_eq!(svg.matches("channel mean (min → max)").count(), 3);
    let r = analysis::analyze_spec(&qcnn, 2, 0, 16, 1).unwrap();
    let acts: Vec<_> = r.of_kind(StatKind::Activation).collect();
    assert_png_svg(&plot::write_histogram_grid("acts", &acts, 4, &dir.join("grid")).unwrap());
    // axis titles, and a legend for the bars and for the dashed ±3σ lines
    let svg = std::fs::read_to_string(dir.join("grid.svg")).unwrap();
    for t in [
        "value",
        "count (log)",
        "linear layer: count per bin",
        "quadratic layer: count per bin",
        "mean ± 3σ",
    ] {
        assert!(svg.contains(t), "histograms lack `{t}`");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
