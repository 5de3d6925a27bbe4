/* Times ggml's Q4_0 matrix multiply (ggml_mul_mat of a Q4_0 weight and a
 * float32 activation, as llama.cpp runs it) with a persistent ggml thread
 * pool. Built by run.sh against the ggml inside the llama-cpp-python
 * sdist. Usage: ggml_bench THREADS M K N [M K N ...]; prints
 *   ggml q4_0 M K N median_ms GB/s GOPS
 * with GB/s counted over the Q4_0 weight bytes (4.5 bits per weight). The
 * weights cycle through copies that exceed 64 MiB, as in iq_bench. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ggml-cpu.h"
#include "ggml.h"

#define CYCLE_BYTES (64.0 * 1024 * 1024)

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int compare_doubles(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static uint64_t state = 88172645463325252u;
static float next_float(void) {
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return (float)((int)((state >> 11) % 2001) - 1000) / 1000.0f;
}

static int bench(int threads, struct ggml_threadpool *pool, int64_t m, int64_t k, int64_t n) {
  size_t weight_bytes = ggml_row_size(GGML_TYPE_Q4_0, k) * (size_t)n;
  int copies = (int)(CYCLE_BYTES / (double)weight_bytes) + 2;
  size_t activation_bytes = (size_t)(m * k) * sizeof(float);
  size_t output_bytes = (size_t)(m * n) * sizeof(float);
  struct ggml_init_params params = {
      .mem_size = weight_bytes * (size_t)copies + activation_bytes +
                  output_bytes * (size_t)copies + (size_t)copies * 4 * ggml_graph_overhead() +
                  (64u << 20),
      .mem_buffer = NULL,
      .no_alloc = false,
  };
  struct ggml_context *context = ggml_init(params);
  if (!context) {
    fprintf(stderr, "ggml_bench: ggml_init failed\n");
    return 1;
  }
  float *source = malloc((size_t)(n * k) * sizeof(float));
  for (int64_t i = 0; i < n * k; ++i)
    source[i] = next_float();
  struct ggml_tensor *x = ggml_new_tensor_2d(context, GGML_TYPE_F32, k, m);
  for (int64_t i = 0; i < m * k; ++i)
    ((float *)x->data)[i] = next_float();
  struct ggml_cgraph **graphs = calloc((size_t)copies, sizeof *graphs);
  size_t work_size = 0;
  struct ggml_tensor *first = NULL;
  for (int c = 0; c < copies; ++c) {
    struct ggml_tensor *w = ggml_new_tensor_2d(context, GGML_TYPE_Q4_0, k, n);
    if (c == 0) {
      ggml_quantize_chunk(GGML_TYPE_Q4_0, source, w->data, 0, n, k, NULL);
      first = w;
    } else {
      memcpy(w->data, first->data, weight_bytes);
    }
    struct ggml_tensor *y = ggml_mul_mat(context, w, x);
    graphs[c] = ggml_new_graph(context);
    ggml_build_forward_expand(graphs[c], y);
    struct ggml_cplan plan = ggml_graph_plan(graphs[c], threads, pool);
    if (plan.work_size > work_size)
      work_size = plan.work_size;
  }
  free(source);
  void *work = malloc(work_size ? work_size : 1);

  int calls = m == 1 ? copies * 20 : (m * n * k > (int64_t)1 << 34 ? 5 : 9);
  double *times = malloc((size_t)calls * sizeof(double));
  for (int i = -copies; i < calls; ++i) {
    struct ggml_cgraph *graph = graphs[(i + copies) % copies];
    struct ggml_cplan plan = ggml_graph_plan(graph, threads, pool);
    plan.work_data = work;
    double start = now();
    if (ggml_graph_compute(graph, &plan) != GGML_STATUS_SUCCESS) {
      fprintf(stderr, "ggml_bench: ggml_graph_compute failed\n");
      return 1;
    }
    if (i >= 0)
      times[i] = now() - start;
  }
  qsort(times, (size_t)calls, sizeof *times, compare_doubles);
  double seconds = times[calls / 2];
  printf("ggml q4_0 %lld %lld %lld %.4f %.2f %.1f\n", (long long)m, (long long)k, (long long)n,
         seconds * 1e3, (double)weight_bytes / seconds / 1e9,
         2.0 * (double)m * (double)n * (double)k / seconds / 1e9);
  fflush(stdout);
  free(times);
  free(work);
  free(graphs);
  ggml_free(context);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 5 || (argc - 2) % 3 != 0) {
    fprintf(stderr, "usage: ggml_bench THREADS M K N [M K N ...]\n");
    return 2;
  }
  int threads = atoi(argv[1]);
  ggml_cpu_init();
  struct ggml_threadpool_params pool_params = ggml_threadpool_params_default(threads);
  struct ggml_threadpool *pool = ggml_threadpool_new(&pool_params);
  for (int i = 2; i + 2 < argc; i += 3)
    if (bench(threads, pool, atoll(argv[i]), atoll(argv[i + 1]), atoll(argv[i + 2])) != 0)
      return 1;
  ggml_threadpool_free(pool);
  return 0;
}
