//! Process-global state: the tracking allocator's byte counters (`cpu_tracker()`,
//! `emu_tracker()`), the memory profiler that replays them, the emulated device's pool,
//! capacity and mem_info, and the CUDA runtime's TF32 switch. A test here reads or changes
//! what every other test in the same process would disturb (an allocation on another
//! thread moves the counters; a 4 MiB emulated capacity makes another test run out of
//! memory), so EVERY test in this binary holds `support::serial()` for its whole body:
//! the tests of this binary run one at a time, and the counts are exact.

#[path = "../support/mod.rs"]
mod support;

mod cuda_budget;
mod cuda_runtime;
mod data_prefetch;
mod emu_memory;
mod emu_quadratic;
mod memory_step;
mod profile_memory;
mod quadratic_memory;
