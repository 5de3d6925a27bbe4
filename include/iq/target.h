/* Code generation for a target: from a module in the LLVM dialect to LLVM
 * IR, assembly or an object file, and linking objects with the runtime
 * into a shared library. */
#ifndef IQ_TARGET_H
#define IQ_TARGET_H

#include <stdbool.h>
#include <stddef.h>

#include "mlir-c/IR.h"

#include "iq/support.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum iq_emit_kind {
  IQ_EMIT_LLVM_IR,
  IQ_EMIT_ASSEMBLY,
  IQ_EMIT_OBJECT,
} iq_emit_kind_t;

typedef struct iq_target_options {
  const char *triple;   /* "x86_64-linux-gnu" or "aarch64-linux-gnu" */
  const char *cpu;      /* "" for the triple's generic CPU */
  const char *features; /* "+avx2,+fma", "" for none */
} iq_target_options_t;

/* Returns the LLVM triple iq uses for a target name, or NULL when iq does
 * not support it. */
const char *iq_target_llvm_triple(const char *target);

/* Translates `module` (LLVM dialect only) to LLVM IR, optimizes it at O3
 * for the target machine and writes `kind` to `path`. */
bool iq_target_emit(MlirOperation module, const iq_target_options_t *options,
                    iq_emit_kind_t kind, const char *path, iq_error_t **error);

/* Links `object` with the target's runtime archive into the shared
 * library `output`, using the target's C compiler driver as linker
 * (cc, or aarch64-linux-gnu-gcc). `runtime_archive` is the path of
 * libiq_runtime.a built for the target. With `openmp`, the library also
 * links LLVM's OpenMP runtime (libomp.so.5), which the code of scf.parallel
 * loops calls. */
bool iq_target_link_shared(const char *target, const char *object, const char *runtime_archive,
                           bool openmp, const char *output, iq_error_t **error);

/* Links like iq_target_link_shared and adds the int4 kernels: the
 * target's libiq_int4_kernels.a (the generated kernels of every
 * instruction set) and libiq_kernels_rt.a (selection at load, packing,
 * threads, iq_int4_linear), both found beside the running program, and
 * pthreads. */
bool iq_target_link_shared_int4(const char *target, const char *object,
                                const char *runtime_archive, bool openmp, const char *output,
                                iq_error_t **error);

/* Writes the path of the runtime archive for `target` beside the running
 * program (lib/<processor>/libiq_runtime.a next to its bin/ folder) into
 * `out`. Returns false when that file is not readable. */
bool iq_target_default_runtime(const char *target, char *out, size_t size);

/* The iq target name of the machine running this code. */
const char *iq_target_host(void);

/* Builds the shared library `output` for the host CPU from kernel-level
 * MLIR `source` (iq_lower_to_kernel_source's output): parses it in
 * `context`, runs `pipeline` (iq_llvm_lowering_pipeline), emits an object
 * into `folder` and links it with the default runtime archive. Runs in a
 * child process, so the caller's memory and state are left as they were. */
bool iq_target_build_host_library(MlirContext context, const char *source, const char *pipeline,
                                  const char *folder, const char *output, iq_error_t **error);

/* Links the kernel objects (one per instruction set, at most 16) with the
 * target's libiq_kernels_rt.a into the shared library `output`, with
 * pthreads and libm. */
bool iq_target_link_kernels(const char *target, const char *const *objects, size_t count,
                            const char *kernel_archive, const char *output, iq_error_t **error);

#ifdef __cplusplus
}
#endif

#endif /* IQ_TARGET_H */
