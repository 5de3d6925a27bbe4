/* Checks iqk_activations_quantize_hadamard (the generated quantizer fused
 * with the Hadamard transform) against iq_hadamard_transform_rows and
 * iq_quantize_per_token of iq_quant, bit for bit: codes, scales, zero
 * points and code sums. Built without WITH_REFERENCE (for AArch64, where
 * iq_quant is not built), it prints only the digests, which the test
 * compares with those of the x86-64 run.
 * Usage: hadamard_test SET */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iq/iq_kernels.h"
#ifdef WITH_REFERENCE
#include "iq/quant.h"
#endif

/* Sizes of each kind: powers of two, every K factor once, the LLaMA and
 * stories260K FFN widths. 5120 = 40 * 128 checks the factor order (20
 * would also divide it). */
static const int64_t sizes[] = {64,   128,  4096, 172 * 4, 156 * 2, 140, 108 * 8, 60 * 2,
                                52,   36 * 4, 28 * 2, 44, 40 * 2, 20 * 4, 12 * 8, 172,
                                5120, 11008, 13824, 14336, 1536};

static uint64_t random_state = 0x243f6a8885a308d3u;

static uint32_t next_random(void) {
  random_state ^= random_state << 13;
  random_state ^= random_state >> 7;
  random_state ^= random_state << 17;
  return (uint32_t)(random_state >> 11);
}

/* FNV-1a over bytes. */
static uint64_t digest(uint64_t hash, const void *data, size_t size) {
  const uint8_t *bytes = data;
  for (size_t i = 0; i < size; ++i)
    hash = (hash ^ bytes[i]) * 0x100000001b3u;
  return hash;
}

static int failures;

static void check_size(int64_t k, int64_t m) {
  float *x = malloc((size_t)(m * k) * sizeof(float));
  for (int64_t i = 0; i < m * k; ++i)
    x[i] = ((float)(next_random() % 20001) - 10000.0f) / 3001.0f;
  /* With m = 3, row 1 is all zero and row 2 has one large outlier, which
   * the transform spreads out. */
  for (int64_t i = 0; m > 1 && i < k; ++i)
    x[k + i] = 0.0f;
  if (m > 2)
    x[2 * k + 3] = 250.0f;

  iqk_activations_t *a = iqk_activations_create(m, k);
  if (!a || iqk_activations_quantize_hadamard(a, m, x) != 0) {
    printf("FAIL k=%lld: %s\n", (long long)k, iqk_last_error());
    failures++;
    free(x);
    iqk_activations_free(a);
    return;
  }
  uint8_t *codes = malloc((size_t)(m * k));
  uint64_t hash = 0xcbf29ce484222325u;
  for (int64_t r = 0; r < m; ++r) {
    int64_t panel = r / a->panel_rows, lane = r % a->panel_rows;
    for (int64_t i = 0; i < k; ++i)
      codes[r * k + i] = a->codes[((panel * a->blocks + i / 64) * a->panel_rows + lane) * 64 + i % 64];
    hash = digest(hash, codes + r * k, (size_t)k);
    hash = digest(hash, &a->scale[r], sizeof(float));
    hash = digest(hash, &a->zero[r], sizeof(int32_t));
  }
  const char *status = "DIGEST";
  char detail[200] = "";
#ifdef WITH_REFERENCE
  status = "PASS";
  float *transformed = malloc((size_t)(m * k) * sizeof(float));
  memcpy(transformed, x, (size_t)(m * k) * sizeof(float));
  uint8_t *expected = malloc((size_t)(m * k));
  float *scales = malloc((size_t)m * sizeof(float)), *zeros = malloc((size_t)m * sizeof(float));
  iq_error_t *error = NULL;
  if (!iq_hadamard_transform_rows(transformed, (size_t)m, (size_t)k, &error) ||
      !iq_quantize_per_token(transformed, (size_t)m, (size_t)k, 4, 1.0f, 1.0f, expected, scales,
                             zeros, NULL, &error)) {
    iq_error_print(error, "hadamard_test", stdout);
    iq_error_destroy(error);
    status = "FAIL";
  }
  for (int64_t r = 0; r < m && strcmp(status, "PASS") == 0; ++r) {
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) {
      sum += expected[r * k + i];
      if (codes[r * k + i] != expected[r * k + i]) {
        snprintf(detail, sizeof detail, ": row %lld, k %lld: code %u, expected %u", (long long)r,
                 (long long)i, codes[r * k + i], expected[r * k + i]);
        status = "FAIL";
        break;
      }
    }
    if (strcmp(status, "PASS") != 0)
      break;
    if (memcmp(&a->scale[r], &scales[r], sizeof(float)) != 0 || a->zero[r] != (int32_t)zeros[r] ||
        a->sum[r] != sum) {
      snprintf(detail, sizeof detail, ": row %lld: scale %.9g zero %d sum %d, expected %.9g %g %d",
               (long long)r, a->scale[r], a->zero[r], a->sum[r], scales[r], zeros[r], sum);
      status = "FAIL";
    }
  }
  if (strcmp(status, "FAIL") == 0)
    failures++;
  free(transformed);
  free(expected);
  free(scales);
  free(zeros);
#endif
  printf("%s k=%lld m=%lld factor=%d digest=%016llx%s\n", status, (long long)k, (long long)m,
         iqk_hadamard_factor(k), (unsigned long long)hash, detail);
  free(codes);
  free(x);
  iqk_activations_free(a);
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: hadamard_test SET\n");
    return 2;
  }
  if (iqk_select_kernel(argv[1]) != 0) {
    printf("SKIP %s: %s\n", argv[1], iqk_last_error());
    return 0;
  }
  iqk_set_num_threads(2);
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
    check_size(sizes[i], 3);
    check_size(sizes[i], 1);
  }
  /* Sizes without a transform are rejected. */
  iqk_activations_t *a = iqk_activations_create(1, 100);
  float x[100] = {0};
  if (iqk_activations_quantize_hadamard(a, 1, x) == 0) {
    printf("FAIL k=100 was accepted\n");
    failures++;
  } else {
    printf("error k=100: %s\n", iqk_last_error());
  }
  iqk_activations_free(a);
  printf("%d failed\n", failures);
  return failures ? 1 : 0;
}
