/* Times libiqk.so's iqk_matmul (activation quantization included, as the
 * peers quantize their float input too), the machine's read bandwidth and
 * its int8 multiply-add peak, with a fixed number of threads.
 * Usage: iq_bench THREADS M K N [M K N ...]; prints one line per result:
 *   iq SET M K N median_ms GB/s GOPS best_ms
 *   bandwidth GB/s        peak-avx2 GOPS        peak-vnni GOPS
 * (the limits are the best of several runs, iq's times the median)
 * The weights cycle through enough copies to exceed 2 x 32 MiB, so each
 * call reads its matrix from memory, not from the last-level cache. */
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "iq/iq_kernels.h"

#ifndef CYCLE_BYTES
#define CYCLE_BYTES (64.0 * 1024 * 1024)
#endif

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int compare_doubles(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *values, int count) {
  qsort(values, (size_t)count, sizeof *values, compare_doubles);
  return values[count / 2];
}

static uint64_t state = 88172645463325252u;
static uint32_t next_random(void) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return (uint32_t)(state >> 11);
}

static int bench_matmul(int64_t m, int64_t k, int64_t n) {
  double bytes = (double)n * (double)k / 2.0;
  int copies = (int)(CYCLE_BYTES / bytes) + 2;
  uint8_t *codes = malloc((size_t)(n * k));
  uint8_t *zero = malloc((size_t)n);
  float *scale = malloc((size_t)n * sizeof(float));
  for (int64_t i = 0; i < n * k; ++i)
    codes[i] = (uint8_t)(next_random() % 16);
  for (int64_t i = 0; i < n; ++i) {
    zero[i] = 8;
    scale[i] = 0.01f;
  }
  iqk_weights_t **w = calloc((size_t)copies, sizeof *w);
  for (int c = 0; c < copies; ++c) {
    w[c] = iqk_weights_pack(n, k, codes, zero, scale);
    if (!w[c]) {
      fprintf(stderr, "iq_bench: %s\n", iqk_last_error());
      return 1;
    }
  }
  float *x = malloc((size_t)(m * k) * sizeof(float));
  for (int64_t i = 0; i < m * k; ++i)
    x[i] = (float)((int)(next_random() % 2001) - 1000) / 1000.0f;
  float *y = malloc((size_t)(m * n) * sizeof(float));
  iqk_activations_t *a = iqk_activations_create(m, k);

  int calls = m == 1 ? copies * 20 : (m * n * k > (int64_t)1 << 34 ? 5 : 9);
  if (calls < copies * 2 && m == 1)
    calls = copies * 2;
  double *times = malloc((size_t)calls * sizeof(double));
  /* One warm-up pass starts the threads and faults the pages in. */
  for (int c = 0; c < copies; ++c) {
    iqk_activations_quantize(a, m, x);
    iqk_matmul(w[c], a, y);
  }
  for (int i = 0; i < calls; ++i) {
    double start = now();
    if (iqk_activations_quantize(a, m, x) != 0 || iqk_matmul(w[i % copies], a, y) != 0) {
      fprintf(stderr, "iq_bench: %s\n", iqk_last_error());
      return 1;
    }
    times[i] = now() - start;
  }
  double seconds = median(times, calls);
  printf("iq %s %lld %lld %lld %.4f %.2f %.1f %.4f\n", iqk_kernel_name(), (long long)m,
         (long long)k, (long long)n, seconds * 1e3, bytes / seconds / 1e9,
         2.0 * (double)m * (double)n * (double)k / seconds / 1e9, times[0] * 1e3);
  fflush(stdout);
  for (int c = 0; c < copies; ++c)
    iqk_weights_free(w[c]);
  free(w);
  iqk_activations_free(a);
  free(codes);
  free(zero);
  free(scale);
  free(x);
  free(y);
  free(times);
  return 0;
}

/* ---- Machine limits ------------------------------------------------------------ */

typedef struct limit_task {
  const uint8_t *buffer;
  size_t size;
  int kind; /* 0: read, 1: vpmaddubsw peak, 2: vpdpbusd peak */
  long iterations;
  volatile long long sink;
} limit_task_t;

__attribute__((target("avx2"))) static void *read_worker(void *argument) {
  limit_task_t *task = argument;
  __m256i sum0 = _mm256_setzero_si256(), sum1 = sum0, sum2 = sum0, sum3 = sum0;
  /* Software prefetch 4 KiB ahead, as iq's GEMV does: on the machine of
   * docs/benchmarks.md it raises this loop's rate, and the limit is the
   * best a read loop reaches. */
  for (size_t i = 0; i < task->size; i += 128) {
    _mm_prefetch((const char *)task->buffer + i + 4096, _MM_HINT_NTA);
    _mm_prefetch((const char *)task->buffer + i + 4096 + 64, _MM_HINT_NTA);
    sum0 = _mm256_add_epi64(sum0, _mm256_load_si256((const __m256i *)(task->buffer + i)));
    sum1 = _mm256_add_epi64(sum1, _mm256_load_si256((const __m256i *)(task->buffer + i + 32)));
    sum2 = _mm256_add_epi64(sum2, _mm256_load_si256((const __m256i *)(task->buffer + i + 64)));
    sum3 = _mm256_add_epi64(sum3, _mm256_load_si256((const __m256i *)(task->buffer + i + 96)));
  }
  sum0 = _mm256_add_epi64(_mm256_add_epi64(sum0, sum1), _mm256_add_epi64(sum2, sum3));
  task->sink = _mm256_extract_epi64(sum0, 0);
  return NULL;
}

/* 7 independent vpmaddubsw + vpaddw chains in assembly (compilers spill
 * or merge such loops): 32 multiply-adds, 64 ops, per vpmaddubsw. */
__attribute__((target("avx2"))) static void *maddubs_worker(void *argument) {
  limit_task_t *task = argument;
  __asm__ volatile("vpxor %%ymm0, %%ymm0, %%ymm0\n\tvpxor %%ymm15, %%ymm15, %%ymm15\n\t"
                   "vpxor %%ymm8, %%ymm8, %%ymm8\n\tvpxor %%ymm9, %%ymm9, %%ymm9\n\t"
                   "vpxor %%ymm10, %%ymm10, %%ymm10\n\tvpxor %%ymm11, %%ymm11, %%ymm11\n\t"
                   "vpxor %%ymm12, %%ymm12, %%ymm12\n\tvpxor %%ymm13, %%ymm13, %%ymm13\n\t"
                   "vpxor %%ymm14, %%ymm14, %%ymm14\n\t" ::: "xmm0", "xmm8", "xmm9", "xmm10",
                   "xmm11", "xmm12", "xmm13", "xmm14", "xmm15");
  for (long it = 0; it < task->iterations; ++it)
    __asm__ volatile("vpmaddubsw %%ymm15, %%ymm0, %%ymm1\n\tvpaddw %%ymm1, %%ymm8, %%ymm8\n\t"
                     "vpmaddubsw %%ymm15, %%ymm0, %%ymm2\n\tvpaddw %%ymm2, %%ymm9, %%ymm9\n\t"
                     "vpmaddubsw %%ymm15, %%ymm0, %%ymm3\n\tvpaddw %%ymm3, %%ymm10, %%ymm10\n\t"
                     "vpmaddubsw %%ymm15, %%ymm0, %%ymm4\n\tvpaddw %%ymm4, %%ymm11, %%ymm11\n\t"
                     "vpmaddubsw %%ymm15, %%ymm0, %%ymm5\n\tvpaddw %%ymm5, %%ymm12, %%ymm12\n\t"
                     "vpmaddubsw %%ymm15, %%ymm0, %%ymm6\n\tvpaddw %%ymm6, %%ymm13, %%ymm13\n\t"
                     "vpmaddubsw %%ymm15, %%ymm0, %%ymm7\n\tvpaddw %%ymm7, %%ymm14, %%ymm14\n\t" ::
                         : "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9",
                           "xmm10", "xmm11", "xmm12", "xmm13", "xmm14");
  __asm__ volatile("vzeroupper" ::: "memory");
  return NULL;
}

/* 8 independent vpdpbusd chains on ymm registers, in assembly: 32
 * multiply-adds per instruction. */
__attribute__((target("avx512vnni,avx512vl"))) static void *dpbusd_worker(void *argument) {
  limit_task_t *task = argument;
  __asm__ volatile("vpxor %%ymm0, %%ymm0, %%ymm0\n\tvpxor %%ymm15, %%ymm15, %%ymm15\n\t" :::
                       "xmm0", "xmm15");
  for (long it = 0; it < task->iterations; ++it)
    __asm__ volatile("vpdpbusd %%ymm15, %%ymm0, %%ymm1\n\tvpdpbusd %%ymm15, %%ymm0, %%ymm2\n\t"
                     "vpdpbusd %%ymm15, %%ymm0, %%ymm3\n\tvpdpbusd %%ymm15, %%ymm0, %%ymm4\n\t"
                     "vpdpbusd %%ymm15, %%ymm0, %%ymm5\n\tvpdpbusd %%ymm15, %%ymm0, %%ymm6\n\t"
                     "vpdpbusd %%ymm15, %%ymm0, %%ymm7\n\tvpdpbusd %%ymm15, %%ymm0, %%ymm8\n\t" ::
                         : "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8");
  __asm__ volatile("vzeroupper" ::: "memory");
  return NULL;
}

/* Runs `threads` workers of one kind and returns the shortest time of
 * `repeats` runs: a limit is what the machine can reach, so the best run
 * counts, not a typical one. */
static double run_limit(int threads, int kind, const uint8_t *buffer, size_t size, long iterations,
                        int repeats) {
  double times[16];
  limit_task_t tasks[64];
  pthread_t ids[64];
  void *(*worker)(void *) = read_worker;
  if (kind == 1)
    worker = maddubs_worker;
  else if (kind == 2)
    worker = dpbusd_worker;
  for (int r = 0; r < repeats; ++r) {
    double start = now();
    for (int t = 0; t < threads; ++t) {
      tasks[t] = (limit_task_t){.buffer = buffer + size / (size_t)threads * (size_t)t,
                                .size = size / (size_t)threads, .kind = kind,
                                .iterations = iterations};
      pthread_create(&ids[t], NULL, worker, &tasks[t]);
    }
    for (int t = 0; t < threads; ++t)
      pthread_join(ids[t], NULL);
    times[r] = now() - start;
  }
  double best = times[0];
  for (int r = 1; r < repeats; ++r)
    best = times[r] < best ? times[r] : best;
  return best;
}

static void bench_limits(int threads) {
  size_t size = (size_t)512 << 20;
  uint8_t *buffer = aligned_alloc(4096, size);
  memset(buffer, 1, size);
  double seconds = run_limit(threads, 0, buffer, size, 0, 11);
  printf("bandwidth %.2f\n", (double)size / seconds / 1e9);
  free(buffer);

  long iterations = 50000000;
  __builtin_cpu_init();
  seconds = run_limit(threads, 1, NULL, 0, iterations, 5);
  printf("peak-avx2 %.1f\n", 64.0 * 7 * (double)iterations * threads / seconds / 1e9);
  if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl")) {
    seconds = run_limit(threads, 2, NULL, 0, iterations, 5);
    printf("peak-vnni %.1f\n", 64.0 * 8 * (double)iterations * threads / seconds / 1e9);
  }
  fflush(stdout);
}

int main(int argc, char **argv) {
  if (argc < 2 || (argc - 2) % 3 != 0) {
    fprintf(stderr, "usage: iq_bench THREADS [M K N]...\n");
    return 2;
  }
  int threads = atoi(argv[1]);
  if (iqk_set_num_threads(threads) != 0) {
    fprintf(stderr, "iq_bench: %s\n", iqk_last_error());
    return 2;
  }
  if (argc == 2) {
    bench_limits(threads);
    return 0;
  }
  for (int i = 2; i + 2 < argc; i += 3)
    if (bench_matmul(atoll(argv[i]), atoll(argv[i + 1]), atoll(argv[i + 2])) != 0)
      return 1;
  return 0;
}
