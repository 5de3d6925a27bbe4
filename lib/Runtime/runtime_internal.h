/* Declarations shared by the runtime's source files. Nothing here is
 * visible to users of an emitted library, who see only iq_runtime.h. */
#ifndef IQ_RUNTIME_INTERNAL_H
#define IQ_RUNTIME_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "iq/iq_runtime.h"
#include "iq/weight_store.h"

/* Limits on metadata values. They reject corrupt text before anything is
 * allocated from it and keep every size product far from overflowing. */
#define IQ_RT_MAX_LAYERS 4096
#define IQ_RT_MAX_DIMENSION (1 << 24)
#define IQ_RT_MAX_WEIGHTS (1 << 20)

/* One `weight` record of the metadata. */
typedef struct iq_rt_weight_spec {
  char *name;
  iq_dtype_t dtype;
  bool transposed;
  uint32_t rank;
  int64_t dims[IQ_WEIGHT_STORE_MAX_RANK]; /* logical dims, [out, in] for a matrix */
} iq_rt_weight_spec_t;

/* The parsed metadata text. */
typedef struct iq_rt_metadata {
  iq_model_config_t config;
  iq_rt_weight_spec_t *weights;
  size_t weight_count;
  /* "cache int4": each layer's KV cache is an iqk_kv_cache_t of the int4
   * kernels (iq_kernels.h) instead of two float32 buffers. */
  bool int4_cache;
} iq_rt_metadata_t;

struct iq_model {
  iq_rt_metadata_t metadata;
  iq_weight_store_t *store;
  /* Weight data pointers in slot order, pointing into the store's mapping. */
  const void **weights;
  int32_t num_threads;
  /* 1 for the caller's handle plus 1 per live session, so a session keeps
   * its model mapped even when the caller closes the model first. */
  atomic_int references;
};

/* Sets the calling thread's iq_last_error() text (printf-style) and
 * returns `status`, so callers can write `return iq_rt_fail(...)`. */
iq_status_t iq_rt_fail(iq_status_t status, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/* Parses `text` into `*metadata`. On failure sets iq_last_error() and
 * returns IQ_ERROR_FORMAT with nothing left allocated. On success the
 * caller owns the result and frees it with iq_rt_metadata_free. */
iq_status_t iq_rt_metadata_parse(const char *text, iq_rt_metadata_t *metadata);
void iq_rt_metadata_free(iq_rt_metadata_t *metadata);

/* Drops one reference to `model`, freeing it with the last one. */
void iq_rt_model_release(iq_model_t *model);

#endif /* IQ_RUNTIME_INTERNAL_H */
