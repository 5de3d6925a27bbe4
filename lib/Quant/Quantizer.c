/* Activation and weight quantizers; see iq/quant.h for the formulas. */
#include "iq/quant.h"
#include "quant_internal.h"

#include <math.h>
#include <stdlib.h>

bool iq_quant_check_finite(const float *values, size_t rows, size_t cols,
                           const char *what, iq_error_t **error) {
  for (size_t i = 0; i < rows * cols; ++i) {
    if (!isfinite(values[i])) {
      return iq_error_set(error, NULL, what, "check the producer of this tensor for overflow",
                          "value at row %zu, column %zu is %g; quantization needs finite values",
                          i / cols, i % cols, (double)values[i]);
    }
  }
  return true;
}

static bool check_bits(int bits, iq_error_t **error) {
  if (bits < 1 || bits > 8) {
    return iq_error_set(error, NULL, "quantizer", "use 1 to 8 bits",
                        "bit width %d is invalid", bits);
  }
  return true;
}

static bool check_clip(float clip_max, float clip_min, iq_error_t **error) {
  if (!(clip_max > 0.0f && clip_max <= 1.0f) ||
      !(clip_min > 0.0f && clip_min <= 1.0f)) {
    return iq_error_set(error, NULL, "quantizer",
                        "use clip factors in (0, 1], for example 0.9",
                        "clip factors %g (max) and %g (min) are invalid",
                        (double)clip_max, (double)clip_min);
  }
  return true;
}

uint8_t iq_quantize_value(float value, float scale, float zero, int maxq,
                          float *dequantized) {
  float code = rintf(value / scale) + zero;
  if (code < 0.0f) {
    code = 0.0f;
  }
  if (code > (float)maxq) {
    code = (float)maxq;
  }
  if (dequantized != NULL) {
    *dequantized = scale * (code - zero);
  }
  return (uint8_t)code;
}

/* Quantizes `count` values that share one (scale, zero). */
static void quantize_span(const float *x, size_t count, float scale,
                          float zero, int maxq, uint8_t *codes,
                          float *dequantized) {
  for (size_t i = 0; i < count; ++i) {
    float value;
    uint8_t code = iq_quantize_value(x[i], scale, zero, maxq, &value);
    if (codes != NULL) {
      codes[i] = code;
    }
    if (dequantized != NULL) {
      dequantized[i] = value;
    }
  }
}

/* Computes the asymmetric (scale, zero) of `count` values. */
static void span_params(const float *x, size_t count, bool include_zero,
                        float clip_max, float clip_min, float eps, int maxq,
                        float *scale, float *zero) {
  float xmax = x[0];
  float xmin = x[0];
  for (size_t i = 1; i < count; ++i) {
    xmax = fmaxf(xmax, x[i]);
    xmin = fminf(xmin, x[i]);
  }
  if (include_zero) {
    xmax = fmaxf(xmax, 0.0f);
    xmin = fminf(xmin, 0.0f);
  }
  xmax *= clip_max;
  xmin *= clip_min;
  /* Per-token ranges contain 0, so equal ends are both 0. Group ranges
   * are reset only when both ends are 0, as the reference does; another
   * constant group keeps its range and gets the eps scale. */
  if (xmax == 0.0f && xmin == 0.0f) {
    xmin = -1.0f;
    xmax = 1.0f;
  }
  *scale = fmaxf((xmax - xmin) / (float)maxq, eps);
  *zero = rintf(-xmin / *scale);
}

bool iq_quantize_per_token(const float *x, size_t rows, size_t cols, int bits,
                           float clip_max, float clip_min, uint8_t *codes,
                           float *scales, float *zeros, float *dequantized,
                           iq_error_t **error) {
  if (!check_bits(bits, error) || !check_clip(clip_max, clip_min, error)) {
    return false;
  }
  if (cols == 0) {
    return iq_error_set(error, NULL, "quantizer", NULL,
                        "a per-token quantizer needs at least one column");
  }
  if (!iq_quant_check_finite(x, rows, cols, "per-token quantizer input", error)) {
    return false;
  }
  int maxq = (1 << bits) - 1;
  for (size_t r = 0; r < rows; ++r) {
    float scale, zero;
    span_params(x + r * cols, cols, true, clip_max, clip_min, 1e-8f, maxq,
                &scale, &zero);
    quantize_span(x + r * cols, cols, scale, zero, maxq,
                  codes == NULL ? NULL : codes + r * cols,
                  dequantized == NULL ? NULL : dequantized + r * cols);
    if (scales != NULL) {
      scales[r] = scale;
    }
    if (zeros != NULL) {
      zeros[r] = zero;
    }
  }
  return true;
}

bool iq_quantize_groupwise(const float *x, size_t rows, size_t cols,
                           size_t group_size, int bits, float clip_max,
                           float clip_min, uint8_t *codes, float *scales,
                           float *zeros, float *dequantized,
                           iq_error_t **error) {
  if (!check_bits(bits, error) || !check_clip(clip_max, clip_min, error)) {
    return false;
  }
  if (group_size == 0 || cols % group_size != 0) {
    return iq_error_set(error, NULL, "quantizer",
                        "use a group size that divides the row length",
                        "group size %zu does not divide %zu columns",
                        group_size, cols);
  }
  if (!iq_quant_check_finite(x, rows, cols, "group-wise quantizer input", error)) {
    return false;
  }
  int maxq = (1 << bits) - 1;
  size_t groups = cols / group_size;
  for (size_t r = 0; r < rows; ++r) {
    for (size_t g = 0; g < groups; ++g) {
      size_t offset = r * cols + g * group_size;
      float scale, zero;
      span_params(x + offset, group_size, false, clip_max, clip_min, 1e-6f,
                  maxq, &scale, &zero);
      quantize_span(x + offset, group_size, scale, zero, maxq,
                    codes == NULL ? NULL : codes + offset,
                    dequantized == NULL ? NULL : dequantized + offset);
      if (scales != NULL) {
        scales[r * groups + g] = scale;
      }
      if (zeros != NULL) {
        zeros[r * groups + g] = zero;
      }
    }
  }
  return true;
}

void iq_weight_quant_options_init(iq_weight_quant_options_t *options) {
  options->bits = 4;
  options->symmetric = false;
  options->mse_clip = true;
  options->clip_norm = 2.4f;
  options->clip_grid = 100;
  options->max_shrink = 0.8f;
}

static bool check_weight_options(const iq_weight_quant_options_t *options,
                                 iq_error_t **error) {
  if (!check_bits(options->bits, error)) {
    return false;
  }
  if (options->mse_clip &&
      (options->clip_grid < 1 || !(options->max_shrink > 0.0f) ||
       !(options->max_shrink < 1.0f) || !(options->clip_norm > 0.0f))) {
    return iq_error_set(
        error, NULL, "weight quantizer",
        "use clip_grid >= 1, max_shrink in (0, 1) and clip_norm > 0 (defaults 100, 0.8, 2.4)",
        "MSE clip options are invalid: grid %d, max shrink %g, norm %g",
        options->clip_grid, (double)options->max_shrink,
        (double)options->clip_norm);
  }
  return true;
}

/* Sum |QDQ(w) - w|^norm of one row under (scale, zero). The terms are not
 * negative, so the sum stops once it reaches `bound`: such a candidate
 * cannot beat the best one so far, and the caller only compares. */
static double row_clip_error(const float *w, size_t cols, float scale,
                             float zero, int maxq, float norm, double bound) {
  double total = 0.0;
  for (size_t c = 0; c < cols; ++c) {
    float value;
    iq_quantize_value(w[c], scale, zero, maxq, &value);
    total += pow(fabs((double)value - (double)w[c]), (double)norm);
    if ((c & 63) == 63 && total >= bound) {
      return total;
    }
  }
  return total;
}

static void row_params(const float *w, size_t cols,
                       const iq_weight_quant_options_t *options, float *scale,
                       float *zero) {
  int maxq = (1 << options->bits) - 1;
  float xmin = 0.0f;
  float xmax = 0.0f;
  for (size_t c = 0; c < cols; ++c) {
    xmin = fminf(xmin, w[c]);
    xmax = fmaxf(xmax, w[c]);
  }
  if (options->symmetric) {
    xmax = fmaxf(-xmin, xmax);
    xmin = -xmax;
  }
  if (xmin == 0.0f && xmax == 0.0f) {
    xmin = -1.0f;
    xmax = 1.0f;
  }
  float symmetric_zero = (float)((maxq + 1) / 2);
  *scale = fmaxf(xmax - xmin, 1e-5f) / (float)maxq;
  *zero = options->symmetric ? symmetric_zero : rintf(-xmin / *scale);
  if (!options->mse_clip) {
    return;
  }

  double best = INFINITY;
  int steps = (int)(options->max_shrink * (float)options->clip_grid);
  for (int k = 0; k < steps; ++k) {
    float p = 1.0f - (float)k / (float)options->clip_grid;
    float shrunk_min = p * xmin;
    float shrunk_max = p * xmax;
    float candidate_scale = (shrunk_max - shrunk_min) / (float)maxq;
    float candidate_zero = options->symmetric
                               ? symmetric_zero
                               : rintf(-shrunk_min / candidate_scale);
    double err = row_clip_error(w, cols, candidate_scale, candidate_zero, maxq,
                                options->clip_norm, best);
    if (err < best) {
      best = err;
      *scale = candidate_scale;
      *zero = candidate_zero;
    }
  }
}

/* One weight matrix for iq_quant_parallel_rows: the parameters of each
 * row, and its codes and dequantized values where those are not NULL. */
typedef struct {
  const float *weight;
  size_t cols;
  const iq_weight_quant_options_t *options;
  uint8_t *codes;
  float *scales;
  float *zeros;
  float *dequantized;
} params_job_t;

static void quantize_rows(void *context, size_t begin, size_t end) {
  const params_job_t *job = context;
  size_t cols = job->cols;
  int maxq = (1 << job->options->bits) - 1;
  for (size_t r = begin; r < end; ++r) {
    float scale, zero;
    row_params(job->weight + r * cols, cols, job->options, &scale, &zero);
    if (job->codes != NULL || job->dequantized != NULL) {
      quantize_span(job->weight + r * cols, cols, scale, zero, maxq,
                    job->codes == NULL ? NULL : job->codes + r * cols,
                    job->dequantized == NULL ? NULL : job->dequantized + r * cols);
    }
    if (job->scales != NULL) {
      job->scales[r] = scale;
    }
    if (job->zeros != NULL) {
      job->zeros[r] = zero;
    }
  }
}

bool iq_weight_quant_params(const float *weight, size_t rows, size_t cols,
                            const iq_weight_quant_options_t *options,
                            float *scales, float *zeros, iq_error_t **error) {
  if (!check_weight_options(options, error)) {
    return false;
  }
  if (cols == 0) {
    return iq_error_set(error, NULL, "weight quantizer", NULL,
                        "a weight needs at least one input column");
  }
  if (!iq_quant_check_finite(weight, rows, cols, "weight", error)) {
    return false;
  }
  params_job_t job = {weight, cols, options, NULL, scales, zeros, NULL};
  iq_quant_parallel_rows(rows, 8, quantize_rows, &job);
  return true;
}

bool iq_quantize_weight_rtn(const float *weight, size_t rows, size_t cols,
                            const iq_weight_quant_options_t *options,
                            uint8_t *codes, float *scales, float *zeros,
                            float *dequantized, iq_error_t **error) {
  if (!check_weight_options(options, error)) {
    return false;
  }
  if (cols == 0) {
    return iq_error_set(error, NULL, "weight quantizer", NULL,
                        "a weight needs at least one input column");
  }
  if (!iq_quant_check_finite(weight, rows, cols, "weight", error)) {
    return false;
  }
  params_job_t job = {weight, cols, options, codes, scales, zeros, dequantized};
  iq_quant_parallel_rows(rows, 8, quantize_rows, &job);
  return true;
}
