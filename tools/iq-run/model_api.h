/* The public runtime ABI of a model library, loaded with dlopen/dlsym, so
 * iq-run uses a library exactly as any other program would. */
#ifndef IQ_RUN_MODEL_API_H
#define IQ_RUN_MODEL_API_H

#include <stdbool.h>

#include "iq/iq_runtime.h"

typedef struct model_api {
  void *handle;
  uint32_t (*abi_version)(void);
  iq_status_t (*model_open)(const char *, const iq_model_options_t *, iq_model_t **);
  void (*model_close)(iq_model_t *);
  iq_status_t (*model_get_config)(const iq_model_t *, iq_model_config_t *);
  iq_status_t (*session_create)(iq_model_t *, int32_t, iq_session_t **);
  void (*session_destroy)(iq_session_t *);
  iq_status_t (*session_forward)(iq_session_t *, const int32_t *, int32_t, int32_t, float *,
                                 int32_t);
  iq_status_t (*session_reset)(iq_session_t *);
  iq_status_t (*session_truncate)(iq_session_t *, int32_t);
  int32_t (*session_length)(const iq_session_t *);
  const char *(*last_error)(void);
  const char *(*status_name)(iq_status_t);
} model_api_t;

/* A model library opened with its weights, and one session. */
typedef struct loaded_model {
  model_api_t api;
  iq_model_t *model;
  iq_model_config_t config;
} loaded_model_t;

/* Prints "iq-run: error: WHAT: STATUS: LAST_ERROR" for a failed call and
 * returns false. */
bool report_status(const model_api_t *api, const char *what, iq_status_t status);

/* Runs the three modes; each prints its result on stdout and returns
 * false after printing an error. */
typedef struct tokenizer tokenizer_t;
bool run_generate(loaded_model_t *loaded, const tokenizer_t *tokenizer, const char *prompt,
                  int32_t max_tokens, double temperature, uint64_t seed);
bool run_perplexity(loaded_model_t *loaded, const tokenizer_t *tokenizer, const char *path,
                    int32_t context, int32_t windows);
bool run_bench(loaded_model_t *loaded, int32_t prefill, int32_t decode);

#endif /* IQ_RUN_MODEL_API_H */
