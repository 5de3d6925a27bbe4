/* Diagnostics of iq-opt: printing them as file:line:col messages, and
 * checking them against expected-* comments for --verify-diagnostics. */
#ifndef IQ_OPT_DIAGNOSTICS_H
#define IQ_OPT_DIAGNOSTICS_H

#include <stdbool.h>
#include <stddef.h>

#include "mlir-c/Diagnostics.h"
#include "mlir-c/IR.h"

typedef enum diagnostic_kind {
  DIAGNOSTIC_ERROR,
  DIAGNOSTIC_WARNING,
  DIAGNOSTIC_NOTE,
  DIAGNOSTIC_REMARK,
} diagnostic_kind_t;

typedef struct diagnostic_record {
  diagnostic_kind_t kind;
  long line; /* 1-based line in the input file, or 0 when unknown */
  long column;
  char *message;
  char *node; /* the ONNX node an imported op came from, or NULL */
} diagnostic_record_t;

/* Collects the diagnostics of one input file. In verify mode they are kept
 * for matching; otherwise each is printed to stderr as it arrives. */
typedef struct diagnostic_collector {
  const char *file_name; /* shown in messages; "-" is shown as <stdin> */
  bool verify_mode;
  diagnostic_record_t *records;
  size_t count, capacity;
  size_t error_count;
} diagnostic_collector_t;

/* The handler to attach to the context, with the collector as user data. */
MlirLogicalResult diagnostic_collector_handle(MlirDiagnostic diagnostic, void *user_data);

/* Checks the collected diagnostics against the expected-error,
 * expected-warning, expected-note and expected-remark comments of `source`
 * (the whole input file). Prints every mismatch to stderr and returns true
 * when each expectation was produced and no other error or warning was. */
bool diagnostic_collector_verify(diagnostic_collector_t *collector, const char *source,
                                 size_t source_length);

void diagnostic_collector_reset(diagnostic_collector_t *collector);

#endif /* IQ_OPT_DIAGNOSTICS_H */
