/* C interface of the W4A4 kernel library that `iq-kernels` emits
 * (libiqk.so): weight packing, per-token activation quantization and the
 * integer matrix multiply y = x * W^T, with a kernel chosen for the CPU
 * when the library loads. docs/kernels.md describes the math and layouts.
 *
 * Quantization is asymmetric on both sides: a weight row n has codes
 * 0..15, zero point zw[n] and scale sw[n] (w = (code - zw) * sw); an
 * activation row m has codes 0..15, za[m] and sa[m]. Each output is
 *   y[m][n] = (float)(dot - zw*asum - za*wsum + K*za*zw) * sa * sw
 * with dot the integer sum of code products, asum and wsum the code sums
 * of the rows, evaluated left to right in float32.
 *
 * Functions that can fail return 0 on success and -1 on failure, with a
 * message for iqk_last_error(). */
#ifndef IQ_IQ_KERNELS_H
#define IQ_IQ_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IQK_BLOCK_K 64     /* k values per packed block */
#define IQK_GROUP_ROWS 4   /* weight rows interleaved per packed group */
#define IQK_PANEL_ROWS 8   /* activation rows per GEMM panel */

/* Packed weights: codes[(g * blocks + b) * 128 + r * 32 + j] contains k =
 * 64b + j of row 4g + r in its low nibble and k = 64b + 32 + j in its
 * high nibble. Rows past n and k past K are zero codes. */
typedef struct iqk_weights {
  int64_t n, k, blocks, groups;
  uint8_t *codes;
  int32_t *zero, *sum; /* zw and wsum, groups * 4 entries */
  float *scale;        /* sw */
} iqk_weights_t;

/* Quantized activation rows: codes in panels [m / P][blocks][P][64] with
 * P = 1 when m == 1 (the GEMV layout) and IQK_PANEL_ROWS otherwise; rows
 * past m are zero. */
typedef struct iqk_activations {
  int64_t m, k, blocks, panel_rows, capacity;
  uint8_t *codes;
  int32_t *zero, *sum; /* za and asum */
  float *scale;        /* sa */
  float clip;          /* range factor of the quantizers, 1.0 unless set */
} iqk_activations_t;

/* Packs row-major codes [n][k] (each 0..15) with per-row zero points
 * (0..15) and scales. Returns NULL on invalid input or out of memory. */
iqk_weights_t *iqk_weights_pack(int64_t n, int64_t k, const uint8_t *codes,
                                const uint8_t *zero_points, const float *scales);
/* Quantizes float weights [n][k] per output row with the rule of
 * iqk_activations_quantize and packs them (round to nearest, no clipping
 * search: a benchmark and test helper, not the model's quantizer). */
iqk_weights_t *iqk_weights_quantize(int64_t n, int64_t k, const float *weights);
void iqk_weights_free(iqk_weights_t *weights);

/* Creates a buffer for up to `max_m` activation rows of width k. */
iqk_activations_t *iqk_activations_create(int64_t max_m, int64_t k);
void iqk_activations_free(iqk_activations_t *activations);
/* Stores m rows of already quantized codes [m][k] with zero points and
 * scales, in the layout the kernels read. */
int iqk_activations_set_codes(iqk_activations_t *activations, int64_t m, const uint8_t *codes,
                              const uint8_t *zero_points, const float *scales);
/* Sets the factor (0 < clip <= 1) that the quantizers below multiply
 * xmin and xmax by before computing sa and za, as iq_quantize_per_token's
 * clip_max and clip_min do. */
int iqk_activations_set_clip(iqk_activations_t *activations, float clip);
/* Quantizes m float rows [m][k] per token to 4 bits: with
 * xmin = min(min x, 0) and xmax = max(max x, 0) ([-1, 1] for an all-zero
 * row), sa = max((xmax - xmin) / 15, 1e-8), za = round(-xmin / sa) and
 * code = clamp(round(x / sa) + za, 0, 15), rounding half to even. */
int iqk_activations_quantize(iqk_activations_t *activations, int64_t m, const float *x);
/* Applies the online Hadamard transform of size K to each row, then
 * quantizes it as iqk_activations_quantize does, reading each row once.
 * The transform is iq_hadamard_transform's (iq/quant.h): for K = F * 2^j,
 * with F the first of 172, 156, 140, 108, 60, 52, 36, 28, 44, 40, 20, 12
 * that gives a power of two (else F = 1 when K is a power of two), the
 * row viewed as [F, 2^j] gets the Walsh-Hadamard transform along 2^j, a
 * multiply by 1/sqrt(K) and the F x F Hadamard table along F. Fails for
 * other K. */
int iqk_activations_quantize_hadamard(iqk_activations_t *activations, int64_t m, const float *x);
/* Returns the K factor F of the transform of size k, 1 for a power of
 * two, or 0 when there is no transform of that size. */
int iqk_hadamard_factor(int64_t k);

/* y[m][n] = x * W^T for the m rows in `activations`; y is row-major with
 * row stride n. Runs the GEMV kernel when m == 1, else the GEMM kernel,
 * on the library's threads, which split the weight rows. */
int iqk_matmul(const iqk_weights_t *weights, const iqk_activations_t *activations, float *y);

/* y[i] = x * weights[i]^T for i in [0, count), all with the same
 * activations (q, k and v of one input): the threads split the row groups
 * of all the weights in one parallel call when m <= 2, and each product
 * in turn otherwise. */
int iqk_matmul_multi(int count, const iqk_weights_t *const *weights,
                     const iqk_activations_t *activations, float *const *y);

/* An int4 KV cache for one sequence. Per KV head h and position j,
 * k_codes[(h * capacity + j) * head_dim / 2 + i] contains dimension 2i in its
 * low nibble and 2i + 1 in its high nibble (likewise v_codes), and a value
 * is scale * (code - zero) with scale and zero at [h * capacity + j]. K is
 * stored after the Hadamard transform along head_dim (H / sqrt(head_dim),
 * Sylvester order); V as given. Both use the per-token 4-bit rule of
 * iqk_activations_quantize on each (position, KV head) row, with the range
 * multiplied by the clip factor first. */
typedef struct iqk_kv_cache {
  int64_t kv_heads, head_dim, capacity, length;
  uint8_t *k_codes, *v_codes;
  float *k_scale, *k_zero, *v_scale, *v_zero;
  float k_clip, v_clip; /* 1.0 unless set */
  int v_group_range;    /* 0 unless set: V rows use the per-token rule */
} iqk_kv_cache_t;

/* Creates an empty cache; head_dim must be a power of two from 2 to 4096. */
iqk_kv_cache_t *iqk_kv_cache_create(int64_t kv_heads, int64_t head_dim, int64_t capacity);
void iqk_kv_cache_free(iqk_kv_cache_t *cache);
/* Sets the clip factors (0 < clip <= 1) of later appends. */
int iqk_kv_cache_set_clip(iqk_kv_cache_t *cache, float k_clip, float v_clip);
/* With group_range nonzero, later appends quantize V rows with the rule
 * of iq_quantize_groupwise instead: the range is the row's own min and
 * max (times the clip factor), and the smallest scale is 1e-6. */
int iqk_kv_cache_set_v_group_range(iqk_kv_cache_t *cache, int group_range);
/* Appends `tokens` positions: k and v are [tokens][kv_heads][head_dim]
 * (k after RoPE). Fails when the cache would exceed its capacity. */
int iqk_kv_cache_append(iqk_kv_cache_t *cache, int64_t tokens, const float *k, const float *v);
/* Drops the positions from `length` on. */
int iqk_kv_cache_truncate(iqk_kv_cache_t *cache, int64_t length);

/* Computes causal attention for the last `tokens` positions of the cache
 * (appended already). q and out are [tokens][heads][head_dim], q after
 * RoPE, and query t attends to positions 0 .. length - tokens + t. Query heads map to KV heads in
 * groups of heads / kv_heads. The kernel applies the Hadamard transform to
 * q, computes the scores from the codes (s * (q . code - z * sum(q))),
 * scaled by 1 / sqrt(head_dim), and the softmax-weighted sum of the
 * dequantized V rows, without a float copy of the cache. Heads are split
 * over the library's threads. */
int iqk_attention(const iqk_kv_cache_t *cache, int64_t tokens, int64_t heads, const float *q,
                  float *out);

/* The selected kernel set: "generic", "avx2", "avxvnni", "avx512vnni"
 * (x86-64), "dotprod", "i8mm" (AArch64). At load the library picks the
 * best one the CPU supports, or the one IQ_KERNEL names. */
const char *iqk_kernel_name(void);
/* Selects a kernel set by name; fails when the CPU lacks its instructions
 * or the name is unknown. */
int iqk_select_kernel(const char *name);
/* Returns 1 when this CPU can run the kernel set `name`, else 0. */
int iqk_kernel_supported(const char *name);

/* Sets the number of threads (1..64); the default is IQ_NUM_THREADS, or
 * the number of online processors. */
int iqk_set_num_threads(int threads);
int iqk_num_threads(void);

/* The message of the last failure on this thread. */
const char *iqk_last_error(void);

#ifdef __cplusplus
}
#endif

#endif /* IQ_IQ_KERNELS_H */
