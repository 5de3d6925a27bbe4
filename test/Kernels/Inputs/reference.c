/* Scalar references of the W4A4 kernels, for tests only. They compute the
 * definition directly: y = (float)sum_k((a - za) * (w - zw)) * sa * sw,
 * in float32, left to right, with no folded zero-point sums. */
#include "reference.h"

#include <math.h>

void reference_matmul(int64_t m, int64_t n, int64_t k, const uint8_t *a, const uint8_t *za,
                      const float *sa, const uint8_t *w, const uint8_t *zw, const float *sw,
                      float *y) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      int64_t sum = 0;
      for (int64_t t = 0; t < k; ++t)
        sum += ((int64_t)a[i * k + t] - za[i]) * ((int64_t)w[j * k + t] - zw[j]);
      float value = (float)(int32_t)sum * sa[i];
      value = value * sw[j];
      y[i * n + j] = value;
    }
}

void reference_quantize_row(const float *x, int64_t k, uint8_t *codes, uint8_t *zero,
                            float *scale) {
  float low = 0.0f, high = 0.0f;
  for (int64_t i = 0; i < k; ++i) {
    if (x[i] < low)
      low = x[i];
    if (x[i] > high)
      high = x[i];
  }
  if (low == 0.0f && high == 0.0f) {
    low = -1.0f;
    high = 1.0f;
  }
  float step = fmaxf((high - low) / 15.0f, 1e-8f);
  float z = nearbyintf(-low / step);
  z = fminf(fmaxf(z, 0.0f), 15.0f);
  for (int64_t i = 0; i < k; ++i)
    codes[i] = (uint8_t)fminf(fmaxf(nearbyintf(x[i] / step) + z, 0.0f), 15.0f);
  *zero = (uint8_t)z;
  *scale = step;
}
