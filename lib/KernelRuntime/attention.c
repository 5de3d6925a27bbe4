/* The int4 KV cache and the threaded calls into the generated
 * iqk_<isa>_kv_append and iqk_<isa>_attention kernels. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "iq/iq_kernels.h"
#include "kernel_runtime.h"

void iqk_kv_cache_free(iqk_kv_cache_t *cache) {
  if (!cache)
    return;
  free(cache->k_codes);
  free(cache->v_codes);
  free(cache->k_scale);
  free(cache->k_zero);
  free(cache->v_scale);
  free(cache->v_zero);
  free(cache);
}

iqk_kv_cache_t *iqk_kv_cache_create(int64_t kv_heads, int64_t head_dim, int64_t capacity) {
  if (kv_heads < 1 || kv_heads > 4096 || capacity < 1 || capacity > (INT64_C(1) << 24) ||
      head_dim < 2 || head_dim > 4096 || (head_dim & (head_dim - 1)) != 0) {
    iqk_fail("invalid KV cache shape: %lld KV heads, head_dim %lld, capacity %lld; head_dim must "
             "be a power of two from 2 to 4096, heads 1 to 4096, capacity 1 to 16777216",
             (long long)kv_heads, (long long)head_dim, (long long)capacity);
    return NULL;
  }
  iqk_kv_cache_t *cache = calloc(1, sizeof *cache);
  if (!cache) {
    iqk_fail("out of memory");
    return NULL;
  }
  size_t slots = (size_t)(kv_heads * capacity);
  cache->kv_heads = kv_heads;
  cache->head_dim = head_dim;
  cache->capacity = capacity;
  cache->k_clip = cache->v_clip = 1.0f;
  cache->k_codes = calloc(slots, (size_t)head_dim / 2);
  cache->v_codes = calloc(slots, (size_t)head_dim / 2);
  cache->k_scale = calloc(slots, sizeof(float));
  cache->k_zero = calloc(slots, sizeof(float));
  cache->v_scale = calloc(slots, sizeof(float));
  cache->v_zero = calloc(slots, sizeof(float));
  if (!cache->k_codes || !cache->v_codes || !cache->k_scale || !cache->k_zero ||
      !cache->v_scale || !cache->v_zero) {
    iqk_kv_cache_free(cache);
    iqk_fail("out of memory for a KV cache of %lld positions", (long long)capacity);
    return NULL;
  }
  return cache;
}

int iqk_kv_cache_set_clip(iqk_kv_cache_t *cache, float k_clip, float v_clip) {
  if (!cache || !(k_clip > 0.0f && k_clip <= 1.0f) || !(v_clip > 0.0f && v_clip <= 1.0f))
    return iqk_fail("invalid KV clip factors %g and %g; use values in (0, 1]", k_clip, v_clip);
  cache->k_clip = k_clip;
  cache->v_clip = v_clip;
  return 0;
}

int iqk_kv_cache_truncate(iqk_kv_cache_t *cache, int64_t length) {
  if (!cache || length < 0 || length > cache->length)
    return iqk_fail("invalid KV cache length %lld; the cache holds %lld positions",
                    (long long)length, cache ? (long long)cache->length : 0LL);
  cache->length = length;
  return 0;
}

static int64_t log2_exact(int64_t n) {
  int64_t log = 0;
  while ((INT64_C(1) << log) < n)
    log++;
  return log;
}

typedef struct cache_task {
  const iqk_kernel_set_t *set;
  const iqk_kv_cache_t *cache;
  const float *k, *v, *q;
  float *out;
  float *work;
  size_t work_per_part;
  int64_t tokens, heads, position;
} cache_task_t;

#define CACHE_ARGS(c)                                                                              \
  IQK_MEMREF_ARGS(c->k_codes, c->kv_heads * c->capacity * c->head_dim / 2),                       \
      IQK_MEMREF_ARGS(c->k_scale, c->kv_heads * c->capacity),                                     \
      IQK_MEMREF_ARGS(c->k_zero, c->kv_heads * c->capacity),                                      \
      IQK_MEMREF_ARGS(c->v_codes, c->kv_heads * c->capacity * c->head_dim / 2),                   \
      IQK_MEMREF_ARGS(c->v_scale, c->kv_heads * c->capacity),                                     \
      IQK_MEMREF_ARGS(c->v_zero, c->kv_heads * c->capacity)

/* K and V values per append below which one thread quantizes them all. */
#define APPEND_PARALLEL_MIN_VALUES 4096

static void run_append_part(void *context, int part, int parts) {
  const cache_task_t *task = context;
  const iqk_kv_cache_t *c = task->cache;
  int64_t begin = c->kv_heads * part / parts, end = c->kv_heads * (part + 1) / parts;
  if (begin == end)
    return;
  int64_t rows = task->tokens * c->kv_heads * c->head_dim;
  task->set->kv_append(IQK_MEMREF_ARGS((float *)task->k, rows),
                       IQK_MEMREF_ARGS((float *)task->v, rows), CACHE_ARGS(c),
                       IQK_MEMREF_ARGS(task->work + task->work_per_part * (size_t)part,
                                       task->work_per_part),
                       task->tokens, c->kv_heads, c->head_dim, c->capacity, c->length,
                       log2_exact(c->head_dim), (float)(1.0 / sqrt((double)c->head_dim)),
                       c->k_clip, c->v_clip, begin, end, c->v_group_range ? 1 : 0);
}

int iqk_kv_cache_set_v_group_range(iqk_kv_cache_t *cache, int group_range) {
  if (!cache)
    return iqk_fail("iqk_kv_cache_set_v_group_range: cache must not be NULL");
  cache->v_group_range = group_range != 0;
  return 0;
}

int iqk_kv_cache_append(iqk_kv_cache_t *cache, int64_t tokens, const float *k, const float *v) {
  const iqk_kernel_set_t *set = iqk_selected_set();
  if (!set)
    return -1;
  if (!cache || !k || !v)
    return iqk_fail("iqk_kv_cache_append: arguments must not be NULL");
  if (tokens < 1 || tokens > cache->capacity - cache->length)
    return iqk_fail("cannot append %lld positions to a KV cache holding %lld of %lld",
                    (long long)tokens, (long long)cache->length, (long long)cache->capacity);
  int threads = iqk_num_threads() < cache->kv_heads ? iqk_num_threads() : (int)cache->kv_heads;
  /* A decode step appends a few hundred values, less than a wake-up of
   * the pool costs. */
  if (tokens * cache->kv_heads * cache->head_dim < APPEND_PARALLEL_MIN_VALUES)
    threads = 1;
  cache_task_t task = {.set = set, .cache = cache, .k = k, .v = v, .tokens = tokens,
                       .work_per_part = (size_t)cache->head_dim};
  task.work = malloc((size_t)threads * task.work_per_part * sizeof(float));
  if (!task.work)
    return iqk_fail("out of memory");
  iqk_parallel_run(threads, run_append_part, &task);
  free(task.work);
  cache->length += tokens;
  return 0;
}

static void run_attention_part(void *context, int part, int parts) {
  const cache_task_t *task = context;
  const iqk_kv_cache_t *c = task->cache;
  int64_t begin = task->heads * part / parts, end = task->heads * (part + 1) / parts;
  if (begin == end)
    return;
  int64_t rows = task->tokens * task->heads * c->head_dim;
  task->set->attention(IQK_MEMREF_ARGS((float *)task->q, rows), IQK_MEMREF_ARGS(task->out, rows),
                       CACHE_ARGS(c),
                       IQK_MEMREF_ARGS(task->work + task->work_per_part * (size_t)part,
                                       task->work_per_part),
                       task->tokens, task->heads, c->kv_heads, c->head_dim, c->capacity,
                       task->position, log2_exact(c->head_dim),
                       (float)(1.0 / sqrt((double)c->head_dim)),
                       (float)(1.0 / sqrt((double)c->head_dim)), begin, end);
}

int iqk_attention(const iqk_kv_cache_t *cache, int64_t tokens, int64_t heads, const float *q,
                  float *out) {
  const iqk_kernel_set_t *set = iqk_selected_set();
  if (!set)
    return -1;
  if (!cache || !q || !out)
    return iqk_fail("iqk_attention: arguments must not be NULL");
  if (tokens < 1 || tokens > cache->length)
    return iqk_fail("invalid query count %lld for a KV cache holding %lld positions (append "
                    "the queries' K and V first)",
                    (long long)tokens, (long long)cache->length);
  if (heads < cache->kv_heads || heads % cache->kv_heads != 0)
    return iqk_fail("invalid head count %lld: it must be a multiple of the %lld KV heads",
                    (long long)heads, (long long)cache->kv_heads);
  int threads = iqk_num_threads() < heads ? iqk_num_threads() : (int)heads;
  cache_task_t task = {.set = set, .cache = cache, .q = q, .out = out, .tokens = tokens,
                       .heads = heads, .position = cache->length - tokens,
                       .work_per_part = (size_t)(cache->head_dim + cache->length)};
  task.work = malloc((size_t)threads * task.work_per_part * sizeof(float));
  if (!task.work)
    return iqk_fail("out of memory");
  iqk_parallel_run(threads, run_attention_part, &task);
  free(task.work);
  return 0;
}
