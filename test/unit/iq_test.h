/* A small unit-test framework. IQ_TEST(name) defines a test that registers
 * itself before main runs. A failed IQ_ASSERT_* prints the file, line,
 * expression and values, then returns from the test, and main.c goes on
 * with the next test. Assertions therefore belong in the test function
 * itself, not in helpers it calls. */
#ifndef IQ_TEST_H
#define IQ_TEST_H

#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef void (*iq_test_function_t)(void);

void iq_test_register(const char *name, iq_test_function_t function,
                      const char *file, int line);
/* Marks the running test failed and prints "FILE:LINE: " and the message. */
void iq_test_fail(const char *file, int line, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
/* Marks the running test skipped, with the reason printed after its name. */
void iq_test_skip(const char *reason);

/* Creates a new empty directory under $TMPDIR (or /tmp). Returns its path
 * in a heap string the caller frees, or NULL after reporting a failure. */
char *iq_test_make_temp_dir(void);
/* Joins `directory` and `name` into a heap string the caller frees. */
char *iq_test_path_join(const char *directory, const char *name);
/* Counts the entries of `directory` other than "." and "..", or returns -1
 * when it cannot be read. */
int iq_test_count_entries(const char *directory);
/* Removes `directory` and the files directly inside it. */
void iq_test_remove_dir(const char *directory);
/* Writes `text` to `path`, replacing it. Returns false on failure. */
bool iq_test_write_text(const char *path, const char *text);
/* Reads a whole stream from its start into a heap string the caller frees. */
char *iq_test_read_stream(FILE *stream);

#define IQ_TEST(name)                                                          \
  static void name(void);                                                      \
  __attribute__((constructor)) static void name##_register(void) {            \
    iq_test_register(#name, name, __FILE__, __LINE__);                         \
  }                                                                            \
  static void name(void)

#define IQ_SKIP(reason)                                                        \
  do {                                                                         \
    iq_test_skip(reason);                                                      \
    return;                                                                    \
  } while (0)

#define IQ_ASSERT(condition)                                                   \
  do {                                                                         \
    if (!(condition)) {                                                        \
      iq_test_fail(__FILE__, __LINE__, "IQ_ASSERT(%s) failed", #condition);    \
      return;                                                                  \
    }                                                                          \
  } while (0)

#define IQ_ASSERT_TRUE(condition) IQ_ASSERT(condition)
#define IQ_ASSERT_FALSE(condition) IQ_ASSERT(!(condition))

#define IQ_ASSERT_NULL(pointer)                                                \
  do {                                                                         \
    const void *iq_value_ = (pointer);                                         \
    if (iq_value_ != NULL) {                                                   \
      iq_test_fail(__FILE__, __LINE__,                                         \
                   "IQ_ASSERT_NULL(%s) failed: the value is %p", #pointer,     \
                   iq_value_);                                                 \
      return;                                                                  \
    }                                                                          \
  } while (0)

#define IQ_ASSERT_NOT_NULL(pointer)                                            \
  do {                                                                         \
    if ((pointer) == NULL) {                                                   \
      iq_test_fail(__FILE__, __LINE__,                                         \
                   "IQ_ASSERT_NOT_NULL(%s) failed: the value is NULL",         \
                   #pointer);                                                  \
      return;                                                                  \
    }                                                                          \
  } while (0)

#define IQ_ASSERT_EQ_INT(actual, expected)                                     \
  do {                                                                         \
    intmax_t iq_actual_ = (intmax_t)(actual);                                  \
    intmax_t iq_expected_ = (intmax_t)(expected);                              \
    if (iq_actual_ != iq_expected_) {                                          \
      iq_test_fail(__FILE__, __LINE__,                                         \
                   "IQ_ASSERT_EQ_INT(%s, %s) failed: %jd != %jd", #actual,     \
                   #expected, iq_actual_, iq_expected_);                       \
      return;                                                                  \
    }                                                                          \
  } while (0)

#define IQ_ASSERT_EQ_UINT(actual, expected)                                    \
  do {                                                                         \
    uintmax_t iq_actual_ = (uintmax_t)(actual);                                \
    uintmax_t iq_expected_ = (uintmax_t)(expected);                            \
    if (iq_actual_ != iq_expected_) {                                          \
      iq_test_fail(__FILE__, __LINE__,                                         \
                   "IQ_ASSERT_EQ_UINT(%s, %s) failed: %ju != %ju", #actual,    \
                   #expected, iq_actual_, iq_expected_);                       \
      return;                                                                  \
    }                                                                          \
  } while (0)

/* Either string may be NULL, which equals only NULL. */
#define IQ_ASSERT_EQ_STR(actual, expected)                                     \
  do {                                                                         \
    const char *iq_actual_ = (actual);                                         \
    const char *iq_expected_ = (expected);                                     \
    bool iq_equal_ = iq_actual_ == NULL || iq_expected_ == NULL                \
                         ? iq_actual_ == iq_expected_                          \
                         : strcmp(iq_actual_, iq_expected_) == 0;              \
    if (!iq_equal_) {                                                          \
      iq_test_fail(__FILE__, __LINE__,                                         \
                   "IQ_ASSERT_EQ_STR(%s, %s) failed:\n  actual:   %s%s%s\n"    \
                   "  expected: %s%s%s",                                       \
                   #actual, #expected, iq_actual_ ? "\"" : "",                 \
                   iq_actual_ ? iq_actual_ : "NULL", iq_actual_ ? "\"" : "",   \
                   iq_expected_ ? "\"" : "",                                   \
                   iq_expected_ ? iq_expected_ : "NULL",                       \
                   iq_expected_ ? "\"" : "");                                  \
      return;                                                                  \
    }                                                                          \
  } while (0)

#define IQ_ASSERT_CONTAINS(haystack, needle)                                   \
  do {                                                                         \
    const char *iq_haystack_ = (haystack);                                     \
    const char *iq_needle_ = (needle);                                         \
    if (iq_haystack_ == NULL || strstr(iq_haystack_, iq_needle_) == NULL) {    \
      iq_test_fail(__FILE__, __LINE__,                                         \
                   "IQ_ASSERT_CONTAINS(%s, %s) failed: \"%s\" is not in %s%s%s", \
                   #haystack, #needle, iq_needle_,                             \
                   iq_haystack_ ? "\"" : "",                                   \
                   iq_haystack_ ? iq_haystack_ : "NULL",                       \
                   iq_haystack_ ? "\"" : "");                                  \
      return;                                                                  \
    }                                                                          \
  } while (0)

#define IQ_ASSERT_NOT_CONTAINS(haystack, needle)                               \
  do {                                                                         \
    const char *iq_haystack_ = (haystack);                                     \
    const char *iq_needle_ = (needle);                                         \
    if (iq_haystack_ == NULL || strstr(iq_haystack_, iq_needle_) != NULL) {    \
      iq_test_fail(__FILE__, __LINE__,                                         \
                   "IQ_ASSERT_NOT_CONTAINS(%s, %s) failed: \"%s\" is in %s%s%s", \
                   #haystack, #needle, iq_needle_,                             \
                   iq_haystack_ ? "\"" : "",                                   \
                   iq_haystack_ ? iq_haystack_ : "NULL",                       \
                   iq_haystack_ ? "\"" : "");                                  \
      return;                                                                  \
    }                                                                          \
  } while (0)

#endif /* IQ_TEST_H */
