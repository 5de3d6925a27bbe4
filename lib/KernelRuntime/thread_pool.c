/* A fixed pool of worker threads that run one parallel task at a time:
 * the caller runs part 0 itself and workers 1..T-1 run the other parts.
 * Plain pthreads, so it works wherever the library does (AArch64 Debian
 * has no OpenMP runtime). A decode step makes hundreds of small calls, so
 * workers and the caller first spin for a short while on the task counter
 * and the pending count, and sleep on the condition variables only after
 * that. */
#include "kernel_runtime.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

/* Polls before sleeping: the first SPIN_PAUSES with a pause instruction,
 * the rest with sched_yield, which hands the core to another runnable
 * thread when the machine is busy. Together an estimate of a few hundred
 * microseconds, which covers the gaps between the calls of a decode step. */
#define SPIN_PAUSES 256
#define SPIN_POLLS 1280

static inline void spin_wait(int poll) {
  if (poll < SPIN_PAUSES) {
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
  } else {
    sched_yield();
  }
}

#define MAX_THREADS 64

static struct {
  pthread_mutex_t lock;
  pthread_cond_t start, done;
  pthread_t workers[MAX_THREADS];
  int started;                  /* worker threads running */
  atomic_uint generation;       /* incremented per task */
  atomic_int pending;           /* parts not finished yet */
  atomic_int parts; /* read by workers that do not take part, too */
  bool stopping;
  iqk_task_fn *task;
  void *context;
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER,
          .start = PTHREAD_COND_INITIALIZER,
          .done = PTHREAD_COND_INITIALIZER};

static void *worker_main(void *argument) {
  int index = (int)(intptr_t)argument;
  unsigned seen = 0;
  for (;;) {
    unsigned now = atomic_load_explicit(&pool.generation, memory_order_acquire);
    for (int i = 0; i < SPIN_POLLS && now == seen; ++i) {
      spin_wait(i);
      now = atomic_load_explicit(&pool.generation, memory_order_acquire);
    }
    if (now == seen) {
      pthread_mutex_lock(&pool.lock);
      while (!pool.stopping && atomic_load(&pool.generation) == seen)
        pthread_cond_wait(&pool.start, &pool.lock);
      bool stopping = pool.stopping;
      now = atomic_load(&pool.generation);
      pthread_mutex_unlock(&pool.lock);
      if (stopping)
        break;
    }
    seen = now;
    /* The task fields were written before the generation was released. */
    int parts = atomic_load_explicit(&pool.parts, memory_order_relaxed);
    if (index >= parts)
      continue;
    pool.task(pool.context, index, parts);
    if (atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_acq_rel) == 1) {
      pthread_mutex_lock(&pool.lock);
      pthread_cond_signal(&pool.done);
      pthread_mutex_unlock(&pool.lock);
    }
  }
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
  atomic_store_explicit(&pool.parts, parts, memory_order_relaxed);
  atomic_store_explicit(&pool.pending, parts - 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
  pthread_cond_broadcast(&pool.start);
  pthread_mutex_unlock(&pool.lock);

  task(context, 0, parts);

  for (int i = 0; i < SPIN_POLLS && atomic_load_explicit(&pool.pending, memory_order_acquire) > 0;
       ++i)
    spin_wait(i);
  if (atomic_load_explicit(&pool.pending, memory_order_acquire) > 0) {
    pthread_mutex_lock(&pool.lock);
    while (atomic_load(&pool.pending) > 0)
      pthread_cond_wait(&pool.done, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
  }
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
