/* Generator of the W4A4 integer matrix-multiply kernels: one MLIR module
 * per instruction set, lowered and emitted like the float kernels, then
 * linked with the kernel runtime (lib/KernelRuntime) into a library with
 * the C interface of iq_kernels.h. docs/kernels.md describes the layouts
 * and the math. */
#ifndef IQ_INT4_KERNELS_H
#define IQ_INT4_KERNELS_H

#include <stdbool.h>
#include <stddef.h>

#include "iq/support.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Activation rows per GEMM panel (the packed A layout) and weight rows per
 * packed group; iq_kernels.h repeats both values for the runtime. */
#define IQ_INT4_PANEL_ROWS 8
#define IQ_INT4_GROUP_ROWS 4
/* Blocks of 64 k per 16-bit accumulation chunk: a lane of vpmaddubsw sums
 * two products of at most 15 * 15, so a block adds at most 900 and 32
 * blocks at most 28800, below the int16 maximum of 32767. */
#define IQ_INT4_CHUNK_BLOCKS 32

typedef enum iq_int4_isa_kind {
  IQ_INT4_GENERIC,    /* vector dialect arithmetic only, any CPU of the target */
  IQ_INT4_AVX2,       /* vpmaddubsw + vpmaddwd */
  IQ_INT4_AVXVNNI,    /* VEX vpdpbusd */
  IQ_INT4_AVX512VNNI, /* EVEX vpdpbusd on 256-bit registers (AVX512VL) */
  IQ_INT4_DOTPROD,    /* AArch64 udot */
  IQ_INT4_I8MM,       /* AArch64 ummla for GEMM, udot for GEMV */
} iq_int4_isa_kind_t;

typedef struct iq_int4_isa {
  const char *name;     /* symbol infix and IQ_KERNEL value: "avx2" */
  iq_int4_isa_kind_t kind;
  const char *target;   /* "x86_64-linux-gnu" or "aarch64-linux-gnu" */
  const char *cpu;      /* LLVM CPU the variant is compiled for */
  const char *features; /* LLVM target features of the variant */
} iq_int4_isa_t;

/* Returns the instruction sets of `target` (generic first) and their count
 * in `*count`, or NULL for an unknown target. */
const iq_int4_isa_t *iq_int4_isas(const char *target, size_t *count);

/* Returns the instruction set named `name` for `target`, or NULL. */
const iq_int4_isa_t *iq_int4_isa_find(const char *target, const char *name);

/* Generates the MLIR source (func, scf, arith, math, memref, vector and
 * llvm.call_intrinsic) of one instruction set's kernels: iqk_<name>_gemv,
 * iqk_<name>_gemm, iqk_<name>_quantize and the quantizers fused with the
 * Hadamard transform, iqk_<name>_quantize_h<F> (F = 1 for powers of two,
 * else the K factor). Returns a NUL-terminated string the caller frees, or
 * NULL with `*error` set. */
char *iq_int4_kernel_source(const iq_int4_isa_t *isa, iq_error_t **error);

/* The pass pipeline from that source to the LLVM dialect. */
extern const char iq_int4_lowering_pipeline[];

#ifdef __cplusplus
}
#endif

#endif /* IQ_INT4_KERNELS_H */
