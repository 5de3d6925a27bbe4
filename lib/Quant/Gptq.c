/* GPTQ weight quantization (Frantar et al., "GPTQ: Accurate Post-Training
 * Quantization for Generative Pre-trained Transformers", 2022); see
 * iq/quant.h for the steps. The linear algebra runs in double. */
#include "iq/quant.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

void iq_gptq_options_init(iq_gptq_options_t *options) {
  iq_weight_quant_options_init(&options->weight);
  options->block_size = 128;
  options->damp_percent = 0.01;
}

/* Rows converted to double per dsyrk call. */
#define ACCUMULATE_CHUNK 256

bool iq_gptq_accumulate(const float *x, size_t tokens, size_t cols,
                        double *xtx, iq_error_t **error) {
  if (cols == 0) {
    return iq_error_set(error, NULL, "gptq", NULL,
                        "the activations need at least one column");
  }
  size_t chunk_rows = tokens < ACCUMULATE_CHUNK ? tokens : ACCUMULATE_CHUNK;
  double *chunk = malloc((chunk_rows * cols + 1) * sizeof(double));
  double *upper = calloc(cols * cols, sizeof(double));
  if (chunk == NULL || upper == NULL) {
    free(chunk);
    free(upper);
    return iq_error_set(error, NULL, "gptq", NULL,
                        "out of memory for a %zu x %zu Hessian", cols, cols);
  }
  for (size_t start = 0; start < tokens; start += chunk_rows) {
    size_t count = tokens - start < chunk_rows ? tokens - start : chunk_rows;
    for (size_t i = 0; i < count * cols; ++i) {
      chunk[i] = (double)x[start * cols + i];
    }
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)cols, (int)count,
                1.0, chunk, (int)cols, 1.0, upper, (int)cols);
  }
  for (size_t i = 0; i < cols; ++i) {
    for (size_t j = i; j < cols; ++j) {
      xtx[i * cols + j] += upper[i * cols + j];
      if (j != i) {
        xtx[j * cols + i] += upper[i * cols + j];
      }
    }
  }
  free(chunk);
  free(upper);
  return true;
}

static bool check_gptq_options(const iq_gptq_options_t *options,
                               iq_error_t **error) {
  if (options->block_size == 0 || !(options->damp_percent >= 0.0)) {
    return iq_error_set(error, NULL, "gptq",
                        "use block_size >= 1 and damp_percent >= 0 (defaults 128 and 0.01)",
                        "GPTQ options are invalid: block size %zu, damping %g",
                        options->block_size, options->damp_percent);
  }
  return true;
}

/* Builds H = (2/N) X^T X with dead columns and damping, and replaces it
 * by the upper Cholesky factor of its inverse (lower triangle zeroed).
 * Marks dead columns in `dead`. */
static bool inverse_hessian_factor(double *h, size_t cols, const double *xtx,
                                   double token_count, double damp_percent,
                                   bool *dead, iq_error_t **error) {
  int n = (int)cols;
  double diagonal_sum = 0.0;
  for (size_t i = 0; i < cols * cols; ++i) {
    if (!isfinite(xtx[i])) {
      return iq_error_set(error, NULL, "gptq", "check the calibration activations for inf or NaN",
                          "X^T X entry (%zu, %zu) is %g", i / cols, i % cols, xtx[i]);
    }
    h[i] = 2.0 / token_count * xtx[i];
  }
  for (size_t c = 0; c < cols; ++c) {
    dead[c] = h[c * cols + c] == 0.0;
    if (dead[c]) {
      h[c * cols + c] = 1.0;
    }
    diagonal_sum += h[c * cols + c];
  }
  double damp = damp_percent * diagonal_sum / (double)cols;
  for (size_t c = 0; c < cols; ++c) {
    h[c * cols + c] += damp;
  }

  int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'L', n, h, n);
  if (info == 0) {
    info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'L', n, h, n);
  }
  if (info != 0) {
    return iq_error_set(error, NULL, "gptq", "raise damp_percent or add calibration tokens",
                        "the damped Hessian is not positive definite (LAPACK info %d)", info);
  }
  for (size_t i = 0; i < cols; ++i) {
    for (size_t j = i + 1; j < cols; ++j) {
      h[i * cols + j] = h[j * cols + i];
    }
  }
  info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', n, h, n);
  if (info != 0) {
    return iq_error_set(error, NULL, "gptq", "raise damp_percent",
                        "the inverse Hessian is not positive definite (LAPACK info %d)", info);
  }
  for (size_t i = 0; i < cols; ++i) {
    for (size_t j = 0; j < i; ++j) {
      h[i * cols + j] = 0.0;
    }
  }
  return true;
}

/* Quantizes columns [first, first + count) of `w` ([rows x cols]) with
 * error feedback inside the block, storing the block's scaled errors in
 * `block_errors` ([rows x count]) and the results in `quantized`. */
static void quantize_block(double *w, size_t rows, size_t cols, size_t first,
                           size_t count, const double *u, const float *scales,
                           const float *zeros, int maxq, uint8_t *codes,
                           double *quantized, double *block_errors) {
  for (size_t i = 0; i < count; ++i) {
    size_t c = first + i;
    double pivot = u[c * cols + c];
    for (size_t r = 0; r < rows; ++r) {
      double value = w[r * cols + c];
      float dequantized;
      uint8_t code = iq_quantize_value((float)value, scales[r], zeros[r], maxq,
                                       &dequantized);
      if (codes != NULL) {
        codes[r * cols + c] = code;
      }
      quantized[r * cols + c] = dequantized;
      double err = (value - (double)dequantized) / pivot;
      block_errors[r * count + i] = err;
      for (size_t j = c + 1; j < first + count; ++j) {
        w[r * cols + j] -= err * u[c * cols + j];
      }
    }
  }
}

bool iq_gptq_quantize(const float *weight, size_t rows, size_t cols,
                      const double *xtx, double token_count,
                      const iq_gptq_options_t *options, uint8_t *codes,
                      float *scales, float *zeros, float *dequantized,
                      iq_error_t **error) {
  if (!check_gptq_options(options, error)) {
    return false;
  }
  if (!(token_count > 0.0)) {
    return iq_error_set(error, NULL, "gptq", "pass the number of tokens summed into X^T X",
                        "token count %g is invalid", token_count);
  }
  if (rows == 0 || cols == 0) {
    return iq_error_set(error, NULL, "gptq", NULL,
                        "weight shape %zu x %zu is empty", rows, cols);
  }
  size_t block_size = options->block_size;
  double *w = malloc(rows * cols * sizeof(double));
  double *quantized = malloc(rows * cols * sizeof(double));
  double *u = malloc(cols * cols * sizeof(double));
  double *block_errors = malloc(rows * block_size * sizeof(double));
  float *row_scales = malloc(rows * sizeof(float));
  float *row_zeros = malloc(rows * sizeof(float));
  bool *dead = malloc(cols * sizeof(bool));
  bool ok = w != NULL && quantized != NULL && u != NULL && block_errors != NULL &&
            row_scales != NULL && row_zeros != NULL && dead != NULL;
  if (!ok) {
    iq_error_set(error, NULL, "gptq", NULL,
                 "out of memory for GPTQ on a %zu x %zu weight", rows, cols);
  }

  ok = ok && iq_weight_quant_params(weight, rows, cols, &options->weight,
                                    row_scales, row_zeros, error);
  ok = ok && inverse_hessian_factor(u, cols, xtx, token_count,
                                    options->damp_percent, dead, error);
  if (ok) {
    for (size_t i = 0; i < rows * cols; ++i) {
      bool is_dead = dead[i % cols];
      w[i] = is_dead ? 0.0 : (double)weight[i];
    }
    int maxq = (1 << options->weight.bits) - 1;
    for (size_t first = 0; first < cols; first += block_size) {
      size_t count = cols - first < block_size ? cols - first : block_size;
      quantize_block(w, rows, cols, first, count, u, row_scales, row_zeros,
                     maxq, codes, quantized, block_errors);
      size_t rest = cols - first - count;
      if (rest > 0) {
        /* W[:, later] -= E (rows x count) * U[block, later] (count x rest). */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows,
                    (int)rest, (int)count, -1.0, block_errors, (int)count,
                    u + first * cols + first + count, (int)cols, 1.0,
                    w + first + count, (int)cols);
      }
    }
    for (size_t i = 0; dequantized != NULL && i < rows * cols; ++i) {
      dequantized[i] = (float)quantized[i];
    }
    if (scales != NULL) {
      memcpy(scales, row_scales, rows * sizeof(float));
    }
    if (zeros != NULL) {
      memcpy(zeros, row_zeros, rows * sizeof(float));
    }
  }
  free(w);
  free(quantized);
  free(u);
  free(block_errors);
  free(row_scales);
  free(row_zeros);
  free(dead);
  return ok;
}
