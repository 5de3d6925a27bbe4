/* Sessions: a KV cache per sequence and forward passes through the
 * compiled code's iq_model_forward. */
#include "runtime_internal.h"

#include <stdlib.h>
#include <string.h>

#include "iq/iq_compiled.h"
#include "iq/support.h"

/* Bound on the logits scratch used when the caller does not want every
 * row: longer calls run in chunks of tokens whose logits fit, which gives
 * the same cache as one call because attention at position p reads only
 * cache entries 0 .. p. */
#define SCRATCH_LOGITS_BYTES (64u << 20)

struct iq_session {
  iq_model_t *model;
  int32_t max_context;
  int32_t length;
  float **caches;      /* 2 * layers buffers: key and value of each layer */
  uint64_t *slots;     /* 6 + 2 * layers + weights entries */
  int64_t *ids;        /* scratch, max_context entries */
  int64_t *positions;  /* scratch, max_context entries */
  float *logits;       /* scratch, scratch_rows * vocab entries, allocated on first use */
  int32_t scratch_rows;
};

/* The int4 KV cache of iq_kernels.h, in libraries that link the kernels. */
struct iqk_kv_cache;
extern struct iqk_kv_cache *iqk_kv_cache_create(int64_t kv_heads, int64_t head_dim,
                                                int64_t capacity) __attribute__((weak));
extern void iqk_kv_cache_free(struct iqk_kv_cache *cache) __attribute__((weak));
extern const char *iqk_last_error(void) __attribute__((weak));

void iq_session_destroy(iq_session_t *session) {
  if (!session) {
    return;
  }
  if (session->caches) {
    bool int4 = session->model->metadata.int4_cache;
    for (int32_t i = 0; i < 2 * session->model->metadata.config.layers; ++i) {
      if (int4 && iqk_kv_cache_free) {
        iqk_kv_cache_free((struct iqk_kv_cache *)(void *)session->caches[i]);
      } else {
        free(session->caches[i]);
      }
    }
  }
  free(session->caches);
  free(session->slots);
  free(session->ids);
  free(session->positions);
  free(session->logits);
  iq_rt_model_release(session->model);
  free(session);
}

/* One iqk_kv_cache_t per layer, in the even cache slots. */
static iq_status_t allocate_int4_caches(iq_session_t *session) {
  const iq_model_config_t *config = &session->model->metadata.config;
  if (!iqk_kv_cache_create || !iqk_kv_cache_free) {
    return iq_rt_fail(IQ_ERROR_FORMAT, "iq_session_create: the library declares an int4 KV "
                                       "cache but lacks the int4 kernels; recompile it");
  }
  int32_t buffers = 2 * config->layers;
  session->caches = calloc((size_t)buffers, sizeof *session->caches);
  if (!session->caches) {
    return iq_rt_fail(IQ_ERROR_OUT_OF_MEMORY, "iq_session_create: out of memory");
  }
  for (int32_t layer = 0; layer < config->layers; ++layer) {
    struct iqk_kv_cache *cache =
        iqk_kv_cache_create(config->num_kv_heads, config->head_dim, session->max_context);
    if (!cache) {
      return iq_rt_fail(IQ_ERROR_OUT_OF_MEMORY,
                        "iq_session_create: cannot create the int4 KV cache of layer %d for %d "
                        "positions: %s",
                        layer, session->max_context, iqk_last_error ? iqk_last_error() : "");
    }
    session->caches[2 * layer] = (float *)(void *)cache;
  }
  return IQ_OK;
}

static iq_status_t allocate_caches(iq_session_t *session) {
  if (session->model->metadata.int4_cache) {
    return allocate_int4_caches(session);
  }
  const iq_model_config_t *config = &session->model->metadata.config;
  uint64_t elements = 0;
  uint64_t bytes = 0;
  if (!iq_mul_u64((uint64_t)config->num_kv_heads * (uint64_t)config->head_dim,
                  (uint64_t)session->max_context, &elements) ||
      !iq_mul_u64(elements, sizeof(float), &bytes) || bytes > SIZE_MAX) {
    return iq_rt_fail(IQ_ERROR_OUT_OF_RANGE,
                      "iq_session_create: a KV cache of %d positions overflows the address space",
                      session->max_context);
  }
  int32_t buffers = 2 * config->layers;
  session->caches = calloc((size_t)buffers, sizeof *session->caches);
  if (!session->caches) {
    return iq_rt_fail(IQ_ERROR_OUT_OF_MEMORY, "iq_session_create: out of memory");
  }
  for (int32_t i = 0; i < buffers; ++i) {
    /* calloc gives the zero-filled cache the compiled code expects. */
    session->caches[i] = calloc((size_t)elements, sizeof(float));
    if (!session->caches[i]) {
      return iq_rt_fail(IQ_ERROR_OUT_OF_MEMORY,
                        "iq_session_create: out of memory for the KV cache (%d layers x 2 x "
                        "%llu bytes for %d positions); use a smaller max_context",
                        config->layers, (unsigned long long)bytes, session->max_context);
    }
  }
  return IQ_OK;
}

/* Fills the slots that stay the same across calls: batch, capacity,
 * caches and weights. */
static void fill_fixed_slots(iq_session_t *session) {
  const iq_model_t *model = session->model;
  int32_t layers = model->metadata.config.layers;
  uint64_t *slots = session->slots;
  slots[IQ_SLOT_BATCH] = 1;
  slots[IQ_SLOT_CAPACITY] = (uint64_t)session->max_context;
  for (int32_t i = 0; i < 2 * layers; ++i) {
    slots[IQ_SLOT_CACHES + i] = (uint64_t)(uintptr_t)session->caches[i];
  }
  for (size_t i = 0; i < model->metadata.weight_count; ++i) {
    slots[IQ_SLOT_CACHES + 2 * (size_t)layers + i] = (uint64_t)(uintptr_t)model->weights[i];
  }
}

iq_status_t iq_session_create(iq_model_t *model, int32_t max_context, iq_session_t **session) {
  if (!session) {
    return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT, "iq_session_create: session is NULL");
  }
  *session = NULL;
  if (!model) {
    return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT, "iq_session_create: model is NULL");
  }
  if (max_context < 1) {
    return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT,
                      "iq_session_create: max_context is %d, expected at least 1", max_context);
  }

  iq_session_t *result = calloc(1, sizeof *result);
  if (!result) {
    return iq_rt_fail(IQ_ERROR_OUT_OF_MEMORY, "iq_session_create: out of memory");
  }
  atomic_fetch_add(&model->references, 1);
  result->model = model;
  result->max_context = max_context;

  size_t slot_count = IQ_SLOT_CACHES + 2 * (size_t)model->metadata.config.layers +
                      model->metadata.weight_count;
  result->slots = calloc(slot_count, sizeof *result->slots);
  result->ids = calloc((size_t)max_context, sizeof *result->ids);
  result->positions = calloc((size_t)max_context, sizeof *result->positions);
  iq_status_t status = IQ_OK;
  if (!result->slots || !result->ids || !result->positions) {
    status = iq_rt_fail(IQ_ERROR_OUT_OF_MEMORY, "iq_session_create: out of memory for %d "
                        "positions", max_context);
  }
  if (status == IQ_OK) {
    status = allocate_caches(result);
  }
  if (status != IQ_OK) {
    iq_session_destroy(result);
    return status;
  }
  fill_fixed_slots(result);
  *session = result;
  return IQ_OK;
}

/* Allocates the logits scratch on first use: at most `rows` rows, bounded
 * by SCRATCH_LOGITS_BYTES but always at least one. */
static iq_status_t ensure_scratch(iq_session_t *session, int32_t rows) {
  int32_t vocab = session->model->metadata.config.vocab_size;
  size_t row_bytes = (size_t)vocab * sizeof(float);
  size_t limit = SCRATCH_LOGITS_BYTES / row_bytes;
  if (limit < 1) {
    limit = 1;
  }
  int32_t needed = (size_t)rows < limit ? rows : (int32_t)limit;
  if (session->scratch_rows >= needed) {
    return IQ_OK;
  }
  float *grown = realloc(session->logits, (size_t)needed * row_bytes);
  if (!grown) {
    return iq_rt_fail(IQ_ERROR_OUT_OF_MEMORY,
                      "iq_session_forward: out of memory for %d rows of %d logits", needed, vocab);
  }
  session->logits = grown;
  session->scratch_rows = needed;
  return IQ_OK;
}

static iq_status_t check_forward_arguments(const iq_session_t *session, const int32_t *tokens,
                                           int32_t count, int32_t position) {
  if (!session) {
    return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT, "iq_session_forward: session is NULL");
  }
  if (!tokens) {
    return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT, "iq_session_forward: tokens is NULL");
  }
  if (count < 1) {
    return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT,
                      "iq_session_forward: count is %d, expected at least 1", count);
  }
  if (position < 0 || position > session->length) {
    return iq_rt_fail(IQ_ERROR_OUT_OF_RANGE,
                      "iq_session_forward: position %d is outside [0, %d], the session's "
                      "length; positions must continue the cache or rewind it",
                      position, session->length);
  }
  if ((int64_t)position + count > session->max_context) {
    return iq_rt_fail(IQ_ERROR_OUT_OF_RANGE,
                      "iq_session_forward: positions %d .. %lld pass the session's max_context "
                      "of %d; create the session with a larger max_context",
                      position, (long long)position + count - 1, session->max_context);
  }
  int32_t vocab = session->model->metadata.config.vocab_size;
  for (int32_t i = 0; i < count; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT,
                        "iq_session_forward: token id %d at index %d is outside [0, %d), the "
                        "model's vocabulary",
                        tokens[i], i, vocab);
    }
  }
  return IQ_OK;
}

/* Runs the compiled code over tokens[0 .. count) at `position`, writing
 * `count` logits rows to `logits`. */
static void run_compiled(iq_session_t *session, const int32_t *tokens, int32_t count,
                         int32_t position, float *logits) {
  for (int32_t i = 0; i < count; ++i) {
    session->ids[i] = tokens[i];
    session->positions[i] = (int64_t)position + i;
  }
  uint64_t *slots = session->slots;
  slots[IQ_SLOT_TOKENS] = (uint64_t)count;
  slots[IQ_SLOT_IDS] = (uint64_t)(uintptr_t)session->ids;
  slots[IQ_SLOT_POSITIONS] = (uint64_t)(uintptr_t)session->positions;
  slots[IQ_SLOT_LOGITS] = (uint64_t)(uintptr_t)logits;
  iq_model_forward(slots);
}

/* The first failure of the int4 kernels during the last forward pass, in
 * libraries that have them (iq/int4_model.h). */
extern const char *iq_int4_take_error(void) __attribute__((weak));

static iq_status_t int4_status(void) {
  const char *message = iq_int4_take_error ? iq_int4_take_error() : NULL;
  if (message)
    return iq_rt_fail(IQ_ERROR_INTERNAL, "iq_session_forward: %s", message);
  return IQ_OK;
}

iq_status_t iq_session_forward(iq_session_t *session, const int32_t *tokens, int32_t count,
                               int32_t position, float *logits, int32_t last_only) {
  iq_status_t status = check_forward_arguments(session, tokens, count, position);
  if (status != IQ_OK) {
    return status;
  }
  size_t vocab = (size_t)session->model->metadata.config.vocab_size;

  /* Every row wanted: the compiled code writes into the caller's buffer. */
  if (logits && !last_only) {
    run_compiled(session, tokens, count, position, logits);
    status = int4_status();
    session->length = status == IQ_OK ? position + count : position;
    return status;
  }

  status = ensure_scratch(session, count);
  if (status != IQ_OK) {
    return status;
  }
  int32_t done = 0;
  while (done < count) {
    int32_t chunk = count - done < session->scratch_rows ? count - done : session->scratch_rows;
    run_compiled(session, tokens + done, chunk, position + done, session->logits);
    status = int4_status();
    if (status != IQ_OK)
      return status;
    done += chunk;
    /* The cache now contains valid entries up to the chunk's end, which the
     * next chunk's attention reads. */
    session->length = position + done;
    if (done == count && logits) {
      memcpy(logits, session->logits + (size_t)(chunk - 1) * vocab, vocab * sizeof(float));
    }
  }
  return IQ_OK;
}

iq_status_t iq_session_reset(iq_session_t *session) {
  if (!session) {
    return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT, "iq_session_reset: session is NULL");
  }
  /* Entries past the length are never read (attention at position p reads
   * entries 0 .. p, all written by then), so they are not cleared. */
  session->length = 0;
  return IQ_OK;
}

iq_status_t iq_session_truncate(iq_session_t *session, int32_t length) {
  if (!session) {
    return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT, "iq_session_truncate: session is NULL");
  }
  if (length < 0 || length > session->length) {
    return iq_rt_fail(IQ_ERROR_OUT_OF_RANGE,
                      "iq_session_truncate: length %d is outside [0, %d], the session's length",
                      length, session->length);
  }
  session->length = length;
  return IQ_OK;
}

int32_t iq_session_length(const iq_session_t *session) {
  if (!session) {
    iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT, "iq_session_length: session is NULL");
    return -1;
  }
  return session->length;
}
