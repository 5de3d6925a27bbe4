/* Scalar references of the W4A4 kernels (tests only). */
#ifndef IQ_TEST_KERNELS_REFERENCE_H
#define IQ_TEST_KERNELS_REFERENCE_H

#include <stdint.h>

/* y[m][n] from activation codes a[m][k] (za, sa per row) and weight codes
 * w[n][k] (zw, sw per row). */
void reference_matmul(int64_t m, int64_t n, int64_t k, const uint8_t *a, const uint8_t *za,
                      const float *sa, const uint8_t *w, const uint8_t *zw, const float *sw,
                      float *y);

/* The per-token quantizer of iqk_activations_quantize. */
void reference_quantize_row(const float *x, int64_t k, uint8_t *codes, uint8_t *zero,
                            float *scale);

/* An int4 KV cache in the layout of iqk_kv_cache_t. */
typedef struct reference_cache {
  int64_t kv_heads, head_dim, capacity, length;
  uint8_t *k_codes, *v_codes;
  float *k_scale, *k_zero, *v_scale, *v_zero;
  float k_clip, v_clip;
} reference_cache_t;

/* iqk_kv_cache_append and iqk_attention as scalar loops in the kernels'
 * order of float operations. */
void reference_kv_append(reference_cache_t *cache, int64_t tokens, const float *k, const float *v);
void reference_attention(const reference_cache_t *cache, int64_t tokens, int64_t heads,
                         const float *q, float *out);

#endif /* IQ_TEST_KERNELS_REFERENCE_H */
