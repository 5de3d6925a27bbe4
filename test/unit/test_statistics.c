/* Tests of the statistics accumulators, writer and reader: a small run
 * whose every value is worked out by hand, written to a file and read
 * back, and files the reader must reject. */
#include "iq/statistics.h"
#include "iq_test.h"
#include "../../lib/Analysis/statistics_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool near(double actual, double expected) {
  return fabs(actual - expected) <= 1e-12 * (1.0 + fabs(expected));
}

/* Two windows of three tokens with two channels, tokens 1 and 4 sampled:
 * window 0 is (1, 2), (3, -4), (0, 5) and window 1 is (-1, 0), (2, 2),
 * (6, 1). Writes layer 2, point Z. */
static bool write_small_file(const char *path) {
  static const uint64_t sample_tokens[2] = {1, 4};
  static const uint64_t window_starts[2] = {10, 40};
  static const int32_t window_tokens[6] = {5, 6, 7, 8, 9, 10};
  static const float windows[2][6] = {{1, 2, 3, -4, 0, 5}, {-1, 0, 2, 2, 6, 1}};
  iq_run_shape_t shape = {.windows = 2, .window_length = 3, .token_count = 6, .sample_rows = 2,
                          .sample_tokens = sample_tokens};
  iq_point_accumulator_t a = {.layer = 2, .point = IQ_OBSERVE_Z, .channels = 2, .shape = &shape};
  if (!iq_accumulator_init(&a))
    return false;
  double scratch[6];
  iq_accumulator_add_window(&a, 0, windows[0], scratch);
  iq_accumulator_add_window(&a, 1, windows[1], scratch);
  iq_accumulator_finish(&a);

  iq_statistics_info_t info = {.layers = 4, .windows = 2, .window_length = 3, .seed = 7,
                               .skip_tokens = 10, .token_count = 6,
                               .window_starts = window_starts, .window_tokens = window_tokens};
  iq_error_t *error = NULL;
  iq_statistics_writer_t *writer = iq_statistics_writer_open(path, &info, &error);
  bool ok = writer && iq_statistics_writer_add(writer, &a, &error) &&
            iq_statistics_writer_commit(writer, &error);
  if (!ok && writer)
    iq_statistics_writer_abort(writer);
  iq_error_destroy(error);
  iq_accumulator_free(&a);
  return ok;
}

IQ_TEST(statistics_small_run_roundtrip) {
  char path[] = "/tmp/iq-statistics-test-XXXXXX";
  int fd = mkstemp(path);
  IQ_ASSERT(fd >= 0);
  close(fd);
  IQ_ASSERT(write_small_file(path));

  iq_error_t *error = NULL;
  iq_statistics_t *stats = iq_statistics_open(path, &error);
  IQ_ASSERT_NOT_NULL(stats);
  const iq_statistics_info_t *info = iq_statistics_get_info(stats);
  IQ_ASSERT_EQ_UINT(info->layers, 4);
  IQ_ASSERT_EQ_UINT(info->windows, 2);
  IQ_ASSERT_EQ_UINT(info->window_length, 3);
  IQ_ASSERT_EQ_UINT(info->entry_count, 1);
  IQ_ASSERT_EQ_UINT(info->seed, 7);
  IQ_ASSERT_EQ_UINT(info->skip_tokens, 10);
  IQ_ASSERT_EQ_UINT(info->window_starts[1], 40);
  IQ_ASSERT_EQ_INT(info->window_tokens[5], 10);

  iq_statistics_point_t p;
  IQ_ASSERT_FALSE(iq_statistics_find(stats, 2, IQ_OBSERVE_X, &p));
  IQ_ASSERT_FALSE(iq_statistics_get(stats, 1, &p));
  IQ_ASSERT(iq_statistics_find(stats, 2, IQ_OBSERVE_Z, &p));
  IQ_ASSERT_EQ_UINT(p.channels, 2);
  IQ_ASSERT_EQ_UINT(p.token_count, 6);

  IQ_ASSERT(p.channel_min[0] == -1.0f && p.channel_max[0] == 6.0f && p.channel_absmax[0] == 6.0f);
  IQ_ASSERT(p.channel_min[1] == -4.0f && p.channel_max[1] == 5.0f && p.channel_absmax[1] == 5.0f);
  static const float token_min[6] = {1, -4, 0, -1, 2, 1}, token_max[6] = {2, 3, 5, 0, 2, 6};
  IQ_ASSERT(memcmp(p.token_min, token_min, sizeof token_min) == 0);
  IQ_ASSERT(memcmp(p.token_max, token_max, sizeof token_max) == 0);

  /* Window 0: sum 7 and sum of squares 55 over 6 values; window 1: 10 and 46. */
  double std0 = sqrt(55.0 / 6.0 - 49.0 / 36.0), std1 = sqrt(46.0 / 6.0 - 100.0 / 36.0);
  IQ_ASSERT(near(p.window_mean[0], 7.0 / 6.0));
  IQ_ASSERT(near(p.window_std[0], std0));
  IQ_ASSERT(near(p.window_mean[1], 10.0 / 6.0));
  IQ_ASSERT(near(p.window_std[1], std1));
  /* Token 1 is (3, -4): its largest deviation from 7/6 is 31/6. */
  IQ_ASSERT(fabs(p.token_outlier[1] - (31.0 / 6.0) / std0) < 1e-6);
  /* Token 5 is (6, 1): its largest deviation from 5/3 is 13/3. */
  IQ_ASSERT(fabs(p.token_outlier[5] - (13.0 / 3.0) / std1) < 1e-6);

  IQ_ASSERT(p.xtx[0] == 51.0 && p.xtx[1] == 0.0 && p.xtx[2] == 0.0 && p.xtx[3] == 50.0);

  IQ_ASSERT_EQ_UINT(p.sample_rows, 2);
  IQ_ASSERT(p.samples[0] == 3.0f && p.samples[1] == -4.0f);
  IQ_ASSERT(p.samples[2] == 2.0f && p.samples[3] == 2.0f);
  IQ_ASSERT_EQ_UINT(p.sample_window[0], 0);
  IQ_ASSERT_EQ_UINT(p.sample_position[0], 1);
  IQ_ASSERT_EQ_UINT(p.sample_window[1], 1);
  IQ_ASSERT_EQ_UINT(p.sample_position[1], 1);

  iq_statistics_close(stats);
  unlink(path);
}

IQ_TEST(statistics_rejects_truncated_file) {
  char path[] = "/tmp/iq-statistics-test-XXXXXX";
  int fd = mkstemp(path);
  IQ_ASSERT(fd >= 0);
  close(fd);
  IQ_ASSERT(write_small_file(path));
  IQ_ASSERT(truncate(path, 200) == 0);

  iq_error_t *error = NULL;
  IQ_ASSERT_NULL(iq_statistics_open(path, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "the header records");
  iq_error_destroy(error);
  unlink(path);
}

IQ_TEST(statistics_rejects_other_file) {
  char path[] = "/tmp/iq-statistics-test-XXXXXX";
  int fd = mkstemp(path);
  IQ_ASSERT(fd >= 0);
  char zeros[256] = {0};
  IQ_ASSERT(write(fd, zeros, sizeof zeros) == (ssize_t)sizeof zeros);
  close(fd);

  iq_error_t *error = NULL;
  IQ_ASSERT_NULL(iq_statistics_open(path, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "not a statistics file");
  iq_error_destroy(error);
  unlink(path);
}
