/* quadra_emu.h — the C API of the CUDA kernel emulator (cuda/emu/runtime.cpp).
 *
 * quadra_emu_launch runs one registered kernel on the CPU, taking its parameters the way
 * cuLaunchKernel takes kernelParams: args[i] points at the value of parameter i (for a
 * pointer parameter, at the pointer). It returns QUADRA_EMU_OK or an error code; the
 * message for the last failed call on this OS thread is quadra_emu_last_error(). */
#ifndef QUADRA_EMU_H
#define QUADRA_EMU_H

#ifdef __cplusplus
#include "cuda_emu.h"
extern "C" {
#endif

typedef struct quadra_dim3 {
    unsigned x, y, z;
} quadra_dim3;

enum {
    QUADRA_EMU_OK = 0,
    QUADRA_EMU_ERR_UNKNOWN_KERNEL = 1, /* no kernel registered under that name */
    QUADRA_EMU_ERR_CONFIG = 2,         /* grid/block/shared-memory configuration out of limits */
    QUADRA_EMU_ERR_ARGS = 3,           /* wrong parameter count or a null parameter pointer */
    QUADRA_EMU_ERR_DEADLOCK = 4,       /* barrier divergence or another deadlock in a block */
    QUADRA_EMU_ERR_TRAP = 5,           /* __trap() or a misuse the emulator detected (e.g. a shuffle mask) */
    QUADRA_EMU_ERR_RESOURCES = 6,      /* could not allocate fiber stacks or shared memory */
    QUADRA_EMU_ERR_RACE = 7,           /* racecheck: a shared-memory hazard or overlapping global writes */
    QUADRA_EMU_ERR_SCHEDULE = 8        /* the result differs between two schedules of the fibers */
};

int quadra_emu_launch(const char* name, quadra_dim3 grid, quadra_dim3 block, unsigned shared_bytes, void** args,
                      unsigned nargs);
const char* quadra_emu_last_error(void);
unsigned quadra_emu_kernel_count(void);
const char* quadra_emu_kernel_name(unsigned i);
int quadra_emu_kernel_arity(const char* name);
int quadra_emu_asan_enabled(void);

/* Racecheck and schedules (README.md, "Racecheck and schedules"), for the calling OS thread;
 * they override the environment's QUADRA_EMU_RACECHECK / QUADRA_EMU_SCHEDULE.
 * set_racecheck: 1 on, 0 off, -1 back to the environment's setting.
 * set_schedule: "default", "reverse", "random:SEED", or several separated by commas (each
 * launch then runs under each, on the same inputs, and fails with QUADRA_EMU_ERR_SCHEDULE
 * when a result differs from the first's); NULL: back to the environment's.
 * Both return QUADRA_EMU_OK or QUADRA_EMU_ERR_CONFIG (message: quadra_emu_last_error). */
int quadra_emu_racecheck_available(void);
int quadra_emu_set_racecheck(int mode);
int quadra_emu_set_schedule(const char* spec);

#ifdef __cplusplus
}
#endif

#endif
