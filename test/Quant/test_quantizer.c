/* Activation and weight quantizers of lib/Quant on hand-computed cases.
 * The inputs are chosen so that x / s is exact in float32. */
#include "iq/quant.h"
#include "iq_test.h"

#include <math.h>
#include <stdlib.h>

IQ_TEST(per_token_exact_grid) {
  const float x[4] = {0.0f, 1.0f, 2.0f, 3.0f};
  uint8_t codes[4];
  float scale, zero, out[4];
  IQ_ASSERT_TRUE(iq_quantize_per_token(x, 1, 4, 4, 1.0f, 1.0f, codes, &scale,
                                       &zero, out, NULL));
  IQ_ASSERT_TRUE(scale == 3.0f / 15.0f);
  IQ_ASSERT_TRUE(zero == 0.0f);
  IQ_ASSERT_EQ_UINT(codes[0], 0);
  IQ_ASSERT_EQ_UINT(codes[1], 5);
  IQ_ASSERT_EQ_UINT(codes[2], 10);
  IQ_ASSERT_EQ_UINT(codes[3], 15);
  IQ_ASSERT_TRUE(fabsf(out[3] - 3.0f) < 1e-6f);
}

IQ_TEST(per_token_rounds_half_to_even) {
  /* Range [0, 15] gives s = 1 exactly. */
  const float x[5] = {15.0f, 0.5f, 1.5f, 2.5f, 3.5f};
  uint8_t codes[5];
  IQ_ASSERT_TRUE(iq_quantize_per_token(x, 1, 5, 4, 1.0f, 1.0f, codes, NULL,
                                       NULL, NULL, NULL));
  IQ_ASSERT_EQ_UINT(codes[1], 0);
  IQ_ASSERT_EQ_UINT(codes[2], 2);
  IQ_ASSERT_EQ_UINT(codes[3], 2);
  IQ_ASSERT_EQ_UINT(codes[4], 4);
}

IQ_TEST(per_token_range_includes_zero) {
  const float positive[3] = {2.0f, 4.0f, 5.0f};
  float scale, zero;
  IQ_ASSERT_TRUE(iq_quantize_per_token(positive, 1, 3, 4, 1.0f, 1.0f, NULL,
                                       &scale, &zero, NULL, NULL));
  IQ_ASSERT_TRUE(scale == 5.0f / 15.0f);
  IQ_ASSERT_TRUE(zero == 0.0f);

  /* Range [-15, 0]: s = 1, z = 15; -7.5 rounds to -8, -6.5 to -6. */
  const float negative[4] = {-15.0f, -7.5f, -6.5f, 0.0f};
  uint8_t codes[4];
  float out[4];
  IQ_ASSERT_TRUE(iq_quantize_per_token(negative, 1, 4, 4, 1.0f, 1.0f, codes,
                                       &scale, &zero, out, NULL));
  IQ_ASSERT_TRUE(scale == 1.0f);
  IQ_ASSERT_TRUE(zero == 15.0f);
  IQ_ASSERT_EQ_UINT(codes[0], 0);
  IQ_ASSERT_EQ_UINT(codes[1], 7);
  IQ_ASSERT_EQ_UINT(codes[2], 9);
  IQ_ASSERT_EQ_UINT(codes[3], 15);
  IQ_ASSERT_TRUE(out[1] == -8.0f);
  IQ_ASSERT_TRUE(out[3] == 0.0f);
}

IQ_TEST(per_token_all_zero_row_resets) {
  const float x[6] = {0, 0, 0, 1, 2, 3};
  uint8_t codes[6];
  float scales[2], zeros[2], out[6];
  IQ_ASSERT_TRUE(iq_quantize_per_token(x, 2, 3, 4, 0.9f, 0.9f, codes, scales,
                                       zeros, out, NULL));
  /* Range [-1, 1]: s = 2/15 rounds up in float32, so 1/s = 7.4999996
   * and z = 7, as in PyTorch's float32 arithmetic. */
  IQ_ASSERT_TRUE(scales[0] == 2.0f / 15.0f);
  IQ_ASSERT_TRUE(zeros[0] == 7.0f);
  IQ_ASSERT_EQ_UINT(codes[0], 7);
  IQ_ASSERT_TRUE(out[0] == 0.0f);
  IQ_ASSERT_TRUE(fabsf(scales[1] - 0.9f * 3.0f / 15.0f) < 1e-7f);
}

IQ_TEST(per_token_clip_saturates) {
  /* Clip 0.9 on [0, 10]: s = 0.6, and 10 / 0.6 rounds past 15. */
  const float x[2] = {0.0f, 10.0f};
  uint8_t codes[2];
  float scale, out[2];
  IQ_ASSERT_TRUE(iq_quantize_per_token(x, 1, 2, 4, 0.9f, 0.9f, codes, &scale,
                                       NULL, out, NULL));
  IQ_ASSERT_TRUE(fabsf(scale - 0.6f) < 1e-7f);
  IQ_ASSERT_EQ_UINT(codes[1], 15);
  IQ_ASSERT_TRUE(fabsf(out[1] - 9.0f) < 1e-5f);
}

IQ_TEST(per_token_tiny_range_uses_eps) {
  const float x[2] = {1e-9f, 0.0f};
  float scale;
  uint8_t codes[2];
  IQ_ASSERT_TRUE(iq_quantize_per_token(x, 1, 2, 4, 1.0f, 1.0f, codes, &scale,
                                       NULL, NULL, NULL));
  IQ_ASSERT_TRUE(scale == 1e-8f);
  IQ_ASSERT_EQ_UINT(codes[0], 0);
}

IQ_TEST(quantizer_rejects_bad_arguments) {
  const float x[4] = {0};
  iq_error_t *error = NULL;
  IQ_ASSERT_FALSE(iq_quantize_per_token(x, 1, 4, 0, 1.0f, 1.0f, NULL, NULL,
                                        NULL, NULL, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "bit width 0");
  iq_error_destroy(error);
  error = NULL;
  IQ_ASSERT_FALSE(iq_quantize_per_token(x, 1, 4, 4, 1.5f, 1.0f, NULL, NULL,
                                        NULL, NULL, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "clip");
  iq_error_destroy(error);
  error = NULL;
  IQ_ASSERT_FALSE(iq_quantize_groupwise(x, 1, 4, 3, 4, 1.0f, 1.0f, NULL, NULL,
                                        NULL, NULL, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "group size 3");
  iq_error_destroy(error);
}

IQ_TEST(groupwise_uses_raw_range) {
  /* Group 0: [3, 18] gives s = 1, z = -3, so 0 is outside the range.
   * Group 1: all zeros, reset to [-1, 1]. */
  const float x[8] = {3.0f, 4.5f, 6.0f, 18.0f, 0, 0, 0, 0};
  uint8_t codes[8];
  float scales[2], zeros[2], out[8];
  IQ_ASSERT_TRUE(iq_quantize_groupwise(x, 1, 8, 4, 4, 1.0f, 1.0f, codes,
                                       scales, zeros, out, NULL));
  IQ_ASSERT_TRUE(scales[0] == 1.0f);
  IQ_ASSERT_TRUE(zeros[0] == -3.0f);
  IQ_ASSERT_EQ_UINT(codes[0], 0);
  IQ_ASSERT_EQ_UINT(codes[1], 1);
  IQ_ASSERT_EQ_UINT(codes[2], 3);
  IQ_ASSERT_EQ_UINT(codes[3], 15);
  IQ_ASSERT_TRUE(out[1] == 4.0f);
  IQ_ASSERT_TRUE(scales[1] == 2.0f / 15.0f);
  IQ_ASSERT_TRUE(zeros[1] == 7.0f);
}

IQ_TEST(groupwise_tiny_range_uses_eps) {
  const float x[2] = {2e-7f, 0.0f};
  float scale;
  IQ_ASSERT_TRUE(iq_quantize_groupwise(x, 1, 2, 2, 4, 1.0f, 1.0f, NULL, &scale,
                                       NULL, NULL, NULL));
  IQ_ASSERT_TRUE(scale == 1e-6f);
}

IQ_TEST(weight_rtn_without_clip_search) {
  const float w[3] = {-1.0f, 0.5f, 1.0f};
  iq_weight_quant_options_t options;
  iq_weight_quant_options_init(&options);
  options.mse_clip = false;
  uint8_t codes[3];
  float scale, zero, out[3];
  IQ_ASSERT_TRUE(iq_quantize_weight_rtn(w, 1, 3, &options, codes, &scale, &zero,
                                        out, NULL));
  /* s = 2/15 (float32, slightly above), z = round(7.4999996) = 7, and
   * 1/s rounds to 7, so +1 lands on code 14. */
  IQ_ASSERT_TRUE(scale == 2.0f / 15.0f);
  IQ_ASSERT_TRUE(zero == 7.0f);
  IQ_ASSERT_EQ_UINT(codes[0], 0);
  IQ_ASSERT_EQ_UINT(codes[1], 11);
  IQ_ASSERT_EQ_UINT(codes[2], 14);
  IQ_ASSERT_TRUE(out[2] == scale * 7.0f);
}

IQ_TEST(weight_symmetric_zero_is_midpoint) {
  const float w[3] = {-0.25f, 0.5f, 1.0f};
  iq_weight_quant_options_t options;
  iq_weight_quant_options_init(&options);
  options.symmetric = true;
  options.mse_clip = false;
  float scale, zero;
  uint8_t codes[3];
  IQ_ASSERT_TRUE(iq_quantize_weight_rtn(w, 1, 3, &options, codes, &scale, &zero,
                                        NULL, NULL));
  IQ_ASSERT_TRUE(scale == 2.0f / 15.0f);
  IQ_ASSERT_TRUE(zero == 8.0f);
  IQ_ASSERT_EQ_UINT(codes[2], 15);
}

/* Sum |QDQ(w) - w|^2.4 of a row under (s, z), as the search defines it. */
static double clip_error(const float *w, size_t n, float s, float z) {
  double total = 0.0;
  for (size_t i = 0; i < n; ++i) {
    float v;
    iq_quantize_value(w[i], s, z, 15, &v);
    total += pow(fabs((double)v - (double)w[i]), 2.4);
  }
  return total;
}

IQ_TEST(weight_mse_search_is_true_int4_minimum) {
  enum { n = 64 };
  float w[n];
  for (size_t i = 0; i < n; ++i) {
    w[i] = 0.05f * sinf((float)i * 1.7f) + 0.02f * cosf((float)i * 0.3f);
  }
  w[5] = 0.9f; /* one outlier makes a shrunk range better */
  iq_weight_quant_options_t options;
  iq_weight_quant_options_init(&options);
  uint8_t codes[n];
  float scale, zero, out[n];
  IQ_ASSERT_TRUE(iq_quantize_weight_rtn(w, 1, n, &options, codes, &scale, &zero,
                                        out, NULL));
  double chosen = clip_error(w, n, scale, zero);
  float xmin = 0.0f, xmax = 0.0f;
  for (size_t i = 0; i < n; ++i) {
    xmin = fminf(xmin, w[i]);
    xmax = fmaxf(xmax, w[i]);
  }
  IQ_ASSERT_TRUE(scale < (xmax - xmin) / 15.0f);
  for (int k = 0; k < 80; ++k) {
    float p = 1.0f - (float)k / 100.0f;
    float s = (p * xmax - p * xmin) / 15.0f;
    float z = rintf(-(p * xmin) / s);
    if (clip_error(w, n, s, z) < chosen) {
      iq_test_fail(__FILE__, __LINE__, "shrink %g beats the chosen range", (double)p);
      return;
    }
  }
  for (size_t i = 0; i < n; ++i) {
    IQ_ASSERT_TRUE(codes[i] <= 15);
    IQ_ASSERT_TRUE(out[i] == scale * ((float)codes[i] - zero));
  }
  IQ_ASSERT_TRUE(zero >= 0.0f && zero <= 15.0f);
}

IQ_TEST(weight_all_zero_row_stays_zero) {
  const float w[4] = {0, 0, 0, 0};
  iq_weight_quant_options_t options;
  iq_weight_quant_options_init(&options);
  float out[4], scale, zero;
  IQ_ASSERT_TRUE(iq_quantize_weight_rtn(w, 1, 4, &options, NULL, &scale, &zero,
                                        out, NULL));
  for (size_t i = 0; i < 4; ++i) {
    IQ_ASSERT_TRUE(out[i] == 0.0f);
  }
}

IQ_TEST(quantizers_reject_non_finite_values) {
  const float x[4] = {1.0f, NAN, 0.0f, 2.0f};
  iq_error_t *error = NULL;
  IQ_ASSERT_FALSE(iq_quantize_per_token(x, 2, 2, 4, 1.0f, 1.0f, NULL, NULL,
                                        NULL, NULL, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "row 0, column 1 is nan");
  iq_error_destroy(error);
  error = NULL;
  IQ_ASSERT_FALSE(iq_quantize_groupwise(x, 1, 4, 2, 4, 1.0f, 1.0f, NULL, NULL,
                                        NULL, NULL, &error));
  IQ_ASSERT_NOT_NULL(error);
  iq_error_destroy(error);
  iq_weight_quant_options_t options;
  iq_weight_quant_options_init(&options);
  const float w[2] = {INFINITY, 1.0f};
  error = NULL;
  IQ_ASSERT_FALSE(iq_quantize_weight_rtn(w, 1, 2, &options, NULL, NULL, NULL,
                                         NULL, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "inf");
  iq_error_destroy(error);
}
