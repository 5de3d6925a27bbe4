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

/* Packed weights: codes[(g * blocks + b) * 128 + r * 32 + j] holds k =
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
