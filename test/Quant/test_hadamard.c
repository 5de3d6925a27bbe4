/* Hadamard transforms of lib/Quant: orthogonality, the K-factor choice,
 * the direct matrix product, the Sylvester order and the inverse. */
#include "iq/quant.h"
#include "iq_test.h"

#include <math.h>
#include <stdlib.h>

/* Every size the target models need, plus each table alone. */
static const size_t model_sizes[] = {1,   2,    64,   128,  172,  1536, 576,
                                     11008, 13824, 14336, 2560, 12,  20,  28,
                                     36,  40,   44,   52,   60,   108,  140,
                                     156};

/* Fills x with a deterministic pattern in [-1, 1]. */
static void fill_pattern(double *x, size_t n, unsigned seed) {
  for (size_t i = 0; i < n; ++i) {
    x[i] = sin((double)(i * 7 + seed * 13) * 0.37) + 0.1 * (double)(i % 5);
  }
}

IQ_TEST(hadamard_factor_follows_table_order) {
  size_t k = 0;
  IQ_ASSERT_TRUE(iq_hadamard_factor(11008, &k, NULL));
  IQ_ASSERT_EQ_UINT(k, 172);
  IQ_ASSERT_TRUE(iq_hadamard_factor(13824, &k, NULL));
  IQ_ASSERT_EQ_UINT(k, 108);
  IQ_ASSERT_TRUE(iq_hadamard_factor(14336, &k, NULL));
  IQ_ASSERT_EQ_UINT(k, 28);
  IQ_ASSERT_TRUE(iq_hadamard_factor(1536, &k, NULL));
  IQ_ASSERT_EQ_UINT(k, 12);
  IQ_ASSERT_TRUE(iq_hadamard_factor(576, &k, NULL));
  IQ_ASSERT_EQ_UINT(k, 36);
  IQ_ASSERT_TRUE(iq_hadamard_factor(4096, &k, NULL));
  IQ_ASSERT_EQ_UINT(k, 1);
  /* 240 = 60 * 4 = 20 * 12: 60 comes first in the search order. */
  IQ_ASSERT_TRUE(iq_hadamard_factor(240, &k, NULL));
  IQ_ASSERT_EQ_UINT(k, 60);
  /* 80 = 40 * 2 = 20 * 4: 40 comes first. */
  IQ_ASSERT_TRUE(iq_hadamard_factor(80, &k, NULL));
  IQ_ASSERT_EQ_UINT(k, 40);
}

IQ_TEST(hadamard_factor_rejects_unsupported_size) {
  size_t k = 0;
  iq_error_t *error = NULL;
  IQ_ASSERT_FALSE(iq_hadamard_factor(100, &k, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "100");
  IQ_ASSERT_NOT_NULL(error->hint);
  iq_error_destroy(error);
  error = NULL;
  IQ_ASSERT_FALSE(iq_hadamard_factor(0, &k, &error));
  IQ_ASSERT_NOT_NULL(error);
  iq_error_destroy(error);
  float x[50] = {0};
  error = NULL;
  IQ_ASSERT_FALSE(iq_hadamard_transform(x, 50, &error));
  IQ_ASSERT_NOT_NULL(error);
  iq_error_destroy(error);
}

IQ_TEST(hadamard_matrix_is_orthogonal) {
  const size_t sizes[] = {1, 2, 64, 128, 172, 576, 12, 20, 28, 36, 40, 44,
                          52, 60, 108, 140, 156, 344};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; ++s) {
    size_t n = sizes[s];
    double *h = malloc(n * n * sizeof(double));
    IQ_ASSERT_NOT_NULL(h);
    bool ok = iq_hadamard_matrix(n, h, NULL);
    double worst = 0.0;
    double entry_error = 0.0;
    for (size_t i = 0; ok && i < n; ++i) {
      for (size_t j = 0; j < n; ++j) {
        double dot = 0.0;
        for (size_t c = 0; c < n; ++c) {
          dot += h[i * n + c] * h[j * n + c];
        }
        worst = fmax(worst, fabs(dot - (i == j ? 1.0 : 0.0)));
      }
      /* Unnormalized, every entry is +1 or -1. */
      for (size_t j = 0; j < n; ++j) {
        entry_error = fmax(entry_error, fabs(fabs(h[i * n + j]) * sqrt((double)n) - 1.0));
      }
    }
    free(h);
    IQ_ASSERT_TRUE(ok);
    if (worst > 1e-12 || entry_error > 1e-12) {
      iq_test_fail(__FILE__, __LINE__, "size %zu: |H*H^T - I| = %g, entry error %g",
                   n, worst, entry_error);
      return;
    }
  }
}

IQ_TEST(hadamard_transform_equals_matrix_product) {
  const size_t sizes[] = {64, 172, 576, 1536, 344, 40 * 8, 28 * 16};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; ++s) {
    size_t n = sizes[s];
    double *h = malloc(n * n * sizeof(double));
    double *x = malloc(n * sizeof(double));
    float *xf = malloc(n * sizeof(float));
    IQ_ASSERT_NOT_NULL(h);
    IQ_ASSERT_NOT_NULL(x);
    IQ_ASSERT_NOT_NULL(xf);
    fill_pattern(x, n, (unsigned)s);
    for (size_t i = 0; i < n; ++i) {
      xf[i] = (float)x[i];
    }
    bool ok = iq_hadamard_matrix(n, h, NULL) && iq_hadamard_transform(xf, n, NULL);
    double worst = 0.0;
    for (size_t i = 0; ok && i < n; ++i) {
      double expected = 0.0;
      for (size_t c = 0; c < n; ++c) {
        expected += h[i * n + c] * (double)(float)x[c];
      }
      worst = fmax(worst, fabs(expected - (double)xf[i]));
    }
    free(h);
    free(x);
    free(xf);
    IQ_ASSERT_TRUE(ok);
    if (worst > 1e-5) {
      iq_test_fail(__FILE__, __LINE__, "size %zu: max difference %g", n, worst);
      return;
    }
  }
}

/* The matrix for n = K*2^m is hadK (x) H_{2^m} / sqrt(n), built here from
 * the matrices of the two factors independently. */
IQ_TEST(hadamard_matrix_is_kronecker_product) {
  const size_t orders[] = {172, 108, 28, 40};
  const size_t m = 4;
  for (size_t t = 0; t < 4; ++t) {
    size_t k = orders[t];
    size_t n = k * m;
    double *table = malloc(k * k * sizeof(double));
    double *small = malloc(m * m * sizeof(double));
    double *h = malloc(n * n * sizeof(double));
    IQ_ASSERT_NOT_NULL(table);
    IQ_ASSERT_NOT_NULL(small);
    IQ_ASSERT_NOT_NULL(h);
    bool ok = iq_hadamard_matrix(k, table, NULL) && iq_hadamard_matrix(m, small, NULL) &&
              iq_hadamard_matrix(n, h, NULL);
    double worst = 0.0;
    for (size_t i = 0; ok && i < n; ++i) {
      for (size_t j = 0; j < n; ++j) {
        double expected = table[(i / m) * k + j / m] * small[(i % m) * m + j % m];
        worst = fmax(worst, fabs(expected - h[i * n + j]));
      }
    }
    free(table);
    free(small);
    free(h);
    IQ_ASSERT_TRUE(ok);
    if (worst > 1e-12) {
      iq_test_fail(__FILE__, __LINE__, "K %zu: max difference %g", k, worst);
      return;
    }
  }
}

IQ_TEST(hadamard_power_of_two_is_sylvester) {
  const size_t n = 64;
  double h[64 * 64];
  IQ_ASSERT_TRUE(iq_hadamard_matrix(n, h, NULL));
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      double sign = (__builtin_popcountll(i & j) % 2) != 0 ? -1.0 : 1.0;
      if (fabs(h[i * n + j] - sign / 8.0) > 1e-15) {
        iq_test_fail(__FILE__, __LINE__, "H[%zu][%zu] = %g, expected %g", i, j,
                     h[i * n + j], sign / 8.0);
        return;
      }
    }
  }
}

IQ_TEST(hadamard_transposed_inverts_forward) {
  for (size_t s = 0; s < sizeof model_sizes / sizeof model_sizes[0]; ++s) {
    size_t n = model_sizes[s];
    size_t rows = 3;
    float *x = malloc(rows * n * sizeof(float));
    double *original = malloc(rows * n * sizeof(double));
    IQ_ASSERT_NOT_NULL(x);
    IQ_ASSERT_NOT_NULL(original);
    fill_pattern(original, rows * n, (unsigned)n);
    for (size_t i = 0; i < rows * n; ++i) {
      x[i] = (float)original[i];
    }
    bool ok = iq_hadamard_transform_rows(x, rows, n, NULL) &&
              iq_hadamard_transform_rows_transposed(x, rows, n, NULL);
    double worst = 0.0;
    for (size_t i = 0; i < rows * n; ++i) {
      worst = fmax(worst, fabs((double)x[i] - (double)(float)original[i]));
    }
    double *xd = malloc(n * sizeof(double));
    IQ_ASSERT_NOT_NULL(xd);
    memcpy(xd, original, n * sizeof(double));
    ok = ok && iq_hadamard_transform_transposed_f64(xd, n, NULL) &&
         iq_hadamard_transform_f64(xd, n, NULL);
    double worst_f64 = 0.0;
    for (size_t i = 0; i < n; ++i) {
      worst_f64 = fmax(worst_f64, fabs(xd[i] - original[i]));
    }
    free(xd);
    free(x);
    free(original);
    IQ_ASSERT_TRUE(ok);
    if (worst > 1e-5 || worst_f64 > 1e-12) {
      iq_test_fail(__FILE__, __LINE__, "size %zu: float error %g, double error %g", n,
                   worst, worst_f64);
      return;
    }
  }
}

IQ_TEST(random_hadamard_is_signed_transpose) {
  const size_t n = 172;
  double *h = malloc(n * n * sizeof(double));
  double *r = malloc(n * n * sizeof(double));
  double *again = malloc(n * n * sizeof(double));
  double *signs = malloc(n * sizeof(double));
  IQ_ASSERT_NOT_NULL(h);
  IQ_ASSERT_NOT_NULL(r);
  IQ_ASSERT_NOT_NULL(again);
  IQ_ASSERT_NOT_NULL(signs);
  bool ok = iq_hadamard_matrix(n, h, NULL) && iq_random_hadamard(n, 7, r, NULL) &&
            iq_random_hadamard(n, 7, again, NULL);
  iq_random_signs(7, n, signs);
  double worst = 0.0;
  size_t negative = 0;
  bool same = memcmp(r, again, n * n * sizeof(double)) == 0;
  for (size_t i = 0; ok && i < n; ++i) {
    negative += signs[i] < 0.0;
    for (size_t j = 0; j < n; ++j) {
      worst = fmax(worst, fabs(r[i * n + j] - signs[i] * h[j * n + i]));
    }
  }
  iq_random_signs(8, n, again);
  bool seeds_differ = memcmp(signs, again, n * sizeof(double)) != 0;
  free(h);
  free(r);
  free(again);
  free(signs);
  IQ_ASSERT_TRUE(ok);
  IQ_ASSERT_TRUE(same);
  IQ_ASSERT_TRUE(seeds_differ);
  IQ_ASSERT_TRUE(worst < 1e-15);
  /* A fair coin gives 86 +- 6.6 negatives; 40 or 132 would be 7 sigma. */
  IQ_ASSERT_TRUE(negative > 40 && negative < 132);
}
