/* The InfoQuant numeric core: Hadamard transforms, the activation and
 * weight quantizers, GPTQ, and the PSOT rotation search. Plain arrays in,
 * plain arrays out, no MLIR. docs/quantization.md gives the formulas.
 *
 * Conventions:
 * - Matrices are dense and row-major. A weight is [out x in] (PyTorch's
 *   layout), and an activation is [tokens x features], one token per row.
 * - Rounding is round-half-to-even: the library calls rintf/nearbyint and
 *   expects the default floating-point rounding mode (FE_TONEAREST).
 * - Functions that can fail take an `iq_error_t **` (see iq/support.h),
 *   return false on failure and leave their outputs unspecified. */
#ifndef IQ_QUANT_H
#define IQ_QUANT_H

#include "iq/support.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Hadamard transforms -------------------------------------------------
 * For n = K * 2^m, the normalized transform is
 *   Hn = (hadK (x) H_{2^m}) / sqrt(n),
 * where H_{2^m} is the Sylvester (natural order) Walsh-Hadamard matrix,
 * H[i][j] = (-1)^popcount(i & j), and hadK is the stored K x K table
 * (data/hadamard/). K is the first of 172, 156, 140, 108, 60, 52, 36, 28,
 * 44, 40, 20, 12 that divides n with n / K a power of two, else 1. Hn is
 * orthogonal. Applied to a vector x viewed as a [K x 2^m] row-major array,
 * it runs the unnormalized transform along each row, scales by 1/sqrt(n),
 * then mixes the rows: out[a][:] = sum_a' hadK[a][a'] * in[a'][:]. */

/* Finds the K factor of n. Fails when n is 0 or n / K is not a power of
 * two for any table, naming n and the supported sizes. */
bool iq_hadamard_factor(size_t n, size_t *k, iq_error_t **error);

/* Replaces x (length n) by Hn * x. */
bool iq_hadamard_transform(float *x, size_t n, iq_error_t **error);
/* Replaces x (length n) by Hn^T * x, the inverse of iq_hadamard_transform. */
bool iq_hadamard_transform_transposed(float *x, size_t n, iq_error_t **error);
/* Applies iq_hadamard_transform to each row of `rows` x n. In the row
 * vector convention this is X -> X * Hn^T. */
bool iq_hadamard_transform_rows(float *x, size_t rows, size_t n,
                                iq_error_t **error);
/* Applies iq_hadamard_transform_transposed to each row: X -> X * Hn. */
bool iq_hadamard_transform_rows_transposed(float *x, size_t rows, size_t n,
                                           iq_error_t **error);
/* Double-precision forms of the two vector transforms. */
bool iq_hadamard_transform_f64(double *x, size_t n, iq_error_t **error);
bool iq_hadamard_transform_transposed_f64(double *x, size_t n,
                                          iq_error_t **error);

/* Writes the dense n x n matrix Hn (so iq_hadamard_transform(x) == Hn * x)
 * into `matrix`. */
bool iq_hadamard_matrix(size_t n, double *matrix, iq_error_t **error);

/* Writes n signs (+1 or -1) drawn from `seed` into `signs`. Sign i is -1
 * when the top bit of the i-th output of SplitMix64 (Steele, Lea and
 * Flood 2014, state initialized to `seed`) is set. The same seed always
 * gives the same vector. */
void iq_random_signs(uint64_t seed, size_t n, double *signs);

/* Writes the random Hadamard diag(s) * Hn^T (n x n, orthogonal) into
 * `matrix`, with s = iq_random_signs(seed, n). Its row i is s_i * Hn e_i,
 * which is what the reference's random_hadamard_matrix computes with its
 * own torch sign vector. */
bool iq_random_hadamard(size_t n, uint64_t seed, double *matrix,
                        iq_error_t **error);

/* ---- Activation quantizers (dynamic) -------------------------------------
 * Asymmetric, `bits` bits (1..8), maxq = 2^bits - 1, codes 0..maxq:
 *   s = max((xmax - xmin) / maxq, eps),  z = round(-xmin / s)
 *   code = clamp(round(x / s) + z, 0, maxq),  x^ = s * (code - z)
 * with xmax and xmin multiplied by the clip factors first. */

/* Per-token: one (s, z) per row of `rows` x `cols`. The range always
 * contains 0 (xmax = max(max x, 0), xmin = min(min x, 0)); a row whose
 * clipped range is empty (all zeros) uses xmin = -1, xmax = +1; eps = 1e-8.
 * This is also the K-cache quantizer applied per (token, KV head) row.
 * Each output pointer may be NULL: `codes` (rows x cols), `scales` and
 * `zeros` (rows), `dequantized` (rows x cols, may equal x). */
bool iq_quantize_per_token(const float *x, size_t rows, size_t cols, int bits,
                           float clip_max, float clip_min, uint8_t *codes,
                           float *scales, float *zeros, float *dequantized,
                           iq_error_t **error);

/* Group-wise: one (s, z) per (row, group of `group_size` contiguous
 * columns); cols must be a multiple of group_size. The range is the raw
 * min and max of the group (0 is not forced in), a group with xmin == xmax
 * == 0 uses -1 and +1, and eps = 1e-6. `scales` and `zeros` hold
 * rows * (cols / group_size) values. Outputs may be NULL as above. */
bool iq_quantize_groupwise(const float *x, size_t rows, size_t cols,
                           size_t group_size, int bits, float clip_max,
                           float clip_min, uint8_t *codes, float *scales,
                           float *zeros, float *dequantized,
                           iq_error_t **error);

/* ---- Weight quantizer (offline, per output channel) ----------------------
 * For each row w of a weight [rows x cols]:
 * - asymmetric: xmin = min(min w, 0), xmax = max(max w, 0), both 0 -> -1/+1,
 *   s = max(xmax - xmin, 1e-5) / maxq, z = round(-xmin / s);
 * - symmetric: xmax = max(|min w|, max w), xmin = -xmax (0 -> +-1),
 *   s = 2 xmax / maxq, z = (maxq + 1) / 2.
 * With `mse_clip`, every shrink p = 1 - k/grid, k = 0 .. max_shrink*grid - 1,
 * scales the range (s_p = p*(xmax - xmin)/maxq, z_p = round(-p*xmin/s_p),
 * symmetric keeps z), and the (s, z) with the smallest
 * sum |QDQ(w) - w|^norm wins (the first one on ties). The applied
 * quantizer is the searched one, zero point included: every weight is
 * s * (code - z) with code in 0..maxq (true INT4 for 4 bits). */
typedef struct iq_weight_quant_options {
  int bits;         /* 4 */
  bool symmetric;   /* false */
  bool mse_clip;    /* true */
  float clip_norm;  /* 2.4, the exponent of the search error */
  int clip_grid;    /* 100 */
  float max_shrink; /* 0.8: p runs from 1.00 down to 0.21 */
} iq_weight_quant_options_t;

/* Fills `options` with the defaults in the comments above. */
void iq_weight_quant_options_init(iq_weight_quant_options_t *options);

/* Computes the per-row scale and zero point of `weight` ([rows x cols]). */
bool iq_weight_quant_params(const float *weight, size_t rows, size_t cols,
                            const iq_weight_quant_options_t *options,
                            float *scales, float *zeros, iq_error_t **error);

/* Quantizes one value with a row's parameters: returns the code and
 * stores s * (code - z) in `*dequantized` when it is not NULL. */
uint8_t iq_quantize_value(float value, float scale, float zero, int maxq,
                          float *dequantized);

/* Round-to-nearest weight quantization: computes the per-row parameters
 * and quantizes every weight with them. Any output may be NULL. `codes`
 * and `dequantized` are [rows x cols], `scales` and `zeros` are [rows]. */
bool iq_quantize_weight_rtn(const float *weight, size_t rows, size_t cols,
                            const iq_weight_quant_options_t *options,
                            uint8_t *codes, float *scales, float *zeros,
                            float *dequantized, iq_error_t **error);

/* ---- GPTQ ---------------------------------------------------------------
 * Quantizes a linear weight W [rows x cols] column by column, feeding each
 * column's rounding error forward to the columns not yet quantized, with
 * the Hessian H = (2 / N) * X^T X of the layer's inputs X [N x cols]:
 * 1. The per-row (s, z) come once from the un-updated W, with the same
 *    rules and MSE clip search as iq_quantize_weight_rtn.
 * 2. Dead columns (H[c][c] == 0) get H[c][c] = 1 and W[:, c] = 0.
 * 3. damp_percent * mean(diag H) is added to the diagonal.
 * 4. U = the upper Cholesky factor of H^-1 (LAPACKE, double).
 * 5. For each column c, in blocks of block_size columns: q = QDQ(W[:, c]),
 *    err = (W[:, c] - q) / U[c][c], and W[:, j] -= err * U[c][j] for j > c
 *    (inside the block at once, for later blocks once per block, through
 *    cblas_dgemm).
 * RTN (iq_quantize_weight_rtn) is the same quantizer without step 5's
 * error feedback. */
typedef struct iq_gptq_options {
  iq_weight_quant_options_t weight; /* iq_weight_quant_options_init's */
  size_t block_size;                /* 128 */
  double damp_percent;              /* 0.01 */
} iq_gptq_options_t;

/* Fills `options` with the defaults in the comments above. */
void iq_gptq_options_init(iq_gptq_options_t *options);

/* Adds X^T X of `x` ([tokens x cols], float) to `xtx` ([cols x cols],
 * double, full symmetric matrix). Call it once per calibration batch and
 * count the tokens, then pass the sum to iq_gptq_quantize. */
bool iq_gptq_accumulate(const float *x, size_t tokens, size_t cols,
                        double *xtx, iq_error_t **error);

/* Runs GPTQ on `weight` with the raw sum `xtx` = X^T X over `token_count`
 * calibration tokens. `codes` and `dequantized` are [rows x cols], `scales`
 * and `zeros` [rows]; any output may be NULL. Fails, naming the value,
 * when token_count is 0, xtx is not finite or H is not positive definite
 * after damping (raise damp_percent then). */
bool iq_gptq_quantize(const float *weight, size_t rows, size_t cols,
                      const double *xtx, double token_count,
                      const iq_gptq_options_t *options, uint8_t *codes,
                      float *scales, float *zeros, float *dequantized,
                      iq_error_t **error);

#ifdef __cplusplus
}
#endif

#endif /* IQ_QUANT_H */
