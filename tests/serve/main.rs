//! Serving: `Model::predict` from many threads, the HTTP server (in process, the
//! `quadra-train serve` subcommand and the examples/serve_http.rs binary), its limits under
//! hostile clients, dynamic batching, graceful shutdown and /metrics.

#[path = "../support/mod.rs"]
mod support;

mod client;
mod serve_batch;
mod serve_http;
mod serve_limits;
mod serve_predict;
