/* PSOT: Cayley SGD, the QR retraction and the outlier-token weights; see
 * iq/quant.h. The per-layer driver is in PsotLayer.c. */
#include "iq/quant.h"
#include "quant_internal.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- Cayley SGD ---------------------------------------------------------- */

static void transpose(const double *in, size_t n, double *out) {
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      out[j * n + i] = in[i * n + j];
    }
  }
}

bool iq_qr_retraction(double *q, size_t n, iq_error_t **error) {
  double *a = malloc(n * n * sizeof(double));
  double *tau = malloc(n * sizeof(double));
  double *signs = malloc(n * sizeof(double));
  if (a == NULL || tau == NULL || signs == NULL) {
    free(a);
    free(tau);
    free(signs);
    return iq_error_set(error, NULL, "psot", NULL,
                        "out of memory for a QR retraction of size %zu", n);
  }
  transpose(q, n, a);
  int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (int)n, (int)n, a, (int)n, tau);
  for (size_t i = 0; info == 0 && i < n; ++i) {
    signs[i] = a[i * n + i] < 0.0 ? -1.0 : 1.0;
  }
  if (info == 0) {
    info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (int)n, (int)n, (int)n, a, (int)n, tau);
  }
  if (info == 0) {
    /* q = (Qf * diag(signs))^T: row i of q is column i of Qf times signs[i]. */
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < n; ++j) {
        q[i * n + j] = a[j * n + i] * signs[i];
      }
    }
  }
  free(a);
  free(tau);
  free(signs);
  if (info != 0) {
    return iq_error_set(error, NULL, "psot", NULL,
                        "QR factorization of a %zu x %zu rotation failed (LAPACK info %d)",
                        n, n, info);
  }
  return true;
}

static void multiply(const double *a, const double *b, size_t n, double *out) {
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n,
              1.0, a, (int)n, b, (int)n, 0.0, out, (int)n);
}

bool iq_quant_cayley_step(double *q, const double *grad, size_t n, double lr,
                          bool retract, int iterations, iq_error_t **error) {
  size_t bytes = n * n * sizeof(double);
  double *normalized = malloc(bytes);
  double *tangent = malloc(bytes);
  double *product = malloc(bytes);
  double *skew = malloc(bytes);
  double *start = malloc(bytes);
  double *y = malloc(bytes);
  double *sum = malloc(bytes);
  bool ok = normalized != NULL && tangent != NULL && product != NULL &&
            skew != NULL && start != NULL && y != NULL && sum != NULL;
  if (!ok) {
    iq_error_set(error, NULL, "psot", NULL,
                 "out of memory for a Cayley step of size %zu", n);
  }

  if (ok) {
    for (size_t i = 0; i < n; ++i) {
      double norm = 0.0;
      for (size_t j = 0; j < n; ++j) {
        norm += q[i * n + j] * q[i * n + j];
      }
      norm = sqrt(norm) + 1e-8;
      for (size_t j = 0; j < n; ++j) {
        normalized[i * n + j] = q[i * n + j] / norm;
      }
    }
    if (retract) {
      ok = iq_qr_retraction(normalized, n, error);
    }
  }
  if (ok) {
    /* V = -G^T; MX = V Qn; XMX = Qn MX; XXMX = Qn^T XMX. */
    transpose(grad, n, tangent);
    for (size_t i = 0; i < n * n; ++i) {
      tangent[i] = -tangent[i];
    }
    multiply(tangent, normalized, n, product); /* MX */
    multiply(normalized, product, n, y);        /* XMX */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)n, (int)n,
                1.0, normalized, (int)n, y, (int)n, 0.0, sum, (int)n); /* XXMX */
    for (size_t i = 0; i < n * n; ++i) {
      product[i] -= 0.5 * sum[i]; /* W^ */
    }
    double norm_one = 0.0;
    for (size_t i = 0; i < n; ++i) {
      for (size_t j = 0; j < n; ++j) {
        skew[i * n + j] = product[i * n + j] - product[j * n + i];
      }
    }
    for (size_t j = 0; j < n; ++j) {
      double column = 0.0;
      for (size_t i = 0; i < n; ++i) {
        column += fabs(skew[i * n + j]);
      }
      norm_one = fmax(norm_one, column);
    }
    double alpha = fmin(lr, 1.0 / (norm_one + 1e-8));

    transpose(normalized, n, start);
    for (size_t i = 0; i < n * n; ++i) {
      y[i] = start[i] + alpha * tangent[i];
    }
    for (int k = 0; k < iterations; ++k) {
      for (size_t i = 0; i < n * n; ++i) {
        sum[i] = 0.5 * (start[i] + y[i]);
      }
      multiply(skew, sum, n, product);
      for (size_t i = 0; i < n * n; ++i) {
        y[i] = start[i] + alpha * product[i];
      }
    }
    transpose(y, n, q);
  }
  free(normalized);
  free(tangent);
  free(product);
  free(skew);
  free(start);
  free(y);
  free(sum);
  return ok;
}

bool iq_cayley_step(double *q, const double *grad, size_t n, double lr,
                    bool retract, iq_error_t **error) {
  return iq_quant_cayley_step(q, grad, n, lr, retract, 5, error);
}

/* ---- Outlier tokens -------------------------------------------------------- */

void iq_psot_window_deviation(const float *z, size_t tokens, size_t width,
                              float *deviation) {
  size_t count = tokens * width;
  double mean = 0.0;
  for (size_t i = 0; i < count; ++i) {
    mean += (double)z[i];
  }
  mean /= count > 0 ? (double)count : 1.0;
  double variance = 0.0;
  for (size_t i = 0; i < count; ++i) {
    double d = (double)z[i] - mean;
    variance += d * d;
  }
  double std = count > 0 ? sqrt(variance / (double)count) : 0.0;
  for (size_t t = 0; t < tokens; ++t) {
    double top = 0.0;
    for (size_t c = 0; c < width; ++c) {
      top = fmax(top, fabs((double)z[t * width + c] - mean));
    }
    deviation[t] = std > 0.0 ? (float)(top / std) : 0.0f;
  }
}

/* Levels 0 .. OUTLIER_LEVELS - 1 are tried, as in the reference. */
#define OUTLIER_LEVELS 50

size_t iq_psot_outlier_level(const float *deviation, size_t windows,
                             size_t tokens, size_t eta_m) {
  size_t sample = eta_m < windows ? eta_m : windows;
  double average[OUTLIER_LEVELS];
  double union_count[OUTLIER_LEVELS];
  size_t levels = 0;
  for (size_t k = 0; k < OUTLIER_LEVELS; ++k) {
    size_t flagged = 0;
    size_t positions = 0;
    for (size_t t = 0; t < tokens; ++t) {
      bool any = false;
      for (size_t w = 0; w < sample; ++w) {
        bool outlier = deviation[w * tokens + t] > (float)k;
        flagged += outlier;
        any = any || outlier;
      }
      positions += any;
    }
    if (positions == 0) {
      break;
    }
    average[levels] = (double)flagged / (double)sample;
    union_count[levels] = (double)positions;
    ++levels;
  }
  for (size_t k = 1; k < levels; ++k) {
    double ratio = (union_count[k] - average[k]) / union_count[k];
    double previous = (union_count[k - 1] - average[k - 1]) / union_count[k - 1];
    if (fabs(ratio - previous) < 0.02 && union_count[k] < 0.4 * (double)tokens) {
      return k;
    }
  }
  return levels;
}

void iq_psot_token_weights(const float *deviation, size_t windows,
                           size_t tokens, size_t layer,
                           const iq_psot_options_t *options, float *weights) {
  size_t count = windows * tokens;
  if (options->aug_token <= 1.0) {
    for (size_t i = 0; i < count; ++i) {
      weights[i] = 1.0f;
    }
    return;
  }
  if (layer < options->aug_start) {
    for (size_t i = 0; i < count; ++i) {
      weights[i] = (float)options->aug_token;
    }
    return;
  }
  size_t level = iq_psot_outlier_level(deviation, windows, tokens, options->eta_m);
  for (size_t i = 0; i < count; ++i) {
    weights[i] = deviation[i] > (float)level ? (float)options->aug_token : 1.0f;
  }
}
