/* A parallel loop over independent rows for the offline quantizers. Each
 * thread takes one contiguous run of rows, so results do not depend on the
 * thread count. */
#include "quant_internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct {
  iq_quant_rows_fn fn;
  void *context;
  size_t begin;
  size_t end;
} row_run_t;

static void *run_rows(void *arg) {
  row_run_t *run = arg;
  run->fn(run->context, run->begin, run->end);
  return NULL;
}

int iq_quant_thread_count(void) {
  const char *env = getenv("IQ_QUANT_THREADS");
  if (env != NULL && *env != '\0') {
    char *end = NULL;
    long value = strtol(env, &end, 10);
    if (*end == '\0' && value >= 1 && value <= 256) {
      return (int)value;
    }
  }
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  return online < 1 ? 1 : (online > 64 ? 64 : (int)online);
}

void iq_quant_parallel_rows(size_t rows, size_t min_rows_per_thread, iq_quant_rows_fn fn,
                            void *context) {
  size_t threads = (size_t)iq_quant_thread_count();
  if (min_rows_per_thread == 0) {
    min_rows_per_thread = 1;
  }
  if (threads > rows / min_rows_per_thread) {
    threads = rows / min_rows_per_thread;
  }
  if (threads <= 1) {
    fn(context, 0, rows);
    return;
  }
  row_run_t *runs = calloc(threads, sizeof(*runs));
  pthread_t *ids = calloc(threads, sizeof(*ids));
  if (runs == NULL || ids == NULL) {
    free(runs);
    free(ids);
    fn(context, 0, rows);
    return;
  }
  for (size_t t = 0; t < threads; ++t) {
    runs[t] = (row_run_t){fn, context, rows * t / threads, rows * (t + 1) / threads};
  }
  /* Thread 0's share runs on the calling thread; a share whose thread
   * cannot be created runs there too. */
  for (size_t t = 1; t < threads; ++t) {
    if (pthread_create(&ids[t], NULL, run_rows, &runs[t]) != 0) {
      run_rows(&runs[t]);
      runs[t].fn = NULL;
    }
  }
  run_rows(&runs[0]);
  for (size_t t = 1; t < threads; ++t) {
    if (runs[t].fn != NULL) {
      pthread_join(ids[t], NULL);
    }
  }
  free(runs);
  free(ids);
}
