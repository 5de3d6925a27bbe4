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
 * group_end): the rows of groups [group_begin, group_end) for one token.
 * iqk_<isa>_gemv2 has the same arguments and does two tokens, whose
 * activations are in one panel of 2 rows. */
typedef void iqk_gemv_fn(IQK_KERNEL_ARGUMENTS, int64_t blocks, int32_t k, int64_t n,
                         int64_t group_begin, int64_t group_end);
/* iqk_<isa>_gemv_heads(w, w_zero, w_scale, a, a_scale, y, slices,
 * slice_blocks, slice_bytes, n, group_begin, group_end, correction): one
 * token of a linear whose input is quantized per column group, with
 * signed activation bytes (Int4Kernels.c describes the layout and math). */
typedef void iqk_gemv_heads_fn(IQK_MEMREF(uint8_t), IQK_MEMREF(int32_t), IQK_MEMREF(float),
                               IQK_MEMREF(int8_t), IQK_MEMREF(float), IQK_MEMREF(float),
                               int64_t slices, int64_t slice_blocks, int64_t slice_bytes,
                               int64_t n, int64_t group_begin, int64_t group_end,
                               float correction);
/* iqk_<isa>_linear_f16(w, x, y, n, d, m, row_begin, row_end): rows
 * [row_begin, row_end) of a block-diagonal float16 linear with [d, d]
 * blocks for m tokens (Int4HalfLinear.c). */
typedef void iqk_linear_f16_fn(IQK_MEMREF(uint16_t), IQK_MEMREF(float), IQK_MEMREF(float),
                               int64_t n, int64_t d, int64_t m, int64_t row_begin,
                               int64_t row_end);
/* iqk_<isa>_gemm(..., partial, blocks, K, n, m, group_begin, group_end,
 * panel_begin, panel_end): weight groups [group_begin, group_end) against
 * activation panels [panel_begin, panel_end). partial keeps
 * [panels * IQK_PANEL_ROWS][n] int32 sums between chunks. */
typedef void iqk_gemm_fn(IQK_KERNEL_ARGUMENTS, IQK_MEMREF(int32_t), int64_t blocks, int32_t k,
                         int64_t n, int64_t m, int64_t group_begin, int64_t group_end,
                         int64_t panel_begin, int64_t panel_end);

/* Blocks per chunk of the generated GEMM (IQ_INT4_CHUNK_BLOCKS in
 * int4_kernels.h); a longer K needs the partial-sum buffer. */
#define IQK_CHUNK_BLOCKS 32

/* Multiply-adds (n * k * m) below which iqk_matmul does not use the
 * thread pool: an estimate of where a wake-up of the workers costs more
 * than the work it splits. */
#define IQK_PARALLEL_MIN_WORK 65536

/* iqk_<isa>_quantize[_h<F>](x, codes, zero, sum, scale, work, K, blocks,
 * panel_rows, row_begin, row_end, log2(K / F), 1 / sqrt(K), clip):
 * quantizes rows [row_begin, row_end) of x, after the Hadamard transform
 * for the _h variants, which use work[0, 2K); the range is multiplied by
 * clip. */
typedef void iqk_quantize_fn(IQK_MEMREF(float), IQK_MEMREF(uint8_t), IQK_MEMREF(int32_t),
                             IQK_MEMREF(int32_t), IQK_MEMREF(float), IQK_MEMREF(float), int64_t k,
                             int64_t blocks, int64_t panel_rows, int64_t row_begin,
                             int64_t row_end, int64_t log2m, float hscale, float clip);

/* iqk_<isa>_kv_append(k, v, k_codes, k_scale, k_zero, v_codes, v_scale,
 * v_zero, work, tokens, kv_heads, head_dim, capacity, start, log2(head_dim),
 * 1 / sqrt(head_dim), k_clip, v_clip, head_begin, head_end,
 * v_group_range); v_group_range selects the group rule for V rows (see
 * iqk_kv_cache_set_v_group_range). */
typedef void iqk_kv_append_fn(IQK_MEMREF(float), IQK_MEMREF(float), IQK_MEMREF(uint8_t),
                              IQK_MEMREF(float), IQK_MEMREF(float), IQK_MEMREF(uint8_t),
                              IQK_MEMREF(float), IQK_MEMREF(float), IQK_MEMREF(float),
                              int64_t tokens, int64_t kv_heads, int64_t head_dim,
                              int64_t capacity, int64_t start, int64_t log2hd, float hscale,
                              float k_clip, float v_clip, int64_t head_begin, int64_t head_end,
                              int64_t v_group_range);
/* iqk_<isa>_attention(q, out, k_codes, k_scale, k_zero, v_codes, v_scale,
 * v_zero, work, tokens, heads, kv_heads, head_dim, capacity, position,
 * log2(head_dim), 1 / sqrt(head_dim), softmax_scale, head_begin, head_end);
 * work has room for head_dim + position + tokens floats. */
typedef void iqk_attention_fn(IQK_MEMREF(float), IQK_MEMREF(float), IQK_MEMREF(uint8_t),
                              IQK_MEMREF(float), IQK_MEMREF(float), IQK_MEMREF(uint8_t),
                              IQK_MEMREF(float), IQK_MEMREF(float), IQK_MEMREF(float),
                              int64_t tokens, int64_t heads, int64_t kv_heads, int64_t head_dim,
                              int64_t capacity, int64_t position, int64_t log2hd, float hscale,
                              float softmax_scale, int64_t head_begin, int64_t head_end);

/* The quantizer variants of a kernel set: plain, power-of-two Hadamard,
 * then one per K factor in the order of IQK_HADAMARD_FACTORS. */
#define IQK_HADAMARD_FACTORS {172, 156, 140, 108, 60, 52, 36, 28, 44, 40, 20, 12}
#define IQK_QUANTIZER_COUNT 14

/* The generated functions of one instruction set. */
typedef struct iqk_kernel_set {
  const char *name;
  iqk_gemv_fn *gemv;
  iqk_gemv_fn *gemv2;
  iqk_gemv_heads_fn *gemv_heads;
  iqk_linear_f16_fn *linear_f16;
  iqk_gemm_fn *gemm;
  iqk_quantize_fn *quantize[IQK_QUANTIZER_COUNT];
  iqk_kv_append_fn *kv_append;
  iqk_attention_fn *attention;
} iqk_kernel_set_t;

/* The kernel set chosen at load or by iqk_select_kernel; NULL, with the
 * reason for iqk_last_error, when none is. */
const iqk_kernel_set_t *iqk_selected_set(void);

/* Records a message for iqk_last_error and returns -1. */
int iqk_fail(const char *format, ...) __attribute__((format(printf, 1, 2)));

typedef void iqk_task_fn(void *context, int part, int parts);

/* Runs task(context, i, parts) for i in [0, parts) on up to `threads`
 * threads (the caller's included) and returns when all parts finished. */
void iqk_parallel_run(int threads, iqk_task_fn *task, void *context);

#endif /* IQ_KERNEL_RUNTIME_H */
