/* Runs the unit tests registered with IQ_TEST.
 *
 *   iq-unit-tests           runs every test
 *   iq-unit-tests TEXT      runs the tests whose name contains TEXT
 *   iq-unit-tests --list    prints the test names
 *
 * Prints "PASS name", "FAIL name" or "SKIP name (reason)" per test, then
 * "N tests, M failed", and exits with 1 when a test failed. */
#include "iq_test.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Far more than the suite has. Registration past it fails the run. */
#define MAX_TESTS 1024

typedef struct test_case {
  const char *name;
  iq_test_function_t function;
  const char *file;
  int line;
} test_case_t;

static test_case_t tests[MAX_TESTS];
static size_t test_count;
static size_t dropped_count;

static bool current_failed;
static const char *current_skip_reason;

void iq_test_register(const char *name, iq_test_function_t function,
                      const char *file, int line) {
  if (test_count == MAX_TESTS) {
    ++dropped_count;
    return;
  }
  tests[test_count].name = name;
  tests[test_count].function = function;
  tests[test_count].file = file;
  tests[test_count].line = line;
  ++test_count;
}

void iq_test_fail(const char *file, int line, const char *format, ...) {
  current_failed = true;
  fflush(stdout);
  fprintf(stderr, "%s:%d: ", file, line);
  va_list args;
  va_start(args, format);
  vfprintf(stderr, format, args);
  va_end(args);
  fputc('\n', stderr);
}

void iq_test_skip(const char *reason) { current_skip_reason = reason; }

char *iq_test_make_temp_dir(void) {
  const char *base = getenv("TMPDIR");
  if (base == NULL || base[0] == '\0') {
    base = "/tmp";
  }
  char *path = iq_test_path_join(base, "iq-unit-XXXXXX");
  if (path == NULL) {
    return NULL;
  }
  if (mkdtemp(path) == NULL) {
    iq_test_fail(__FILE__, __LINE__, "mkdtemp(%s) failed: %s", path,
                 strerror(errno));
    free(path);
    return NULL;
  }
  return path;
}

char *iq_test_path_join(const char *directory, const char *name) {
  size_t directory_length = strlen(directory);
  size_t name_length = strlen(name);
  char *path = malloc(directory_length + name_length + 2);
  if (path == NULL) {
    return NULL;
  }
  memcpy(path, directory, directory_length);
  path[directory_length] = '/';
  memcpy(path + directory_length + 1, name, name_length + 1);
  return path;
}

int iq_test_count_entries(const char *directory) {
  DIR *stream = opendir(directory);
  if (stream == NULL) {
    return -1;
  }
  int count = 0;
  struct dirent *entry;
  while ((entry = readdir(stream)) != NULL) {
    if (strcmp(entry->d_name, ".") != 0 && strcmp(entry->d_name, "..") != 0) {
      ++count;
    }
  }
  closedir(stream);
  return count;
}

void iq_test_remove_dir(const char *directory) {
  DIR *stream = opendir(directory);
  if (stream != NULL) {
    struct dirent *entry;
    while ((entry = readdir(stream)) != NULL) {
      if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0) {
        continue;
      }
      char *path = iq_test_path_join(directory, entry->d_name);
      if (path != NULL) {
        /* Tests nest at most one directory deep. */
        if (unlink(path) != 0) {
          rmdir(path);
        }
        free(path);
      }
    }
    closedir(stream);
  }
  rmdir(directory);
}

bool iq_test_write_text(const char *path, const char *text) {
  FILE *stream = fopen(path, "wb");
  if (stream == NULL) {
    return false;
  }
  size_t length = strlen(text);
  bool written = fwrite(text, 1, length, stream) == length;
  return fclose(stream) == 0 && written;
}

char *iq_test_read_stream(FILE *stream) {
  fflush(stream);
  rewind(stream);
  size_t capacity = 256;
  size_t length = 0;
  char *text = malloc(capacity);
  if (text == NULL) {
    return NULL;
  }
  size_t count;
  while ((count = fread(text + length, 1, capacity - length - 1, stream)) > 0) {
    length += count;
    if (capacity - length < 2) {
      char *grown = realloc(text, capacity * 2);
      if (grown == NULL) {
        free(text);
        return NULL;
      }
      text = grown;
      capacity *= 2;
    }
  }
  text[length] = '\0';
  /* Leaves the position at the end, so the code under test can go on
   * appending to the stream. */
  fseek(stream, 0, SEEK_END);
  return text;
}

/* Orders tests by file, then by line, so the output follows the sources
 * whatever order the constructors ran in. */
static int compare_tests(const void *left, const void *right) {
  const test_case_t *a = left;
  const test_case_t *b = right;
  int by_file = strcmp(a->file, b->file);
  if (by_file != 0) {
    return by_file;
  }
  return (a->line > b->line) - (a->line < b->line);
}

static void print_usage(FILE *stream, const char *program) {
  fprintf(stream,
          "usage: %s [--list | TEXT]\n"
          "  runs every unit test, or those whose name contains TEXT\n"
          "  --list  prints the test names and runs nothing\n",
          program);
}

int main(int argc, char **argv) {
  const char *program = argc > 0 ? argv[0] : "iq-unit-tests";
  if (argc > 2) {
    print_usage(stderr, program);
    return 2;
  }
  const char *filter = argc == 2 ? argv[1] : NULL;
  if (filter != NULL && strcmp(filter, "--help") == 0) {
    print_usage(stdout, program);
    return 0;
  }
  if (dropped_count > 0) {
    fprintf(stderr,
            "%s: error: %zu tests were not registered because the table "
            "holds %d; raise MAX_TESTS in test/unit/main.c\n",
            program, dropped_count, MAX_TESTS);
    return 1;
  }

  qsort(tests, test_count, sizeof(tests[0]), compare_tests);

  if (filter != NULL && strcmp(filter, "--list") == 0) {
    for (size_t i = 0; i < test_count; ++i) {
      printf("%s\n", tests[i].name);
    }
    return 0;
  }

  size_t run_count = 0;
  size_t failed_count = 0;
  size_t skipped_count = 0;
  for (size_t i = 0; i < test_count; ++i) {
    if (filter != NULL && strstr(tests[i].name, filter) == NULL) {
      continue;
    }
    current_failed = false;
    current_skip_reason = NULL;
    tests[i].function();
    ++run_count;

    if (current_failed) {
      ++failed_count;
      printf("FAIL %s\n", tests[i].name);
    } else if (current_skip_reason != NULL) {
      ++skipped_count;
      printf("SKIP %s (%s)\n", tests[i].name, current_skip_reason);
    } else {
      printf("PASS %s\n", tests[i].name);
    }
    /* Keeps PASS/FAIL lines in order with the failure details on stderr. */
    fflush(stdout);
  }

  if (filter != NULL && run_count == 0) {
    fprintf(stderr,
            "%s: error: no test name contains '%s'; run %s --list to see "
            "the names\n",
            program, filter, program);
    return 1;
  }
  if (skipped_count > 0) {
    printf("%zu skipped\n", skipped_count);
  }
  printf("%zu tests, %zu failed\n", run_count, failed_count);
  return failed_count > 0 ? 1 : 0;
}
