/* GPTQ of lib/Quant on synthetic correlated activations: it must beat RTN
 * on held-out tokens, keep true INT4 codes and handle dead columns. */
#include "iq/quant.h"
#include "iq_test.h"

#include <math.h>
#include <stdlib.h>

/* SplitMix64 plus Box-Muller: a fixed-seed normal generator for tests. */
typedef struct normal_generator {
  uint64_t state;
} normal_generator_t;

static double next_uniform(normal_generator_t *g) {
  g->state += 0x9e3779b97f4a7c15ull;
  uint64_t z = g->state;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}

static double next_normal(normal_generator_t *g) {
  double u1 = next_uniform(g);
  double u2 = next_uniform(g);
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

/* X = Z * A with Z standard normal [tokens x k] and a fixed mixing A
 * [k x cols], so columns are correlated; column 3 gets a large scale. */
static void make_activations(normal_generator_t *g, const double *mixing,
                             size_t k, size_t tokens, size_t cols, float *x) {
  double *z = malloc(k * sizeof(double));
  for (size_t t = 0; t < tokens; ++t) {
    for (size_t i = 0; i < k; ++i) {
      z[i] = next_normal(g);
    }
    for (size_t c = 0; c < cols; ++c) {
      double value = 0.0;
      for (size_t i = 0; i < k; ++i) {
        value += z[i] * mixing[i * cols + c];
      }
      x[t * cols + c] = (float)(c == 3 ? 8.0 * value : value);
    }
  }
  free(z);
}

/* ||X W^T - X Wq^T||_F over the rows of x. */
static double output_error(const float *x, size_t tokens, const float *w,
                           const float *wq, size_t rows, size_t cols) {
  double total = 0.0;
  for (size_t t = 0; t < tokens; ++t) {
    for (size_t r = 0; r < rows; ++r) {
      double diff = 0.0;
      for (size_t c = 0; c < cols; ++c) {
        diff += (double)x[t * cols + c] * ((double)w[r * cols + c] - (double)wq[r * cols + c]);
      }
      total += diff * diff;
    }
  }
  return sqrt(total);
}

IQ_TEST(gptq_beats_rtn_on_held_out) {
  enum { rows = 48, cols = 160, k = 24, train = 1024, test = 256 };
  normal_generator_t g = {12345};
  double *mixing = malloc(k * cols * sizeof(double));
  float *w = malloc(rows * cols * sizeof(float));
  float *x_train = malloc(train * cols * sizeof(float));
  float *x_test = malloc(test * cols * sizeof(float));
  double *xtx = calloc(cols * cols, sizeof(double));
  float *gptq = malloc(rows * cols * sizeof(float));
  float *rtn = malloc(rows * cols * sizeof(float));
  uint8_t *codes = malloc(rows * cols);
  float scales[rows], zeros[rows], rtn_scales[rows], rtn_zeros[rows];
  IQ_ASSERT_NOT_NULL(mixing);
  IQ_ASSERT_NOT_NULL(w);
  IQ_ASSERT_NOT_NULL(x_train);
  IQ_ASSERT_NOT_NULL(x_test);
  IQ_ASSERT_NOT_NULL(xtx);
  IQ_ASSERT_NOT_NULL(gptq);
  IQ_ASSERT_NOT_NULL(rtn);
  IQ_ASSERT_NOT_NULL(codes);
  for (size_t i = 0; i < k * cols; ++i) {
    mixing[i] = next_normal(&g) / sqrt((double)k);
  }
  for (size_t i = 0; i < rows * cols; ++i) {
    w[i] = (float)(0.05 * next_normal(&g));
  }
  make_activations(&g, mixing, k, train, cols, x_train);
  make_activations(&g, mixing, k, test, cols, x_test);

  iq_gptq_options_t options;
  iq_gptq_options_init(&options);
  options.block_size = 64; /* three blocks, the last one partial */
  bool ok = iq_gptq_accumulate(x_train, train, cols, xtx, NULL) &&
            iq_gptq_quantize(w, rows, cols, xtx, train, &options, codes, scales,
                             zeros, gptq, NULL) &&
            iq_quantize_weight_rtn(w, rows, cols, &options.weight, NULL,
                                   rtn_scales, rtn_zeros, rtn, NULL);
  double gptq_error = ok ? output_error(x_test, test, w, gptq, rows, cols) : 0.0;
  double rtn_error = ok ? output_error(x_test, test, w, rtn, rows, cols) : 0.0;
  bool codes_match = true;
  bool params_match = true;
  for (size_t r = 0; ok && r < rows; ++r) {
    params_match = params_match && scales[r] == rtn_scales[r] && zeros[r] == rtn_zeros[r];
    for (size_t c = 0; c < cols; ++c) {
      float expected = scales[r] * ((float)codes[r * cols + c] - zeros[r]);
      codes_match = codes_match && codes[r * cols + c] <= 15 && gptq[r * cols + c] == expected;
    }
  }
  free(mixing);
  free(w);
  free(x_train);
  free(x_test);
  free(xtx);
  free(gptq);
  free(rtn);
  free(codes);
  IQ_ASSERT_TRUE(ok);
  IQ_ASSERT_TRUE(params_match);
  IQ_ASSERT_TRUE(codes_match);
  printf("gptq held-out error %.4f, rtn %.4f\n", gptq_error, rtn_error);
  IQ_ASSERT_TRUE(gptq_error < 0.9 * rtn_error);
}

IQ_TEST(gptq_zeroes_dead_columns) {
  enum { rows = 4, cols = 8, tokens = 32 };
  float w[rows * cols], x[tokens * cols], out[rows * cols];
  normal_generator_t g = {7};
  for (size_t i = 0; i < rows * cols; ++i) {
    w[i] = (float)next_normal(&g);
  }
  for (size_t i = 0; i < tokens * cols; ++i) {
    x[i] = (i % cols) == 2 ? 0.0f : (float)next_normal(&g);
  }
  double xtx[cols * cols] = {0};
  iq_gptq_options_t options;
  iq_gptq_options_init(&options);
  IQ_ASSERT_TRUE(iq_gptq_accumulate(x, tokens, cols, xtx, NULL));
  IQ_ASSERT_TRUE(xtx[2 * cols + 2] == 0.0);
  IQ_ASSERT_TRUE(iq_gptq_quantize(w, rows, cols, xtx, tokens, &options, NULL,
                                  NULL, NULL, out, NULL));
  for (size_t r = 0; r < rows; ++r) {
    IQ_ASSERT_TRUE(out[r * cols + 2] == 0.0f);
  }
}

IQ_TEST(gptq_accumulate_matches_direct_sum) {
  enum { tokens = 300, cols = 5 };
  float x[tokens * cols];
  for (size_t i = 0; i < tokens * cols; ++i) {
    x[i] = (float)((int)(i % 7) - 3) * 0.5f;
  }
  double xtx[cols * cols] = {0};
  IQ_ASSERT_TRUE(iq_gptq_accumulate(x, tokens, cols, xtx, NULL));
  for (size_t i = 0; i < cols; ++i) {
    for (size_t j = 0; j < cols; ++j) {
      double expected = 0.0;
      for (size_t t = 0; t < tokens; ++t) {
        expected += (double)x[t * cols + i] * (double)x[t * cols + j];
      }
      IQ_ASSERT_TRUE(xtx[i * cols + j] == expected);
    }
  }
}

IQ_TEST(gptq_rejects_bad_inputs) {
  float w[4] = {1, 2, 3, 4};
  double xtx[4] = {1, 0, 0, 1};
  iq_gptq_options_t options;
  iq_gptq_options_init(&options);
  iq_error_t *error = NULL;
  IQ_ASSERT_FALSE(iq_gptq_quantize(w, 2, 2, xtx, 0.0, &options, NULL, NULL,
                                   NULL, NULL, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "token count 0");
  iq_error_destroy(error);
  error = NULL;
  xtx[1] = NAN;
  IQ_ASSERT_FALSE(iq_gptq_quantize(w, 2, 2, xtx, 4.0, &options, NULL, NULL,
                                   NULL, NULL, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "(0, 1)");
  iq_error_destroy(error);
  error = NULL;
  double indefinite[4] = {1, 5, 5, 1};
  IQ_ASSERT_FALSE(iq_gptq_quantize(w, 2, 2, indefinite, 4.0, &options, NULL,
                                   NULL, NULL, NULL, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "not positive definite");
  iq_error_destroy(error);
}
