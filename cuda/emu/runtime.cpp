// runtime.cpp — the emulator's launch engine (see cuda_emu.h and README.md).
//
// A launch runs its blocks one after another on the calling OS thread. Inside a block every
// GPU thread is a ucontext fiber with its own stack; a fiber runs until it reaches a barrier
// (__syncthreads, or the warp barrier inside __syncwarp / shuffles / votes) or returns from
// the kernel, then control goes back to the scheduler, which sweeps the fibers in thread
// order. A sweep in which no fiber can run while some have not exited is a deadlock (e.g.
// barrier divergence): the launch fails with an error, it never hangs.
#include "quadra_emu.h"

#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#include <cstdarg>
#include <memory>
#include <string>
#include <vector>

#if defined(__SANITIZE_ADDRESS__)
#define QUADRA_EMU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QUADRA_EMU_ASAN 1
#endif
#endif
#ifndef QUADRA_EMU_ASAN
#define QUADRA_EMU_ASAN 0
#endif

#if QUADRA_EMU_ASAN
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif

namespace quadra_emu {

thread_local LaunchView view;

extern const KernelEntry* (*const kernel_table[])();
extern const unsigned kernel_table_len;

namespace {

constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr unsigned kMaxDynamicShared = 48 * 1024;

enum class FState : unsigned char { Ready, BlockWait, WarpWait, Exited, Dead };

struct Fiber {
    ucontext_t uc;
    char* map = nullptr;  // guard page + stack
    std::size_t map_size = 0;
    char* stack_lo = nullptr;
    std::size_t stack_size = 0;
    bool in_kernel = false;  // between kernel entry and return (needs a reset if abandoned)
    FState state = FState::Ready;
    unsigned linear = 0;
    uint3 tid{0, 0, 0};
    void* fake_stack = nullptr;
};

struct Warp {
    std::uint32_t exists = 0;
    std::uint32_t arrived = 0;
    std::uint64_t slots[32] = {};
};

struct Ctx {
    std::vector<std::unique_ptr<Fiber>> fibers;
    ucontext_t sched;
    unsigned nthreads = 0;
    unsigned cur = 0;
    const KernelEntry* entry = nullptr;
    void** args = nullptr;
    std::vector<Warp> warps;
    unsigned block_arrived = 0;
    int count_acc = 0;
    int count_result = 0;
    unsigned exited = 0;
    void* dyn_smem = nullptr;
    bool in_launch = false;
    bool failed = false;
    std::string error;
    const void* sched_stack_bottom = nullptr;
    std::size_t sched_stack_size = 0;
    void* sched_fake = nullptr;

    ~Ctx() {
        for (auto& f : fibers) {
            if (f->map) munmap(f->map, f->map_size);
        }
    }
};

thread_local std::unique_ptr<Ctx> tl_ctx;
thread_local std::string tl_last_error;

Ctx& ctx() {
    if (!tl_ctx) tl_ctx.reset(new Ctx());
    return *tl_ctx;
}

std::string format(const char* fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

std::size_t stack_bytes() {
    static const std::size_t bytes = [] {
        std::size_t kb = QUADRA_EMU_ASAN ? 256 : 64;
        if (const char* s = std::getenv("QUADRA_EMU_STACK_KB")) {
            long v = std::strtol(s, nullptr, 10);
            if (v >= 16 && v <= 65536) kb = static_cast<std::size_t>(v);
        }
        return kb * 1024;
    }();
    return bytes;
}

inline void asan_start(void** fake, const void* bottom, std::size_t size) {
#if QUADRA_EMU_ASAN
    __sanitizer_start_switch_fiber(fake, bottom, size);
#else
    (void)fake, (void)bottom, (void)size;
#endif
}
inline void asan_finish(void* fake, const void** bottom, std::size_t* size) {
#if QUADRA_EMU_ASAN
    __sanitizer_finish_switch_fiber(fake, bottom, size);
#else
    (void)fake, (void)bottom, (void)size;
#endif
}

Fiber& cur_fiber() {
    Ctx& c = ctx();
    return *c.fibers[c.cur];
}

// Fiber → scheduler.
void yield_to_scheduler(Fiber& f) {
    Ctx& c = ctx();
    asan_start(&f.fake_stack, c.sched_stack_bottom, c.sched_stack_size);
    swapcontext(&f.uc, &c.sched);
    asan_finish(f.fake_stack, &c.sched_stack_bottom, &c.sched_stack_size);
}

void fiber_main() {
    Ctx& c = ctx();
    asan_finish(nullptr, &c.sched_stack_bottom, &c.sched_stack_size);
    for (;;) {
        {
            Fiber& f = *c.fibers[c.cur];
            f.in_kernel = true;
        }
        c.entry->invoke(c.args);
        Fiber& f = *c.fibers[c.cur];
        f.in_kernel = false;
        f.state = FState::Exited;
        ++c.exited;
        yield_to_scheduler(f);  // resumed for the next block or launch: run the kernel again
    }
}

bool init_fiber(Fiber& f) {
    if (!f.map) {
        long page = sysconf(_SC_PAGESIZE);
        std::size_t ps = page > 0 ? static_cast<std::size_t>(page) : 4096;
        std::size_t size = (stack_bytes() + ps - 1) / ps * ps;
        void* m = mmap(nullptr, size + ps, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) return false;
        f.map = static_cast<char*>(m);
        f.map_size = size + ps;
        mprotect(f.map, ps, PROT_NONE);  // guard page: a stack overflow faults
        f.stack_lo = f.map + ps;
        f.stack_size = size;
    }
#if QUADRA_EMU_ASAN
    __asan_unpoison_memory_region(f.stack_lo, f.stack_size);
#endif
    if (getcontext(&f.uc) != 0) return false;
    f.uc.uc_stack.ss_sp = f.stack_lo;
    f.uc.uc_stack.ss_size = f.stack_size;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, fiber_main, 0);
    f.in_kernel = false;
    f.fake_stack = nullptr;
    return true;
}

void fail(std::string msg) {
    Ctx& c = ctx();
    if (!c.failed) {
        c.failed = true;
        c.error = std::move(msg);
    }
}

std::string where(const Fiber& f) {
    return format("thread (%u,%u,%u) of block (%u,%u,%u)", f.tid.x, f.tid.y, f.tid.z, view.block_idx.x,
                  view.block_idx.y, view.block_idx.z);
}

// Ends the calling fiber with an error. Its stack is abandoned, so no object with a
// destructor may be alive in the frames below: callers pass a plain char buffer, and every
// std::string made here dies before the switch.
[[noreturn]] void die_in_fiber(const char* msg) {
    Fiber& f = cur_fiber();
    fail(where(f) + ": " + msg);
    f.state = FState::Dead;
    yield_to_scheduler(f);
    std::abort();  // a dead fiber is never resumed
}

void block_barrier() {
    Ctx& c = ctx();
    Fiber& f = *c.fibers[c.cur];
    ++c.block_arrived;
    if (c.block_arrived == c.nthreads) {  // the last arrival releases everyone
        c.block_arrived = 0;
        c.count_result = c.count_acc;
        c.count_acc = 0;
        for (unsigned i = 0; i < c.nthreads; ++i) {
            if (c.fibers[i]->state == FState::BlockWait) c.fibers[i]->state = FState::Ready;
        }
        return;
    }
    f.state = FState::BlockWait;
    yield_to_scheduler(f);
}

void warp_barrier(unsigned mask) {
    Ctx& c = ctx();
    Fiber& f = *c.fibers[c.cur];
    unsigned lane = f.linear % 32;
    unsigned base = f.linear - lane;
    Warp& w = c.warps[f.linear / 32];
    std::uint32_t m = mask & w.exists;
    if (!(m & (1u << lane))) {
        char msg[160];
        std::snprintf(msg, sizeof msg,
                      "warp-synchronous call with mask 0x%08x that does not include the calling lane %u", mask,
                      lane);
        die_in_fiber(msg);
    }
    w.arrived |= 1u << lane;
    if ((w.arrived & m) == m) {
        w.arrived &= ~m;
        for (unsigned l = 0; l < 32; ++l) {
            if (l != lane && (m & (1u << l)) && c.fibers[base + l]->state == FState::WarpWait) {
                c.fibers[base + l]->state = FState::Ready;
            }
        }
        return;
    }
    f.state = FState::WarpWait;
    yield_to_scheduler(f);
}

void set_error(const std::string& msg) { tl_last_error = msg; }

int run_block(Ctx& c) {
    for (unsigned i = 0; i < c.nthreads; ++i) c.fibers[i]->state = FState::Ready;
    for (auto& w : c.warps) w.arrived = 0;
    c.block_arrived = 0;
    c.count_acc = 0;
    c.exited = 0;
    for (;;) {
        bool progress = false;
        for (unsigned i = 0; i < c.nthreads; ++i) {
            Fiber& f = *c.fibers[i];
            if (f.state != FState::Ready) continue;
            progress = true;
            c.cur = i;
            view.thread_idx = f.tid;
            asan_start(&c.sched_fake, f.stack_lo, f.stack_size);
            swapcontext(&c.sched, &f.uc);
            asan_finish(c.sched_fake, nullptr, nullptr);
            if (c.failed) return QUADRA_EMU_ERR_TRAP;
        }
        if (c.exited == c.nthreads) return QUADRA_EMU_OK;
        if (!progress) {
            unsigned at_block = 0, at_warp = 0;
            int first_block = -1, first_warp = -1;
            for (unsigned i = 0; i < c.nthreads; ++i) {
                FState s = c.fibers[i]->state;
                if (s == FState::BlockWait) {
                    ++at_block;
                    if (first_block < 0) first_block = static_cast<int>(i);
                } else if (s == FState::WarpWait) {
                    ++at_warp;
                    if (first_warp < 0) first_warp = static_cast<int>(i);
                }
            }
            std::string msg;
            if (at_warp == 0 && c.exited > 0) {
                msg = format("barrier divergence in block (%u,%u,%u): %u thread(s) wait at __syncthreads() "
                             "(first: %s) while %u thread(s) of the block have exited",
                             view.block_idx.x, view.block_idx.y, view.block_idx.z, at_block,
                             where(*c.fibers[first_block]).c_str(), c.exited);
            } else {
                msg = format("deadlock in block (%u,%u,%u): %u thread(s) at __syncthreads(), %u at a "
                             "warp-synchronous call (first: %s), %u exited",
                             view.block_idx.x, view.block_idx.y, view.block_idx.z, at_block, at_warp,
                             first_warp >= 0 ? where(*c.fibers[first_warp]).c_str() : "-", c.exited);
            }
            fail(msg);
            return QUADRA_EMU_ERR_DEADLOCK;
        }
    }
}

const KernelEntry* find_kernel(const char* name) {
    if (!name) return nullptr;
    for (unsigned i = 0; i < kernel_table_len; ++i) {
        const KernelEntry* e = kernel_table[i]();
        if (std::strcmp(e->name, name) == 0) return e;
    }
    return nullptr;
}

}  // namespace

// ---- services called from kernels (declared in cuda_emu.h) ------------------------------

void syncthreads() { block_barrier(); }

int syncthreads_count(int pred) {
    Ctx& c = ctx();
    c.count_acc += pred != 0;
    block_barrier();
    return c.count_result;  // read before any other thread can complete the next barrier
}

void syncwarp(unsigned mask) { warp_barrier(mask); }

std::uint64_t warp_exchange(unsigned mask, std::uint64_t v, int src_lane) {
    Ctx& c = ctx();
    Fiber& f = *c.fibers[c.cur];
    Warp& w = c.warps[f.linear / 32];
    w.slots[f.linear % 32] = v;
    warp_barrier(mask);
    std::uint32_t m = mask & w.exists;
    std::uint64_t r = (src_lane >= 0 && src_lane < 32 && (m & (1u << src_lane))) ? w.slots[src_lane] : v;
    warp_barrier(mask);  // nobody overwrites a slot before every lane has read
    return r;
}

unsigned warp_ballot(unsigned mask, int pred) {
    Ctx& c = ctx();
    Fiber& f = *c.fibers[c.cur];
    Warp& w = c.warps[f.linear / 32];
    w.slots[f.linear % 32] = pred != 0;
    warp_barrier(mask);
    std::uint32_t m = mask & w.exists;
    unsigned bits = 0;
    for (unsigned l = 0; l < 32; ++l) {
        if ((m & (1u << l)) && w.slots[l]) bits |= 1u << l;
    }
    warp_barrier(mask);
    return bits;
}

unsigned active_mask() {
    Ctx& c = ctx();
    Fiber& f = *c.fibers[c.cur];
    unsigned base = f.linear - f.linear % 32;
    Warp& w = c.warps[f.linear / 32];
    unsigned m = 0;
    for (unsigned l = 0; l < 32; ++l) {
        if ((w.exists & (1u << l)) && c.fibers[base + l]->state != FState::Exited &&
            c.fibers[base + l]->state != FState::Dead) {
            m |= 1u << l;
        }
    }
    return m;
}

unsigned lane_id() {
    Ctx& c = ctx();
    return c.fibers[c.cur]->linear % 32;
}

void* dynamic_shared() { return ctx().dyn_smem; }

void trap(const char* why) { die_in_fiber(why); }

}  // namespace quadra_emu

// ---- C API -------------------------------------------------------------------------------

using namespace quadra_emu;

extern "C" int quadra_emu_launch(const char* name, quadra_dim3 grid, quadra_dim3 block, unsigned shared_bytes,
                                 void** args, unsigned nargs) {
    Ctx& c = ctx();
    tl_last_error.clear();
    if (c.in_launch) {
        set_error("quadra_emu_launch called from inside a running kernel");
        return QUADRA_EMU_ERR_CONFIG;
    }
    const KernelEntry* e = find_kernel(name);
    if (!e) {
        set_error(format("unknown kernel `%s`", name ? name : "(null)"));
        return QUADRA_EMU_ERR_UNKNOWN_KERNEL;
    }
    if (nargs != e->arity || (e->arity > 0 && !args)) {
        set_error(format("kernel `%s` takes %u parameter(s), the launch passed %u%s", name, e->arity, nargs,
                         args ? "" : " (args is null)"));
        return QUADRA_EMU_ERR_ARGS;
    }
    for (unsigned i = 0; i < nargs; ++i) {
        if (!args[i]) {
            set_error(format("kernel `%s`: parameter %u points nowhere (null)", name, i));
            return QUADRA_EMU_ERR_ARGS;
        }
    }
    unsigned long long nthreads = 1ull * block.x * block.y * block.z;
    if (block.x == 0 || block.y == 0 || block.z == 0 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
        nthreads > kMaxThreadsPerBlock) {
        set_error(format("kernel `%s`: invalid block (%u,%u,%u): each of x, y ≤ 1024, z ≤ 64, x·y·z ≤ %u "
                         "threads, none zero",
                         name, block.x, block.y, block.z, kMaxThreadsPerBlock));
        return QUADRA_EMU_ERR_CONFIG;
    }
    if (grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
        set_error(format("kernel `%s`: invalid grid (%u,%u,%u): x ≤ 2^31−1, y, z ≤ 65535, none zero", name,
                         grid.x, grid.y, grid.z));
        return QUADRA_EMU_ERR_CONFIG;
    }
    if (shared_bytes > kMaxDynamicShared) {
        set_error(format("kernel `%s`: %u bytes of dynamic shared memory requested, the limit without an "
                         "opt-in attribute is %u",
                         name, shared_bytes, kMaxDynamicShared));
        return QUADRA_EMU_ERR_CONFIG;
    }

    unsigned n = static_cast<unsigned>(nthreads);
    while (c.fibers.size() < n) c.fibers.emplace_back(new Fiber());
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = *c.fibers[i];
        if (!f.map || f.in_kernel) {
            if (!init_fiber(f)) {
                set_error(format("kernel `%s`: could not allocate a %zu-byte fiber stack", name, stack_bytes()));
                return QUADRA_EMU_ERR_RESOURCES;
            }
        }
        f.linear = i;
        f.tid = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
    }
    c.warps.assign((n + 31) / 32, Warp());
    for (unsigned w = 0; w < c.warps.size(); ++w) {
        unsigned lanes = n - w * 32 >= 32 ? 32 : n - w * 32;
        c.warps[w].exists = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
    }
    c.nthreads = n;
    c.entry = e;
    c.args = args;
    c.failed = false;
    c.error.clear();
    // Exactly shared_bytes long (malloc(0) for none), so ASan flags an overrun.
    c.dyn_smem = std::malloc(shared_bytes);
    if (shared_bytes && !c.dyn_smem) {
        set_error("out of host memory for dynamic shared memory");
        return QUADRA_EMU_ERR_RESOURCES;
    }
    c.in_launch = true;
    view.grid_dim = dim3(grid.x, grid.y, grid.z);
    view.block_dim = dim3(block.x, block.y, block.z);

    int rc = QUADRA_EMU_OK;
    for (unsigned bz = 0; bz < grid.z && rc == QUADRA_EMU_OK; ++bz) {
        for (unsigned by = 0; by < grid.y && rc == QUADRA_EMU_OK; ++by) {
            for (unsigned bx = 0; bx < grid.x && rc == QUADRA_EMU_OK; ++bx) {
                view.block_idx = uint3{bx, by, bz};
                // Shared memory is uninitialised on a GPU; fill it with 0xff bytes (NaN as
                // float, −1 as int) so a read-before-write shows up, deterministically.
                if (shared_bytes) std::memset(c.dyn_smem, 0xff, shared_bytes);
                rc = run_block(c);
            }
        }
    }
    if (rc != QUADRA_EMU_OK) {
        set_error(format("kernel `%s`: %s", name, c.error.c_str()));
    }
    std::free(c.dyn_smem);
    c.dyn_smem = nullptr;
    c.in_launch = false;
    return rc;
}

extern "C" const char* quadra_emu_last_error(void) { return tl_last_error.c_str(); }

extern "C" unsigned quadra_emu_kernel_count(void) { return kernel_table_len; }

extern "C" const char* quadra_emu_kernel_name(unsigned i) {
    return i < kernel_table_len ? kernel_table[i]()->name : nullptr;
}

extern "C" int quadra_emu_kernel_arity(const char* name) {
    const KernelEntry* e = find_kernel(name);
    return e ? static_cast<int>(e->arity) : -1;
}

extern "C" int quadra_emu_asan_enabled(void) { return QUADRA_EMU_ASAN; }
