//! End-to-end tests of the `quadra-train` binary (each test runs it as a child process):
//! import, predict, info, train/resume, TOML configs, and the tool subcommands.

#[path = "../support/mod.rs"]
mod support;

mod cli_robust;
mod cli_tools;
mod cli_train;
mod cli_train_config;
mod cli_user_path;
