/* A fixed pool of worker threads that run one parallel task at a time:
 * the caller runs part 0 itself and workers 1..T-1 run the other parts.
 * Plain pthreads, so it works wherever the library does (AArch64 Debian
 * has no OpenMP runtime). */
#include "kernel_runtime.h"

#include <pthread.h>
#include <stdlib.h>

#define MAX_THREADS 64

static struct {
  pthread_mutex_t lock;
  pthread_cond_t start, done;
  pthread_t workers[MAX_THREADS];
  int started;         /* worker threads running */
  unsigned generation; /* incremented per task */
  int pending;         /* parts not finished yet */
  int parts;
  bool stopping;
  iqk_task_fn *task;
  void *context;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER,
          .start = PTHREAD_COND_INITIALIZER,
          .done = PTHREAD_COND_INITIALIZER};

static void *worker_main(void *argument) {
  int index = (int)(intptr_t)argument;
  unsigned seen = 0;
  pthread_mutex_lock(&pool.lock);
  for (;;) {
    while (!pool.stopping && pool.generation == seen)
      pthread_cond_wait(&pool.start, &pool.lock);
    if (pool.stopping)
      break;
    seen = pool.generation;
    if (index >= pool.parts)
      continue;
    iqk_task_fn *task = pool.task;
    void *context = pool.context;
    int parts = pool.parts;
    pthread_mutex_unlock(&pool.lock);
    task(context, index, parts);
    pthread_mutex_lock(&pool.lock);
    if (--pool.pending == 0)
      pthread_cond_signal(&pool.done);
  }
  pthread_mutex_unlock(&pool.lock);
  return NULL;
}

/* Starts workers up to `threads - 1`; returns the number of parts that
 * can run (1 when no thread could be started). */
static int ensure_workers(int threads) {
  if (threads > MAX_THREADS)
    threads = MAX_THREADS;
  while (pool.started < threads - 1) {
    int index = pool.started + 1;
    if (pthread_create(&pool.workers[pool.started], NULL, worker_main, (void *)(intptr_t)index) !=
        0)
      break;
    pool.started++;
  }
  return pool.started + 1 < threads ? pool.started + 1 : threads;
}

void iqk_parallel_run(int threads, iqk_task_fn *task, void *context) {
  if (threads <= 1) {
    task(context, 0, 1);
    return;
  }
  pthread_mutex_lock(&pool.lock);
  int parts = ensure_workers(threads);
  pool.task = task;
  pool.context = context;
  pool.parts = parts;
  pool.pending = parts - 1;
  pool.generation++;
  pthread_cond_broadcast(&pool.start);
  pthread_mutex_unlock(&pool.lock);

  task(context, 0, parts);

  pthread_mutex_lock(&pool.lock);
  while (pool.pending > 0)
    pthread_cond_wait(&pool.done, &pool.lock);
  pthread_mutex_unlock(&pool.lock);
}

/* Joins the workers when the library unloads or the program exits. */
__attribute__((destructor)) static void stop_workers(void) {
  pthread_mutex_lock(&pool.lock);
  pool.stopping = true;
  pthread_cond_broadcast(&pool.start);
  int started = pool.started;
  pthread_mutex_unlock(&pool.lock);
  for (int i = 0; i < started; ++i)
    pthread_join(pool.workers[i], NULL);
  pool.started = 0;
}
