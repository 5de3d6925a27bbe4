/* The PSOT cost and its analytic gradient; see iq/quant.h. */
#include "iq/quant.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows processed at once, to bound the double buffers. */
#define COST_CHUNK_ROWS 512

/* How a row of `width` columns splits into rotated segments. */
typedef struct segment_layout {
  size_t width;
  size_t segments;
  size_t segment_size;
  size_t group_divisor;     /* segment s uses rotation s / group_divisor */
  bool softmax_per_segment; /* else one softmax over the whole row */
  bool remove_mean;
} segment_layout_t;

/* The softmax-weighted peak of one softmax group `a` (n values >= 0):
 * stores S in `softmax` and returns sum (w * S * a)^2 / w^2, the group's
 * contribution divided by w^2. */
static double group_peak(const double *a, size_t n, double temperature,
                         double *softmax) {
  double top = a[0];
  for (size_t i = 1; i < n; ++i) {
    top = fmax(top, a[i]);
  }
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) {
    softmax[i] = exp((a[i] - top) / temperature);
    sum += softmax[i];
  }
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    softmax[i] /= sum;
    double peak = softmax[i] * a[i];
    total += peak * peak;
  }
  return total;
}

/* Backward of one softmax group: with G = dS/dP = 2 w^2 P, writes
 * dS/dA_c = G_c S_c + S_c (G_c A_c - sum_k G_k A_k S_k) / T into `grad`. */
static void group_peak_backward(const double *a, const double *softmax,
                                size_t n, double weight_sq, double temperature,
                                double *grad) {
  double inner = 0.0;
  for (size_t i = 0; i < n; ++i) {
    double g = 2.0 * weight_sq * softmax[i] * a[i];
    grad[i] = g;
    inner += g * a[i] * softmax[i];
  }
  for (size_t i = 0; i < n; ++i) {
    grad[i] = grad[i] * softmax[i] + softmax[i] * (grad[i] * a[i] - inner) / temperature;
  }
}

/* Adds sum (w P)^2 over `rows` rows of z to `*sum_sq`, and its gradient
 * with respect to each rotation to `grad` (when not NULL). `q` contains
 * segments / group_divisor rotations of segment_size^2 values. */
static bool accumulate_cost(const segment_layout_t *layout, const float *z,
                            size_t rows, const double *q, const float *weights,
                            double temperature, double *sum_sq, double *grad,
                            iq_error_t **error) {
  size_t width = layout->width;
  size_t size = layout->segment_size;
  size_t chunk = rows < COST_CHUNK_ROWS ? rows : COST_CHUNK_ROWS;
  double *input = malloc((chunk * width + 1) * sizeof(double));
  double *rotated = malloc((chunk * width + 1) * sizeof(double));
  double *magnitude = malloc((width + 1) * sizeof(double));
  double *softmax = malloc((width + 1) * sizeof(double));
  double *backward = malloc((chunk * width + 1) * sizeof(double));
  if (input == NULL || rotated == NULL || magnitude == NULL || softmax == NULL ||
      backward == NULL) {
    free(input);
    free(rotated);
    free(magnitude);
    free(softmax);
    free(backward);
    return iq_error_set(error, NULL, "psot", NULL,
                        "out of memory for the cost of %zu columns", width);
  }
  size_t group = layout->softmax_per_segment ? size : width;

  for (size_t start = 0; start < rows; start += chunk) {
    size_t count = rows - start < chunk ? rows - start : chunk;
    for (size_t i = 0; i < count * width; ++i) {
      input[i] = (double)z[start * width + i];
    }
    /* Y[:, segment] = Z[:, segment] * Q[segment / divisor]. */
    for (size_t s = 0; s < layout->segments; ++s) {
      const double *rotation = q + (s / layout->group_divisor) * size * size;
      cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)count,
                  (int)size, (int)size, 1.0, input + s * size, (int)width,
                  rotation, (int)size, 0.0, rotated + s * size, (int)width);
    }

    for (size_t r = 0; r < count; ++r) {
      double *y = rotated + r * width;
      double weight = weights == NULL ? 1.0 : (double)weights[start + r];
      double weight_sq = weight * weight;
      if (layout->remove_mean) {
        for (size_t s = 0; s < layout->segments; ++s) {
          double mean = 0.0;
          for (size_t i = 0; i < size; ++i) {
            mean += y[s * size + i];
          }
          mean /= (double)size;
          for (size_t i = 0; i < size; ++i) {
            y[s * size + i] -= mean;
          }
        }
      }
      for (size_t i = 0; i < width; ++i) {
        magnitude[i] = fabs(y[i]);
      }
      double *dy = backward + r * width;
      for (size_t g = 0; g < width; g += group) {
        *sum_sq += weight_sq * group_peak(magnitude + g, group, temperature, softmax + g);
        if (grad != NULL) {
          group_peak_backward(magnitude + g, softmax + g, group, weight_sq,
                              temperature, dy + g);
        }
      }
      if (grad == NULL) {
        continue;
      }
      /* Through |y| (sign, 0 at 0), then through the mean removal, whose
       * backward removes the segment mean of the gradient. */
      for (size_t i = 0; i < width; ++i) {
        if (y[i] < 0.0) {
          dy[i] = -dy[i];
        } else if (y[i] == 0.0) {
          dy[i] = 0.0;
        }
      }
      if (layout->remove_mean) {
        for (size_t s = 0; s < layout->segments; ++s) {
          double mean = 0.0;
          for (size_t i = 0; i < size; ++i) {
            mean += dy[s * size + i];
          }
          mean /= (double)size;
          for (size_t i = 0; i < size; ++i) {
            dy[s * size + i] -= mean;
          }
        }
      }
    }

    /* dQ[segment / divisor] += Z[:, segment]^T * dY[:, segment]. */
    for (size_t s = 0; grad != NULL && s < layout->segments; ++s) {
      double *target = grad + (s / layout->group_divisor) * size * size;
      cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)size,
                  (int)size, (int)count, 1.0, input + s * size, (int)width,
                  backward + s * size, (int)width, 1.0, target, (int)size);
    }
  }
  free(input);
  free(rotated);
  free(magnitude);
  free(softmax);
  free(backward);
  return true;
}

/* Turns the gradient of sum_sq into the gradient of sqrt(sum_sq). */
static void finish_cost(double sum_sq, double *grad, size_t count,
                        double *cost) {
  *cost = sqrt(sum_sq);
  double factor = sum_sq > 0.0 ? 0.5 / *cost : 0.0;
  for (size_t i = 0; grad != NULL && i < count; ++i) {
    grad[i] *= factor;
  }
}

bool iq_psot_block_cost(const float *z, size_t rows, size_t hidden,
                        size_t blocks, const double *q, const float *weights,
                        double temperature, bool rotation_mean, double *cost,
                        double *grad, iq_error_t **error) {
  if (blocks == 0 || hidden % blocks != 0 || !(temperature > 0.0)) {
    return iq_error_set(error, NULL, "psot", "use a block count that divides the hidden size and T > 0",
                        "invalid block cost setup: %zu blocks for hidden size %zu, T = %g",
                        blocks, hidden, temperature);
  }
  size_t d = hidden / blocks;
  segment_layout_t layout = {hidden, blocks, d, 1, false, rotation_mean};
  if (grad != NULL) {
    memset(grad, 0, blocks * d * d * sizeof(double));
  }
  double sum_sq = 0.0;
  if (!accumulate_cost(&layout, z, rows, q, weights, temperature, &sum_sq,
                       grad, error)) {
    return false;
  }
  finish_cost(sum_sq, grad, blocks * d * d, cost);
  return true;
}

bool iq_psot_head_cost(const float *v, const float *m, size_t rows,
                       size_t heads, size_t kv_heads, size_t head_dim,
                       const double *q2, const float *v_weights,
                       const float *m_weights, double temperature,
                       bool rotation_mean, double *loss, double *m_cost,
                       double *v_cost, double *grad, iq_error_t **error) {
  if (kv_heads == 0 || head_dim == 0 || heads % kv_heads != 0 ||
      !(temperature > 0.0)) {
    return iq_error_set(error, NULL, "psot", "use heads as a multiple of kv_heads and T > 0",
                        "invalid head cost setup: %zu heads, %zu KV heads, head size %zu, T = %g",
                        heads, kv_heads, head_dim, temperature);
  }
  size_t group_size = heads / kv_heads;
  size_t count = kv_heads * head_dim * head_dim;
  segment_layout_t v_layout = {kv_heads * head_dim, kv_heads, head_dim, 1, true,
                               rotation_mean};
  segment_layout_t m_layout = {heads * head_dim, heads, head_dim, group_size,
                               true, rotation_mean};
  double *v_grad = NULL;
  if (grad != NULL) {
    v_grad = calloc(count, sizeof(double));
    if (v_grad == NULL) {
      return iq_error_set(error, NULL, "psot", NULL,
                          "out of memory for the stage 2 gradient");
    }
    memset(grad, 0, count * sizeof(double));
  }
  double v_sum = 0.0;
  double m_sum = 0.0;
  bool ok = accumulate_cost(&v_layout, v, rows, q2, v_weights, temperature,
                            &v_sum, v_grad, error) &&
            accumulate_cost(&m_layout, m, rows, q2, m_weights, temperature,
                            &m_sum, grad, error);
  if (ok) {
    finish_cost(v_sum, v_grad, count, v_cost);
    finish_cost(m_sum, grad, count, m_cost);
    /* The balance factor is a constant for the gradient (stopgrad). */
    double balance = *v_cost > 0.0 ? *m_cost / *v_cost : 0.0;
    *loss = *m_cost + *v_cost * balance;
    for (size_t i = 0; grad != NULL && i < count; ++i) {
      grad[i] += balance * v_grad[i];
    }
  }
  free(v_grad);
  return ok;
}
