/* Tests of iq_progress_*: the formatted line for given elapsed times, and
 * what reaches a stream that is not a terminal. Times are passed in, so no
 * test depends on how fast it runs. */
#include "iq/support.h"
#include "iq_test.h"
#include "../../lib/Support/support_internal.h"

#include <stdlib.h>

IQ_TEST(progress_format_known_total) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_progress_t *progress = iq_progress_start("lower", 1000, "ops", stream, false);
  IQ_ASSERT_NOT_NULL(progress);
  iq_progress_update(progress, 250);

  char line[128];
  size_t length = iq_progress_format(progress, 10.0, line, sizeof(line));
  IQ_ASSERT_EQ_STR(line, "250/1000 ops, 25.0 ops/s, ETA 0:30");
  IQ_ASSERT_EQ_UINT(length, strlen(line));

  iq_progress_finish(progress);
  fclose(stream);
}

IQ_TEST(progress_format_unknown_total) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_progress_t *progress = iq_progress_start("read", 0, "bytes", stream, false);
  IQ_ASSERT_NOT_NULL(progress);
  iq_progress_update(progress, 42);

  char line[128];
  iq_progress_format(progress, 2.0, line, sizeof(line));
  IQ_ASSERT_EQ_STR(line, "42 bytes, 21.0 bytes/s, ETA ?");

  iq_progress_finish(progress);
  fclose(stream);
}

IQ_TEST(progress_format_zero_rate) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_progress_t *progress = iq_progress_start("pack", 100, "tensors", stream, false);
  IQ_ASSERT_NOT_NULL(progress);

  char line[128];
  iq_progress_format(progress, 5.0, line, sizeof(line));
  IQ_ASSERT_EQ_STR(line, "0/100 tensors, 0.0 tensors/s, ETA ?");
  /* No time has passed yet, so there is no rate either. */
  iq_progress_update(progress, 10);
  iq_progress_format(progress, 0.0, line, sizeof(line));
  IQ_ASSERT_EQ_STR(line, "10/100 tensors, 0.0 tensors/s, ETA ?");

  iq_progress_finish(progress);
  fclose(stream);
}

IQ_TEST(progress_format_eta_past_hour) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_progress_t *progress = iq_progress_start("tune", 10000, "runs", stream, false);
  IQ_ASSERT_NOT_NULL(progress);
  iq_progress_update(progress, 1);

  /* 9999 runs left at 1 run/s is 2 h 46 min 39 s. */
  char line[128];
  iq_progress_format(progress, 1.0, line, sizeof(line));
  IQ_ASSERT_EQ_STR(line, "1/10000 runs, 1.0 runs/s, ETA 2:46:39");

  /* 59 min 59 s stays in the short form. */
  iq_progress_update(progress, 6401);
  iq_progress_format(progress, 6401.0, line, sizeof(line));
  IQ_ASSERT_EQ_STR(line, "6401/10000 runs, 1.0 runs/s, ETA 59:59");

  iq_progress_finish(progress);
  fclose(stream);
}

IQ_TEST(progress_format_done_past_total) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_progress_t *progress = iq_progress_start("emit", 10, "files", stream, false);
  IQ_ASSERT_NOT_NULL(progress);
  iq_progress_update(progress, 12);

  char line[128];
  iq_progress_format(progress, 4.0, line, sizeof(line));
  IQ_ASSERT_EQ_STR(line, "12/10 files, 3.0 files/s, ETA 0:00");

  iq_progress_finish(progress);
  fclose(stream);
}

IQ_TEST(progress_format_truncates_small_buffer) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_progress_t *progress = iq_progress_start("lower", 1000, "ops", stream, false);
  IQ_ASSERT_NOT_NULL(progress);
  iq_progress_update(progress, 250);

  char line[9];
  size_t length = iq_progress_format(progress, 10.0, line, sizeof(line));
  IQ_ASSERT_EQ_UINT(length, 8);
  IQ_ASSERT_EQ_STR(line, "250/1000");
  IQ_ASSERT_EQ_UINT(iq_progress_format(progress, 10.0, line, 0), 0);

  iq_progress_finish(progress);
  fclose(stream);
}

IQ_TEST(progress_advance_adds_and_saturates) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_progress_t *progress = iq_progress_start("fold", 0, "ops", stream, false);
  IQ_ASSERT_NOT_NULL(progress);

  char line[128];
  iq_progress_advance(progress, 3);
  iq_progress_advance(progress, 4);
  iq_progress_format(progress, 1.0, line, sizeof(line));
  IQ_ASSERT_EQ_STR(line, "7 ops, 7.0 ops/s, ETA ?");

  iq_progress_advance(progress, UINT64_MAX);
  iq_progress_format(progress, 0.0, line, sizeof(line));
  IQ_ASSERT_EQ_STR(line, "18446744073709551615 ops, 0.0 ops/s, ETA ?");

  iq_progress_finish(progress);
  fclose(stream);
}

IQ_TEST(progress_final_line_format) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_progress_t *progress = iq_progress_start("lower", 130, "ops", stream, false);
  IQ_ASSERT_NOT_NULL(progress);
  iq_progress_update(progress, 130);

  char line[128];
  iq_progress_format_final(progress, 65.0, line, sizeof(line));
  IQ_ASSERT_EQ_STR(line, "lower: 130/130 ops in 1:05 (2.0 ops/s)");

  iq_progress_finish(progress);
  fclose(stream);
}

IQ_TEST(progress_file_gets_final_line) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_progress_t *progress = iq_progress_start("lower", 10, "ops", stream, false);
  IQ_ASSERT_NOT_NULL(progress);
  iq_progress_update(progress, 3);
  iq_progress_advance(progress, 2);

  /* A file is not a terminal, so nothing appears before the end. */
  char *before = iq_test_read_stream(stream);
  IQ_ASSERT_EQ_STR(before, "");
  free(before);

  iq_progress_finish(progress);
  char *text = iq_test_read_stream(stream);
  fclose(stream);
  IQ_ASSERT_NOT_NULL(text);
  IQ_ASSERT_EQ_INT(strncmp(text, "lower: 5/10 ops in ", 19), 0);
  IQ_ASSERT_CONTAINS(text, " ops/s)\n");
  IQ_ASSERT_NOT_CONTAINS(text, "\r");
  IQ_ASSERT_NOT_CONTAINS(text, "\033");
  /* Exactly one line. */
  IQ_ASSERT_EQ_UINT(strchr(text, '\n') - text + 1, strlen(text));
  free(text);
}

IQ_TEST(progress_force_prints_to_file) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_progress_t *progress = iq_progress_start("lower", 10, "ops", stream, true);
  IQ_ASSERT_NOT_NULL(progress);
  /* The first update always prints; later ones depend on the clock, so the
   * test looks only at the first. */
  iq_progress_update(progress, 1);
  char *text = iq_test_read_stream(stream);
  IQ_ASSERT_NOT_NULL(text);
  IQ_ASSERT_EQ_INT(strncmp(text, "lower: 1/10 ops, ", 17), 0);
  IQ_ASSERT_CONTAINS(text, "\n");
  IQ_ASSERT_NOT_CONTAINS(text, "\r");
  free(text);

  iq_progress_finish(progress);
  fclose(stream);
}

IQ_TEST(progress_terminal_redraws_in_place) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_progress_t *progress = iq_progress_start("lower", 10, "ops", stream, false);
  IQ_ASSERT_NOT_NULL(progress);
  iq_progress_set_terminal(progress, true);
  iq_progress_update(progress, 4);

  char *text = iq_test_read_stream(stream);
  IQ_ASSERT_NOT_NULL(text);
  IQ_ASSERT_EQ_INT(strncmp(text, "\rlower: 4/10 ops, ", 18), 0);
  IQ_ASSERT_CONTAINS(text, "\033[K");
  IQ_ASSERT_NOT_CONTAINS(text, "\n");
  free(text);

  iq_progress_finish(progress);
  text = iq_test_read_stream(stream);
  fclose(stream);
  IQ_ASSERT_CONTAINS(text, "\rlower: 4/10 ops in ");
  IQ_ASSERT_CONTAINS(text, "ops/s)\033[K\n");
  free(text);
}

IQ_TEST(progress_null_is_ignored) {
  iq_progress_update(NULL, 1);
  iq_progress_advance(NULL, 1);
  iq_progress_finish(NULL);
  char line[16] = "unchanged";
  IQ_ASSERT_EQ_UINT(iq_progress_format(NULL, 1.0, line, sizeof(line)), 0);
}
