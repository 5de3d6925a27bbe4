/* Calibration statistics files (.iqs): the activation statistics that
 * iq-calibrate records per decoder layer and observed point, read back
 * through a memory mapping. docs/statistics.md describes the layout.
 *
 * Points (iq_observe_point_t of iq_compiled.h): X is the q/k/v input, P
 * the gate/up input, V the v_proj output, M the o_proj input, Z the
 * down_proj input, and H the lm_head input, stored under layer == layers.
 *
 * Tokens are numbered n = window * window_length + position, over the
 * windows in the order of the window table. Sampled rows are ascending by
 * token number, so with sample_rows == token_count `samples` is every
 * window's [window_length, channels] tensor in window order, the layout
 * iq_psot_layer_input_t of iq/quant.h takes, and `token_outlier` is its
 * deviation array. */
#ifndef IQ_STATISTICS_H
#define IQ_STATISTICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "iq/iq_compiled.h"
#include "iq/support.h"

#ifdef __cplusplus
extern "C" {
#endif

#define IQ_STATISTICS_MAGIC "IQSTATS"
#define IQ_STATISTICS_VERSION 1
#define IQ_STATISTICS_HEADER_SIZE 128
#define IQ_STATISTICS_ENTRY_SIZE 128
#define IQ_STATISTICS_ALIGNMENT 64

/* The arrays of one entry, in the order of the entry's offset table. */
typedef enum iq_statistics_section {
  IQ_STATS_CHANNEL_MIN,     /* float [channels] */
  IQ_STATS_CHANNEL_MAX,     /* float [channels] */
  IQ_STATS_CHANNEL_ABSMAX,  /* float [channels] */
  IQ_STATS_TOKEN_MIN,       /* float [tokens]: min over the token's channels */
  IQ_STATS_TOKEN_MAX,       /* float [tokens] */
  IQ_STATS_TOKEN_OUTLIER,   /* float [tokens]: max_c |x - window_mean| / window_std */
  IQ_STATS_WINDOW_MEAN,     /* double [windows]: mean of the window's [T, C] tensor */
  IQ_STATS_WINDOW_STD,      /* double [windows]: its population standard deviation */
  IQ_STATS_XTX,             /* double [channels, channels]: sum over tokens of x^T x */
  IQ_STATS_SAMPLES,         /* float [sample_rows, channels]: sampled activation rows */
  IQ_STATS_SAMPLE_WINDOW,   /* uint32 [sample_rows]: window index of each row */
  IQ_STATS_SAMPLE_POSITION, /* uint32 [sample_rows]: position in its window */
  IQ_STATS_SECTION_COUNT,
} iq_statistics_section_t;

typedef struct iq_statistics iq_statistics_t;

/* The run that produced a file. */
typedef struct iq_statistics_info {
  uint32_t layers;         /* decoder layers of the model */
  uint32_t windows;
  uint32_t window_length;  /* tokens per window */
  uint32_t entry_count;    /* recorded (layer, point) pairs */
  uint64_t seed;           /* seed of the window and sample choice */
  uint64_t skip_tokens;    /* tokens at the start of the text never used */
  uint64_t token_count;    /* windows * window_length */
  const uint64_t *window_starts; /* [windows]: first token of each window in the text */
  const int32_t *window_tokens;  /* [windows, window_length]: the token ids that ran */
} iq_statistics_info_t;

/* One observed point of one layer. Every pointer points into the mapping
 * and stays valid until iq_statistics_close. */
typedef struct iq_statistics_point {
  uint32_t layer;
  iq_observe_point_t point;
  uint32_t channels;
  uint32_t sample_rows;
  uint64_t token_count;
  const float *channel_min, *channel_max, *channel_absmax;
  const float *token_min, *token_max, *token_outlier;
  const double *window_mean, *window_std;
  /* The raw sum of x^T x over all token_count tokens, full symmetric
   * matrix. GPTQ's H = (2 / N) * sum x x^T is 2 * xtx / token_count. */
  const double *xtx;
  const float *samples;
  const uint32_t *sample_window, *sample_position;
} iq_statistics_point_t;

/* Maps and validates a statistics file. The caller owns the result and
 * releases it with iq_statistics_close. */
iq_statistics_t *iq_statistics_open(const char *path, iq_error_t **error);
void iq_statistics_close(iq_statistics_t *statistics);

const iq_statistics_info_t *iq_statistics_get_info(const iq_statistics_t *statistics);

/* Fills `*out` with entry `index` (0 .. entry_count - 1, sorted by layer,
 * then point). Returns false for an index out of range. */
bool iq_statistics_get(const iq_statistics_t *statistics, uint32_t index,
                       iq_statistics_point_t *out);

/* Fills `*out` with the entry of (layer, point). Returns false when the
 * file has none. */
bool iq_statistics_find(const iq_statistics_t *statistics, uint32_t layer,
                        iq_observe_point_t point, iq_statistics_point_t *out);

/* "X", "P", "V", "M", "Z" or "H"; "?" for other values. */
const char *iq_observe_point_name(iq_observe_point_t point);

/* Prints a summary of every entry of the file at `path` to `out`. With a
 * non-NULL `csv_path`, also writes one CSV line per (layer, point,
 * channel). */
bool iq_statistics_dump(const char *path, FILE *out, const char *csv_path, iq_error_t **error);

#ifdef __cplusplus
}
#endif

#endif /* IQ_STATISTICS_H */
