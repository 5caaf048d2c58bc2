//! The first-order → QDNN converter, layer importance and depth reduction, and the
//! per-layer analysis (statistics, feature maps, charts).

#[path = "../support/mod.rs"]
mod support;

mod analysis_stats;
mod convert_builder;
mod convert_importance;
