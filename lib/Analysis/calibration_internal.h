/* Declarations shared by the calibration driver's files. */
#ifndef IQ_ANALYSIS_CALIBRATION_INTERNAL_H
#define IQ_ANALYSIS_CALIBRATION_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iq/calibration.h"
#include "iq/iq_compiled.h"
#include "iq/iq_runtime.h"

/* What the driver needs of the model: iq.config and its weight file. */
typedef struct iq_calibration_model {
  int64_t layers, hidden, heads, kv_heads, head_dim, ffn, vocab;
  int64_t max_positions; /* -1 when iq.config does not record it */
  /* Channels of each point, read from the observers' operand types; 0
   * where no observer has that point. */
  uint32_t point_channels[IQ_OBSERVE_POINT_COUNT];
  char weight_path[4096];
} iq_calibration_model_t;

/* The runtime functions of the loaded instrumented library. */
typedef struct iq_calibration_library {
  void *handle;
  iq_status_t (*model_open)(const char *, const iq_model_options_t *, iq_model_t **);
  void (*model_close)(iq_model_t *);
  iq_status_t (*session_create)(iq_model_t *, int32_t, iq_session_t **);
  void (*session_destroy)(iq_session_t *);
  iq_status_t (*session_forward)(iq_session_t *, const int32_t *, int32_t, int32_t, float *,
                                 int32_t);
  iq_status_t (*session_reset)(iq_session_t *);
  const char *(*last_error)(void);
  void (*set_observer)(iq_observer_t, void *);
} iq_calibration_library_t;

/* Channels of an observed point of `model`. */
uint32_t iq_calibration_channels(const iq_calibration_model_t *model, int point);

/* Rejects option values the model or the run cannot use. */
bool iq_calibration_check_options(const iq_calibration_options_t *options,
                                  const iq_calibration_model_t *model, iq_error_t **error);

/* Reads and tokenizes the text, checking the tokenizer against the
 * model's vocabulary. Stores a new array the caller frees in `*tokens`. */
bool iq_calibration_tokenize(const iq_calibration_options_t *options,
                             const iq_calibration_model_t *model, int32_t **tokens,
                             size_t *count, iq_error_t **error);

/* Runs the windows through the loaded library and writes the file. */
bool iq_calibration_run(const iq_calibration_library_t *lib, const iq_calibration_model_t *model,
                        const iq_calibration_options_t *options, const int32_t *tokens,
                        size_t token_count, iq_error_t **error);

#endif /* IQ_ANALYSIS_CALIBRATION_INTERNAL_H */
