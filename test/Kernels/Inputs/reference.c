/* Scalar references of the W4A4 kernels, for tests only. They compute the
 * definition directly: y = (float)sum_k((a - za) * (w - zw)) * sa * sw,
 * in float32, left to right, with no folded zero-point sums. */
#include "reference.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* exp as the generated kernels compute it (iq_exp_f32_text in
 * lib/Conversion/Kernels.c): Cephes' expf polynomial with explicit fma
 * steps, so the result is the same bits. */
static float reference_exp(float x) {
  x = fminf(x, 88.0f);
  x = fmaxf(x, -87.0f);
  float n = floorf(x * 1.44269504088896341f + 0.5f);
  float r = fmaf(n, -0.693359375f, x);
  r = fmaf(n, 2.12194440e-4f, r);
  float z = r * r;
  float p = fmaf(1.9875691500e-4f, r, 1.3981999507e-3f);
  p = fmaf(p, r, 8.3334519073e-3f);
  p = fmaf(p, r, 4.1665795894e-2f);
  p = fmaf(p, r, 1.6666665459e-1f);
  p = fmaf(p, r, 5.0000001201e-1f);
  float y = fmaf(p, z, r) + 1.0f;
  int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

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

/* Walsh-Hadamard butterflies in Sylvester order, in the loop order of the
 * generated kernels, then the multiply by `scale`. */
static void reference_fwht(float *x, int64_t n, float scale) {
  for (int64_t h = 1; h < n; h *= 2)
    for (int64_t i = 0; i < n; i += 2 * h)
      for (int64_t j = i; j < i + h; ++j) {
        float a = x[j], b = x[j + h];
        x[j] = a + b;
        x[j + h] = a - b;
      }
  for (int64_t i = 0; i < n; ++i)
    x[i] *= scale;
}

/* The per-token rule with the range multiplied by `clip`, into packed
 * nibbles. */
static void reference_cache_row(const float *x, int64_t n, float clip, uint8_t *codes,
                                float *scale, float *zero) {
  float high = x[0], low = x[0];
  for (int64_t i = 1; i < n; ++i) {
    high = fmaxf(high, x[i]);
    low = fminf(low, x[i]);
  }
  high = fmaxf(high, 0.0f) * clip;
  low = fminf(low, 0.0f) * clip;
  if (high == 0.0f && low == 0.0f) {
    high = 1.0f;
    low = -1.0f;
  }
  float step = fmaxf((high - low) / 15.0f, 1e-8f);
  float z = nearbyintf(-low / step);
  for (int64_t i = 0; i < n; i += 2) {
    uint8_t c0 = (uint8_t)fminf(fmaxf(nearbyintf(x[i] / step) + z, 0.0f), 15.0f);
    uint8_t c1 = (uint8_t)fminf(fmaxf(nearbyintf(x[i + 1] / step) + z, 0.0f), 15.0f);
    codes[i / 2] = (uint8_t)(c0 | c1 << 4);
  }
  *scale = step;
  *zero = z;
}

void reference_kv_append(reference_cache_t *c, int64_t tokens, const float *k, const float *v) {
  float *work = malloc((size_t)c->head_dim * sizeof(float));
  float hscale = (float)(1.0 / sqrt((double)c->head_dim));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t g = 0; g < c->kv_heads; ++g) {
      int64_t slot = g * c->capacity + c->length + t;
      const float *kr = k + (t * c->kv_heads + g) * c->head_dim;
      const float *vr = v + (t * c->kv_heads + g) * c->head_dim;
      for (int64_t d = 0; d < c->head_dim; ++d)
        work[d] = kr[d];
      reference_fwht(work, c->head_dim, hscale);
      reference_cache_row(work, c->head_dim, c->k_clip, c->k_codes + slot * c->head_dim / 2,
                          &c->k_scale[slot], &c->k_zero[slot]);
      reference_cache_row(vr, c->head_dim, c->v_clip, c->v_codes + slot * c->head_dim / 2,
                          &c->v_scale[slot], &c->v_zero[slot]);
    }
  free(work);
  c->length += tokens;
}

void reference_attention(const reference_cache_t *c, int64_t tokens, int64_t heads,
                         const float *q, float *out) {
  int64_t hd = c->head_dim, position = c->length - tokens, group = heads / c->kv_heads;
  float scale = (float)(1.0 / sqrt((double)hd));
  float *work = malloc((size_t)(hd + c->length) * sizeof(float));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      int64_t g = h / group, keys = position + t + 1;
      const float *qr = q + (t * heads + h) * hd;
      float *o = out + (t * heads + h) * hd;
      for (int64_t d = 0; d < hd; ++d)
        work[d] = qr[d];
      reference_fwht(work, hd, scale);
      float qsum = 0.0f;
      for (int64_t d = 0; d < hd; ++d)
        qsum += work[d];
      float best = -INFINITY;
      for (int64_t j = 0; j < keys; ++j) {
        int64_t slot = g * c->capacity + j;
        const uint8_t *codes = c->k_codes + slot * hd / 2;
        /* As the kernels do: from hd = 32 on, sixteen partial sums over bytes
         * i = l mod 16, added in lane order; from hd = 16 on, eight partial
         * sums over bytes i = l mod 8, added pairwise. */
        float dot = 0.0f;
        if (hd / 2 >= 16) {
          float lane[16] = {0.0f};
          for (int64_t i = 0; i < hd / 2; ++i) {
            lane[i % 16] = lane[i % 16] + work[2 * i] * (float)(codes[i] & 15);
            lane[i % 16] = lane[i % 16] + work[2 * i + 1] * (float)(codes[i] >> 4);
          }
          for (int l = 0; l < 16; ++l)
            dot = dot + lane[l];
        } else if (hd / 2 >= 8) {
          float part[8] = {0.0f};
          for (int64_t i = 0; i < hd / 2; ++i) {
            part[i % 8] = part[i % 8] + work[2 * i] * (float)(codes[i] & 15);
            part[i % 8] = part[i % 8] + work[2 * i + 1] * (float)(codes[i] >> 4);
          }
          dot = ((part[0] + part[1]) + (part[2] + part[3])) +
                ((part[4] + part[5]) + (part[6] + part[7]));
        } else {
          for (int64_t i = 0; i < hd / 2; ++i) {
            dot = dot + work[2 * i] * (float)(codes[i] & 15);
            dot = dot + work[2 * i + 1] * (float)(codes[i] >> 4);
          }
        }
        float score = (c->k_scale[slot] * (dot - c->k_zero[slot] * qsum)) * scale;
        work[hd + j] = score;
        best = fmaxf(best, score);
      }
      float denominator = 0.0f;
      for (int64_t j = 0; j < keys; ++j) {
        float e = reference_exp(work[hd + j] - best);
        work[hd + j] = e;
        denominator += e;
      }
      for (int64_t d = 0; d < hd; ++d)
        o[d] = 0.0f;
      for (int64_t j = 0; j < keys; ++j) {
        int64_t slot = g * c->capacity + j;
        const uint8_t *codes = c->v_codes + slot * hd / 2;
        float weight = work[hd + j] / denominator * c->v_scale[slot];
        for (int64_t i = 0; i < hd / 2; ++i) {
          o[2 * i] += weight * ((float)(codes[i] & 15) - c->v_zero[slot]);
          o[2 * i + 1] += weight * ((float)(codes[i] >> 4) - c->v_zero[slot]);
        }
      }
    }
  free(work);
}
