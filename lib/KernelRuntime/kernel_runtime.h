/* Private declarations of the kernel runtime: the generated kernels'
 * signatures and the thread pool. */
#ifndef IQ_KERNEL_RUNTIME_H
#define IQ_KERNEL_RUNTIME_H

#include <stdbool.h>
#include <stdint.h>

/* A 1-D memref argument lowered to LLVM: allocated pointer, aligned
 * pointer, offset, size, stride. */
#define IQK_MEMREF(type) type *, type *, int64_t, int64_t, int64_t
#define IQK_MEMREF_ARGS(pointer, count) (pointer), (pointer), 0, (int64_t)(count), 1

#define IQK_KERNEL_ARGUMENTS                                                                      \
  IQK_MEMREF(uint8_t), IQK_MEMREF(int32_t), IQK_MEMREF(int32_t), IQK_MEMREF(float),              \
      IQK_MEMREF(uint8_t), IQK_MEMREF(int32_t), IQK_MEMREF(int32_t), IQK_MEMREF(float),          \
      IQK_MEMREF(float)

/* iqk_<isa>_gemv(weights, activations, y, blocks, K, n, group_begin,
 * group_end): the rows of groups [group_begin, group_end) for one token. */
typedef void iqk_gemv_fn(IQK_KERNEL_ARGUMENTS, int64_t blocks, int32_t k, int64_t n,
                         int64_t group_begin, int64_t group_end);
/* iqk_<isa>_gemm(..., partial, blocks, K, n, m, group_begin, group_end);
 * partial holds [panels * IQK_PANEL_ROWS][n] int32 sums between chunks. */
typedef void iqk_gemm_fn(IQK_KERNEL_ARGUMENTS, IQK_MEMREF(int32_t), int64_t blocks, int32_t k,
                         int64_t n, int64_t m, int64_t group_begin, int64_t group_end);

/* Blocks per chunk of the generated GEMM (IQ_INT4_CHUNK_BLOCKS in
 * int4_kernels.h); a longer K needs the partial-sum buffer. */
#define IQK_CHUNK_BLOCKS 32

/* iqk_<isa>_quantize[_h<F>](x, codes, zero, sum, scale, work, K, blocks,
 * panel_rows, row_begin, row_end, log2(K / F), 1 / sqrt(K)): quantizes
 * rows [row_begin, row_end) of x, after the Hadamard transform for the _h
 * variants, which use work[0, 2K). */
typedef void iqk_quantize_fn(IQK_MEMREF(float), IQK_MEMREF(uint8_t), IQK_MEMREF(int32_t),
                             IQK_MEMREF(int32_t), IQK_MEMREF(float), IQK_MEMREF(float), int64_t k,
                             int64_t blocks, int64_t panel_rows, int64_t row_begin,
                             int64_t row_end, int64_t log2m, float hscale);

/* The quantizer variants of a kernel set: plain, power-of-two Hadamard,
 * then one per K factor in the order of IQK_HADAMARD_FACTORS. */
#define IQK_HADAMARD_FACTORS {172, 156, 140, 108, 60, 52, 36, 28, 44, 40, 20, 12}
#define IQK_QUANTIZER_COUNT 14

typedef void iqk_task_fn(void *context, int part, int parts);

/* Runs task(context, i, parts) for i in [0, parts) on up to `threads`
 * threads (the caller's included) and returns when all parts finished. */
void iqk_parallel_run(int threads, iqk_task_fn *task, void *context);

#endif /* IQ_KERNEL_RUNTIME_H */
