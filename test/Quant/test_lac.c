/* LAC of lib/Quant: the straight-through loss, and learned clip factors
 * that lower the output error of a linear layer on heavy-tailed inputs. */
#include "iq/quant.h"
#include "iq_test.h"

#include <math.h>
#include <stdlib.h>

static uint64_t lac_state;

static double lac_uniform(void) {
  lac_state += 0x9e3779b97f4a7c15ull;
  uint64_t z = lac_state;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return ((double)(z >> 11) + 0.5) / 9007199254740992.0;
}

static double lac_normal(void) {
  return sqrt(-2.0 * log(lac_uniform())) * cos(6.283185307179586 * lac_uniform());
}

/* Student t with 2 degrees of freedom: rare large values that a clip
 * should cut. */
static double lac_heavy(void) {
  double a = lac_normal(), b = lac_normal();
  return lac_normal() / sqrt((a * a + b * b) / 2.0);
}

IQ_TEST(lac_loss_zero_on_exact_grid) {
  /* Row 0..15 with f = 1: s = 1, z = 0, every value is a code. */
  float x[16], w[16];
  for (size_t i = 0; i < 16; ++i) {
    x[i] = (float)i;
    w[i] = 1.0f;
  }
  iq_lac_options_t options;
  iq_lac_options_init(&options);
  double one = 1.0, loss, grad_max, grad_min;
  IQ_ASSERT_TRUE(iq_lac_loss(x, 1, w, 1, 16, &options, &one, &one, &loss, &grad_max,
                             &grad_min, NULL));
  IQ_ASSERT_TRUE(loss == 0.0);
  /* Clip 0.9 on [0, 15]: s = 0.9 and 15 saturates at 13.5. */
  double clip = 0.9;
  IQ_ASSERT_TRUE(iq_lac_loss(x, 1, w, 1, 16, &options, &clip, &clip, &loss, NULL, NULL, NULL));
  IQ_ASSERT_TRUE(loss > 0.0);
}

IQ_TEST(lac_learns_clip_that_lowers_error) {
  enum { rows = 2048, in = 64, out = 32 };
  lac_state = 17;
  float *x = malloc(rows * in * sizeof(float));
  float *w = malloc(out * in * sizeof(float));
  IQ_ASSERT_NOT_NULL(x);
  IQ_ASSERT_NOT_NULL(w);
  /* Gaussian rows with one large value each: clipping it buys a finer
   * step for the other 63. */
  for (size_t i = 0; i < rows * in; ++i) {
    x[i] = (float)lac_normal();
  }
  for (size_t r = 0; r < rows; ++r) {
    size_t column = (size_t)(lac_uniform() * in);
    x[r * in + column] = lac_uniform() < 0.5 ? -12.0f : 12.0f;
  }
  for (size_t i = 0; i < out * in; ++i) {
    w[i] = (float)(0.1 * lac_normal());
  }
  iq_lac_options_t options;
  iq_lac_options_init(&options);
  options.batch_rows = 64; /* 32 steps per epoch, as the reference takes */
  double f_max, f_min, history[5];
  bool ok = iq_lac_learn(x, rows, w, out, in, &options, &f_max, &f_min, history, NULL);
  double start = 0.95, none = 1.0, loss_start = 0, loss_none = 0, loss_learned = 0;
  ok = ok &&
       iq_lac_loss(x, rows, w, out, in, &options, &start, &start, &loss_start, NULL, NULL, NULL) &&
       iq_lac_loss(x, rows, w, out, in, &options, &none, &none, &loss_none, NULL, NULL, NULL) &&
       iq_lac_loss(x, rows, w, out, in, &options, &f_max, &f_min, &loss_learned, NULL, NULL, NULL);
  free(x);
  free(w);
  IQ_ASSERT_TRUE(ok);
  printf("lac f_max %.4f f_min %.4f, loss %.5f (f = 0.95: %.5f, no clip: %.5f)\n", f_max,
         f_min, loss_learned, loss_start, loss_none);
  IQ_ASSERT_TRUE(f_max > 0.5 && f_max < 1.0);
  IQ_ASSERT_TRUE(f_min > 0.5 && f_min < 1.0);
  IQ_ASSERT_TRUE(loss_learned < loss_start);
  IQ_ASSERT_TRUE(loss_learned < loss_none);
  IQ_ASSERT_TRUE(history[4] < history[0]);
}

IQ_TEST(lac_groupwise_learns_one_pair_per_group) {
  enum { rows = 512, in = 32, out = 8, group = 8 };
  lac_state = 5;
  float *x = malloc(rows * in * sizeof(float));
  float *w = malloc(out * in * sizeof(float));
  IQ_ASSERT_NOT_NULL(x);
  IQ_ASSERT_NOT_NULL(w);
  for (size_t i = 0; i < rows * in; ++i) {
    /* Group 0 is Gaussian, the others heavy-tailed. */
    x[i] = (float)((i % in) < group ? lac_normal() : lac_heavy());
  }
  for (size_t i = 0; i < out * in; ++i) {
    w[i] = (float)(0.1 * lac_normal());
  }
  iq_lac_options_t options;
  iq_lac_options_init(&options);
  options.group_size = group;
  options.batch_rows = 128;
  double f_max[4], f_min[4];
  bool ok = iq_lac_learn(x, rows, w, out, in, &options, f_max, f_min, NULL, NULL);
  double start[4] = {0.95, 0.95, 0.95, 0.95}, loss_start = 0, loss_learned = 0;
  ok = ok &&
       iq_lac_loss(x, rows, w, out, in, &options, start, start, &loss_start, NULL, NULL, NULL) &&
       iq_lac_loss(x, rows, w, out, in, &options, f_max, f_min, &loss_learned, NULL, NULL, NULL);
  free(x);
  free(w);
  IQ_ASSERT_TRUE(ok);
  printf("lac group f_max %.3f %.3f %.3f %.3f, loss %.5f (start %.5f)\n", f_max[0], f_max[1],
         f_max[2], f_max[3], loss_learned, loss_start);
  IQ_ASSERT_TRUE(loss_learned < loss_start);
  IQ_ASSERT_TRUE(f_max[0] != f_max[1]);
}

IQ_TEST(lac_rejects_bad_arguments) {
  float x[8] = {0}, w[8] = {0};
  iq_lac_options_t options;
  iq_lac_options_init(&options);
  options.group_size = 3;
  double f[4] = {1, 1, 1, 1}, loss;
  iq_error_t *error = NULL;
  IQ_ASSERT_FALSE(iq_lac_loss(x, 1, w, 1, 8, &options, f, f, &loss, NULL, NULL, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "group size 3");
  iq_error_destroy(error);
  options.group_size = 0;
  options.init_clip = 0.4;
  error = NULL;
  IQ_ASSERT_FALSE(iq_lac_learn(x, 1, w, 1, 8, &options, f, f, NULL, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "init clip 0.4");
  iq_error_destroy(error);
}
