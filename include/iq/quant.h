/* The InfoQuant numeric core: Hadamard transforms, the activation and
 * weight quantizers, GPTQ, the PSOT rotation search and LAC clip learning.
 * Plain arrays in, plain arrays out, no MLIR. docs/quantization.md gives
 * the formulas.
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

/* ---- PSOT: Peak Suppression Orthogonal Transformation --------------------
 * Learns per-layer orthogonal rotations that lower the softmax-weighted
 * peak magnitudes of a layer's activations. For a row group z (a token,
 * or a (token, head) pair) with token weight w_t and temperature T:
 *   A = |z|,  S = softmax(A / T) over the group,  P = S * A,
 *   cost = sqrt(sum over all rows and columns of (w_t * P)^2).
 * Gradients flow through both S and A; d|y|/dy is sign(y), 0 at 0.
 * Rotations act on the right and are stored row-major in double. */

/* Stage 1 and 3 cost: z is [rows x hidden], split into `blocks` blocks of
 * d = hidden / blocks columns. Block j is rotated by q[j] (d x d, at
 * q + j*d*d), then, with rotation_mean, its per-row mean over the d
 * columns is removed, and the softmax runs over all `hidden` columns.
 * `weights` ([rows]) may be NULL for all ones. Stores the cost, and when
 * `grad` is not NULL the gradient d cost / d q[j] ([blocks][d x d]). */
bool iq_psot_block_cost(const float *z, size_t rows, size_t hidden,
                        size_t blocks, const double *q, const float *weights,
                        double temperature, bool rotation_mean, double *cost,
                        double *grad, iq_error_t **error);

/* Stage 2 loss over V [rows x kv_heads*head_dim] and M
 * [rows x heads*head_dim]: KV head g of V is rotated by q2[g], query head h
 * of M by q2[h / (heads / kv_heads)]. Each (row, head) has its mean removed
 * (with rotation_mean) and its own softmax over head_dim. The loss is
 * Mcost + Vcost * stopgrad(Mcost / Vcost), so its value is 2 * Mcost and
 * `grad` ([kv_heads][head_dim x head_dim], may be NULL) is
 * dMcost + (Mcost / Vcost) * dVcost. Weights may be NULL. */
bool iq_psot_head_cost(const float *v, const float *m, size_t rows,
                       size_t heads, size_t kv_heads, size_t head_dim,
                       const double *q2, const float *v_weights,
                       const float *m_weights, double temperature,
                       bool rotation_mean, double *loss, double *m_cost,
                       double *v_cost, double *grad, iq_error_t **error);

/* One Cayley SGD step on the Stiefel manifold (SGDG of Li, Fuxin and
 * Todorovic, "Efficient Riemannian Optimization on the Stiefel Manifold
 * via the Cayley Transform", 2020, as SpinQuant uses it, momentum 0):
 *   Qn = Q with each row divided by (its L2 norm + 1e-8)
 *   with `retract`: Qn = QR retraction (QR of Qn^T, columns of the Q
 *     factor multiplied by sign(diag R), transposed back)
 *   V = -G^T,  W^ = V Qn - 0.5 Qn^T (Qn (V Qn)),  W = W^ - W^^T
 *   alpha = min(lr, 1 / (||W||_1 + 1e-8))  (max column abs-sum)
 *   X0 = Qn^T,  Y = X0 + alpha V,  5 times: Y = X0 + alpha W (X0 + Y) / 2
 *   Q = Y^T
 * q and grad are n x n. */
bool iq_cayley_step(double *q, const double *grad, size_t n, double lr,
                    bool retract, iq_error_t **error);

/* Replaces q (n x n) by its QR retraction (see iq_cayley_step). */
bool iq_qr_retraction(double *q, size_t n, iq_error_t **error);

/* Writes, for each of the `tokens` rows of one window z [tokens x width],
 * max_c |z - mean| / std, where mean and std (population) are taken over
 * the whole window tensor. A row is an outlier at level k when this value
 * exceeds k. A constant window gets all zeros. */
void iq_psot_window_deviation(const float *z, size_t tokens, size_t width,
                              float *deviation);

typedef struct iq_psot_options {
  size_t block_diag;      /* b: Q1 and Q4 have b blocks; 2 (reference 2) */
  double temperature;     /* T = 2 */
  double lr[3];           /* stage 1, 2, 3 learning rates: 2, 2, 2 */
  double lr_end_factor;   /* LinearLR end factor, 0.01 */
  int epochs;             /* 4 (reference 15) */
  size_t batch_windows;   /* windows per step, 4 */
  bool rotation_mean;     /* remove the per-block or per-head mean: true */
  double aug_token;       /* outlier token weight, 30; <= 1 disables */
  size_t aug_start;       /* layers below get weight aug_token on every
                             token: 2 */
  size_t eta_m;           /* windows for the outlier statistics, 10 */
  bool aug_attention;     /* token weights in stage 2 (aug_MHA): true */
  int cayley_iterations;  /* fixed-point iterations of the Cayley map, 5 */
  double retraction_probability; /* QR retraction chance per step, 1/101 */
  bool final_retraction;  /* QR-retract every matrix after the last step
                             so the results are orthogonal: true */
  bool keep_best;         /* return, per stage, the matrices with the lowest
                             loss on all windows among the start and the
                             end of each epoch, not the last ones: true */
  uint64_t seed;          /* random Hadamard start, shuffles, retractions */
} iq_psot_options_t;

/* Fills `options` with the defaults in the comments above. They are sized
 * for a CPU; the reference settings differ only in `epochs` (15) and in
 * the calibration data (128 windows of 2048 tokens), which the caller
 * chooses. */
void iq_psot_options_init(iq_psot_options_t *options);

/* Chooses the outlier level k* from the first eta_m windows of
 * `deviation` ([windows x tokens], iq_psot_window_deviation values): for
 * k = 0, 1, ... 49, avg_k is the mean count of rows above k per window and
 * union_k the count of positions above k in any window, stopping at the
 * first union_k = 0. ratio_k = (union_k - avg_k) / union_k, and k* is the
 * first k >= 1 with |ratio_k - ratio_{k-1}| < 0.02 and
 * union_k < 0.4 * tokens, or the list length when none is. */
size_t iq_psot_outlier_level(const float *deviation, size_t windows,
                             size_t tokens, size_t eta_m);

/* Writes the token weights ([windows x tokens]) of one tensor: aug_token
 * where the deviation exceeds iq_psot_outlier_level, else 1. Layers below
 * aug_start get aug_token everywhere, and aug_token <= 1 gives all ones. */
void iq_psot_token_weights(const float *deviation, size_t windows,
                           size_t tokens, size_t layer,
                           const iq_psot_options_t *options, float *weights);

/* One layer's captured activations; N = windows * tokens rows, window w
 * being rows [w * tokens, (w + 1) * tokens). The deviations
 * ([windows x tokens]) may be NULL, and are then computed from the rows. */
typedef struct iq_psot_layer_input {
  const float *x; /* input_layernorm output [N x hidden] */
  const float *p; /* post_attention_layernorm output [N x hidden] */
  const float *v; /* v_proj output [N x kv_heads * head_dim] */
  const float *m; /* o_proj input [N x heads * head_dim] */
  size_t windows, tokens;
  size_t hidden, heads, kv_heads, head_dim;
  size_t layer; /* index, compared with aug_start */
  const float *x_deviation, *p_deviation, *v_deviation, *m_deviation;
} iq_psot_layer_input_t;

/* Per-epoch report: the mean stage 1, 2 and 3 losses of that epoch. */
typedef void (*iq_psot_progress_t)(void *user, int epoch, int epochs,
                                   const double losses[3]);

/* Runs PSOT on one layer. Outputs (caller-allocated, float, row-major):
 * q1 and q4 [block_diag][d x d] with d = hidden / block_diag, q2
 * [kv_heads][head_dim x head_dim], and `loss_history` [epochs][3] (may be
 * NULL), the mean batch loss of each stage per epoch. Every matrix starts
 * from iq_random_hadamard(size, seed). Each epoch shuffles the windows
 * (seeded Fisher-Yates) and takes one Cayley step per stage and batch;
 * epoch e uses lr * (1 + (lr_end_factor - 1) * e / epochs). With
 * keep_best, the stage 2 comparison uses Mcost + Vcost * r with the
 * balance r = Mcost / Vcost of the starting matrices. */
bool iq_psot_layer(const iq_psot_layer_input_t *input,
                   const iq_psot_options_t *options,
                   iq_psot_progress_t progress, void *user, float *q1,
                   float *q2, float *q4, double *loss_history,
                   iq_error_t **error);

/* ---- LAC: learned activation clipping, per linear -------------------------
 * Learns the clip factors f = (1 + sigmoid(c)) / 2 of the asymmetric
 * activation quantizer in front of one linear layer W [out x in], so that
 * QDQ(X; f) W^T approaches X W^T: the loss is MSE / stopgrad(MSE), whose
 * gradient is that of log MSE. Rounding uses the straight-through
 * estimator, so gradients reach f through the scale s in s * (...) and in
 * x / s; the zero point gets none. Per-token quantizers (group_size 0)
 * learn one (f_max, f_min) pair; group-wise ones (the o_proj input, one
 * group per head) learn one pair per group position. The optimizer is
 * AdamW (betas 0.9 and 0.999, eps 1e-8, decoupled weight decay) with a
 * linear warm-up from 0.01 times lr over `warmup` steps, multiplied by a
 * cosine decay from lr to lr * 1e-3 over all steps. */
typedef struct iq_lac_options {
  int bits;            /* 4 */
  size_t group_size;   /* 0: per token; else group-wise with this group */
  double init_clip;    /* 0.9: c starts at logit(init_clip), so f = 0.95 */
  double lr;           /* 0.05 */
  double weight_decay; /* 0.01 */
  int epochs;          /* 5 */
  size_t batch_rows;   /* rows (tokens) per step: 512 */
  int warmup;          /* 16 steps */
  uint64_t seed;       /* row shuffling */
} iq_lac_options_t;

/* Fills `options` with the defaults in the comments above. */
void iq_lac_options_init(iq_lac_options_t *options);

/* Evaluates the STE loss mean((QDQ(X; f) W^T - X W^T)^2) over `rows` rows
 * of x ([rows x in]) with clip factors f_max, f_min ([groups], groups = 1
 * for per-token, in / group_size otherwise). With `grad_max` and
 * `grad_min` (may be NULL) it also stores d loss / d f. */
bool iq_lac_loss(const float *x, size_t rows, const float *weight, size_t out,
                 size_t in, const iq_lac_options_t *options,
                 const double *f_max, const double *f_min, double *loss,
                 double *grad_max, double *grad_min, iq_error_t **error);

/* Learns the clip factors; writes f_max and f_min ([groups]) and, when
 * `loss_history` is not NULL, the mean loss of each epoch ([epochs]). */
bool iq_lac_learn(const float *x, size_t rows, const float *weight, size_t out,
                  size_t in, const iq_lac_options_t *options, double *f_max,
                  double *f_min, double *loss_history, iq_error_t **error);

#ifdef __cplusplus
}
#endif

#endif /* IQ_QUANT_H */
