/* Checks the int4 KV cache append and attention kernels of libiqk.so
 * against the scalar reference bit for bit (cache codes, scales, zero
 * points and outputs), through prefill (several queries) and decode (one
 * query) steps, and against attention computed in double precision from
 * the dequantized cache (relative error below 1e-4).
 * Usage: attention_test SET... (SKIP for a set this CPU lacks). */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iq/iq_kernels.h"
#include "reference.h"

typedef struct scenario {
  const char *name;
  int64_t heads, kv_heads, head_dim;
  int64_t steps[4]; /* tokens appended and queried per step; 0 ends */
  float clip;
  int fill; /* 0: random, 1: zero rows and outliers */
} scenario_t;

static const scenario_t scenarios[] = {
    {"stories_shape", 8, 4, 8, {7, 1, 1, 5}, 1.0f, 0},
    {"gqa_hd128", 8, 2, 128, {33, 1, 2, 0}, 0.9f, 0},
    {"hd2_single_head", 1, 1, 2, {3, 1, 1, 1}, 1.0f, 0},
    {"zero_rows_outliers", 4, 4, 16, {9, 1, 4, 0}, 0.9f, 1},
};

static uint64_t random_state = 0x13198a2e03707344u;

static float next_value(void) {
  random_state ^= random_state << 13;
  random_state ^= random_state >> 7;
  random_state ^= random_state << 17;
  return (float)((int)((random_state >> 11) % 20001) - 10000) / 2500.0f;
}

static void fill(float *x, int64_t count, int64_t row, int kind) {
  for (int64_t i = 0; i < count; ++i)
    x[i] = next_value();
  if (kind == 1) {
    for (int64_t i = 0; i < count; i += 3 * row)
      for (int64_t d = 0; d < row && i + d < count; ++d)
        x[i + d] = 0.0f;
    x[count / 2] = 400.0f;
  }
}

static int checks, failures;

static void report(const char *set, const char *name, int threads, bool ok, const char *detail) {
  checks++;
  failures += !ok;
  printf("%s %s %s threads=%d%s%s\n", ok ? "PASS" : "FAIL", set, name, threads,
         detail[0] ? ": " : "", detail);
}

static bool same_cache(const iqk_kv_cache_t *c, const reference_cache_t *r, char *detail,
                       size_t size) {
  size_t slots = (size_t)(c->kv_heads * c->capacity);
  size_t bytes = slots * (size_t)c->head_dim / 2;
  if (memcmp(c->k_codes, r->k_codes, bytes) || memcmp(c->v_codes, r->v_codes, bytes)) {
    snprintf(detail, size, "cache codes differ");
    return false;
  }
  if (memcmp(c->k_scale, r->k_scale, slots * 4) || memcmp(c->k_zero, r->k_zero, slots * 4) ||
      memcmp(c->v_scale, r->v_scale, slots * 4) || memcmp(c->v_zero, r->v_zero, slots * 4)) {
    snprintf(detail, size, "cache scales or zero points differ");
    return false;
  }
  return true;
}

/* Attention in double from the dequantized cache, with q rotated by the
 * same Hadamard transform (computed here as a dense product). */
static double max_relative_error(const iqk_kv_cache_t *c, int64_t tokens, int64_t heads,
                                 const float *q, const float *out) {
  int64_t hd = c->head_dim, position = c->length - tokens, group = heads / c->kv_heads;
  double worst = 0.0;
  double *qr = malloc((size_t)hd * sizeof(double));
  double *scores = malloc((size_t)c->length * sizeof(double));
  double *expected = malloc((size_t)hd * sizeof(double));
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t h = 0; h < heads; ++h) {
      int64_t g = h / group, keys = position + t + 1;
      for (int64_t i = 0; i < hd; ++i) {
        qr[i] = 0.0;
        for (int64_t j = 0; j < hd; ++j) /* H[i][j] = (-1)^popcount(i & j) */
          qr[i] += (__builtin_popcountll((unsigned long long)(i & j)) % 2 ? -1.0 : 1.0) *
                   q[(t * heads + h) * hd + j];
        qr[i] /= sqrt((double)hd);
      }
      double best = -INFINITY, sum = 0.0;
      for (int64_t j = 0; j < keys; ++j) {
        int64_t slot = g * c->capacity + j;
        double dot = 0.0;
        for (int64_t d = 0; d < hd; ++d) {
          int code = d % 2 ? c->k_codes[slot * hd / 2 + d / 2] >> 4
                           : c->k_codes[slot * hd / 2 + d / 2] & 15;
          dot += qr[d] * c->k_scale[slot] * (code - c->k_zero[slot]);
        }
        scores[j] = dot / sqrt((double)hd);
        best = scores[j] > best ? scores[j] : best;
      }
      for (int64_t j = 0; j < keys; ++j)
        sum += exp(scores[j] - best);
      double norm = 0.0;
      for (int64_t d = 0; d < hd; ++d) {
        expected[d] = 0.0;
        for (int64_t j = 0; j < keys; ++j) {
          int64_t slot = g * c->capacity + j;
          int code = d % 2 ? c->v_codes[slot * hd / 2 + d / 2] >> 4
                           : c->v_codes[slot * hd / 2 + d / 2] & 15;
          expected[d] += exp(scores[j] - best) / sum * c->v_scale[slot] * (code - c->v_zero[slot]);
        }
        norm = fmax(norm, fabs(expected[d]));
      }
      for (int64_t d = 0; d < hd; ++d) {
        double error = fabs(out[(t * heads + h) * hd + d] - expected[d]) / fmax(norm, 1e-6);
        worst = error > worst ? error : worst;
      }
    }
  free(qr);
  free(scores);
  free(expected);
  return worst;
}

static void run_scenario(const char *set, const scenario_t *s, int threads) {
  int64_t capacity = 0;
  for (int i = 0; i < 4; ++i)
    capacity += s->steps[i];
  iqk_kv_cache_t *cache = iqk_kv_cache_create(s->kv_heads, s->head_dim, capacity);
  reference_cache_t r = {.kv_heads = s->kv_heads, .head_dim = s->head_dim,
                         .capacity = capacity, .k_clip = s->clip, .v_clip = s->clip};
  size_t slots = (size_t)(s->kv_heads * capacity);
  r.k_codes = calloc(slots, (size_t)s->head_dim / 2);
  r.v_codes = calloc(slots, (size_t)s->head_dim / 2);
  r.k_scale = calloc(slots, 4);
  r.k_zero = calloc(slots, 4);
  r.v_scale = calloc(slots, 4);
  r.v_zero = calloc(slots, 4);
  bool ok = cache && iqk_kv_cache_set_clip(cache, s->clip, s->clip) == 0;
  char detail[256] = "";
  if (!ok)
    snprintf(detail, sizeof detail, "%s", iqk_last_error());
  double worst = 0.0;
  for (int step = 0; ok && step < 4 && s->steps[step] > 0; ++step) {
    int64_t tokens = s->steps[step];
    int64_t kv_values = tokens * s->kv_heads * s->head_dim, q_values = tokens * s->heads * s->head_dim;
    float *k = malloc((size_t)kv_values * 4), *v = malloc((size_t)kv_values * 4);
    float *q = malloc((size_t)q_values * 4), *out = malloc((size_t)q_values * 4);
    float *expected = malloc((size_t)q_values * 4);
    fill(k, kv_values, s->head_dim, s->fill);
    fill(v, kv_values, s->head_dim, s->fill);
    fill(q, q_values, s->head_dim, 0);
    reference_kv_append(&r, tokens, k, v);
    reference_attention(&r, tokens, s->heads, q, expected);
    if (iqk_kv_cache_append(cache, tokens, k, v) != 0 ||
        iqk_attention(cache, tokens, s->heads, q, out) != 0) {
      snprintf(detail, sizeof detail, "step %d: %s", step, iqk_last_error());
      ok = false;
    }
    if (ok && !same_cache(cache, &r, detail, sizeof detail))
      ok = false;
    for (int64_t i = 0; ok && i < q_values; ++i)
      if (memcmp(&out[i], &expected[i], 4) != 0) {
        snprintf(detail, sizeof detail, "step %d: out[%lld] = %.9g, expected %.9g", step,
                 (long long)i, out[i], expected[i]);
        ok = false;
      }
    if (ok) {
      double error = max_relative_error(cache, tokens, s->heads, q, out);
      worst = error > worst ? error : worst;
      if (error > 1e-4) {
        snprintf(detail, sizeof detail, "step %d: relative error %.3g against double precision",
                 step, error);
        ok = false;
      }
    }
    free(k);
    free(v);
    free(q);
    free(out);
    free(expected);
  }
  report(set, s->name, threads, ok, detail);
  iqk_kv_cache_free(cache);
  free(r.k_codes);
  free(r.v_codes);
  free(r.k_scale);
  free(r.k_zero);
  free(r.v_scale);
  free(r.v_zero);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: attention_test SET...\n");
    return 2;
  }
  for (int i = 1; i < argc; ++i) {
    if (!iqk_kernel_supported(argv[i])) {
      printf("SKIP %s: not supported by this CPU\n", argv[i]);
      continue;
    }
    iqk_select_kernel(argv[i]);
    for (int threads = 1; threads <= 3; ++threads) {
      iqk_set_num_threads(threads);
      for (size_t s = 0; s < sizeof scenarios / sizeof scenarios[0]; ++s)
        run_scenario(argv[i], &scenarios[s], threads);
    }
  }

  /* Invalid calls fail with a message. */
  iqk_kv_cache_t *cache = iqk_kv_cache_create(2, 8, 4);
  float values[64] = {0};
  if (iqk_kv_cache_create(2, 12, 4) == NULL)
    printf("error: %s\n", iqk_last_error());
  if (iqk_kv_cache_append(cache, 5, values, values) != 0)
    printf("error: %s\n", iqk_last_error());
  if (iqk_attention(cache, 1, 4, values, values) != 0)
    printf("error: %s\n", iqk_last_error());
  iqk_kv_cache_append(cache, 1, values, values);
  if (iqk_attention(cache, 1, 3, values, values) != 0)
    printf("error: %s\n", iqk_last_error());
  iqk_kv_cache_free(cache);
  printf("%d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
