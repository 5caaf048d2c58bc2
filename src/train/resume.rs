//! Where a run stands, as stored in its checkpoints (`rng` metadata: the data position and
//! the epoch's running sums, exact as bit patterns), and finding the checkpoint to resume.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};

use crate::checkpoint::Checkpoint;

use super::config::TrainConfig;

/// An f64 as its bit pattern (16 hex digits): JSON numbers do not round-trip every value.
pub(crate) fn bits(x: f64) -> String {
    format!("{:016x}", x.to_bits())
}

fn unbits(v: &Value) -> Option<f64> {
    u64::from_str_radix(v.as_str()?, 16)
        .ok()
        .map(f64::from_bits)
}

/// Where a checkpoint stands: `epoch` complete epochs plus `batch` batches of the next one,
/// with that epoch's running sums (exact, as bit patterns).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Position {
    /// Complete epochs.
    pub epoch: usize,
    /// Batches done of epoch `epoch` (0-based index of the next one).
    pub batch: usize,
    /// Optimizer steps done.
    pub step: u64,
    /// Sum over the epoch's samples so far of the training loss.
    pub loss_sum: f64,
    pub correct: usize,
    pub seen: usize,
    /// The best test accuracy so far (-1: none yet).
    pub best: f64,
}

impl Default for Position {
    /// The start of a fresh run.
    fn default() -> Self {
        Position {
            epoch: 0,
            batch: 0,
            step: 0,
            loss_sum: 0.0,
            correct: 0,
            seen: 0,
            best: -1.0,
        }
    }
}

impl Position {
    /// The checkpoint's `rng` metadata.
    pub fn to_json(self) -> Value {
        json!({
            "scheme": "Loader(seed): shuffle (seed, epoch), augmentation (seed, epoch, sample)",
            "epoch": self.epoch,
            "next_batch": self.batch,
            "loss_sum_bits": bits(self.loss_sum),
            "correct": self.correct,
            "seen": self.seen,
            "best_test_acc_bits": bits(self.best),
        })
    }

    pub fn from_checkpoint(ck: &Checkpoint) -> Position {
        let r = ck.rng.clone().unwrap_or(Value::Null);
        let best = unbits(&r["best_test_acc_bits"])
            .or_else(|| {
                ck.metrics
                    .as_ref()
                    .and_then(|m| m["best_test_acc"].as_f64())
            })
            .unwrap_or(-1.0);
        Position {
            epoch: ck.epoch as usize,
            batch: r["next_batch"].as_u64().unwrap_or(0) as usize,
            step: ck.step,
            loss_sum: unbits(&r["loss_sum_bits"]).unwrap_or(0.0),
            correct: r["correct"].as_u64().unwrap_or(0) as usize,
            seen: r["seen"].as_u64().unwrap_or(0) as usize,
            best,
        }
    }
}

/// Whether a file `name` is a checkpoint a run writes to stand where it is: `epoch-*`,
/// `step-*` or `last` (`.safetensors`) — what `--resume DIR` picks from (`best` repeats
/// one of them).
pub(crate) fn is_resumable(name: &str) -> bool {
    (name.starts_with("epoch-") || name.starts_with("step-") || name == "last.safetensors")
        && name.ends_with(".safetensors")
}

/// The checkpoint of `dir` (epoch-*, step-*, last) that stands furthest (most steps; an
/// epoch checkpoint over a mid-epoch one of the same step). One that does not load is an
/// error naming it.
pub fn latest_checkpoint(dir: &Path) -> Result<PathBuf> {
    let mut best: Option<(u64, bool, PathBuf)> = None;
    let rd = std::fs::read_dir(dir).with_context(|| format!("{}: cannot list", dir.display()))?;
    for e in rd.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        if !is_resumable(&name) {
            continue;
        }
        // a damaged checkpoint may stand further than every other: skipping it would
        // resume an earlier one silently
        let ck = Checkpoint::load(e.path()).map_err(|err| {
            anyhow!(
                "--resume {}: {err}; move that file aside to resume from the others, or name \
                 the checkpoint to resume",
                dir.display()
            )
        })?;
        let key = (ck.step, name.starts_with("epoch-"));
        if best.as_ref().is_none_or(|b| key > (b.0, b.1)) {
            best = Some((key.0, key.1, e.path()));
        }
    }
    best.map(|b| b.2)
        .ok_or_else(|| anyhow!("--resume {}: no checkpoint in this folder", dir.display()))
}

/// The training config stored in a checkpoint `path` to resume. A checkpoint without one
/// (written by `Model::save` or `quadra-train import`) or whose config does not parse is an
/// error: resuming it on defaults would silently train something else.
pub fn checkpoint_config(ck: &Checkpoint, path: &Path) -> Result<TrainConfig> {
    let hint = "start a new run from its weights with --init instead";
    let Some(cfg) = &ck.config else {
        bail!(
            "{}: the checkpoint has no stored training config (it was not written by a \
             training run), so it cannot be resumed; {hint}",
            path.display()
        );
    };
    if cfg.get("imported_from").is_some() {
        bail!(
            "{}: the checkpoint was imported, not trained here, so there is no run to \
             resume; {hint}",
            path.display()
        );
    }
    serde_json::from_value(cfg.clone()).map_err(|e| {
        anyhow!(
            "{}: the stored training config does not parse ({e}); it may come from another \
             version of quadra; {hint}",
            path.display()
        )
    })
}
