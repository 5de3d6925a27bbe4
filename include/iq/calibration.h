/* Calibration: observers on the canonical graph and the driver that runs
 * the instrumented model on tokenized text and writes a statistics file
 * (iq/statistics.h). */
#ifndef IQ_CALIBRATION_H
#define IQ_CALIBRATION_H

#include <stdbool.h>
#include <stdint.h>

#include "mlir-c/IR.h"

#include "iq/passes.h"
#include "iq/support.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct iq_calibration_options {
  const char *text_path;      /* UTF-8 calibration text */
  const char *tokenizer_path; /* llama2.c tokenizer.bin, GGUF or tokenizer.json */
  const char *output_path;    /* the statistics file to write */
  int64_t windows;            /* number of windows */
  int64_t window_length;      /* tokens per window */
  int64_t sample_rows;        /* sampled activation rows per (layer, point) */
  int64_t budget_mib;         /* bound on the statistics accumulators, MiB */
  int64_t skip_tokens;        /* tokens at the start of the text left out */
  int64_t max_context;        /* model context; 0: iq.config max_positions, if any */
  uint64_t seed;              /* seed of the window and sample choice */
} iq_calibration_options_t;

/* Defaults, sized so a 135M-parameter model calibrates in minutes on two
 * cores; the InfoQuant reference uses 128 windows of 2048 tokens. */
#define IQ_CALIBRATION_DEFAULT_WINDOWS 16
#define IQ_CALIBRATION_DEFAULT_LENGTH 512
#define IQ_CALIBRATION_DEFAULT_SAMPLE_ROWS 2048
#define IQ_CALIBRATION_DEFAULT_BUDGET_MIB 2048

/* Inserts iq.observe ops into the canonical @forward of `module` (see
 * iq-insert-observers). Emits diagnostics and returns false when the
 * layer structure is not found or observers are already present. */
bool iq_insert_observers(MlirOperation module);

/* Compiles a copy of the canonical `module` with observers for this host,
 * runs it over windows of the tokenized text and writes the statistics
 * file. `module` itself is not changed. */
bool iq_calibrate(MlirOperation module, const iq_calibration_options_t *options,
                  iq_error_t **error);

#ifdef __cplusplus
}
#endif

#endif /* IQ_CALIBRATION_H */
