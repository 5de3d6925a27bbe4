/* Tests of iq_log*: level parsing, filtering and the line format, with the
 * output sent to a temporary file. */
#include "iq/support.h"
#include "iq_test.h"
#include "../../lib/Support/support_internal.h"

#include <stdlib.h>

/* Tests change process-wide state, so each one starts from a known level
 * and stream and puts the defaults back at the end. */
static void restore_log_defaults(void) {
  iq_log_set_stream(NULL);
  iq_log_set_level(IQ_LOG_WARNING);
}

IQ_TEST(log_parse_level_valid_names) {
  static const struct {
    const char *text;
    iq_log_level_t level;
  } cases[] = {
      {"error", IQ_LOG_ERROR},
      {"warning", IQ_LOG_WARNING},
      {"info", IQ_LOG_INFO},
      {"debug", IQ_LOG_DEBUG},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
    iq_log_level_t level = (iq_log_level_t)99;
    IQ_ASSERT_TRUE(iq_log_parse_level(cases[i].text, &level));
    IQ_ASSERT_EQ_INT(level, cases[i].level);
  }
}

IQ_TEST(log_parse_level_rejects_invalid) {
  static const char *const invalid[] = {"", "warn", "Warning", "debug ",
                                        "trace", "2"};
  for (size_t i = 0; i < sizeof(invalid) / sizeof(invalid[0]); ++i) {
    iq_log_level_t level = IQ_LOG_INFO;
    IQ_ASSERT_FALSE(iq_log_parse_level(invalid[i], &level));
    /* A failed parse leaves the output alone. */
    IQ_ASSERT_EQ_INT(level, IQ_LOG_INFO);
  }
  IQ_ASSERT_FALSE(iq_log_parse_level(NULL, NULL));
}

IQ_TEST(log_env_value_selects_level) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  IQ_ASSERT_EQ_INT(iq_log_level_from_env("debug", stream), IQ_LOG_DEBUG);
  IQ_ASSERT_EQ_INT(iq_log_level_from_env("error", stream), IQ_LOG_ERROR);
  IQ_ASSERT_EQ_INT(iq_log_level_from_env(NULL, stream), IQ_LOG_WARNING);
  IQ_ASSERT_EQ_INT(iq_log_level_from_env("", stream), IQ_LOG_WARNING);
  char *text = iq_test_read_stream(stream);
  fclose(stream);
  /* Valid and unset values print nothing. */
  IQ_ASSERT_EQ_STR(text, "");
  free(text);
}

IQ_TEST(log_env_invalid_value_warns) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  IQ_ASSERT_EQ_INT(iq_log_level_from_env("verbose", stream), IQ_LOG_WARNING);
  char *text = iq_test_read_stream(stream);
  fclose(stream);
  IQ_ASSERT_CONTAINS(text, "iq: warning: ");
  IQ_ASSERT_CONTAINS(text, "IQ_LOG_LEVEL");
  IQ_ASSERT_CONTAINS(text, "'verbose'");
  IQ_ASSERT_CONTAINS(text, "error, warning, info or debug");
  /* Exactly one line. */
  IQ_ASSERT_CONTAINS(text, "\n");
  IQ_ASSERT_EQ_UINT(strchr(text, '\n') - text + 1, strlen(text));
  free(text);
}

IQ_TEST(log_set_level_round_trips) {
  iq_log_set_level(IQ_LOG_DEBUG);
  IQ_ASSERT_EQ_INT(iq_log_get_level(), IQ_LOG_DEBUG);
  iq_log_set_level(IQ_LOG_ERROR);
  IQ_ASSERT_EQ_INT(iq_log_get_level(), IQ_LOG_ERROR);
  restore_log_defaults();
}

IQ_TEST(log_filters_below_level) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_log_set_stream(stream);
  iq_log_set_level(IQ_LOG_WARNING);
  IQ_LOG_ERROR_MSG("e%d", 1);
  IQ_LOG_WARN("w%d", 2);
  IQ_LOG_INFO_MSG("i%d", 3);
  IQ_LOG_DEBUG_MSG("d%d", 4);
  restore_log_defaults();

  char *text = iq_test_read_stream(stream);
  fclose(stream);
  IQ_ASSERT_EQ_STR(text, "iq: error: e1\niq: warning: w2\n");
  free(text);
}

IQ_TEST(log_debug_level_prints_all) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_log_set_stream(stream);
  iq_log_set_level(IQ_LOG_DEBUG);
  iq_log(IQ_LOG_ERROR, "a");
  iq_log(IQ_LOG_WARNING, "b");
  iq_log(IQ_LOG_INFO, "c");
  iq_log(IQ_LOG_DEBUG, "d");
  restore_log_defaults();

  char *text = iq_test_read_stream(stream);
  fclose(stream);
  IQ_ASSERT_EQ_STR(text,
                   "iq: error: a\niq: warning: b\niq: info: c\niq: debug: d\n");
  free(text);
}

IQ_TEST(log_error_level_prints_errors) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_log_set_stream(stream);
  iq_log_set_level(IQ_LOG_ERROR);
  iq_log(IQ_LOG_WARNING, "hidden");
  iq_log(IQ_LOG_ERROR, "shown");
  restore_log_defaults();

  char *text = iq_test_read_stream(stream);
  fclose(stream);
  IQ_ASSERT_EQ_STR(text, "iq: error: shown\n");
  free(text);
}

IQ_TEST(log_keeps_single_trailing_newline) {
  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_log_set_stream(stream);
  iq_log_set_level(IQ_LOG_INFO);
  iq_log(IQ_LOG_INFO, "with newline\n");
  iq_log(IQ_LOG_INFO, "%s", "");
  restore_log_defaults();

  char *text = iq_test_read_stream(stream);
  fclose(stream);
  IQ_ASSERT_EQ_STR(text, "iq: info: with newline\niq: info: \n");
  free(text);
}

IQ_TEST(log_long_message_not_truncated) {
  char long_value[3000];
  memset(long_value, 'x', sizeof(long_value) - 1);
  long_value[sizeof(long_value) - 1] = '\0';

  FILE *stream = tmpfile();
  IQ_ASSERT_NOT_NULL(stream);
  iq_log_set_stream(stream);
  iq_log_set_level(IQ_LOG_WARNING);
  IQ_LOG_WARN("<%s>", long_value);
  restore_log_defaults();

  char *text = iq_test_read_stream(stream);
  fclose(stream);
  IQ_ASSERT_NOT_NULL(text);
  IQ_ASSERT_EQ_UINT(strlen(text),
                    strlen("iq: warning: <>\n") + sizeof(long_value) - 1);
  IQ_ASSERT_CONTAINS(text, "x>\n");
  free(text);
}
