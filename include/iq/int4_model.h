/* The int4 path of a compiled model: the packed weight tensor that
 * iq-pack-int4 stores for each W4A4 linear, and the functions that the
 * emitted forward code calls to run it. Those run the kernels of
 * iq_kernels.h, linked into the same library (docs/int4-model.md). */
#ifndef IQ_INT4_MODEL_H
#define IQ_INT4_MODEL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The discardable attribute iq-pack-int4 puts on an iq.linear: the name of
 * the u8 weight-store tensor holding its packed weights. */
#define IQ_INT4_WEIGHTS_ATTRIBUTE "iq.int4_weights"

/* The discardable attribute iq-pack-int4 puts on a float16 iq.linear whose
 * matrix is block-diagonal: the name of the f16 tensor of its blocks
 * (iq_f16_blocks_elements), whose size gives the block count. */
#define IQ_F16_BLOCKS_ATTRIBUTE "iq.f16_blocks"

/* The packed tensor of an [n, k] weight is one u8 array of
 * iq_int4_packed_bytes(n, k) bytes. It starts with the codes in the layout
 * of iqk_weights_pack (groups of 4 rows, blocks of 64 k, 128 bytes each).
 * Then come int32 zero points, int32 code sums and float32 scales, one per
 * row of the padded row count, a multiple of 4 whose extra rows are zero.
 * Every part starts at a multiple of 16 bytes from the tensor's start. */
static inline int64_t iq_int4_padded_rows(int64_t n) { return (n + 3) / 4 * 4; }
static inline int64_t iq_int4_code_bytes(int64_t n, int64_t k) {
  return iq_int4_padded_rows(n) / 4 * ((k + 63) / 64) * 128;
}
static inline int64_t iq_int4_packed_bytes(int64_t n, int64_t k) {
  return iq_int4_code_bytes(n, k) + 3 * 4 * iq_int4_padded_rows(n);
}

/* The packed tensor of a linear whose input is quantized per group of
 * `group` columns (the o_proj input, per head). Each of the k / group
 * column groups has the plain layout of its [n, group] slice, with that
 * slice's code sums. Its zero points are 0 and its scales 1, so the
 * kernels return exact integer dot products. Then come, per padded row,
 * the weights' int32 zero points and float32 scales. */
static inline int64_t iq_int4_grouped_bytes(int64_t n, int64_t k, int64_t group) {
  return k / group * iq_int4_packed_bytes(n, group) + 2 * 4 * iq_int4_padded_rows(n);
}

/* The packed tensor of an 8-bit linear (the lm_head option w8a8): each
 * 8-bit weight code c is split into c >> 4 and c & 15, packed as two
 * 4-bit matrices in the plain layout with zero points 0 and scales 1, so
 * the kernels return exact integer dot products. Then come, per padded
 * row, the int32 zero points (0..255), the int32 code sums and the
 * float32 scales of the 8-bit weights. */
static inline int64_t iq_int8_packed_bytes(int64_t n, int64_t k) {
  return 2 * iq_int4_packed_bytes(n, k) + 3 * 4 * iq_int4_padded_rows(n);
}

/* y[m][n] = Q(x) * W^T for m rows of x [m][k], where Q quantizes each row
 * per token to 4 bits with the range multiplied by `clip` (0 < clip <= 1)
 * and, when `hadamard` is 1, after the online Hadamard transform of size k.
 * `packed` is the tensor described above. Failures are recorded for
 * iq_int4_take_error; y is then left unspecified. */
void iq_int4_linear(const uint8_t *packed, int64_t n, int64_t k, const float *x, int64_t m,
                    float *y, int64_t hadamard, float clip);

/* iq_int4_linear for `count` (1 to 3) weights that read the same input x,
 * such as q, k and v: product i writes y_i[m][n_i] from packed_i. x is
 * quantized once, and for one or two rows all products run in one
 * parallel call of the kernel threads. Unused slots are NULL and 0. */
void iq_int4_linear_fused(int64_t count, const uint8_t *packed0, int64_t n0, float *y0,
                          const uint8_t *packed1, int64_t n1, float *y1, const uint8_t *packed2,
                          int64_t n2, float *y2, int64_t k, const float *x, int64_t m,
                          int64_t hadamard, float clip);

/* y[m][n] = Q(x) * W^T where Q quantizes each group of `group` columns
 * of a row to 4 bits with the group's own min and max times `clip` (the
 * rule of iq_quantize_groupwise). `packed` has the grouped layout above.
 * The kernels multiply each column group by its slice of the weights,
 * and the zero-point terms and scales are applied after. */
void iq_int4_linear_grouped(const uint8_t *packed, int64_t n, int64_t k, int64_t group,
                            const float *x, int64_t m, float *y, float clip);

/* y[m][n] = Q(x) * W^T where Q quantizes each row per token to 8 bits
 * (range containing 0, times `clip`) and W is 8-bit per output row, in the
 * layout of iq_int8_packed_bytes. Each 8-bit code is split into two 4-bit
 * halves on both sides, and the four integer products are combined. */
void iq_int8_linear(const uint8_t *packed, int64_t n, int64_t k, const float *x, int64_t m,
                    float *y, float clip);

/* The packed tensor of a block-diagonal float16 linear (InfoQuant's
 * residual converters): its `blocks` diagonal blocks [d, d], d = n /
 * blocks, one after the other, each row-major, as IEEE binary16 bits. */
static inline int64_t iq_f16_blocks_elements(int64_t n, int64_t blocks) {
  return n / blocks * n;
}

/* y[m][n] = x * W^T for the block-diagonal float16 matrix W in the layout
 * above, on the kernel threads; the products are summed in a fixed order
 * that does not depend on the instruction set. */
void iq_f16_linear_blocks(const uint16_t *weights, int64_t n, int64_t blocks, const float *x,
                          int64_t m, float *y);

/* Runs the attention of `tokens` queries at positions[0] .. positions[0] +
 * tokens - 1 over the int4 KV cache `cache` (an iqk_kv_cache_t). It drops
 * cached positions from positions[0] on, appends k and v
 * ([tokens][kv_heads][head_dim], k after RoPE and before its Hadamard
 * transform), and writes out [tokens][heads][head_dim] from q (after RoPE,
 * before its transform). K and V rows are quantized with the clip factors;
 * V rows use the group rule of iq_quantize_groupwise when
 * `v_group_range` is 1, else the per-token rule. Failures are recorded
 * for iq_int4_take_error. */
void iq_int4_attention(void *cache, const float *q, const float *k, const float *v,
                       const int64_t *positions, int64_t tokens, int64_t heads, float k_clip,
                       float v_clip, int64_t v_group_range, float *out);

/* Returns the first failure message recorded since the last call and
 * clears it, or NULL when there was none. */
const char *iq_int4_take_error(void);

#ifdef __cplusplus
}
#endif

#endif /* IQ_INT4_MODEL_H */
