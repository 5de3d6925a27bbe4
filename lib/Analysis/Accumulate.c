/* Per-(layer, point) activation statistics, updated one window at a time:
 * channel ranges, token ranges, InfoQuant's outlier measure, x^T x and
 * sampled rows. All sums are in double and run in a fixed order, so the
 * same windows give bit-identical results. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "statistics_internal.h"

/* Side of the square x^T x tiles: 64 x 64 doubles (32 KiB) stay in the
 * L1 or L2 cache while every token of a window is added to them. */
#define GRAM_TILE 64

uint64_t iq_accumulator_bytes(const iq_run_shape_t *shape, uint32_t channels) {
  uint64_t c = channels;
  return c * c * sizeof(double) +                                  /* xtx */
         (uint64_t)shape->sample_rows * (c * sizeof(float) + 8) +  /* samples */
         shape->token_count * 3 * sizeof(float) +                   /* token arrays */
         c * 3 * sizeof(float) + (uint64_t)shape->windows * 2 * sizeof(double);
}

bool iq_accumulator_init(iq_point_accumulator_t *a) {
  const iq_run_shape_t *shape = a->shape;
  size_t c = a->channels;
  a->channel_min = malloc(c * sizeof(float));
  a->channel_max = malloc(c * sizeof(float));
  a->channel_absmax = calloc(c, sizeof(float));
  a->token_min = calloc(shape->token_count, sizeof(float));
  a->token_max = calloc(shape->token_count, sizeof(float));
  a->token_outlier = calloc(shape->token_count, sizeof(float));
  a->window_mean = calloc(shape->windows, sizeof(double));
  a->window_std = calloc(shape->windows, sizeof(double));
  a->xtx = calloc(c * c, sizeof(double));
  size_t rows = shape->sample_rows ? shape->sample_rows : 1;
  a->samples = calloc(rows * c, sizeof(float));
  a->sample_window = calloc(rows, sizeof(uint32_t));
  a->sample_position = calloc(rows, sizeof(uint32_t));
  a->windows_seen = 0;
  if (!a->channel_min || !a->channel_max || !a->channel_absmax || !a->token_min ||
      !a->token_max || !a->token_outlier || !a->window_mean || !a->window_std || !a->xtx ||
      !a->samples || !a->sample_window || !a->sample_position) {
    iq_accumulator_free(a);
    return false;
  }
  for (size_t i = 0; i < c; ++i) {
    a->channel_min[i] = FLT_MAX;
    a->channel_max[i] = -FLT_MAX;
  }
  for (uint32_t s = 0; s < shape->sample_rows; ++s) {
    a->sample_window[s] = (uint32_t)(shape->sample_tokens[s] / shape->window_length);
    a->sample_position[s] = (uint32_t)(shape->sample_tokens[s] % shape->window_length);
  }
  return true;
}

void iq_accumulator_free(iq_point_accumulator_t *a) {
  free(a->channel_min);
  free(a->channel_max);
  free(a->channel_absmax);
  free(a->token_min);
  free(a->token_max);
  free(a->token_outlier);
  free(a->window_mean);
  free(a->window_std);
  free(a->xtx);
  free(a->samples);
  free(a->sample_window);
  free(a->sample_position);
  a->channel_min = a->channel_max = a->channel_absmax = NULL;
  a->token_min = a->token_max = a->token_outlier = a->samples = NULL;
  a->window_mean = a->window_std = a->xtx = NULL;
  a->sample_window = a->sample_position = NULL;
}

/* Adds x^T x of the rows of `x` ([rows, c] doubles) to the upper triangle
 * of `xtx` (and to parts of the lower triangle inside diagonal tiles,
 * which iq_accumulator_finish overwrites). Four tokens go into each update
 * of a tile row, which halves the loads and stores of the tile. On x86-64
 * an AVX2 copy is chosen at load time where the CPU has it. It does not
 * contract to FMA, so both copies round alike. */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
__attribute__((target_clones("avx2", "default")))
#endif
static void add_gram(double *xtx, const double *x, size_t rows, size_t c) {
  for (size_t i0 = 0; i0 < c; i0 += GRAM_TILE) {
    size_t i1 = i0 + GRAM_TILE < c ? i0 + GRAM_TILE : c;
    for (size_t j0 = i0; j0 < c; j0 += GRAM_TILE) {
      size_t j1 = j0 + GRAM_TILE < c ? j0 + GRAM_TILE : c;
      size_t t = 0;
      for (; t + 4 <= rows; t += 4) {
        const double *r0 = x + t * c, *r1 = r0 + c, *r2 = r1 + c, *r3 = r2 + c;
        for (size_t i = i0; i < i1; ++i) {
          double x0 = r0[i], x1 = r1[i], x2 = r2[i], x3 = r3[i];
          double *out = xtx + i * c;
          for (size_t j = j0; j < j1; ++j)
            out[j] += (x0 * r0[j] + x1 * r1[j]) + (x2 * r2[j] + x3 * r3[j]);
        }
      }
      for (; t < rows; ++t) {
        const double *row = x + t * c;
        for (size_t i = i0; i < i1; ++i) {
          double xi = row[i];
          double *out = xtx + i * c;
          for (size_t j = j0; j < j1; ++j)
            out[j] += xi * row[j];
        }
      }
    }
  }
}

void iq_accumulator_add_window(iq_point_accumulator_t *a, uint32_t window, const float *data,
                               double *scratch) {
  const iq_run_shape_t *shape = a->shape;
  size_t c = a->channels, rows = shape->window_length;
  size_t first_token = (size_t)window * rows;

  /* The window's mean and population standard deviation over all of its
   * values, in two passes for accuracy. */
  double sum = 0.0;
  for (size_t k = 0; k < rows * c; ++k) {
    scratch[k] = (double)data[k];
    sum += scratch[k];
  }
  double mean = sum / (double)(rows * c);
  double squares = 0.0;
  for (size_t k = 0; k < rows * c; ++k)
    squares += (scratch[k] - mean) * (scratch[k] - mean);
  double std = sqrt(squares / (double)(rows * c));
  a->window_mean[window] = mean;
  a->window_std[window] = std;

  for (size_t t = 0; t < rows; ++t) {
    const float *row = data + t * c;
    float low = row[0], high = row[0];
    double peak = 0.0;
    for (size_t i = 0; i < c; ++i) {
      float v = row[i];
      low = v < low ? v : low;
      high = v > high ? v : high;
      a->channel_min[i] = v < a->channel_min[i] ? v : a->channel_min[i];
      a->channel_max[i] = v > a->channel_max[i] ? v : a->channel_max[i];
      float magnitude = fabsf(v);
      a->channel_absmax[i] = magnitude > a->channel_absmax[i] ? magnitude : a->channel_absmax[i];
      double deviation = fabs((double)v - mean);
      peak = deviation > peak ? deviation : peak;
    }
    a->token_min[first_token + t] = low;
    a->token_max[first_token + t] = high;
    a->token_outlier[first_token + t] = std > 0.0 ? (float)(peak / std) : 0.0f;
  }

  add_gram(a->xtx, scratch, rows, c);

  /* Sampled rows of this window: sample_tokens is ascending. */
  for (uint32_t s = 0; s < shape->sample_rows; ++s) {
    uint64_t token = shape->sample_tokens[s];
    if (token < first_token || token >= first_token + rows)
      continue;
    memcpy(a->samples + (size_t)s * c, data + (token - first_token) * c, c * sizeof(float));
  }
  a->windows_seen++;
}

void iq_accumulator_finish(iq_point_accumulator_t *a) {
  size_t c = a->channels;
  for (size_t i = 0; i < c; ++i)
    for (size_t j = 0; j < i; ++j)
      a->xtx[i * c + j] = a->xtx[j * c + i];
}
