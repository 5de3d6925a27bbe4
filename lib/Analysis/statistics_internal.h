/* Declarations shared by the calibration driver, its accumulators and the
 * statistics file writer. */
#ifndef IQ_ANALYSIS_STATISTICS_INTERNAL_H
#define IQ_ANALYSIS_STATISTICS_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "iq/statistics.h"
#include "iq/support.h"

/* The shape of a calibration run, shared by every accumulator. */
typedef struct iq_run_shape {
  uint32_t windows;
  uint32_t window_length;
  uint64_t token_count;          /* windows * window_length */
  uint32_t sample_rows;          /* rows actually sampled, <= token_count */
  const uint64_t *sample_tokens; /* [sample_rows], ascending token numbers */
} iq_run_shape_t;

/* Running statistics of one (layer, point). */
typedef struct iq_point_accumulator {
  uint32_t layer;
  uint32_t point;
  uint32_t channels;
  const iq_run_shape_t *shape;
  float *channel_min, *channel_max, *channel_absmax;
  float *token_min, *token_max, *token_outlier;
  double *window_mean, *window_std;
  double *xtx;
  float *samples;
  uint32_t *sample_window, *sample_position;
  uint32_t windows_seen;
} iq_point_accumulator_t;

/* Bytes an accumulator of `channels` channels allocates. */
uint64_t iq_accumulator_bytes(const iq_run_shape_t *shape, uint32_t channels);

/* Allocates the arrays of `accumulator` (whose layer, point, channels and
 * shape are set). Returns false when out of memory, with nothing left
 * allocated. */
bool iq_accumulator_init(iq_point_accumulator_t *accumulator);
void iq_accumulator_free(iq_point_accumulator_t *accumulator);

/* Adds window `window`: `data` is [window_length, channels] float32.
 * `scratch` has room for window_length * channels doubles. */
void iq_accumulator_add_window(iq_point_accumulator_t *accumulator, uint32_t window,
                               const float *data, double *scratch);

/* Completes x^T x from its upper triangle; call once after the last
 * window. */
void iq_accumulator_finish(iq_point_accumulator_t *accumulator);

/* ---- Writer -------------------------------------------------------------- */

typedef struct iq_statistics_writer iq_statistics_writer_t;

/* Starts a statistics file: a temporary file beside `path`, renamed over
 * it by iq_statistics_writer_commit. */
iq_statistics_writer_t *iq_statistics_writer_open(const char *path, const iq_statistics_info_t *info,
                                                  iq_error_t **error);

/* Appends the arrays of a finished accumulator. Entries must come in
 * (layer, point) order. */
bool iq_statistics_writer_add(iq_statistics_writer_t *writer,
                              const iq_point_accumulator_t *accumulator, iq_error_t **error);

/* Writes the index and the header, and moves the file into place. Frees
 * the writer. */
bool iq_statistics_writer_commit(iq_statistics_writer_t *writer, iq_error_t **error);

/* Deletes the temporary file and frees the writer. NULL is ignored. */
void iq_statistics_writer_abort(iq_statistics_writer_t *writer);

#endif /* IQ_ANALYSIS_STATISTICS_INTERNAL_H */
