/* Bit-exact checks of libiqk.so's kernels against the scalar reference.
 * Usage: kernel_test SET... runs every case with each kernel set named
 * (printing SKIP for a set this CPU lacks), and with 1, 2 and 3 threads.
 * Prints one PASS or FAIL line per set and case, then a summary.
 * kernel_test --default runs one case with the set chosen at load. */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iq/int4_model.h"
#include "iq/iq_kernels.h"
#include "reference.h"

typedef enum fill { FILL_RANDOM, FILL_ZERO_ROWS, FILL_MAX, FILL_MIN_MAX, FILL_ZERO_POINT_MAX } fill_t;

typedef struct test_case {
  const char *name;
  int64_t m, n, k;
  fill_t fill;
} test_case_t;

static const test_case_t cases[] = {
    {"gemv_k1", 1, 1, 1, FILL_RANDOM},
    {"gemv_odd", 1, 7, 63, FILL_RANDOM},
    {"gemv_block", 1, 8, 64, FILL_RANDOM},
    {"gemv_tail", 1, 13, 65, FILL_RANDOM},
    {"gemv_two_chunks", 1, 37, 2113, FILL_RANDOM},
    {"gemv_three_chunks", 1, 21, 4160, FILL_RANDOM},
    {"gemv_zero_rows", 1, 11, 200, FILL_ZERO_ROWS},
    {"gemv_all_15", 1, 9, 4096, FILL_MAX},
    {"gemv_0_and_15", 1, 6, 2050, FILL_MIN_MAX},
    {"gemv_zero_point_15", 1, 5, 129, FILL_ZERO_POINT_MAX},
    {"gemm_m2", 2, 5, 63, FILL_RANDOM},
    {"gemv2_tail", 2, 13, 65, FILL_RANDOM},
    {"gemv2_two_chunks", 2, 37, 2113, FILL_RANDOM},
    {"gemv2_zero_rows", 2, 11, 200, FILL_ZERO_ROWS},
    {"gemv2_all_15", 2, 9, 4096, FILL_MAX},
    {"gemv2_0_and_15", 2, 6, 2050, FILL_MIN_MAX},
    {"gemv2_zero_point_15", 2, 5, 129, FILL_ZERO_POINT_MAX},
    {"gemm_m3_tail", 3, 7, 130, FILL_RANDOM},
    {"gemm_one_panel", 8, 4, 64, FILL_RANDOM},
    {"gemm_panel_tail", 9, 17, 2113, FILL_RANDOM},
    {"gemm_tiles", 13, 133, 300, FILL_RANDOM},
    {"gemm_three_chunks", 11, 19, 4160, FILL_RANDOM},
    {"gemm_zero_rows", 10, 11, 200, FILL_ZERO_ROWS},
    {"gemm_all_15", 9, 6, 4096, FILL_MAX},
    {"gemm_0_and_15", 5, 10, 2050, FILL_MIN_MAX},
    {"gemm_zero_point_15", 17, 3, 129, FILL_ZERO_POINT_MAX},
    /* Few weight rows and many tokens: threads split the panels. */
    {"gemm_split_tokens", 40, 6, 2200, FILL_RANDOM},
};

static uint64_t random_state = 0x9e3779b97f4a7c15u;

static uint32_t next_random(void) {
  random_state ^= random_state << 13;
  random_state ^= random_state >> 7;
  random_state ^= random_state << 17;
  return (uint32_t)(random_state >> 11);
}

/* Codes, zero points and scales of `rows` rows of width k. */
static void fill_rows(fill_t fill, int64_t rows, int64_t k, uint8_t *codes, uint8_t *zero,
                      float *scale) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < k; ++i) {
      uint8_t code = (uint8_t)(next_random() % 16);
      if (fill == FILL_ZERO_ROWS && r % 3 == 1)
        code = 0;
      else if (fill == FILL_MAX || fill == FILL_ZERO_POINT_MAX)
        code = 15;
      else if (fill == FILL_MIN_MAX)
        code = (next_random() & 1) ? 15 : 0;
      codes[r * k + i] = code;
    }
    zero[r] = (uint8_t)(next_random() % 16);
    if (fill == FILL_MAX)
      zero[r] = 0;
    else if (fill == FILL_ZERO_POINT_MAX || (fill == FILL_MIN_MAX && r % 2 == 0))
      zero[r] = 15;
    /* Scales of 1 make y the exact integer sum; others are powers of two
     * and random values. */
    if (r % 3 == 0)
      scale[r] = 1.0f;
    else if (r % 3 == 1)
      scale[r] = 0.0078125f;
    else
      scale[r] = (float)(next_random() % 1000 + 1) / 997.0f;
  }
}

static int failures, checks;

static void report(const char *set, const char *name, int threads, bool ok, const char *detail) {
  checks++;
  if (!ok)
    failures++;
  printf("%s %s %s threads=%d%s%s\n", ok ? "PASS" : "FAIL", set, name, threads,
         detail[0] ? ": " : "", detail);
}

static void run_case(const char *set, const test_case_t *c, int threads) {
  int64_t m = c->m, n = c->n, k = c->k;
  uint8_t *a = malloc((size_t)(m * k)), *w = malloc((size_t)(n * k));
  uint8_t *za = malloc((size_t)m), *zw = malloc((size_t)n);
  float *sa = malloc((size_t)m * sizeof(float)), *sw = malloc((size_t)n * sizeof(float));
  float *y = malloc((size_t)(m * n) * sizeof(float));
  float *expected = malloc((size_t)(m * n) * sizeof(float));
  fill_rows(c->fill, m, k, a, za, sa);
  fill_rows(c->fill, n, k, w, zw, sw);
  reference_matmul(m, n, k, a, za, sa, w, zw, sw, expected);

  char detail[256] = "";
  iqk_weights_t *packed = iqk_weights_pack(n, k, w, zw, sw);
  iqk_activations_t *activations = iqk_activations_create(m, k);
  bool ok = packed && activations && iqk_activations_set_codes(activations, m, a, za, sa) == 0;
  for (int64_t i = 0; ok && i < m * n; ++i)
    y[i] = -12345.0f;
  if (ok && iqk_matmul(packed, activations, y) != 0)
    ok = false;
  if (!ok)
    snprintf(detail, sizeof detail, "%s", iqk_last_error());
  for (int64_t i = 0; ok && i < m * n; ++i)
    if (memcmp(&y[i], &expected[i], sizeof(float)) != 0) {
      snprintf(detail, sizeof detail, "y[%lld][%lld] = %.9g, expected %.9g", (long long)(i / n),
               (long long)(i % n), y[i], expected[i]);
      ok = false;
    }
  report(set, c->name, threads, ok, detail);
  iqk_weights_free(packed);
  iqk_activations_free(activations);
  free(a);
  free(w);
  free(za);
  free(zw);
  free(sa);
  free(sw);
  free(y);
  free(expected);
}

/* iqk_matmul_multi with three weights of different row counts equals the
 * reference product of each; the work is above the threshold where the
 * threads split it, so with m <= 2 they split the rows of all three. */
static void run_multi_case(const char *set, int64_t m, int threads) {
  enum { COUNT = 3 };
  const int64_t rows[COUNT] = {37, 5, 203}, k = 300;
  uint8_t *a = malloc((size_t)(m * k)), *za = malloc((size_t)m);
  float *sa = malloc((size_t)m * sizeof(float));
  fill_rows(FILL_RANDOM, m, k, a, za, sa);
  iqk_activations_t *activations = iqk_activations_create(m, k);
  bool ok = activations && iqk_activations_set_codes(activations, m, a, za, sa) == 0;

  iqk_weights_t *packed[COUNT] = {0};
  float *y[COUNT] = {0}, *expected[COUNT] = {0};
  for (int i = 0; i < COUNT; ++i) {
    int64_t n = rows[i];
    uint8_t *w = malloc((size_t)(n * k)), *zw = malloc((size_t)n);
    float *sw = malloc((size_t)n * sizeof(float));
    fill_rows(FILL_RANDOM, n, k, w, zw, sw);
    y[i] = malloc((size_t)(m * n) * sizeof(float));
    expected[i] = malloc((size_t)(m * n) * sizeof(float));
    reference_matmul(m, n, k, a, za, sa, w, zw, sw, expected[i]);
    packed[i] = iqk_weights_pack(n, k, w, zw, sw);
    ok = ok && packed[i];
    for (int64_t j = 0; j < m * n; ++j)
      y[i][j] = -12345.0f;
    free(w);
    free(zw);
    free(sw);
  }

  char detail[256] = "", name[64];
  snprintf(name, sizeof name, "multi_m%lld", (long long)m);
  if (ok && iqk_matmul_multi(COUNT, (const iqk_weights_t *const *)packed, activations, y) != 0)
    ok = false;
  if (!ok)
    snprintf(detail, sizeof detail, "%s", iqk_last_error());
  for (int i = 0; ok && i < COUNT; ++i)
    for (int64_t j = 0; ok && j < m * rows[i]; ++j)
      if (memcmp(&y[i][j], &expected[i][j], sizeof(float)) != 0) {
        snprintf(detail, sizeof detail, "product %d: y[%lld][%lld] = %.9g, expected %.9g", i,
                 (long long)(j / rows[i]), (long long)(j % rows[i]), y[i][j], expected[i][j]);
        ok = false;
      }
  report(set, name, threads, ok, detail);

  for (int i = 0; i < COUNT; ++i) {
    iqk_weights_free(packed[i]);
    free(y[i]);
    free(expected[i]);
  }
  iqk_activations_free(activations);
  free(a);
  free(za);
  free(sa);
}

/* A linear whose input is quantized per group of `group` columns
 * (iq_int4_linear_grouped, the o_proj path): one token runs on
 * iqk_<isa>_gemv_heads, three tokens on the per-group GEMV calls. Both
 * agree with a double-precision reference within 1e-6 of the largest
 * output, and the one-token result is the same bits on every kernel set
 * and thread count: its FNV-1a hash is printed for the tests to compare
 * across targets. */
typedef struct grouped_case {
  int64_t n, group, groups;
  uint8_t *packed;
  float *x, *expected;
  uint32_t first_hash; /* of the first set's one-token result, 0 before */
} grouped_case_t;

/* The reference quantizer of one column group (iq_quantize_groupwise). */
static void reference_group(const float *x, int64_t count, uint8_t *codes, int32_t *zero,
                            double *scale) {
  float high = x[0], low = x[0];
  for (int64_t i = 1; i < count; ++i) {
    high = x[i] > high ? x[i] : high;
    low = x[i] < low ? x[i] : low;
  }
  float s = fmaxf((high - low) / 15.0f, 1e-6f);
  float z = rintf(-low / s);
  for (int64_t i = 0; i < count; ++i)
    codes[i] = (uint8_t)fminf(fmaxf(rintf(x[i] / s) + z, 0.0f), 15.0f);
  *zero = (int32_t)z;
  *scale = (double)s;
}

static void grouped_case_build(grouped_case_t *c, int64_t n, int64_t group, int64_t groups,
                               int64_t m) {
  uint64_t state = 0x2545f4914f6cdd1du; /* the same data on every target */
  int64_t k = group * groups, rows = iq_int4_padded_rows(n);
  int64_t slice_bytes = iq_int4_packed_bytes(n, group);
  *c = (grouped_case_t){.n = n, .group = group, .groups = groups};
  c->packed = calloc((size_t)iq_int4_grouped_bytes(n, k, group), 1);
  c->x = malloc((size_t)(m * k) * sizeof(float));
  c->expected = calloc((size_t)(m * n), sizeof(float));
  uint8_t *w = malloc((size_t)(n * k)), *slice = malloc((size_t)(n * group));
  uint8_t *zw = malloc((size_t)n), *zeros = calloc((size_t)n, 1);
  float *sw = malloc((size_t)n * sizeof(float)), *ones = malloc((size_t)n * sizeof(float));
  for (int64_t i = 0; i < n * k; ++i) {
    state = state * 6364136223846793005u + 1442695040888963407u;
    w[i] = (uint8_t)(state >> 60);
  }
  for (int64_t j = 0; j < n; ++j) {
    state = state * 6364136223846793005u + 1442695040888963407u;
    zw[j] = (uint8_t)(state >> 60);
    sw[j] = (float)((state >> 40) % 1000 + 1) / 4096.0f;
    ones[j] = 1.0f;
  }
  for (int64_t i = 0; i < m * k; ++i) {
    state = state * 6364136223846793005u + 1442695040888963407u;
    c->x[i] = (float)((int64_t)(state >> 44) - 524288) / 65536.0f;
  }
  /* Each slice in the plain layout with zero points 0 and scales 1, then
   * the weights' zero points and scales (iq/int4_model.h). */
  for (int64_t s = 0; s < groups; ++s) {
    for (int64_t j = 0; j < n; ++j)
      memcpy(slice + j * group, w + j * k + s * group, (size_t)group);
    iqk_weights_t *packed = iqk_weights_pack(n, group, slice, zeros, ones);
    uint8_t *base = c->packed + s * slice_bytes;
    int64_t code_bytes = iq_int4_code_bytes(n, group);
    memcpy(base, packed->codes, (size_t)code_bytes);
    memcpy(base + code_bytes, packed->zero, (size_t)rows * 4);
    memcpy(base + code_bytes + 4 * rows, packed->sum, (size_t)rows * 4);
    memcpy(base + code_bytes + 8 * rows, packed->scale, (size_t)rows * 4);
    iqk_weights_free(packed);
  }
  int32_t *tail_zero = (int32_t *)(void *)(c->packed + groups * slice_bytes);
  float *tail_scale = (float *)(void *)(tail_zero + rows);
  for (int64_t j = 0; j < n; ++j) {
    tail_zero[j] = zw[j];
    tail_scale[j] = sw[j];
  }
  /* The reference: y = sw * sum over groups of sa * sum (w - zw)(a - za). */
  uint8_t *codes = malloc((size_t)group);
  double *total = calloc((size_t)(m * n), sizeof(double));
  for (int64_t t = 0; t < m; ++t)
    for (int64_t s = 0; s < groups; ++s) {
      int32_t za;
      double sa;
      reference_group(c->x + t * k + s * group, group, codes, &za, &sa);
      for (int64_t j = 0; j < n; ++j) {
        int64_t dot = 0;
        for (int64_t i = 0; i < group; ++i)
          dot += ((int64_t)w[j * k + s * group + i] - zw[j]) * ((int64_t)codes[i] - za);
        total[t * n + j] += sa * (double)dot;
      }
    }
  for (int64_t i = 0; i < m * n; ++i)
    c->expected[i] = (float)(total[i] * (double)sw[i % n]);
  free(codes);
  free(total);
  free(w);
  free(slice);
  free(zw);
  free(zeros);
  free(sw);
  free(ones);
}

static uint32_t fnv1a(const void *data, size_t size) {
  uint32_t hash = 2166136261u;
  for (size_t i = 0; i < size; ++i)
    hash = (hash ^ ((const uint8_t *)data)[i]) * 16777619u;
  return hash;
}

/* Prints the hash of the first result as "LABEL hash H" and compares
 * later results with it; false, with the reason in `detail`, when one
 * differs. */
static bool same_hash(const char *label, const void *result, size_t size, uint32_t *first_hash,
                      char *detail, size_t detail_size) {
  uint32_t hash = fnv1a(result, size);
  if (*first_hash == 0) {
    *first_hash = hash;
    printf("%s hash %08x\n", label, hash);
    return true;
  }
  if (hash != *first_hash) {
    snprintf(detail, detail_size, "hash %08x differs from the first set's %08x", hash,
             *first_hash);
    return false;
  }
  return true;
}

static void run_grouped_case(const char *set, grouped_case_t *c, int64_t m, int threads) {
  int64_t n = c->n, k = c->group * c->groups;
  float *y = malloc((size_t)(m * n) * sizeof(float));
  iq_int4_linear_grouped(c->packed, n, k, c->group, c->x, m, y, 1.0f);
  const char *error = iq_int4_take_error();

  char detail[256] = "", name[64];
  snprintf(name, sizeof name, "grouped_g%lld_m%lld", (long long)c->group, (long long)m);
  bool ok = error == NULL;
  if (!ok)
    snprintf(detail, sizeof detail, "%s", error);

  float largest = 0.0f;
  for (int64_t i = 0; i < m * n; ++i)
    largest = fmaxf(largest, fabsf(c->expected[i]));
  for (int64_t i = 0; ok && i < m * n; ++i)
    if (!(fabsf(y[i] - c->expected[i]) <= 1e-6f * largest)) {
      snprintf(detail, sizeof detail, "y[%lld][%lld] = %.9g, expected %.9g", (long long)(i / n),
               (long long)(i % n), y[i], c->expected[i]);
      ok = false;
    }
  if (ok && m == 1) {
    char label[64];
    snprintf(label, sizeof label, "grouped_g%lld", (long long)c->group);
    ok = same_hash(label, y, (size_t)n * sizeof(float), &c->first_hash, detail, sizeof detail);
  }
  report(set, name, threads, ok, detail);
  free(y);
}

/* iq_f16_linear_blocks, the block-diagonal float16 linear of the
 * residual converters: within 1e-5 of a double-precision reference, and
 * the same bits on every kernel set, thread count and target (a printed
 * FNV-1a hash). Blocks of 75 leave a tail after the 64 vector columns;
 * 2 blocks of 300 are enough work for the threads. */
typedef struct half_case {
  int64_t n, blocks, m;
  uint16_t *weights;
  float *x, *expected;
  uint32_t first_hash;
} half_case_t;

static void half_case_build(half_case_t *c, int64_t n, int64_t blocks, int64_t m) {
  uint64_t state = 0x853c49e6748fea9bu;
  int64_t d = n / blocks;
  *c = (half_case_t){.n = n, .blocks = blocks, .m = m};
  c->weights = malloc((size_t)(n * d) * sizeof *c->weights);
  c->x = malloc((size_t)(m * n) * sizeof(float));
  c->expected = malloc((size_t)(m * n) * sizeof(float));
  /* Normal float16 values: sign, exponent 10..19 (2^-5 .. 2^4), random
   * mantissa; their float values follow from the bits. */
  double *w = malloc((size_t)(n * d) * sizeof *w);
  for (int64_t i = 0; i < n * d; ++i) {
    state = state * 6364136223846793005u + 1442695040888963407u;
    uint16_t bits = (uint16_t)(((state >> 63) << 15) | ((10 + (state >> 40) % 10) << 10) |
                               ((state >> 20) & 0x3ff));
    c->weights[i] = bits;
    w[i] = ldexp((double)(1024 + (bits & 0x3ff)), ((bits >> 10) & 0x1f) - 25) *
           ((bits & 0x8000) ? -1.0 : 1.0);
  }
  for (int64_t i = 0; i < m * n; ++i) {
    state = state * 6364136223846793005u + 1442695040888963407u;
    c->x[i] = (float)((int64_t)(state >> 44) - 524288) / 65536.0f;
  }
  for (int64_t t = 0; t < m; ++t)
    for (int64_t r = 0; r < n; ++r) {
      double sum = 0.0;
      for (int64_t a = 0; a < d; ++a)
        sum += w[r * d + a] * (double)c->x[t * n + r / d * d + a];
      c->expected[t * n + r] = (float)sum;
    }
  free(w);
}

static void run_half_case(const char *set, half_case_t *c, int threads) {
  int64_t count = c->m * c->n;
  float *y = malloc((size_t)count * sizeof(float));
  iq_f16_linear_blocks(c->weights, c->n, c->blocks, c->x, c->m, y);
  const char *error = iq_int4_take_error();

  char detail[256] = "", name[64];
  snprintf(name, sizeof name, "f16_blocks_n%lld_b%lld_m%lld", (long long)c->n,
           (long long)c->blocks, (long long)c->m);
  bool ok = error == NULL;
  if (!ok)
    snprintf(detail, sizeof detail, "%s", error);

  float largest = 0.0f;
  for (int64_t i = 0; i < count; ++i)
    largest = fmaxf(largest, fabsf(c->expected[i]));
  for (int64_t i = 0; ok && i < count; ++i)
    if (!(fabsf(y[i] - c->expected[i]) <= 1e-5f * largest)) {
      snprintf(detail, sizeof detail, "y[%lld][%lld] = %.9g, expected %.9g",
               (long long)(i / c->n), (long long)(i % c->n), y[i], c->expected[i]);
      ok = false;
    }
  if (ok)
    ok = same_hash(name, y, (size_t)count * sizeof(float), &c->first_hash, detail, sizeof detail);
  report(set, name, threads, ok, detail);
  free(y);
}

/* iqk_activations_quantize followed by the matmul equals the reference
 * quantizer followed by the reference matmul. */
static void run_quantize_case(const char *set, int64_t m, int64_t n, int64_t k) {
  float *x = malloc((size_t)(m * k) * sizeof(float));
  uint8_t *a = malloc((size_t)(m * k)), *w = malloc((size_t)(n * k));
  uint8_t *za = malloc((size_t)m), *zw = malloc((size_t)n);
  float *sa = malloc((size_t)m * sizeof(float)), *sw = malloc((size_t)n * sizeof(float));
  float *y = malloc((size_t)(m * n) * sizeof(float));
  float *expected = malloc((size_t)(m * n) * sizeof(float));
  for (int64_t i = 0; i < m * k; ++i)
    x[i] = ((float)(next_random() % 20001) - 10000.0f) / 997.0f;
  for (int64_t i = 0; i < k; ++i)
    x[i] = 0.0f; /* an all-zero row */
  for (int64_t r = 0; r < m; ++r)
    reference_quantize_row(x + r * k, k, a + r * k, &za[r], &sa[r]);
  fill_rows(FILL_RANDOM, n, k, w, zw, sw);
  reference_matmul(m, n, k, a, za, sa, w, zw, sw, expected);

  char detail[256] = "";
  char name[64];
  snprintf(name, sizeof name, "quantize_m%lld", (long long)m);
  iqk_weights_t *packed = iqk_weights_pack(n, k, w, zw, sw);
  iqk_activations_t *activations = iqk_activations_create(m, k);
  bool ok = packed && activations && iqk_activations_quantize(activations, m, x) == 0 &&
            iqk_matmul(packed, activations, y) == 0;
  if (!ok)
    snprintf(detail, sizeof detail, "%s", iqk_last_error());
  for (int64_t i = 0; ok && i < m * n; ++i)
    if (memcmp(&y[i], &expected[i], sizeof(float)) != 0) {
      snprintf(detail, sizeof detail, "y[%lld][%lld] = %.9g, expected %.9g", (long long)(i / n),
               (long long)(i % n), y[i], expected[i]);
      ok = false;
    }
  report(set, name, iqk_num_threads(), ok, detail);
  iqk_weights_free(packed);
  iqk_activations_free(activations);
  free(x);
  free(a);
  free(w);
  free(za);
  free(zw);
  free(sa);
  free(sw);
  free(y);
  free(expected);
}

int main(int argc, char **argv) {
  /* Head sizes below, at and above one block; 149 rows leave a partial
   * group of 4 and, from 64 columns on, are enough work for the threads. */
  grouped_case_t grouped[3], grouped_tokens[3];
  const int64_t group_sizes[3] = {8, 64, 128};
  for (int i = 0; i < 3; ++i) {
    grouped_case_build(&grouped[i], 149, group_sizes[i], 9, 1);
    grouped_case_build(&grouped_tokens[i], 149, group_sizes[i], 9, 3);
  }
  half_case_t half[3];
  half_case_build(&half[0], 150, 2, 1);
  half_case_build(&half[1], 150, 2, 3);
  half_case_build(&half[2], 600, 2, 1);
  if (argc < 2) {
    fprintf(stderr, "usage: kernel_test SET...\n");
    return 2;
  }
  printf("default set: %s\n", iqk_kernel_name());
  /* --default: one case with the set chosen at load (IQ_KERNEL). */
  if (strcmp(argv[1], "--default") == 0) {
    run_case("default", &cases[0], 1);
    return failures ? 1 : 0;
  }
  for (int i = 1; i < argc; ++i) {
    const char *set = argv[i];
    if (!iqk_kernel_supported(set)) {
      printf("SKIP %s: not supported by this CPU\n", set);
      continue;
    }
    if (iqk_select_kernel(set) != 0) {
      report(set, "select", 0, false, iqk_last_error());
      continue;
    }
    for (int threads = 1; threads <= 3; ++threads) {
      iqk_set_num_threads(threads);
      for (size_t c = 0; c < sizeof cases / sizeof cases[0]; ++c)
        run_case(set, &cases[c], threads);
      for (int64_t m = 1; m <= 3; ++m)
        run_multi_case(set, m, threads);
      for (int i = 0; i < 3; ++i) {
        run_grouped_case(set, &grouped[i], 1, threads);
        run_grouped_case(set, &grouped_tokens[i], 3, threads);
      }
      for (int i = 0; i < 3; ++i)
        run_half_case(set, &half[i], threads);
    }
    iqk_set_num_threads(2);
    run_quantize_case(set, 1, 9, 100);
    run_quantize_case(set, 6, 9, 2100);
  }
  printf("%d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
