/* Tests of file mapping, bounds arithmetic, whole-file reads and atomic
 * writes, on real files in a fresh temporary directory. */
#include "iq/support.h"
#include "iq_test.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* The "nobody" account on Debian and most Linux systems. */
#define UNPRIVILEGED_ID 65534

static bool write_bytes(const char *path, const void *data, size_t size) {
  FILE *stream = fopen(path, "wb");
  if (stream == NULL) {
    return false;
  }
  bool written = fwrite(data, 1, size, stream) == size;
  return fclose(stream) == 0 && written;
}

/* Returns the file contents in a heap string the caller frees, or NULL. */
static char *read_all(const char *path) {
  FILE *stream = fopen(path, "rb");
  if (stream == NULL) {
    return NULL;
  }
  char *text = iq_test_read_stream(stream);
  fclose(stream);
  return text;
}

IQ_TEST(mapped_file_maps_content) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "weights.bin");
  static const uint8_t bytes[] = {0x00, 0x01, 0xfe, 0xff, 'i', 'q', 0x00};
  IQ_ASSERT(write_bytes(path, bytes, sizeof(bytes)));

  iq_error_t *error = NULL;
  iq_mapped_file_t *file = iq_mapped_file_open(path, &error);
  IQ_ASSERT_NULL(error);
  IQ_ASSERT_NOT_NULL(file);
  IQ_ASSERT_EQ_UINT(file->size, sizeof(bytes));
  IQ_ASSERT_NOT_NULL(file->data);
  IQ_ASSERT_EQ_INT(memcmp(file->data, bytes, sizeof(bytes)), 0);
  IQ_ASSERT_EQ_STR(file->path, path);

  iq_mapped_file_close(file);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(mapped_file_empty_has_no_data) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "empty.bin");
  IQ_ASSERT(iq_test_write_text(path, ""));

  iq_error_t *error = NULL;
  iq_mapped_file_t *file = iq_mapped_file_open(path, &error);
  IQ_ASSERT_NULL(error);
  IQ_ASSERT_NOT_NULL(file);
  IQ_ASSERT_NULL(file->data);
  IQ_ASSERT_EQ_UINT(file->size, 0);

  iq_mapped_file_close(file);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(mapped_file_missing_names_path) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "missing.onnx");

  iq_error_t *error = NULL;
  IQ_ASSERT_NULL(iq_mapped_file_open(path, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->file, path);
  IQ_ASSERT_CONTAINS(error->message, strerror(ENOENT));
  IQ_ASSERT_NOT_NULL(error->hint);
  char *text = iq_error_format(error);
  IQ_ASSERT_CONTAINS(text, path);
  free(text);

  iq_error_destroy(error);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(mapped_file_rejects_directory) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);

  iq_error_t *error = NULL;
  IQ_ASSERT_NULL(iq_mapped_file_open(dir, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->file, dir);
  IQ_ASSERT_CONTAINS(error->message, "is a directory");
  IQ_ASSERT_NOT_NULL(error->hint);

  iq_error_destroy(error);
  iq_test_remove_dir(dir);
  free(dir);
}

IQ_TEST(mapped_file_rejects_fifo) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "pipe");
  IQ_ASSERT_EQ_INT(mkfifo(path, 0600), 0);

  /* Must return at once instead of waiting for a writer. */
  iq_error_t *error = NULL;
  IQ_ASSERT_NULL(iq_mapped_file_open(path, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "FIFO");

  iq_error_destroy(error);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(mapped_file_rejects_character_device) {
  iq_error_t *error = NULL;
  IQ_ASSERT_NULL(iq_mapped_file_open("/dev/null", &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->file, "/dev/null");
  IQ_ASSERT_CONTAINS(error->message, "character device");
  iq_error_destroy(error);
}

IQ_TEST(mapped_file_null_error_slot) {
  IQ_ASSERT_NULL(iq_mapped_file_open("/nonexistent/iq/unit/test", NULL));
  iq_mapped_file_close(NULL);
}

IQ_TEST(range_in_bounds_edge_cases) {
  static const struct {
    uint64_t offset;
    uint64_t length;
    uint64_t size;
    bool expected;
  } cases[] = {
      {0, 0, 0, true},                   /* empty range of an empty buffer */
      {0, 10, 10, true},                 /* the whole buffer */
      {4, 6, 10, true},                  /* ends exactly at the end */
      {10, 0, 10, true},                 /* zero length at the end */
      {4, 7, 10, false},                 /* one byte past the end */
      {11, 0, 10, false},                /* starts past the end */
      {UINT64_MAX, 1, 10, false},        /* offset + length wraps to 0 */
      {1, UINT64_MAX, UINT64_MAX, false}, /* offset + length wraps */
      {UINT64_MAX, 0, UINT64_MAX, true}, /* zero length at the largest end */
      {0, UINT64_MAX, UINT64_MAX, true},
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); ++i) {
    bool actual =
        iq_range_in_bounds(cases[i].offset, cases[i].length, cases[i].size);
    if (actual != cases[i].expected) {
      iq_test_fail(__FILE__, __LINE__,
                   "iq_range_in_bounds(%" PRIu64 ", %" PRIu64 ", %" PRIu64
                   ") returned %d, expected %d",
                   cases[i].offset, cases[i].length, cases[i].size, actual,
                   cases[i].expected);
    }
  }
}

IQ_TEST(mul_u64_detects_overflow) {
  uint64_t product = 12345;
  IQ_ASSERT_TRUE(iq_mul_u64(0, UINT64_MAX, &product));
  IQ_ASSERT_EQ_UINT(product, 0);
  IQ_ASSERT_TRUE(iq_mul_u64(UINT64_MAX, 1, &product));
  IQ_ASSERT_EQ_UINT(product, UINT64_MAX);
  IQ_ASSERT_TRUE(iq_mul_u64(UINT64_C(1) << 32, (UINT64_C(1) << 32) - 1, &product));
  IQ_ASSERT_EQ_UINT(product, UINT64_MAX - UINT32_MAX);
  IQ_ASSERT_TRUE(iq_mul_u64(UINT64_C(4294967295), UINT64_C(4294967297), &product));
  IQ_ASSERT_EQ_UINT(product, UINT64_MAX);

  IQ_ASSERT_FALSE(iq_mul_u64(UINT64_C(1) << 32, UINT64_C(1) << 32, &product));
  IQ_ASSERT_FALSE(iq_mul_u64(UINT64_MAX, 2, &product));
  IQ_ASSERT_FALSE(iq_mul_u64(UINT64_C(4294967296), UINT64_C(4294967297), &product));
}

IQ_TEST(read_text_file_keeps_nul_bytes) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "input.mlir");
  static const char bytes[] = {'a', '\0', 'b', '\n'};
  IQ_ASSERT(write_bytes(path, bytes, sizeof(bytes)));

  size_t size = 0;
  iq_error_t *error = NULL;
  char *text = iq_read_text_file(path, &size, &error);
  IQ_ASSERT_NULL(error);
  IQ_ASSERT_NOT_NULL(text);
  IQ_ASSERT_EQ_UINT(size, sizeof(bytes));
  IQ_ASSERT_EQ_INT(memcmp(text, bytes, sizeof(bytes)), 0);
  IQ_ASSERT_EQ_INT(text[size], '\0');

  free(text);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(read_text_file_large_content) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "large.mlir");
  /* A regular file gets a buffer sized from its length up front. */
  size_t expected_size = 100000;
  char *bytes = malloc(expected_size);
  IQ_ASSERT_NOT_NULL(bytes);
  for (size_t i = 0; i < expected_size; ++i) {
    bytes[i] = (char)('a' + i % 26);
  }
  IQ_ASSERT(write_bytes(path, bytes, expected_size));

  size_t size = 0;
  iq_error_t *error = NULL;
  char *text = iq_read_text_file(path, &size, &error);
  IQ_ASSERT_NULL(error);
  IQ_ASSERT_NOT_NULL(text);
  IQ_ASSERT_EQ_UINT(size, expected_size);
  IQ_ASSERT_EQ_INT(memcmp(text, bytes, expected_size), 0);

  free(text);
  free(bytes);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(read_text_file_empty_file) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "empty.mlir");
  IQ_ASSERT(iq_test_write_text(path, ""));

  size_t size = 99;
  char *text = iq_read_text_file(path, &size, NULL);
  IQ_ASSERT_EQ_STR(text, "");
  IQ_ASSERT_EQ_UINT(size, 0);

  free(text);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(read_text_file_missing_path) {
  iq_error_t *error = NULL;
  size_t size = 7;
  IQ_ASSERT_NULL(iq_read_text_file("/nonexistent/iq/in.mlir", &size, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->file, "/nonexistent/iq/in.mlir");
  IQ_ASSERT_CONTAINS(error->message, strerror(ENOENT));
  IQ_ASSERT_NOT_NULL(error->hint);
  iq_error_destroy(error);
}

IQ_TEST(read_text_file_rejects_directory) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  iq_error_t *error = NULL;
  IQ_ASSERT_NULL(iq_read_text_file(dir, NULL, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->file, dir);
  IQ_ASSERT_CONTAINS(error->message, "is a directory");
  iq_error_destroy(error);
  iq_test_remove_dir(dir);
  free(dir);
}

IQ_TEST(write_atomic_replaces_old_file) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "out.o");
  IQ_ASSERT(iq_test_write_text(path, "old contents that are longer"));
  IQ_ASSERT_EQ_INT(chmod(path, 0640), 0);

  iq_error_t *error = NULL;
  IQ_ASSERT_TRUE(iq_write_file_atomic(path, "new", 3, &error));
  IQ_ASSERT_NULL(error);
  char *text = read_all(path);
  IQ_ASSERT_EQ_STR(text, "new");
  free(text);
  /* Only the output itself is left, no temporary file. */
  IQ_ASSERT_EQ_INT(iq_test_count_entries(dir), 1);
  /* The replacement keeps the permissions of the file it replaced. */
  struct stat info;
  IQ_ASSERT_EQ_INT(stat(path, &info), 0);
  IQ_ASSERT_EQ_INT(info.st_mode & 0777, 0640);

  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(write_atomic_creates_new_file) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "fresh.mlir");

  iq_error_t *error = NULL;
  IQ_ASSERT_TRUE(iq_write_file_atomic(path, "module {}\n", 10, &error));
  IQ_ASSERT_NULL(error);
  char *text = read_all(path);
  IQ_ASSERT_EQ_STR(text, "module {}\n");
  free(text);
  IQ_ASSERT_EQ_INT(iq_test_count_entries(dir), 1);
  /* Not mkstemp's 0600: the mode open(..., 0666) would give. */
  mode_t mask = umask(0);
  umask(mask);
  struct stat info;
  IQ_ASSERT_EQ_INT(stat(path, &info), 0);
  IQ_ASSERT_EQ_INT(info.st_mode & 0777, 0666 & ~mask);

  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(write_atomic_empty_data) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "empty.bin");
  IQ_ASSERT(iq_test_write_text(path, "old"));

  IQ_ASSERT_TRUE(iq_write_file_atomic(path, NULL, 0, NULL));
  char *text = read_all(path);
  IQ_ASSERT_EQ_STR(text, "");
  free(text);
  IQ_ASSERT_EQ_INT(iq_test_count_entries(dir), 1);

  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(write_atomic_rejects_directory_path) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *target = iq_test_path_join(dir, "lib");
  IQ_ASSERT_EQ_INT(mkdir(target, 0700), 0);

  iq_error_t *error = NULL;
  IQ_ASSERT_FALSE(iq_write_file_atomic(target, "data", 4, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->file, target);
  IQ_ASSERT_CONTAINS(error->message, "is a directory");
  IQ_ASSERT_NOT_NULL(error->hint);
  struct stat info;
  IQ_ASSERT_EQ_INT(stat(target, &info), 0);
  IQ_ASSERT(S_ISDIR(info.st_mode));
  /* Only the directory itself, no temporary file next to it. */
  IQ_ASSERT_EQ_INT(iq_test_count_entries(dir), 1);
  IQ_ASSERT_EQ_INT(iq_test_count_entries(target), 0);

  iq_error_destroy(error);
  iq_test_remove_dir(dir);
  free(target);
  free(dir);
}

IQ_TEST(write_atomic_missing_directory) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "no-such-dir/out.o");

  iq_error_t *error = NULL;
  IQ_ASSERT_FALSE(iq_write_file_atomic(path, "x", 1, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->file, path);
  IQ_ASSERT_CONTAINS(error->message, strerror(ENOENT));
  IQ_ASSERT_EQ_INT(iq_test_count_entries(dir), 0);

  iq_error_destroy(error);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

/* Tries the write in a child process whose user cannot write to the
 * directory. Root bypasses permission bits, so a root child first switches
 * to an unprivileged user. Exit status: 0 when the write failed with
 * EACCES as expected, 1 when it succeeded, 2 when it failed otherwise, 3
 * when the child could not drop root privileges. */
static int write_as_unprivileged_child(const char *path) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    return -1;
  }
  if (pid == 0) {
    if (geteuid() == 0 &&
        (setgid(UNPRIVILEGED_ID) != 0 || setuid(UNPRIVILEGED_ID) != 0)) {
      _exit(3);
    }
    iq_error_t *error = NULL;
    bool written = iq_write_file_atomic(path, "new", 3, &error);
    int status = 2;
    if (written) {
      status = 1;
    } else if (error != NULL && strstr(error->message, strerror(EACCES))) {
      status = 0;
    }
    iq_error_destroy(error);
    _exit(status);
  }

  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
    return -1;
  }
  return WEXITSTATUS(status);
}

IQ_TEST(write_atomic_unwritable_dir_keeps_old) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "out.o");
  IQ_ASSERT(iq_test_write_text(path, "old"));
  IQ_ASSERT_EQ_INT(chmod(path, 0644), 0);
  IQ_ASSERT_EQ_INT(chmod(dir, 0555), 0);

  int status = write_as_unprivileged_child(path);
  chmod(dir, 0700);
  if (status == 3) {
    iq_test_remove_dir(dir);
    free(path);
    free(dir);
    IQ_SKIP("running as root without permission to switch users");
  }
  IQ_ASSERT_EQ_INT(status, 0);

  char *text = read_all(path);
  IQ_ASSERT_EQ_STR(text, "old");
  free(text);
  IQ_ASSERT_EQ_INT(iq_test_count_entries(dir), 1);

  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

/* Runs `check(path)` in a child process, so that it can redirect stdin or
 * stdout without touching the runner's streams. Returns the child's exit
 * status, or -1 when it did not exit normally. */
static int run_in_child(int (*check)(const char *path), const char *path) {
  fflush(NULL);
  pid_t pid = fork();
  if (pid < 0) {
    return -1;
  }
  if (pid == 0) {
    _exit(check(path));
  }
  int status = 0;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) {
    return -1;
  }
  return WEXITSTATUS(status);
}

/* Bytes of the stdin test input: more than the 4096-byte first buffer
 * for streams of unknown length, so the buffer has to grow. */
#define STDIN_INPUT_SIZE 100000

static char stdin_input_byte(size_t index) { return (char)('0' + index % 10); }

/* Exit status 0 when "-" reads the file that stdin was pointed at. */
static int check_read_from_stdin(const char *path) {
  if (freopen(path, "rb", stdin) == NULL) {
    return 10;
  }
  size_t size = 0;
  char *text = iq_read_text_file("-", &size, NULL);
  if (text == NULL) {
    return 11;
  }
  int status = size == STDIN_INPUT_SIZE && text[size] == '\0' ? 0 : 12;
  for (size_t i = 0; status == 0 && i < size; ++i) {
    if (text[i] != stdin_input_byte(i)) {
      status = 13;
    }
  }
  free(text);
  return status;
}

IQ_TEST(read_text_file_dash_reads_stdin) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "stdin.txt");
  char *bytes = malloc(STDIN_INPUT_SIZE);
  IQ_ASSERT_NOT_NULL(bytes);
  for (size_t i = 0; i < STDIN_INPUT_SIZE; ++i) {
    bytes[i] = stdin_input_byte(i);
  }
  bool written = write_bytes(path, bytes, STDIN_INPUT_SIZE);
  free(bytes);
  IQ_ASSERT(written);

  IQ_ASSERT_EQ_INT(run_in_child(check_read_from_stdin, path), 0);

  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

/* Exit status 0 when "-" writes to the file that stdout was pointed at. */
static int check_write_to_stdout(const char *path) {
  if (freopen(path, "wb", stdout) == NULL) {
    return 10;
  }
  return iq_write_file_atomic("-", "to stdout", 9, NULL) ? 0 : 11;
}

IQ_TEST(write_atomic_dash_writes_stdout) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "stdout.txt");

  IQ_ASSERT_EQ_INT(run_in_child(check_write_to_stdout, path), 0);
  char *text = read_all(path);
  IQ_ASSERT_EQ_STR(text, "to stdout");
  free(text);
  IQ_ASSERT_EQ_INT(iq_test_count_entries(dir), 1);

  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}
