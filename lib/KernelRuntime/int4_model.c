/* The int4 linear layer of a compiled model (iq/int4_model.h): the
 * emitted forward code calls iq_int4_linear with the packed weight tensor
 * from the weight store, and this file quantizes the activation rows and
 * runs iqk_matmul. It is archived with the kernel runtime, so only
 * libraries that contain the kernels link it. */
#include "iq/int4_model.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>

#include "iq/iq_kernels.h"

static _Thread_local char pending_error[600];
static _Thread_local bool has_error;

/* The kernel thread pool runs one task at a time, so calls from sessions
 * on different threads take turns. */
static pthread_mutex_t kernel_lock = PTHREAD_MUTEX_INITIALIZER;

static void record_error(const char *what) {
  if (has_error)
    return;
  snprintf(pending_error, sizeof pending_error, "%s: %s", what, iqk_last_error());
  has_error = true;
}

const char *iq_int4_take_error(void) {
  if (!has_error)
    return NULL;
  has_error = false;
  return pending_error;
}

void iq_int4_linear(const uint8_t *packed, int64_t n, int64_t k, const float *x, int64_t m,
                    float *y, int64_t hadamard, float clip) {
  int64_t rows = iq_int4_padded_rows(n);
  int64_t code_bytes = iq_int4_code_bytes(n, k);
  /* The weight store maps the tensor read-only; the kernels only read it. */
  iqk_weights_t weights = {
      .n = n,
      .k = k,
      .blocks = (k + IQK_BLOCK_K - 1) / IQK_BLOCK_K,
      .groups = rows / IQK_GROUP_ROWS,
      .codes = (uint8_t *)packed,
      .zero = (int32_t *)(void *)(packed + code_bytes),
      .sum = (int32_t *)(void *)(packed + code_bytes + 4 * rows),
      .scale = (float *)(void *)(packed + code_bytes + 8 * rows),
  };

  iqk_activations_t *activations = iqk_activations_create(m, k);
  if (!activations || iqk_activations_set_clip(activations, clip) != 0) {
    record_error("iq_int4_linear");
    iqk_activations_free(activations);
    return;
  }
  pthread_mutex_lock(&kernel_lock);
  int status = hadamard ? iqk_activations_quantize_hadamard(activations, m, x)
                        : iqk_activations_quantize(activations, m, x);
  if (status == 0)
    status = iqk_matmul(&weights, activations, y);
  pthread_mutex_unlock(&kernel_lock);
  if (status != 0)
    record_error("iq_int4_linear");
  iqk_activations_free(activations);
}

void iq_int4_attention(void *cache, const float *q, const float *k, const float *v,
                       const int64_t *positions, int64_t tokens, int64_t heads, float k_clip,
                       float v_clip, int64_t v_group_range, float *out) {
  iqk_kv_cache_t *kv = cache;
  if (positions[0] < 0 || positions[0] > kv->length) {
    snprintf(pending_error, sizeof pending_error,
             "iq_int4_attention: position %lld does not continue the KV cache of %lld positions",
             (long long)positions[0], (long long)kv->length);
    has_error = true;
    return;
  }
  pthread_mutex_lock(&kernel_lock);
  int status = iqk_kv_cache_truncate(kv, positions[0]);
  if (status == 0)
    status = iqk_kv_cache_set_clip(kv, k_clip, v_clip);
  if (status == 0)
    status = iqk_kv_cache_set_v_group_range(kv, (int)v_group_range);
  if (status == 0)
    status = iqk_kv_cache_append(kv, tokens, k, v);
  if (status == 0)
    status = iqk_attention(kv, tokens, heads, q, out);
  pthread_mutex_unlock(&kernel_lock);
  if (status != 0)
    record_error("iq_int4_attention");
}
