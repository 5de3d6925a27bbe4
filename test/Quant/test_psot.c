/* PSOT of lib/Quant: analytic gradients against central finite
 * differences, the Cayley step, outlier-token selection and a full
 * per-layer run on heavy-tailed data with planted outlier channels. */
#include "iq/quant.h"
#include "iq_test.h"

#include <math.h>
#include <stdlib.h>

/* Reset by each test, so results do not depend on the test order. */
static uint64_t random_state = 99;

static double uniform(void) {
  random_state += 0x9e3779b97f4a7c15ull;
  uint64_t z = random_state;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}

static double normal(void) {
  return sqrt(-2.0 * log(uniform())) * cos(6.283185307179586 * uniform());
}

/* Student t with 3 degrees of freedom: heavy tails. */
static double heavy(void) {
  double chi = 0.0;
  for (int i = 0; i < 3; ++i) {
    double g = normal();
    chi += g * g;
  }
  return normal() / sqrt(chi / 3.0);
}

static void fill_heavy(float *z, size_t rows, size_t width, size_t outlier_column) {
  for (size_t r = 0; r < rows; ++r) {
    for (size_t c = 0; c < width; ++c) {
      double value = heavy();
      if (c == outlier_column) {
        value = 20.0 + 3.0 * value;
      }
      z[r * width + c] = (float)value;
    }
  }
}

/* A random orthogonal start: a random matrix, QR-retracted. */
static bool random_rotations(double *q, size_t count, size_t n) {
  for (size_t i = 0; i < count * n * n; ++i) {
    q[i] = normal();
  }
  for (size_t i = 0; i < count; ++i) {
    if (!iq_qr_retraction(q + i * n * n, n, NULL)) {
      return false;
    }
  }
  return true;
}

/* Largest |analytic - numeric| relative to the largest gradient entry. */
static double block_gradient_error(size_t rows, size_t hidden, size_t blocks,
                                   bool mean, bool weighted) {
  random_state = 99;
  size_t d = hidden / blocks;
  size_t count = blocks * d * d;
  float *z = malloc(rows * hidden * sizeof(float));
  float *weights = malloc(rows * sizeof(float));
  double *q = malloc(count * sizeof(double));
  double *grad = malloc(count * sizeof(double));
  double result = INFINITY;
  if (z == NULL || weights == NULL || q == NULL || grad == NULL) {
    goto done;
  }
  fill_heavy(z, rows, hidden, 1);
  for (size_t r = 0; r < rows; ++r) {
    weights[r] = r % 3 == 0 ? 30.0f : 1.0f;
  }
  const float *w = weighted ? weights : NULL;
  double cost;
  if (!random_rotations(q, blocks, d) ||
      !iq_psot_block_cost(z, rows, hidden, blocks, q, w, 2.0, mean, &cost, grad, NULL)) {
    goto done;
  }
  double worst = 0.0, largest = 0.0;
  const double h = 1e-6;
  for (size_t i = 0; i < count; ++i) {
    double saved = q[i];
    double plus, minus;
    q[i] = saved + h;
    iq_psot_block_cost(z, rows, hidden, blocks, q, w, 2.0, mean, &plus, NULL, NULL);
    q[i] = saved - h;
    iq_psot_block_cost(z, rows, hidden, blocks, q, w, 2.0, mean, &minus, NULL, NULL);
    q[i] = saved;
    double numeric = (plus - minus) / (2.0 * h);
    worst = fmax(worst, fabs(numeric - grad[i]));
    largest = fmax(largest, fabs(grad[i]));
  }
  result = worst / largest;
done:
  free(z);
  free(weights);
  free(q);
  free(grad);
  return result;
}

IQ_TEST(psot_block_gradient_two_blocks_mean) {
  double error = block_gradient_error(12, 16, 2, true, true);
  printf("relative gradient error %.3g\n", error);
  IQ_ASSERT_TRUE(error < 1e-6);
}

IQ_TEST(psot_block_gradient_one_block_no_mean) {
  double error = block_gradient_error(10, 8, 1, false, false);
  IQ_ASSERT_TRUE(error < 1e-6);
}

IQ_TEST(psot_block_gradient_four_blocks) {
  double error = block_gradient_error(9, 16, 4, true, false);
  IQ_ASSERT_TRUE(error < 1e-6);
}

/* Checks dMcost + (Mcost/Vcost) dVcost against finite differences of the
 * two costs, with 4 query heads on 2 KV heads (GQA). */
IQ_TEST(psot_head_gradient_with_gqa) {
  random_state = 99;
  enum { rows = 10, heads = 4, kv_heads = 2, hd = 8 };
  size_t count = kv_heads * hd * hd;
  float v[rows * kv_heads * hd], m[rows * heads * hd], weights[rows];
  double q[kv_heads * hd * hd], grad[kv_heads * hd * hd];
  fill_heavy(v, rows, kv_heads * hd, 3);
  fill_heavy(m, rows, heads * hd, 20);
  for (size_t r = 0; r < rows; ++r) {
    weights[r] = r == 0 ? 30.0f : 1.0f;
  }
  IQ_ASSERT_TRUE(random_rotations(q, kv_heads, hd));
  double loss, m_cost, v_cost;
  IQ_ASSERT_TRUE(iq_psot_head_cost(v, m, rows, heads, kv_heads, hd, q, weights,
                                   weights, 2.0, true, &loss, &m_cost, &v_cost,
                                   grad, NULL));
  IQ_ASSERT_TRUE(fabs(loss - 2.0 * m_cost) < 1e-12 * loss);
  double balance = m_cost / v_cost;
  double worst = 0.0, largest = 0.0;
  const double h = 1e-6;
  for (size_t i = 0; i < count; ++i) {
    double saved = q[i];
    double plus_m, plus_v, minus_m, minus_v;
    q[i] = saved + h;
    iq_psot_head_cost(v, m, rows, heads, kv_heads, hd, q, weights, weights, 2.0,
                      true, &loss, &plus_m, &plus_v, NULL, NULL);
    q[i] = saved - h;
    iq_psot_head_cost(v, m, rows, heads, kv_heads, hd, q, weights, weights, 2.0,
                      true, &loss, &minus_m, &minus_v, NULL, NULL);
    q[i] = saved;
    double numeric = (plus_m - minus_m) / (2.0 * h) + balance * (plus_v - minus_v) / (2.0 * h);
    worst = fmax(worst, fabs(numeric - grad[i]));
    largest = fmax(largest, fabs(grad[i]));
  }
  printf("relative gradient error %.3g\n", worst / largest);
  IQ_ASSERT_TRUE(worst / largest < 1e-6);
}

/* The cost of hand-computed rows: one row [3, 0] with T = 1 and no mean
 * removal gives S = softmax([3, 0]) and cost = S_0 * 3. */
IQ_TEST(psot_cost_hand_example) {
  const float z[2] = {3.0f, 0.0f};
  const double identity[4] = {1, 0, 0, 1};
  double cost;
  IQ_ASSERT_TRUE(iq_psot_block_cost(z, 1, 2, 1, identity, NULL, 1.0, false,
                                    &cost, NULL, NULL));
  double s0 = exp(3.0) / (exp(3.0) + 1.0);
  IQ_ASSERT_TRUE(fabs(cost - 3.0 * s0) < 1e-12);
  const float weight = 2.0f;
  IQ_ASSERT_TRUE(iq_psot_block_cost(z, 1, 2, 1, identity, &weight, 1.0, false,
                                    &cost, NULL, NULL));
  IQ_ASSERT_TRUE(fabs(cost - 6.0 * s0) < 1e-12);
}

static double orthogonality_error(const double *q, size_t n) {
  double worst = 0.0;
  for (size_t i = 0; i < n; ++i) {
    for (size_t j = 0; j < n; ++j) {
      double dot = 0.0;
      for (size_t k = 0; k < n; ++k) {
        dot += q[k * n + i] * q[k * n + j];
      }
      worst = fmax(worst, fabs(dot - (i == j ? 1.0 : 0.0)));
    }
  }
  return worst;
}

IQ_TEST(cayley_step_descends_and_stays_near_orthogonal) {
  random_state = 99;
  enum { rows = 64, n = 8 };
  float z[rows * n];
  fill_heavy(z, rows, n, 2);
  double q[n * n], grad[n * n];
  IQ_ASSERT_TRUE(iq_random_hadamard(n, 0, q, NULL));
  double first, cost;
  IQ_ASSERT_TRUE(iq_psot_block_cost(z, rows, n, 1, q, NULL, 2.0, true, &first, grad, NULL));
  for (int step = 0; step < 20; ++step) {
    IQ_ASSERT_TRUE(iq_cayley_step(q, grad, n, 1e-3, step == 10, NULL));
    IQ_ASSERT_TRUE(iq_psot_block_cost(z, rows, n, 1, q, NULL, 2.0, true, &cost, grad, NULL));
  }
  printf("cost %.4f -> %.4f, |Q^T Q - I| = %.3g\n", first, cost, orthogonality_error(q, n));
  IQ_ASSERT_TRUE(cost < first);
  IQ_ASSERT_TRUE(orthogonality_error(q, n) < 1e-2);
  IQ_ASSERT_TRUE(iq_qr_retraction(q, n, NULL));
  IQ_ASSERT_TRUE(orthogonality_error(q, n) < 1e-12);
}

IQ_TEST(qr_retraction_keeps_orthogonal_matrix) {
  double q[16 * 16], copy[16 * 16];
  IQ_ASSERT_TRUE(iq_random_hadamard(16, 3, q, NULL));
  memcpy(copy, q, sizeof q);
  IQ_ASSERT_TRUE(iq_qr_retraction(q, 16, NULL));
  double worst = 0.0;
  for (size_t i = 0; i < 16 * 16; ++i) {
    worst = fmax(worst, fabs(q[i] - copy[i]));
  }
  IQ_ASSERT_TRUE(worst < 1e-12);
}

IQ_TEST(outlier_level_hand_example) {
  /* 2 windows of 10 tokens. Token 0 is a sink (deviation 9.5 in both),
   * token 5 has 3.5 in window 0 only, the rest sit at 0.5. */
  float deviation[20];
  for (size_t i = 0; i < 20; ++i) {
    deviation[i] = 0.5f;
  }
  deviation[0] = 9.5f;
  deviation[10] = 9.5f;
  deviation[5] = 3.5f;
  /* k = 0: avg 10, union 10, ratio 0. k = 1: avg 1.5, union 2, ratio 0.25.
   * k = 2, 3: same as k = 1, so k = 2 is the first stable level, and
   * union 2 < 0.4 * 10. */
  IQ_ASSERT_EQ_UINT(iq_psot_outlier_level(deviation, 2, 10, 10), 2);
  iq_psot_options_t options;
  iq_psot_options_init(&options);
  float weights[20];
  iq_psot_token_weights(deviation, 2, 10, 5, &options, weights);
  IQ_ASSERT_TRUE(weights[0] == 30.0f);
  IQ_ASSERT_TRUE(weights[5] == 30.0f);
  IQ_ASSERT_TRUE(weights[15] == 1.0f);
  IQ_ASSERT_TRUE(weights[1] == 1.0f);
  iq_psot_token_weights(deviation, 2, 10, 1, &options, weights);
  IQ_ASSERT_TRUE(weights[1] == 30.0f);
  options.aug_token = 1.0;
  iq_psot_token_weights(deviation, 2, 10, 5, &options, weights);
  IQ_ASSERT_TRUE(weights[0] == 1.0f);
}

IQ_TEST(outlier_level_without_stable_level) {
  /* Levels 0 and 1 flag all 4 positions, which is not below 0.4 * 4, and
   * level 2 flags none, so k* is the list length 2. */
  float deviation[8] = {1.5f, 1.5f, 1.5f, 1.5f, 1.5f, 1.5f, 1.5f, 1.5f};
  IQ_ASSERT_EQ_UINT(iq_psot_outlier_level(deviation, 2, 4, 10), 2);
}

IQ_TEST(outlier_level_stops_at_union_limit) {
  /* k = 0: avg 4, union 4. k = 1: avg 1.5, union 3, ratio 0.5, and k = 2
   * repeats the ratio with union 2, still not below 1.6. k = 3: union 1
   * with ratio 0.5, so k* = 3. */
  float deviation[8] = {0.5f, 1.5f, 2.5f, 3.5f, 0.5f, 0.5f, 0.5f, 0.5f};
  IQ_ASSERT_EQ_UINT(iq_psot_outlier_level(deviation, 2, 4, 10), 3);
}

IQ_TEST(window_deviation_population_std) {
  const float z[4] = {1.0f, -1.0f, 1.0f, -1.0f};
  float deviation[2];
  iq_psot_window_deviation(z, 2, 2, deviation);
  IQ_ASSERT_TRUE(deviation[0] == 1.0f);
  IQ_ASSERT_TRUE(deviation[1] == 1.0f);
}

/* M as attention would make it: each query head averages the V rows of
 * its KV head over the current and two earlier tokens. */
static void mix_attention(const float *v, float *m, size_t rows, size_t heads,
                          size_t kv_heads, size_t hd) {
  size_t group = heads / kv_heads;
  for (size_t t = 0; t < rows; ++t) {
    for (size_t h = 0; h < heads; ++h) {
      double a[3], sum = 0.0;
      for (int k = 0; k < 3; ++k) {
        a[k] = uniform();
        sum += a[k];
      }
      for (size_t c = 0; c < hd; ++c) {
        double value = 0.0;
        for (size_t k = 0; k < 3; ++k) {
          size_t source = t >= k ? t - k : t;
          value += a[k] / sum * v[source * kv_heads * hd + (h / group) * hd + c];
        }
        m[t * heads * hd + h * hd + c] = (float)value;
      }
    }
  }
}

typedef struct progress_log {
  int calls;
  double first[3];
  double last[3];
} progress_log_t;

static void record_progress(void *user, int epoch, int epochs, const double losses[3]) {
  progress_log_t *log = user;
  ++log->calls;
  for (int s = 0; s < 3; ++s) {
    if (epoch == 0) {
      log->first[s] = losses[s];
    }
    log->last[s] = losses[s];
  }
}

IQ_TEST(psot_layer_lowers_loss_and_stays_orthogonal) {
  random_state = 99;
  enum { windows = 8, tokens = 32, hidden = 32, heads = 4, kv_heads = 2, hd = 8 };
  size_t rows = windows * tokens;
  float *x = malloc(rows * hidden * sizeof(float));
  float *p = malloc(rows * hidden * sizeof(float));
  float *v = malloc(rows * kv_heads * hd * sizeof(float));
  float *m = malloc(rows * heads * hd * sizeof(float));
  IQ_ASSERT_NOT_NULL(x);
  IQ_ASSERT_NOT_NULL(p);
  IQ_ASSERT_NOT_NULL(v);
  IQ_ASSERT_NOT_NULL(m);
  fill_heavy(x, rows, hidden, 5);
  fill_heavy(p, rows, hidden, 20);
  fill_heavy(v, rows, kv_heads * hd, 9);
  mix_attention(v, m, rows, heads, kv_heads, hd);
  /* A large first token in every window, for the outlier selection. */
  for (size_t w = 0; w < windows; ++w) {
    x[w * tokens * hidden + 7] = 30.0f;
    p[w * tokens * hidden + 3] = -25.0f;
  }
  iq_psot_layer_input_t input = {x, p, v, m, windows, tokens, hidden, heads,
                                 kv_heads, hd, 3, NULL, NULL, NULL, NULL};
  iq_psot_options_t options;
  iq_psot_options_init(&options);
  options.epochs = 6;
  /* Whole-data batches and a step below the 1/||W||_1 cap make each step
   * a descent step, so the training loss itself must fall; keep_best off
   * so the last matrices are returned. */
  options.batch_windows = windows;
  options.lr[0] = options.lr[1] = options.lr[2] = 1e-4;
  options.keep_best = false;
  float q1[2 * 16 * 16], q2[2 * 8 * 8], q4[2 * 16 * 16];
  double history[6 * 3];
  progress_log_t log = {0};
  bool ok = iq_psot_layer(&input, &options, record_progress, &log, q1, q2, q4,
                          history, NULL);
  free(x);
  free(p);
  free(v);
  free(m);
  IQ_ASSERT_TRUE(ok);
  IQ_ASSERT_EQ_INT(log.calls, 6);
  printf("losses first %.3f %.3f %.3f, last %.3f %.3f %.3f\n", log.first[0],
         log.first[1], log.first[2], log.last[0], log.last[1], log.last[2]);
  IQ_ASSERT_TRUE(history[15] == log.last[0]);
  IQ_ASSERT_TRUE(log.last[0] < log.first[0]);
  IQ_ASSERT_TRUE(log.last[1] < log.first[1]);
  IQ_ASSERT_TRUE(log.last[2] < log.first[2]);
  const float *sets[3] = {q1, q2, q4};
  const size_t sizes[3] = {16, 8, 16};
  for (size_t s = 0; s < 3; ++s) {
    size_t n = sizes[s];
    for (size_t b = 0; b < 2; ++b) {
      double q[16 * 16];
      for (size_t i = 0; i < n * n; ++i) {
        q[i] = (double)sets[s][b * n * n + i];
      }
      double error = orthogonality_error(q, n);
      if (error >= 1e-5) {
        iq_test_fail(__FILE__, __LINE__, "set %zu block %zu: |Q^T Q - I| = %g", s, b, error);
        return;
      }
    }
  }
}

/* With the reference learning rate 2 every step is capped at
 * ||alpha W||_1 = 1, which is large for 16 x 16 blocks, so the loss may
 * rise; keep_best must then return matrices no worse than the start. */
IQ_TEST(psot_layer_keep_best_never_worse) {
  random_state = 99;
  /* 5 windows in batches of 4: the second batch is partial. */
  enum { windows = 5, tokens = 32, hidden = 32, heads = 2, kv_heads = 2, hd = 8 };
  size_t rows = windows * tokens;
  float *x = malloc(rows * hidden * sizeof(float));
  float *v = malloc(rows * kv_heads * hd * sizeof(float));
  float *m = malloc(rows * heads * hd * sizeof(float));
  IQ_ASSERT_NOT_NULL(x);
  IQ_ASSERT_NOT_NULL(v);
  IQ_ASSERT_NOT_NULL(m);
  fill_heavy(x, rows, hidden, 11);
  fill_heavy(v, rows, kv_heads * hd, 4);
  mix_attention(v, m, rows, heads, kv_heads, hd);
  iq_psot_layer_input_t input = {x, x, v, m, windows, tokens, hidden, heads,
                                 kv_heads, hd, 0, NULL, NULL, NULL, NULL};
  iq_psot_options_t options;
  iq_psot_options_init(&options);
  options.epochs = 3;
  float q1[2 * 16 * 16], q2[2 * 8 * 8], q4[2 * 16 * 16];
  bool ok = iq_psot_layer(&input, &options, NULL, NULL, q1, q2, q4, NULL, NULL);
  double start[2 * 16 * 16], learned[2 * 16 * 16];
  bool evaluated = ok && iq_random_hadamard(16, options.seed, start, NULL);
  for (size_t i = 0; i < 16 * 16; ++i) {
    start[16 * 16 + i] = start[i];
  }
  for (size_t i = 0; i < 2 * 16 * 16; ++i) {
    learned[i] = (double)q1[i];
  }
  /* Layer 0 is below aug_start, so every token weighs aug_token. */
  float *weights = malloc(rows * sizeof(float));
  IQ_ASSERT_NOT_NULL(weights);
  for (size_t r = 0; r < rows; ++r) {
    weights[r] = 30.0f;
  }
  double start_cost = 0.0, learned_cost = 0.0;
  evaluated = evaluated &&
              iq_psot_block_cost(x, rows, hidden, 2, start, weights, 2.0, true,
                                 &start_cost, NULL, NULL) &&
              iq_psot_block_cost(x, rows, hidden, 2, learned, weights, 2.0, true,
                                 &learned_cost, NULL, NULL);
  free(x);
  free(v);
  free(m);
  free(weights);
  IQ_ASSERT_TRUE(ok);
  IQ_ASSERT_TRUE(evaluated);
  printf("stage 1 cost at start %.4f, returned %.4f\n", start_cost, learned_cost);
  /* The final QR retraction moves the matrices by rounding error only. */
  IQ_ASSERT_TRUE(learned_cost <= start_cost * (1.0 + 1e-5));
}

IQ_TEST(psot_layer_rejects_bad_shapes) {
  float z[128] = {0}; /* large enough for both shapes below */
  iq_psot_layer_input_t input = {z, z, z, z, 2, 2, 16, 3, 2, 4, 0, NULL, NULL, NULL, NULL};
  iq_psot_options_t options;
  iq_psot_options_init(&options);
  float q[256];
  iq_error_t *error = NULL;
  IQ_ASSERT_FALSE(iq_psot_layer(&input, &options, NULL, NULL, q, q, q, NULL, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "3 query heads");
  iq_error_destroy(error);
  input.heads = 4;
  input.hidden = 20; /* blocks of 10: no Hadamard of that size */
  error = NULL;
  IQ_ASSERT_FALSE(iq_psot_layer(&input, &options, NULL, NULL, q, q, q, NULL, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "size 10");
  iq_error_destroy(error);
  input.hidden = 16;
  z[5] = NAN;
  error = NULL;
  IQ_ASSERT_FALSE(iq_psot_layer(&input, &options, NULL, NULL, q, q, q, NULL, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->where, "PSOT input X");
  IQ_ASSERT_CONTAINS(error->message, "row 0, column 5");
  iq_error_destroy(error);
}
