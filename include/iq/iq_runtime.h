/* iq_runtime.h: the only interface of a library emitted by iq-compile.
 *
 * Plain C, no dependencies. A program opens a model (the library's
 * compiled code plus its weight file), creates one session per sequence,
 * and runs forward passes over tokens at a position, getting logits back.
 * Every function checks its arguments and returns a status instead of
 * crashing; iq_last_error() describes the last failure of the calling
 * thread. Sessions are independent: two sessions may run in two threads.
 */
#ifndef IQ_RUNTIME_H
#define IQ_RUNTIME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Incremented on every incompatible change of this header. */
#define IQ_RUNTIME_ABI_VERSION 1

typedef struct iq_model iq_model_t;
typedef struct iq_session iq_session_t;

typedef enum iq_status {
  IQ_OK = 0,
  IQ_ERROR_INVALID_ARGUMENT = 1, /* null pointer, bad token id, bad count */
  IQ_ERROR_OUT_OF_RANGE = 2,     /* position or length past the context */
  IQ_ERROR_IO = 3,               /* the weight file cannot be opened or mapped */
  IQ_ERROR_FORMAT = 4,           /* the weight file is invalid or does not match */
  IQ_ERROR_OUT_OF_MEMORY = 5,
  IQ_ERROR_INTERNAL = 6,
} iq_status_t;

/* The model's configuration, as recorded by iq-compile. */
typedef struct iq_model_config {
  int32_t layers;
  int32_t hidden_size;
  int32_t num_heads;
  int32_t num_kv_heads;
  int32_t head_dim;
  int32_t ffn_size;
  int32_t vocab_size;
  float rope_theta;
  float norm_epsilon;
  char quantization[16]; /* "none", "w4a16", "w4a4kv4", "a4kv4" */
  char target[32];       /* "x86_64-linux-gnu", "aarch64-linux-gnu" */
} iq_model_config_t;

typedef struct iq_model_options {
  /* Set to sizeof(iq_model_options_t); lets later versions add fields. */
  size_t struct_size;
  /* Worker threads for forward passes; 0 takes IQ_NUM_THREADS from the
   * environment, or else the number of online CPUs. */
  int32_t num_threads;
} iq_model_options_t;

/* Returns IQ_RUNTIME_ABI_VERSION of the library. */
uint32_t iq_runtime_abi_version(void);

/* Opens the model compiled into this library with the weights in
 * `weight_file` (the .iqw file iq-compile wrote beside the library),
 * which is mapped, not read. `options` may be NULL. The file's tensors
 * must match the compiled model in name, type and shape. On success the
 * caller owns `*model` and closes it with iq_model_close after destroying
 * its sessions. */
iq_status_t iq_model_open(const char *weight_file, const iq_model_options_t *options,
                          iq_model_t **model);

/* Releases the caller's handle. Sessions still alive keep the model's
 * memory and mapping until the last of them is destroyed. NULL is
 * ignored. */
void iq_model_close(iq_model_t *model);

iq_status_t iq_model_get_config(const iq_model_t *model, iq_model_config_t *config);

/* Creates a session with its own KV cache for up to `max_context`
 * positions. The caller owns `*session`. */
iq_status_t iq_session_create(iq_model_t *model, int32_t max_context, iq_session_t **session);

void iq_session_destroy(iq_session_t *session);

/* Runs the model over `count` tokens placed at positions `position` ..
 * `position + count - 1`. `position` may be at most the session's length:
 * cache entries from `position` on are replaced, which is how a caller
 * rewinds. Writes `count` rows of vocab_size logits to `logits`, or only
 * the last row when `last_only` is non-zero. A NULL `logits` only fills
 * the cache. Afterwards the session's length is `position + count`.
 * Rejects token ids outside [0, vocab_size) (IQ_ERROR_INVALID_ARGUMENT),
 * and a position above the length or positions past the session's
 * max_context (IQ_ERROR_OUT_OF_RANGE). A session must not be used by two
 * threads at once. */
iq_status_t iq_session_forward(iq_session_t *session, const int32_t *tokens, int32_t count,
                               int32_t position, float *logits, int32_t last_only);

/* Empties the KV cache. */
iq_status_t iq_session_reset(iq_session_t *session);

/* Keeps the first `length` cached positions and drops the rest. A length
 * above the current one fails with IQ_ERROR_OUT_OF_RANGE. */
iq_status_t iq_session_truncate(iq_session_t *session, int32_t length);

/* The number of cached positions, or -1 for a null session. */
int32_t iq_session_length(const iq_session_t *session);

/* A description of the calling thread's last failure, or "" when no call
 * of this thread has failed. Successful calls leave it unchanged. The
 * buffer belongs to the thread and is overwritten by its next failure. */
const char *iq_last_error(void);

/* A short name for a status ("invalid argument", ...). */
const char *iq_status_name(iq_status_t status);

/* The worker thread count of the most recently opened model (see
 * iq_model_options_t), or 1 before any model is open. Compiled code calls
 * it to size its parallel loops; it is process-wide because the compiled
 * forward function has no model argument. */
int32_t iq_runtime_num_threads(void);

#ifdef __cplusplus
}
#endif

#endif /* IQ_RUNTIME_H */
