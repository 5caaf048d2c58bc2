//! Serving: `Model::predict` from many threads, and the HTTP server (in process and the
//! examples/serve_http.rs binary).

#[path = "../support/mod.rs"]
mod support;

mod serve_http;
mod serve_predict;
