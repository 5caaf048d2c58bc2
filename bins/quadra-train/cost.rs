//! `quadra-train cost`: parameters and multiply-accumulates of a model, per layer.

use anyhow::Result;
use clap::Args;

use crate::common::SpecSource;

#[derive(Args, Debug)]
pub struct CostArgs {
    #[command(flatten)]
    source: SpecSource,
    /// Machine-readable output: one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &CostArgs) -> Result<()> {
    let spec = a.source.load()?;
    let report = quadra::convert::cost(&spec)?;
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
