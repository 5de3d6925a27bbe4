/* LAC: learned activation clip factors for one linear layer; see
 * iq/quant.h. */
#include "iq/quant.h"
#include "quant_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows converted to double and quantized at once. */
#define LAC_CHUNK_ROWS 256

void iq_lac_options_init(iq_lac_options_t *options) {
  options->bits = 4;
  options->group_size = 0;
  options->init_clip = 0.9;
  options->lr = 0.05;
  options->weight_decay = 0.01;
  options->epochs = 5;
  options->batch_rows = 512;
  options->warmup = 16;
  options->seed = 0;
}

static bool check_lac(size_t rows, size_t out, size_t in,
                      const iq_lac_options_t *options, iq_error_t **error) {
  if (options->bits < 1 || options->bits > 8) {
    return iq_error_set(error, NULL, "lac", "use 1 to 8 bits", "bit width %d is invalid",
                        options->bits);
  }
  if (rows == 0 || out == 0 || in == 0) {
    return iq_error_set(error, NULL, "lac", NULL,
                        "empty input: %zu rows, weight %zu x %zu", rows, out, in);
  }
  if (options->group_size != 0 && in % options->group_size != 0) {
    return iq_error_set(error, NULL, "lac", "use a group size that divides the input width",
                        "group size %zu does not divide %zu columns", options->group_size, in);
  }
  if (!(options->init_clip > 0.5 && options->init_clip < 1.0) || !(options->lr > 0.0) ||
      !(options->weight_decay >= 0.0) || options->epochs < 1 || options->batch_rows == 0 ||
      options->warmup < 0) {
    return iq_error_set(error, NULL, "lac",
                        "use init_clip in (0.5, 1), lr > 0, weight_decay >= 0, epochs >= 1, "
                        "batch_rows >= 1 and warmup >= 0",
                        "LAC options are invalid: init clip %g, lr %g, %d epochs",
                        options->init_clip, options->lr, options->epochs);
  }
  return true;
}

/* Quantizes one span with clip factors (f_max, f_min) and stores, per
 * value, x^ and d x^ / d s under the straight-through estimator. Returns
 * the range coefficients d s / d f_max and d s / d f_min (0 when the
 * range was reset or eps won, since s is then constant). */
static void quantize_span_ste(const double *x, size_t n, bool include_zero,
                              double f_max, double f_min, double eps, int maxq,
                              double *dequantized, double *d_scale,
                              double *ds_dfmax, double *ds_dfmin) {
  double xmax = x[0];
  double xmin = x[0];
  for (size_t i = 1; i < n; ++i) {
    xmax = fmax(xmax, x[i]);
    xmin = fmin(xmin, x[i]);
  }
  if (include_zero) {
    xmax = fmax(xmax, 0.0);
    xmin = fmin(xmin, 0.0);
  }
  double hi = xmax * f_max;
  double lo = xmin * f_min;
  *ds_dfmax = xmax / maxq;
  *ds_dfmin = -xmin / maxq;
  if (hi == 0.0 && lo == 0.0) {
    hi = 1.0;
    lo = -1.0;
    *ds_dfmax = 0.0;
    *ds_dfmin = 0.0;
  }
  double scale = (hi - lo) / maxq;
  if (scale < eps) {
    scale = eps;
    *ds_dfmax = 0.0;
    *ds_dfmin = 0.0;
  }
  double zero = nearbyint(-lo / scale);
  for (size_t i = 0; i < n; ++i) {
    double level = nearbyint(x[i] / scale) + zero;
    if (level < 0.0 || level > maxq) {
      level = level < 0.0 ? 0.0 : (double)maxq;
      d_scale[i] = level - zero;
    } else {
      d_scale[i] = (level - zero) - x[i] / scale;
    }
    dequantized[i] = scale * (level - zero);
  }
}

bool iq_lac_loss(const float *x, size_t rows, const float *weight, size_t out,
                 size_t in, const iq_lac_options_t *options,
                 const double *f_max, const double *f_min, double *loss,
                 double *grad_max, double *grad_min, iq_error_t **error) {
  if (!check_lac(rows, out, in, options, error) ||
      !iq_quant_check_finite(x, rows, in, "LAC activations", error)) {
    return false;
  }
  bool per_token = options->group_size == 0;
  size_t span = per_token ? in : options->group_size;
  size_t groups = in / span;
  int maxq = (1 << options->bits) - 1;
  double eps = per_token ? 1e-8 : 1e-6;
  size_t chunk = rows < LAC_CHUNK_ROWS ? rows : LAC_CHUNK_ROWS;
  double *w = malloc(out * in * sizeof(double));
  double *xd = malloc(chunk * in * sizeof(double));
  double *diff = malloc(chunk * in * sizeof(double));
  double *d_scale = malloc(chunk * in * sizeof(double));
  double *coefficients = malloc(2 * chunk * groups * sizeof(double));
  double *residual = malloc(chunk * out * sizeof(double));
  bool ok = w != NULL && xd != NULL && diff != NULL && d_scale != NULL &&
            coefficients != NULL && residual != NULL;
  if (!ok) {
    iq_error_set(error, NULL, "lac", NULL, "out of memory for LAC on a %zu x %zu weight",
                 out, in);
  }
  for (size_t i = 0; ok && i < out * in; ++i) {
    w[i] = (double)weight[i];
  }
  for (size_t g = 0; grad_max != NULL && g < groups; ++g) {
    grad_max[g] = 0.0;
    grad_min[g] = 0.0;
  }
  double total = 0.0;
  double norm = 1.0 / ((double)rows * (double)out);
  for (size_t start = 0; ok && start < rows; start += chunk) {
    size_t count = rows - start < chunk ? rows - start : chunk;
    for (size_t i = 0; i < count * in; ++i) {
      xd[i] = (double)x[start * in + i];
    }
    for (size_t r = 0; r < count; ++r) {
      for (size_t g = 0; g < groups; ++g) {
        size_t offset = r * in + g * span;
        double *c = coefficients + 2 * (r * groups + g);
        quantize_span_ste(xd + offset, span, per_token, f_max[g], f_min[g], eps, maxq,
                          diff + offset, d_scale + offset, &c[0], &c[1]);
      }
    }
    for (size_t i = 0; i < count * in; ++i) {
      diff[i] -= xd[i];
    }
    /* residual = (X^ - X) W^T, the output error of the linear layer. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)count, (int)out, (int)in, 1.0,
                diff, (int)in, w, (int)in, 0.0, residual, (int)out);
    for (size_t i = 0; i < count * out; ++i) {
      total += residual[i] * residual[i];
    }
    if (grad_max == NULL) {
      continue;
    }
    /* d loss / d X^ = 2 / (rows * out) * residual * W, reusing `diff`. */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)count, (int)in, (int)out,
                2.0 * norm, residual, (int)out, w, (int)in, 0.0, diff, (int)in);
    for (size_t r = 0; r < count; ++r) {
      for (size_t g = 0; g < groups; ++g) {
        size_t offset = r * in + g * span;
        double d_loss_d_scale = 0.0;
        for (size_t i = 0; i < span; ++i) {
          d_loss_d_scale += diff[offset + i] * d_scale[offset + i];
        }
        const double *c = coefficients + 2 * (r * groups + g);
        grad_max[g] += d_loss_d_scale * c[0];
        grad_min[g] += d_loss_d_scale * c[1];
      }
    }
  }
  *loss = total * norm;
  free(w);
  free(xd);
  free(diff);
  free(d_scale);
  free(coefficients);
  free(residual);
  return ok;
}

static double sigmoid(double c) { return 1.0 / (1.0 + exp(-c)); }

/* One AdamW step on `values` with `grads`, step number t >= 1. */
static void adamw_step(double *values, const double *grads, double *m, double *v,
                       size_t count, int t, double lr, double weight_decay) {
  const double beta1 = 0.9, beta2 = 0.999, eps = 1e-8;
  double correction1 = 1.0 - pow(beta1, t);
  double correction2 = 1.0 - pow(beta2, t);
  for (size_t i = 0; i < count; ++i) {
    values[i] *= 1.0 - lr * weight_decay;
    m[i] = beta1 * m[i] + (1.0 - beta1) * grads[i];
    v[i] = beta2 * v[i] + (1.0 - beta2) * grads[i] * grads[i];
    double step = (m[i] / correction1) / (sqrt(v[i] / correction2) + eps);
    values[i] -= lr * step;
  }
}

bool iq_lac_learn(const float *x, size_t rows, const float *weight, size_t out,
                  size_t in, const iq_lac_options_t *options, double *f_max,
                  double *f_min, double *loss_history, iq_error_t **error) {
  if (!check_lac(rows, out, in, options, error)) {
    return false;
  }
  size_t groups = options->group_size == 0 ? 1 : in / options->group_size;
  size_t batch = options->batch_rows < rows ? options->batch_rows : rows;
  /* Whole batches only, as the reference does; at least one. */
  size_t steps_per_epoch = rows / batch;
  size_t total_steps = steps_per_epoch * (size_t)options->epochs;
  /* logits c and their AdamW state: [c_max | c_min], m, v, gradients. */
  double *state = calloc(8 * groups, sizeof(double));
  size_t *order = malloc(rows * sizeof(size_t));
  float *batch_x = malloc(batch * in * sizeof(float));
  if (state == NULL || order == NULL || batch_x == NULL) {
    free(state);
    free(order);
    free(batch_x);
    return iq_error_set(error, NULL, "lac", NULL, "out of memory for LAC on %zu rows", rows);
  }
  double *logits = state;
  double *m = state + 2 * groups;
  double *v = state + 4 * groups;
  double *grads = state + 6 * groups;
  double initial = log(options->init_clip / (1.0 - options->init_clip));
  for (size_t i = 0; i < 2 * groups; ++i) {
    logits[i] = initial;
  }
  for (size_t r = 0; r < rows; ++r) {
    order[r] = r;
  }
  uint64_t random = options->seed ^ 0x4c4143u;
  bool ok = true;
  int step = 0;
  for (int epoch = 0; ok && epoch < options->epochs; ++epoch) {
    for (size_t i = rows; i > 1; --i) {
      size_t j = (size_t)(iq_splitmix64_next(&random) % i);
      size_t t = order[i - 1];
      order[i - 1] = order[j];
      order[j] = t;
    }
    double epoch_loss = 0.0;
    for (size_t b = 0; ok && b < steps_per_epoch; ++b) {
      for (size_t r = 0; r < batch; ++r) {
        memcpy(batch_x + r * in, x + order[b * batch + r] * in, in * sizeof(float));
      }
      for (size_t g = 0; g < groups; ++g) {
        f_max[g] = (1.0 + sigmoid(logits[g])) / 2.0;
        f_min[g] = (1.0 + sigmoid(logits[groups + g])) / 2.0;
      }
      double loss;
      ok = iq_lac_loss(batch_x, batch, weight, out, in, options, f_max, f_min, &loss, grads,
                       grads + groups, error);
      if (!ok) {
        break;
      }
      epoch_loss += loss;
      /* d log(MSE) / d c = (d MSE / d f) (d f / d c) / MSE. */
      for (size_t g = 0; g < 2 * groups; ++g) {
        double s = sigmoid(logits[g]);
        grads[g] *= 0.5 * s * (1.0 - s) / (loss > 0.0 ? loss : 1.0);
      }
      double warm = step < options->warmup ? 0.01 + 0.99 * step / options->warmup : 1.0;
      double cosine = 1e-3 + (1.0 - 1e-3) * 0.5 * (1.0 + cos(M_PI * step / (double)total_steps));
      ++step;
      adamw_step(logits, grads, m, v, 2 * groups, step, options->lr * warm * cosine,
                 options->weight_decay);
    }
    if (ok && loss_history != NULL) {
      loss_history[epoch] = epoch_loss / (double)steps_per_epoch;
    }
  }
  for (size_t g = 0; ok && g < groups; ++g) {
    f_max[g] = (1.0 + sigmoid(logits[g])) / 2.0;
    f_min[g] = (1.0 + sigmoid(logits[groups + g])) / 2.0;
  }
  free(state);
  free(order);
  free(batch_x);
  return ok;
}
