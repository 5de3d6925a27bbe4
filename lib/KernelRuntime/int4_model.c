/* The int4 linear layer of a compiled model (iq/int4_model.h): the
 * emitted forward code calls iq_int4_linear with the packed weight tensor
 * from the weight store, and this file quantizes the activation rows and
 * runs iqk_matmul. It is archived with the kernel runtime, so only
 * libraries that contain the kernels link it. */
#include "iq/int4_model.h"

#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Scratch memory of the grouped and 8-bit linears, reused between calls
 * and guarded by kernel_lock. */
static struct {
  iqk_activations_t *activations;
  uint8_t *codes, *zero_codes; /* zero_codes: all 0 */
  float *y, *scale, *ones;      /* ones: all 1 */
  int32_t *zero, *sum;
  size_t codes_size, y_size, row_size, plain_size;
} scratch;

/* Frees the scratch memory when the library unloads or the program exits. */
__attribute__((destructor)) static void free_scratch(void) {
  iqk_activations_free(scratch.activations);
  free(scratch.codes);
  free(scratch.zero_codes);
  free(scratch.y);
  free(scratch.scale);
  free(scratch.ones);
  free(scratch.zero);
  free(scratch.sum);
  memset(&scratch, 0, sizeof scratch);
}

static bool grow(void **buffer, size_t *size, size_t need, size_t element) {
  if (*size >= need)
    return true;
  void *larger = realloc(*buffer, need * element);
  if (!larger)
    return false;
  *buffer = larger;
  *size = need;
  return true;
}

/* Makes the scratch hold `rows` activation rows of width k (codes and the
 * kernel's activation buffer), `outputs` floats of kernel output and
 * `params` quantization parameters of each kind. */
static bool reserve_scratch(int64_t rows, int64_t k, size_t outputs, size_t params,
                            const char *what) {
  size_t row_size = scratch.row_size;
  bool ok = grow((void **)&scratch.codes, &scratch.codes_size, (size_t)(rows * k), 1) &&
            grow((void **)&scratch.y, &scratch.y_size, outputs, sizeof(float));
  if (ok && row_size < params) {
    size_t zero_size = row_size, sum_size = row_size;
    ok = grow((void **)&scratch.scale, &row_size, params, sizeof(float)) &&
         grow((void **)&scratch.zero, &zero_size, params, sizeof(int32_t)) &&
         grow((void **)&scratch.sum, &sum_size, params, sizeof(int32_t));
    if (ok)
      scratch.row_size = params;
  }
  if (ok && scratch.plain_size < (size_t)rows) {
    size_t ones_size = scratch.plain_size;
    ok = grow((void **)&scratch.zero_codes, &scratch.plain_size, (size_t)rows, 1) &&
         grow((void **)&scratch.ones, &ones_size, (size_t)rows, sizeof(float));
    if (ok) {
      memset(scratch.zero_codes, 0, (size_t)rows);
      for (int64_t i = 0; i < rows; ++i)
        scratch.ones[i] = 1.0f;
    } else {
      scratch.plain_size = 0;
    }
  }
  if (ok && (!scratch.activations || scratch.activations->capacity < rows ||
             scratch.activations->k != k)) {
    iqk_activations_free(scratch.activations);
    scratch.activations = iqk_activations_create(rows, k);
    ok = scratch.activations != NULL;
  }
  if (!ok) {
    snprintf(pending_error, sizeof pending_error, "%s: out of memory for %lld rows of width %lld",
             what, (long long)rows, (long long)k);
    has_error = true;
  }
  return ok;
}

/* Quantizes count values with the rule of the fake-quantization kernels
 * (QuantKernels.c): the span's min and max, widened to contain 0 when
 * include_zero, times clip, s = max(range / maxq, eps), z = roundeven(-lo /
 * s), code = clamp(roundeven(x / s) + z, 0, maxq). Returns the code sum. */
static int32_t quantize_span(const float *x, int64_t count, bool include_zero, float clip,
                             float maxq, float eps, uint8_t *codes, float *scale, int32_t *zero) {
  float high = x[0], low = x[0];
  for (int64_t i = 1; i < count; ++i) {
    high = fmaxf(high, x[i]);
    low = fminf(low, x[i]);
  }
  if (include_zero) {
    high = fmaxf(high, 0.0f);
    low = fminf(low, 0.0f);
  } else {
    high += 0.0f;
    low += 0.0f;
  }
  high *= clip;
  low *= clip;
  if (high == 0.0f && low == 0.0f) {
    high = 1.0f;
    low = -1.0f;
  }
  float s = fmaxf((high - low) / maxq, eps);
  float z = rintf(-low / s);
  int32_t sum = 0;
  for (int64_t i = 0; i < count; ++i) {
    float code = fminf(fmaxf(rintf(x[i] / s) + z, 0.0f), maxq);
    codes[i] = (uint8_t)code;
    sum += codes[i];
  }
  *scale = s;
  *zero = (int32_t)z;
  return sum;
}

/* Stores the first `rows` rows of scratch.codes as kernel activations
 * with zero points 0 and scales 1, so the kernels return integer dot
 * products. */
static int set_plain_rows(int64_t rows) {
  return iqk_activations_set_codes(scratch.activations, rows, scratch.codes, scratch.zero_codes,
                                   scratch.ones);
}

/* Weights in the plain packed layout at `packed`, for the kernels. */
static iqk_weights_t packed_weights(const uint8_t *packed, int64_t n, int64_t k,
                                    const int32_t *zero, const int32_t *sum, const float *scale) {
  return (iqk_weights_t){
      .n = n,
      .k = k,
      .blocks = (k + IQK_BLOCK_K - 1) / IQK_BLOCK_K,
      .groups = iq_int4_padded_rows(n) / IQK_GROUP_ROWS,
      .codes = (uint8_t *)packed,
      .zero = (int32_t *)zero,
      .sum = (int32_t *)sum,
      .scale = (float *)scale,
  };
}

/* Tokens per kernel call of the grouped and 8-bit linears, which bounds
 * their scratch memory. */
#define TOKENS_PER_CALL 16

void iq_int4_linear_grouped(const uint8_t *packed, int64_t n, int64_t k, int64_t group,
                            const float *x, int64_t m, float *y, float clip) {
  /* The kernels' float results are exact integers while below 2^24. */
  if (group < 1 || k % group != 0 || group * 225 >= (INT64_C(1) << 24)) {
    snprintf(pending_error, sizeof pending_error,
             "iq_int4_linear_grouped: group size %lld does not divide K = %lld or exceeds 74565",
             (long long)group, (long long)k);
    has_error = true;
    return;
  }
  int64_t rows = iq_int4_padded_rows(n), groups = k / group;
  int64_t slice_bytes = iq_int4_packed_bytes(n, group);
  const int32_t *weight_zero = (const int32_t *)(const void *)(packed + groups * slice_bytes);
  const float *weight_scale = (const float *)(const void *)(weight_zero + rows);

  pthread_mutex_lock(&kernel_lock);
  int64_t chunk = m < TOKENS_PER_CALL ? m : TOKENS_PER_CALL;
  /* Scratch y: the kernel output [chunk][n], then the double sums. */
  int status = reserve_scratch(chunk, group, (size_t)(3 * chunk * n + 2), (size_t)chunk,
                               "iq_int4_linear_grouped")
                   ? 0
                   : 1;
  for (int64_t first = 0; status == 0 && first < m; first += chunk) {
    int64_t tokens = m - first < chunk ? m - first : chunk;
    float *out = scratch.y;
    double *total = (double *)(void *)(scratch.y + (chunk * n + 1) / 2 * 2);
    memset(total, 0, (size_t)(tokens * n) * sizeof *total);
    for (int64_t g = 0; status == 0 && g < groups; ++g) {
      const uint8_t *slice = packed + g * slice_bytes;
      const int32_t *slice_zero = (const int32_t *)(const void *)(slice + iq_int4_code_bytes(n, group));
      const int32_t *slice_sum = slice_zero + rows;
      iqk_weights_t weights = packed_weights(slice, n, group, slice_zero, slice_sum,
                                             (const float *)(const void *)(slice_sum + rows));
      for (int64_t t = 0; t < tokens; ++t)
        scratch.sum[t] = quantize_span(x + (first + t) * k + g * group, group, false, clip, 15.0f,
                                       1e-6f, scratch.codes + t * group, &scratch.scale[t],
                                       &scratch.zero[t]);
      status = set_plain_rows(tokens);
      if (status == 0)
        status = iqk_matmul(&weights, scratch.activations, out);
      for (int64_t t = 0; status == 0 && t < tokens; ++t) {
        int64_t za = scratch.zero[t], asum = scratch.sum[t];
        double sa = (double)scratch.scale[t];
        for (int64_t j = 0; j < n; ++j) {
          int64_t zw = weight_zero[j];
          int64_t integer = (int64_t)out[t * n + j] - zw * asum - za * slice_sum[j] + group * za * zw;
          total[t * n + j] += sa * (double)integer;
        }
      }
    }
    for (int64_t t = 0; status == 0 && t < tokens; ++t)
      for (int64_t j = 0; j < n; ++j)
        y[(first + t) * n + j] = (float)(total[t * n + j] * (double)weight_scale[j]);
  }
  pthread_mutex_unlock(&kernel_lock);
  if (status < 0)
    record_error("iq_int4_linear_grouped");
}

void iq_int8_linear(const uint8_t *packed, int64_t n, int64_t k, const float *x, int64_t m,
                    float *y, float clip) {
  if (k * 225 >= (INT64_C(1) << 24)) {
    snprintf(pending_error, sizeof pending_error,
             "iq_int8_linear: K = %lld exceeds 74565, where the split products stop being exact",
             (long long)k);
    has_error = true;
    return;
  }
  int64_t rows = iq_int4_padded_rows(n), plain = iq_int4_packed_bytes(n, k);
  int64_t code_bytes = iq_int4_code_bytes(n, k);
  const uint8_t *halves[2] = {packed, packed + plain};
  iqk_weights_t weights[2];
  for (int h = 0; h < 2; ++h) {
    const int32_t *zero = (const int32_t *)(const void *)(halves[h] + code_bytes);
    weights[h] = packed_weights(halves[h], n, k, zero, zero + rows,
                                (const float *)(const void *)(zero + 2 * rows));
  }
  const int32_t *weight_zero = (const int32_t *)(const void *)(packed + 2 * plain);
  const int32_t *weight_sum = weight_zero + rows;
  const float *weight_scale = (const float *)(const void *)(weight_sum + rows);

  pthread_mutex_lock(&kernel_lock);
  int64_t chunk = m < TOKENS_PER_CALL ? m : TOKENS_PER_CALL;
  int status = reserve_scratch(2 * chunk, k, (size_t)(4 * chunk * n), (size_t)chunk,
                               "iq_int8_linear")
                   ? 0
                   : 1;
  for (int64_t first = 0; status == 0 && first < m; first += chunk) {
    int64_t tokens = m - first < chunk ? m - first : chunk;
    /* Row 2t contains the high halves of token t's 8-bit codes, row 2t + 1
     * the low halves. */
    for (int64_t t = 0; t < tokens; ++t) {
      uint8_t *high = scratch.codes + 2 * t * k, *low = high + k;
      scratch.sum[t] = quantize_span(x + (first + t) * k, k, true, clip, 255.0f, 1e-8f, low,
                                     &scratch.scale[t], &scratch.zero[t]);
      for (int64_t i = 0; i < k; ++i) {
        high[i] = (uint8_t)(low[i] >> 4);
        low[i] &= 15;
      }
    }
    float *high_out = scratch.y, *low_out = scratch.y + 2 * tokens * n;
    /* One token gives two rows, which the two-row GEMV kernel reads in one
     * pass over each weight half. */
    status = set_plain_rows(2 * tokens);
    if (status == 0)
      status = iqk_matmul(&weights[0], scratch.activations, high_out);
    if (status == 0)
      status = iqk_matmul(&weights[1], scratch.activations, low_out);
    for (int64_t t = 0; status == 0 && t < tokens; ++t) {
      const float *hh = high_out + 2 * t * n, *lh = hh + n; /* activation half x weight half */
      const float *hl = low_out + 2 * t * n, *ll = hl + n;
      int64_t za = scratch.zero[t], asum = scratch.sum[t];
      for (int64_t j = 0; j < n; ++j) {
        int64_t dot = 256 * (int64_t)hh[j] + 16 * ((int64_t)hl[j] + (int64_t)lh[j]) +
                      (int64_t)ll[j];
        int64_t zw = weight_zero[j];
        int64_t integer = dot - zw * asum - za * weight_sum[j] + k * za * zw;
        y[(first + t) * n + j] =
            (float)((double)scratch.scale[t] * (double)weight_scale[j] * (double)integer);
      }
    }
  }
  pthread_mutex_unlock(&kernel_lock);
  if (status < 0)
    record_error("iq_int8_linear");
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
