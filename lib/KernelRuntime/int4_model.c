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
#include "kernel_runtime.h"

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

/* Weights in the plain packed layout at `packed` (zero points, sums and
 * scales after the codes), for the kernels. The weight store maps the
 * tensor read-only; the kernels only read it. */
static iqk_weights_t plain_weights(const uint8_t *packed, int64_t n, int64_t k) {
  int64_t rows = iq_int4_padded_rows(n);
  const int32_t *zero = (const int32_t *)(const void *)(packed + iq_int4_code_bytes(n, k));
  return (iqk_weights_t){
      .n = n,
      .k = k,
      .blocks = (k + IQK_BLOCK_K - 1) / IQK_BLOCK_K,
      .groups = rows / IQK_GROUP_ROWS,
      .codes = (uint8_t *)packed,
      .zero = (int32_t *)zero,
      .sum = (int32_t *)(zero + rows),
      .scale = (float *)(const void *)(zero + 2 * rows),
  };
}

/* Activation buffers kept between calls, one per width K (a model has a
 * few: hidden size, head slice, FFN size), guarded by kernel_lock. */
#define CACHED_WIDTHS 8
static iqk_activations_t *cached[CACHED_WIDTHS];
static int next_replaced;

/* An activation buffer of width k with room for `rows` rows, or NULL with
 * the error recorded. */
static iqk_activations_t *activations_for(int64_t rows, int64_t k, const char *what) {
  int slot = -1;
  for (int i = 0; i < CACHED_WIDTHS && slot < 0; ++i)
    if (cached[i] && cached[i]->k == k)
      slot = i;
  if (slot >= 0 && cached[slot]->capacity >= rows)
    return cached[slot];
  if (slot < 0) {
    slot = next_replaced;
    next_replaced = (next_replaced + 1) % CACHED_WIDTHS;
  }
  iqk_activations_free(cached[slot]);
  cached[slot] = iqk_activations_create(rows, k);
  if (!cached[slot])
    record_error(what);
  return cached[slot];
}

/* Quantizes x into the cached buffer of width k; NULL on failure, with
 * the error recorded. Called with kernel_lock held. */
static iqk_activations_t *quantize_input(const float *x, int64_t m, int64_t k, int64_t hadamard,
                                         float clip, const char *what) {
  iqk_activations_t *activations = activations_for(m, k, what);
  if (!activations)
    return NULL;
  int status = iqk_activations_set_clip(activations, clip);
  if (status == 0)
    status = hadamard ? iqk_activations_quantize_hadamard(activations, m, x)
                      : iqk_activations_quantize(activations, m, x);
  if (status != 0) {
    record_error(what);
    return NULL;
  }
  return activations;
}

void iq_int4_linear(const uint8_t *packed, int64_t n, int64_t k, const float *x, int64_t m,
                    float *y, int64_t hadamard, float clip) {
  iqk_weights_t weights = plain_weights(packed, n, k);
  pthread_mutex_lock(&kernel_lock);
  iqk_activations_t *activations = quantize_input(x, m, k, hadamard, clip, "iq_int4_linear");
  if (activations && iqk_matmul(&weights, activations, y) != 0)
    record_error("iq_int4_linear");
  pthread_mutex_unlock(&kernel_lock);
}

void iq_int4_linear_fused(int64_t count, const uint8_t *packed0, int64_t n0, float *y0,
                          const uint8_t *packed1, int64_t n1, float *y1, const uint8_t *packed2,
                          int64_t n2, float *y2, int64_t k, const float *x, int64_t m,
                          int64_t hadamard, float clip) {
  if (count < 1 || count > 3) {
    snprintf(pending_error, sizeof pending_error,
             "iq_int4_linear_fused: %lld products; it runs 1 to 3", (long long)count);
    has_error = true;
    return;
  }
  const uint8_t *packed[3] = {packed0, packed1, packed2};
  int64_t n[3] = {n0, n1, n2};
  float *y[3] = {y0, y1, y2};
  iqk_weights_t weights[3];
  const iqk_weights_t *list[3];
  for (int i = 0; i < count; ++i) {
    weights[i] = plain_weights(packed[i], n[i], k);
    list[i] = &weights[i];
  }
  pthread_mutex_lock(&kernel_lock);
  iqk_activations_t *activations = quantize_input(x, m, k, hadamard, clip, "iq_int4_linear_fused");
  if (activations && iqk_matmul_multi((int)count, list, activations, y) != 0)
    record_error("iq_int4_linear_fused");
  pthread_mutex_unlock(&kernel_lock);
}

/* Scratch memory of the grouped and 8-bit linears, reused between calls
 * and guarded by kernel_lock. */
static struct {
  uint8_t *codes, *zero_codes; /* zero_codes: all 0 */
  float *y, *scale, *ones;      /* ones: all 1 */
  int32_t *zero, *sum, *zero_ints;
  size_t codes_size, y_size, row_size, plain_size;
} scratch;

/* Frees the scratch memory and the cached activation buffers when the
 * library unloads or the program exits. */
__attribute__((destructor)) static void free_scratch(void) {
  for (int i = 0; i < CACHED_WIDTHS; ++i) {
    iqk_activations_free(cached[i]);
    cached[i] = NULL;
  }
  free(scratch.codes);
  free(scratch.zero_codes);
  free(scratch.y);
  free(scratch.scale);
  free(scratch.ones);
  free(scratch.zero);
  free(scratch.sum);
  free(scratch.zero_ints);
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

/* Makes the scratch hold `code_bytes` activation codes, `outputs` floats
 * of kernel output, `params` quantization parameters of each kind and
 * `plain` rows of zero points 0 and scales 1. */
static bool reserve_scratch(size_t code_bytes, size_t outputs, size_t params, size_t plain,
                            const char *what) {
  size_t row_size = scratch.row_size;
  bool ok = grow((void **)&scratch.codes, &scratch.codes_size, code_bytes, 1) &&
            grow((void **)&scratch.y, &scratch.y_size, outputs, sizeof(float));
  if (ok && row_size < params) {
    size_t zero_size = row_size, sum_size = row_size;
    ok = grow((void **)&scratch.scale, &row_size, params, sizeof(float)) &&
         grow((void **)&scratch.zero, &zero_size, params, sizeof(int32_t)) &&
         grow((void **)&scratch.sum, &sum_size, params, sizeof(int32_t));
    if (ok)
      scratch.row_size = params;
  }
  if (ok && scratch.plain_size < plain) {
    size_t ones_size = scratch.plain_size, ints_size = scratch.plain_size;
    ok = grow((void **)&scratch.zero_codes, &scratch.plain_size, plain, 1) &&
         grow((void **)&scratch.ones, &ones_size, plain, sizeof(float)) &&
         grow((void **)&scratch.zero_ints, &ints_size, plain, sizeof(int32_t));
    if (ok) {
      memset(scratch.zero_codes, 0, plain);
      memset(scratch.zero_ints, 0, plain * sizeof(int32_t));
      for (size_t i = 0; i < plain; ++i)
        scratch.ones[i] = 1.0f;
    } else {
      scratch.plain_size = 0;
    }
  }
  if (!ok) {
    snprintf(pending_error, sizeof pending_error,
             "%s: out of memory for %zu activation codes and %zu outputs", what, code_bytes,
             outputs);
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
  /* Comparisons rather than fmaxf and fminf, which are library calls on
   * x86-64; they differ only for NaN, whose codes are meaningless anyway. */
  float high = x[0], low = x[0];
  for (int64_t i = 1; i < count; ++i) {
    high = x[i] > high ? x[i] : high;
    low = x[i] < low ? x[i] : low;
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
    /* NaN becomes 0, as with fmaxf. */
    float code = rintf(x[i] / s) + z;
    code = code > 0.0f ? code : 0.0f;
    code = code < maxq ? code : maxq;
    codes[i] = (uint8_t)code;
    sum += codes[i];
  }
  *scale = s;
  *zero = (int32_t)z;
  return sum;
}

/* Stores `rows` rows of codes (row-major, width k) as kernel activations
 * with zero points 0 and scales 1, so the kernels return integer dot
 * products. */
static iqk_activations_t *plain_rows(const uint8_t *codes, int64_t rows, int64_t k,
                                     const char *what) {
  iqk_activations_t *activations = activations_for(rows, k, what);
  if (activations &&
      iqk_activations_set_codes(activations, rows, codes, scratch.zero_codes, scratch.ones) != 0) {
    record_error(what);
    return NULL;
  }
  return activations;
}

/* Weights in the plain packed layout at `packed` with the given zero
 * points, sums and scales, for the kernels. */
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

/* Runs the GEMV kernel (`rows` = 1 or 2 activation rows of width k in
 * the GEMV layout at `codes`, zero points 0 and scales 1) on weight
 * groups [group_begin, group_end), writing y[rows][n]. */
static void plain_gemv(const iqk_kernel_set_t *set, const iqk_weights_t *w, const uint8_t *codes,
                       int64_t rows, float *y, int64_t group_begin, int64_t group_end) {
  int64_t w_rows = w->groups * IQK_GROUP_ROWS;
  iqk_gemv_fn *gemv = rows == 1 ? set->gemv : set->gemv2;
  gemv(IQK_MEMREF_ARGS(w->codes, w->groups * w->blocks * 128), IQK_MEMREF_ARGS(w->zero, w_rows),
       IQK_MEMREF_ARGS(w->sum, w_rows), IQK_MEMREF_ARGS(w->scale, w_rows),
       IQK_MEMREF_ARGS((uint8_t *)codes, rows * w->blocks * IQK_BLOCK_K),
       IQK_MEMREF_ARGS(scratch.zero_ints, rows), IQK_MEMREF_ARGS(scratch.zero_ints, rows),
       IQK_MEMREF_ARGS(scratch.ones, rows), IQK_MEMREF_ARGS(y, rows * w->n), w->blocks,
       (int32_t)w->k, w->n, group_begin, group_end);
}

/* Writes `rows` rows of k codes (row-major) in the GEMV layout: block by
 * block, the rows' 64 codes after each other, zero-padded. */
static void gemv_layout(const uint8_t *codes, int64_t rows, int64_t k, uint8_t *out) {
  int64_t blocks = (k + IQK_BLOCK_K - 1) / IQK_BLOCK_K;
  memset(out, 0, (size_t)(blocks * rows * IQK_BLOCK_K));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t b = 0; b < blocks; ++b) {
      int64_t count = k - b * IQK_BLOCK_K < IQK_BLOCK_K ? k - b * IQK_BLOCK_K : IQK_BLOCK_K;
      memcpy(out + (b * rows + r) * IQK_BLOCK_K, codes + r * k + b * IQK_BLOCK_K, (size_t)count);
    }
}

/* Tokens per kernel call of the grouped and 8-bit linears, which bounds
 * their scratch memory. */
#define TOKENS_PER_CALL 16

/* The decode step (one token) of a grouped linear on
 * iqk_<isa>_gemv_heads: every thread takes a range of weight row groups
 * and runs all column groups on it, so the product is one call of the
 * pool. */
typedef struct grouped_step {
  const iqk_kernel_set_t *set;
  const uint8_t *packed;
  int64_t n, rows, groups, slice_blocks, slice_bytes, total_bytes;
  const int32_t *weight_zero;
  const float *weight_scale;
  const int8_t *codes; /* per column group, code minus zero point */
  const float *scale;  /* per column group */
  float correction;
  float *y;
} grouped_step_t;

static void run_grouped_part(void *context, int part, int parts) {
  const grouped_step_t *step = context;
  int64_t weight_groups = step->rows / IQK_GROUP_ROWS;
  int64_t begin = weight_groups * part / parts, end = weight_groups * (part + 1) / parts;
  if (begin == end)
    return;
  step->set->gemv_heads(
      IQK_MEMREF_ARGS((uint8_t *)step->packed, step->total_bytes),
      IQK_MEMREF_ARGS((int32_t *)step->weight_zero, step->rows),
      IQK_MEMREF_ARGS((float *)step->weight_scale, step->rows),
      IQK_MEMREF_ARGS((int8_t *)step->codes, step->groups * step->slice_blocks * IQK_BLOCK_K),
      IQK_MEMREF_ARGS((float *)step->scale, step->groups), IQK_MEMREF_ARGS(step->y, step->n),
      step->groups, step->slice_blocks, step->slice_bytes, step->n, begin, end, step->correction);
}

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
  const char *what = "iq_int4_linear_grouped";
  const iqk_kernel_set_t *set = iqk_selected_set();
  if (!set) {
    record_error(what);
    return;
  }
  int64_t rows = iq_int4_padded_rows(n), groups = k / group;
  int64_t slice_bytes = iq_int4_packed_bytes(n, group);
  int64_t slice_code_bytes = iq_int4_code_bytes(n, group);
  int64_t slice_blocks = (group + IQK_BLOCK_K - 1) / IQK_BLOCK_K;
  const int32_t *weight_zero = (const int32_t *)(const void *)(packed + groups * slice_bytes);
  const float *weight_scale = (const float *)(const void *)(weight_zero + rows);

  pthread_mutex_lock(&kernel_lock);
  int64_t chunk = m < TOKENS_PER_CALL ? m : TOKENS_PER_CALL;
  /* Kernel results of one token for each column group, or of up to
   * `chunk` tokens for one column group. */
  int64_t results = chunk > groups ? chunk : groups;
  /* Codes: row-major, then the signed codes of one token. Scratch y: the
   * kernel results, then the double sums. */
  int status = reserve_scratch((size_t)(chunk * k + groups * slice_blocks * IQK_BLOCK_K),
                               (size_t)(3 * results * n + 2), (size_t)results, (size_t)chunk, what)
                   ? 0
                   : 1;
  if (status == 0 && m == 1 && slice_blocks <= IQK_CHUNK_BLOCKS) {
    /* Signed activations: the code minus the group's zero point, zero
     * after the group's end. */
    int8_t *signed_codes = (int8_t *)(void *)(scratch.codes + k);
    memset(signed_codes, 0, (size_t)(groups * slice_blocks * IQK_BLOCK_K));
    double correction = 0.0;
    for (int64_t g = 0; g < groups; ++g) {
      uint8_t *codes = scratch.codes + g * group;
      int32_t sum = quantize_span(x + g * group, group, false, clip, 15.0f, 1e-6f, codes,
                                  &scratch.scale[g], &scratch.zero[g]);
      int8_t *row = signed_codes + g * slice_blocks * IQK_BLOCK_K;
      for (int64_t i = 0; i < group; ++i)
        row[i] = (int8_t)(codes[i] - scratch.zero[g]);
      correction += (double)scratch.scale[g] * (double)(sum - group * scratch.zero[g]);
    }
    grouped_step_t step = {.set = set, .packed = packed, .n = n, .rows = rows, .groups = groups,
                           .slice_blocks = slice_blocks, .slice_bytes = slice_bytes,
                           .total_bytes = iq_int4_grouped_bytes(n, k, group),
                           .weight_zero = weight_zero, .weight_scale = weight_scale,
                           .codes = signed_codes, .scale = scratch.scale,
                           .correction = (float)correction, .y = y};
    int threads = n * k < IQK_PARALLEL_MIN_WORK ? 1 : iqk_num_threads();
    if (rows / IQK_GROUP_ROWS < threads)
      threads = (int)(rows / IQK_GROUP_ROWS);
    iqk_parallel_run(threads, run_grouped_part, &step);
    pthread_mutex_unlock(&kernel_lock);
    return;
  }
  for (int64_t first = 0; status == 0 && first < m; first += chunk) {
    int64_t tokens = m - first < chunk ? m - first : chunk;
    float *out = scratch.y;
    double *total = (double *)(void *)(scratch.y + (results * n + 1) / 2 * 2);
    memset(total, 0, (size_t)(tokens * n) * sizeof *total);
    for (int64_t g = 0; status == 0 && g < groups; ++g) {
      const uint8_t *slice = packed + g * slice_bytes;
      const int32_t *slice_zero = (const int32_t *)(const void *)(slice + slice_code_bytes);
      const int32_t *slice_sum = slice_zero + rows;
      iqk_weights_t weights = packed_weights(slice, n, group, slice_zero, slice_sum,
                                             (const float *)(const void *)(slice_sum + rows));
      for (int64_t t = 0; t < tokens; ++t)
        scratch.sum[t] = quantize_span(x + (first + t) * k + g * group, group, false, clip, 15.0f,
                                       1e-6f, scratch.codes + t * group, &scratch.scale[t],
                                       &scratch.zero[t]);
      iqk_activations_t *activations = plain_rows(scratch.codes, tokens, group, what);
      status = activations ? iqk_matmul(&weights, activations, out) : 1;
      for (int64_t t = 0; status == 0 && t < tokens; ++t) {
        int64_t za = scratch.zero[t], asum = scratch.sum[t];
        double sa = (double)scratch.scale[t];
        for (int64_t j = 0; j < n; ++j) {
          int64_t zw = weight_zero[j];
          int64_t integer =
              (int64_t)out[t * n + j] - zw * asum - za * slice_sum[j] + group * za * zw;
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
    record_error(what);
}

/* The products of one token of an 8-bit linear: every thread takes a
 * range of output rows, multiplies both weight halves by the token's two
 * rows of 4-bit halves and combines the four products. */
typedef struct int8_step {
  const iqk_kernel_set_t *set;
  const iqk_weights_t *halves; /* [2] */
  const uint8_t *codes;        /* the token's 2 rows in the GEMV layout */
  int64_t n, k;
  const int32_t *weight_zero, *weight_sum;
  const float *weight_scale;
  float *out; /* [2][2][n] */
  float *y;
} int8_step_t;

static void run_int8_part(void *context, int part, int parts) {
  const int8_step_t *step = context;
  int64_t weight_groups = step->halves[0].groups;
  int64_t begin = weight_groups * part / parts, end = weight_groups * (part + 1) / parts;
  int64_t first = begin * IQK_GROUP_ROWS;
  int64_t last = end * IQK_GROUP_ROWS < step->n ? end * IQK_GROUP_ROWS : step->n;
  if (first >= last)
    return;
  int64_t n = step->n;
  float *high_out = step->out, *low_out = step->out + 2 * n;
  plain_gemv(step->set, &step->halves[0], step->codes, 2, high_out, begin, end);
  plain_gemv(step->set, &step->halves[1], step->codes, 2, low_out, begin, end);
  const float *hh = high_out, *lh = hh + n; /* activation half x weight half */
  const float *hl = low_out, *ll = hl + n;
  int64_t za = scratch.zero[0], asum = scratch.sum[0];
  for (int64_t j = first; j < last; ++j) {
    int64_t dot = 256 * (int64_t)hh[j] + 16 * ((int64_t)hl[j] + (int64_t)lh[j]) + (int64_t)ll[j];
    int64_t zw = step->weight_zero[j];
    int64_t integer = dot - zw * asum - za * step->weight_sum[j] + step->k * za * zw;
    step->y[j] =
        (float)((double)scratch.scale[0] * (double)step->weight_scale[j] * (double)integer);
  }
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
  const char *what = "iq_int8_linear";
  const iqk_kernel_set_t *set = iqk_selected_set();
  if (!set) {
    record_error(what);
    return;
  }
  int64_t rows = iq_int4_padded_rows(n), plain = iq_int4_packed_bytes(n, k);
  int64_t code_bytes = iq_int4_code_bytes(n, k);
  int64_t layout_bytes = 2 * ((k + IQK_BLOCK_K - 1) / IQK_BLOCK_K * IQK_BLOCK_K);
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
  int status = reserve_scratch((size_t)(2 * chunk * k + layout_bytes), (size_t)(4 * chunk * n),
                               (size_t)chunk, (size_t)(2 * chunk), what)
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
    if (tokens == 1) {
      /* One token gives two rows, which the two-row GEMV kernel reads in
       * one pass over each weight half. */
      uint8_t *layout = scratch.codes + 2 * k;
      gemv_layout(scratch.codes, 2, k, layout);
      int8_step_t step = {.set = set, .halves = weights, .codes = layout, .n = n, .k = k,
                          .weight_zero = weight_zero, .weight_sum = weight_sum,
                          .weight_scale = weight_scale, .out = scratch.y, .y = y + first * n};
      int threads = iqk_num_threads();
      if (weights[0].groups < threads)
        threads = (int)weights[0].groups;
      iqk_parallel_run(threads, run_int8_part, &step);
      continue;
    }
    iqk_activations_t *activations = plain_rows(scratch.codes, 2 * tokens, k, what);
    float *high_out = scratch.y, *low_out = scratch.y + 2 * tokens * n;
    status = activations ? iqk_matmul(&weights[0], activations, high_out) : 1;
    if (status == 0)
      status = iqk_matmul(&weights[1], activations, low_out);
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
    record_error(what);
}

/* Rows of a block-diagonal float16 linear, split between the threads. */
typedef struct half_step {
  const iqk_kernel_set_t *set;
  const uint16_t *weights;
  const float *x;
  float *y;
  int64_t n, d, m;
} half_step_t;

static void run_half_part(void *context, int part, int parts) {
  const half_step_t *step = context;
  int64_t begin = step->n * part / parts, end = step->n * (part + 1) / parts;
  if (begin == end)
    return;
  step->set->linear_f16(IQK_MEMREF_ARGS((uint16_t *)step->weights, step->n * step->d),
                        IQK_MEMREF_ARGS((float *)step->x, step->m * step->n),
                        IQK_MEMREF_ARGS(step->y, step->m * step->n), step->n, step->d, step->m,
                        begin, end);
}

void iq_f16_linear_blocks(const uint16_t *weights, int64_t n, int64_t blocks, const float *x,
                          int64_t m, float *y) {
  if (blocks < 1 || n % blocks != 0) {
    snprintf(pending_error, sizeof pending_error,
             "iq_f16_linear_blocks: %lld blocks do not divide the size %lld", (long long)blocks,
             (long long)n);
    has_error = true;
    return;
  }
  const iqk_kernel_set_t *set = iqk_selected_set();
  if (!set) {
    record_error("iq_f16_linear_blocks");
    return;
  }
  half_step_t step = {.set = set, .weights = weights, .x = x, .y = y, .n = n, .d = n / blocks,
                      .m = m};
  int threads = n * step.d * m < IQK_PARALLEL_MIN_WORK ? 1 : iqk_num_threads();
  if (n < threads)
    threads = (int)n;
  pthread_mutex_lock(&kernel_lock);
  iqk_parallel_run(threads, run_half_part, &step);
  pthread_mutex_unlock(&kernel_lock);
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
