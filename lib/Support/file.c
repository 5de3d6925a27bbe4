/* File mapping, bounds arithmetic and whole-file reads and writes: see
 * iq/support.h for the contract. */
#include "iq/support.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Returns a hint for a failed open(), stat() or read() of an input. */
static const char *input_hint(int error_number) {
  switch (error_number) {
  case ENOENT:
  case ENOTDIR:
    return "check that the path is spelled correctly and the file exists";
  case EACCES:
  case EPERM:
    return "check that the file is readable by the current user";
  default:
    return "check that the file exists and is readable";
  }
}

/* Describes a file that is not a regular file, as in "PATH: is a
 * directory, not a regular file". */
static const char *describe_file_type(mode_t mode) {
  if (S_ISDIR(mode)) {
    return "is a directory";
  }
  if (S_ISCHR(mode)) {
    return "is a character device";
  }
  if (S_ISBLK(mode)) {
    return "is a block device";
  }
  if (S_ISFIFO(mode)) {
    return "is a FIFO (named pipe)";
  }
  if (S_ISSOCK(mode)) {
    return "is a socket";
  }
  return "is a special file";
}

/* Opens `path` read-only with `extra_flags` and reads its status into
 * `info`. Returns the descriptor, or -1 with `*error` set. */
static int open_input(const char *path, int extra_flags, struct stat *info,
                      iq_error_t **error) {
  int fd = open(path, O_RDONLY | O_CLOEXEC | extra_flags);
  if (fd < 0) {
    int saved = errno;
    iq_error_set(error, path, NULL, input_hint(saved), "failed to open: %s",
                 strerror(saved));
    return -1;
  }
  if (fstat(fd, info) != 0) {
    int saved = errno;
    close(fd);
    iq_error_set(error, path, NULL, input_hint(saved),
                 "failed to read the file status: %s", strerror(saved));
    return -1;
  }
  return fd;
}

iq_mapped_file_t *iq_mapped_file_open(const char *path, iq_error_t **error) {
  if (path == NULL) {
    iq_error_set(error, NULL, NULL, "pass the path of the file to map",
                 "no file path was given (NULL)");
    return NULL;
  }

  /* O_NONBLOCK keeps open() from waiting for a writer when `path` is a
   * FIFO, which is then rejected below. Regular files ignore the flag. */
  struct stat info;
  int fd = open_input(path, O_NONBLOCK, &info, error);
  if (fd < 0) {
    return NULL;
  }
  if (!S_ISREG(info.st_mode)) {
    close(fd);
    iq_error_set(error, path, NULL, "pass the path of a regular file",
                 "%s, not a regular file", describe_file_type(info.st_mode));
    return NULL;
  }
  /* Only 32-bit hosts can have files larger than their address space. */
  if ((uintmax_t)info.st_size > (uintmax_t)SIZE_MAX) {
    close(fd);
    iq_error_set(error, path, NULL, "use a 64-bit build of iq for this file",
                 "is %jd bytes, more than this process can map",
                 (intmax_t)info.st_size);
    return NULL;
  }

  iq_mapped_file_t *file = calloc(1, sizeof(*file));
  char *path_copy = strdup(path);
  if (file == NULL || path_copy == NULL) {
    close(fd);
    free(file);
    free(path_copy);
    iq_error_set(error, path, NULL, NULL, "out of memory while mapping");
    return NULL;
  }
  file->path = path_copy;
  file->size = (size_t)info.st_size;

  /* mmap rejects a length of 0, and an empty file has nothing to map. */
  if (file->size > 0) {
    void *data = mmap(NULL, file->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (data == MAP_FAILED) {
      int saved = errno;
      close(fd);
      iq_mapped_file_close(file);
      iq_error_set(error, path, NULL,
                   "check that the file system supports memory mapping",
                   "failed to map %zu bytes: %s", (size_t)info.st_size,
                   strerror(saved));
      return NULL;
    }
    file->data = data;
  }

  /* The mapping keeps its own reference to the file. */
  close(fd);
  return file;
}

void iq_mapped_file_close(iq_mapped_file_t *file) {
  if (file == NULL) {
    return;
  }
  if (file->data != NULL) {
    munmap((void *)file->data, file->size);
  }
  free(file->path);
  free(file);
}

bool iq_range_in_bounds(uint64_t offset, uint64_t length, uint64_t size) {
  /* Written without offset + length, which can wrap around. */
  return offset <= size && length <= size - offset;
}

bool iq_mul_u64(uint64_t a, uint64_t b, uint64_t *product) {
  if (a != 0 && b > UINT64_MAX / a) {
    return false;
  }
  if (product != NULL) {
    *product = a * b;
  }
  return true;
}

/* Reads `stream` to its end into a NUL-terminated heap buffer the caller
 * frees. `capacity` is the initial buffer size, or 0 for a default. On
 * failure it returns NULL with errno set. */
static char *read_stream(FILE *stream, size_t capacity, size_t *length_out) {
  if (capacity < 2) {
    capacity = 4096;
  }
  char *buffer = malloc(capacity);
  if (buffer == NULL) {
    errno = ENOMEM;
    return NULL;
  }

  size_t length = 0;
  for (;;) {
    /* Keep one byte free for the terminating NUL. */
    if (capacity - length < 2) {
      if (capacity > SIZE_MAX / 2) {
        free(buffer);
        errno = EFBIG;
        return NULL;
      }
      char *grown = realloc(buffer, capacity * 2);
      if (grown == NULL) {
        free(buffer);
        errno = ENOMEM;
        return NULL;
      }
      buffer = grown;
      capacity *= 2;
    }

    size_t count = fread(buffer + length, 1, capacity - length - 1, stream);
    length += count;
    if (count == 0) {
      if (ferror(stream)) {
        int saved = errno != 0 ? errno : EIO;
        free(buffer);
        errno = saved;
        return NULL;
      }
      break;
    }
  }

  buffer[length] = '\0';
  *length_out = length;
  return buffer;
}

char *iq_read_text_file(const char *path, size_t *size, iq_error_t **error) {
  if (path == NULL) {
    iq_error_set(error, NULL, NULL, "pass a file path, or - for stdin",
                 "no file path was given (NULL)");
    return NULL;
  }

  size_t length = 0;
  if (strcmp(path, "-") == 0) {
    errno = 0;
    char *text = read_stream(stdin, 0, &length);
    if (text == NULL) {
      iq_error_set(error, "<stdin>", NULL, NULL, "failed to read: %s",
                   strerror(errno));
      return NULL;
    }
    if (size != NULL) {
      *size = length;
    }
    return text;
  }

  struct stat info;
  int fd = open_input(path, 0, &info, error);
  if (fd < 0) {
    return NULL;
  }
  /* Pipes and devices such as /dev/stdin are valid inputs. A directory is
   * not, and reading it would fail later with a vaguer EISDIR. */
  if (S_ISDIR(info.st_mode)) {
    close(fd);
    iq_error_set(error, path, NULL, "pass the path of a file",
                 "is a directory, not a file");
    return NULL;
  }

  FILE *stream = fdopen(fd, "rb");
  if (stream == NULL) {
    int saved = errno;
    close(fd);
    iq_error_set(error, path, NULL, NULL, "failed to open: %s",
                 strerror(saved));
    return NULL;
  }

  size_t capacity = 0;
  if (S_ISREG(info.st_mode) && info.st_size > 0 &&
      (uintmax_t)info.st_size < (uintmax_t)SIZE_MAX - 1) {
    /* One extra byte so reaching end of file needs no second buffer. */
    capacity = (size_t)info.st_size + 2;
  }
  errno = 0;
  char *text = read_stream(stream, capacity, &length);
  int saved = errno;
  fclose(stream);
  if (text == NULL) {
    iq_error_set(error, path, NULL, input_hint(saved), "failed to read: %s",
                 strerror(saved));
    return NULL;
  }
  if (size != NULL) {
    *size = length;
  }
  return text;
}

/* Largest count passed to one write(), because Linux transfers at most
 * about 2 GiB per call anyway and a bounded size keeps 32-bit hosts safe. */
#define WRITE_CHUNK_SIZE ((size_t)1 << 30)

bool iq_write_all(int fd, const void *data, uint64_t size) {
  const unsigned char *bytes = data;
  while (size > 0) {
    size_t chunk = size < WRITE_CHUNK_SIZE ? (size_t)size : WRITE_CHUNK_SIZE;
    ssize_t written = write(fd, bytes, chunk);
    if (written < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    bytes += written;
    size -= (uint64_t)written;
  }
  return true;
}

static bool write_stdout(const void *data, size_t size, iq_error_t **error) {
  if (size > 0 && fwrite(data, 1, size, stdout) != size) {
    int saved = errno;
    return iq_error_set(error, "<stdout>", NULL, NULL, "failed to write: %s",
                        strerror(saved));
  }
  if (fflush(stdout) != 0) {
    int saved = errno;
    return iq_error_set(error, "<stdout>", NULL, NULL, "failed to write: %s",
                        strerror(saved));
  }
  return true;
}

/* Writes to an existing file that is not a regular one, such as a device
 * or a FIFO, by opening and writing it directly. */
static bool write_in_place(const char *path, const void *data, size_t size,
                           iq_error_t **error) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    int saved = errno;
    return iq_error_set(error, path, NULL, "check the permissions of the output",
                        "failed to open for writing: %s", strerror(saved));
  }
  bool ok = iq_write_all(fd, data, size);
  int saved = errno;
  if (close(fd) != 0 && ok) {
    ok = false;
    saved = errno;
  }
  if (!ok) {
    return iq_error_set(error, path, NULL, NULL, "failed to write: %s",
                        strerror(saved));
  }
  return true;
}

/* Returns the permission bits for a new output file: those of the file it
 * replaces, or what open(..., 0666) would give under the current umask.
 * mkstemp itself always creates files with mode 0600. */
static mode_t output_mode(const struct stat *target, bool target_exists) {
  if (target_exists) {
    return target->st_mode & 0777;
  }
  /* NOTE: POSIX offers no way to read the umask without setting it, so a
   * thread creating a file between these two calls would get umask 0. */
  mode_t mask = umask(0);
  umask(mask);
  return 0666 & ~mask;
}

/* Flushes the rename to disk. Failures are ignored because some file
 * systems reject fsync on a directory and the data is already written. */
static void sync_parent_directory(const char *path) {
  const char *slash = strrchr(path, '/');
  char *directory = NULL;
  if (slash == NULL) {
    directory = strdup(".");
  } else if (slash == path) {
    directory = strdup("/");
  } else {
    size_t length = (size_t)(slash - path);
    directory = malloc(length + 1);
    if (directory != NULL) {
      memcpy(directory, path, length);
      directory[length] = '\0';
    }
  }
  if (directory == NULL) {
    return;
  }
  int fd = open(directory, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  free(directory);
}

bool iq_write_file_atomic(const char *path, const void *data, size_t size,
                          iq_error_t **error) {
  if (path == NULL) {
    return iq_error_set(error, NULL, NULL, "pass a file path, or - for stdout",
                        "no output path was given (NULL)");
  }
  if (data == NULL && size > 0) {
    return iq_error_set(error, path, NULL, NULL,
                        "no data was given (NULL) for %zu bytes of output",
                        size);
  }
  if (strcmp(path, "-") == 0) {
    return write_stdout(data, size, error);
  }

  struct stat target;
  bool target_exists = stat(path, &target) == 0;
  if (target_exists && S_ISDIR(target.st_mode)) {
    return iq_error_set(error, path, NULL,
                        "pass the path of a file, for example one inside "
                        "this directory",
                        "is a directory, so it cannot be replaced by the output");
  }
  /* Devices and FIFOs (/dev/null, /dev/stdout, a pipe) are written in
   * place: renaming a file over them would replace the device node. */
  if (target_exists && !S_ISREG(target.st_mode)) {
    return write_in_place(path, data, size, error);
  }

  /* A symbolic link keeps pointing at the output: the file it resolves to
   * is the one replaced. */
  struct stat link;
  if (lstat(path, &link) == 0 && S_ISLNK(link.st_mode)) {
    char *resolved = realpath(path, NULL);
    if (resolved != NULL) {
      bool ok = iq_write_file_atomic(resolved, data, size, error);
      free(resolved);
      return ok;
    }
  }

  static const char suffix[] = ".tmp.XXXXXX";
  size_t path_length = strlen(path);
  char *temp_path = malloc(path_length + sizeof(suffix));
  if (temp_path == NULL) {
    return iq_error_set(error, path, NULL, NULL,
                        "out of memory while preparing to write");
  }
  memcpy(temp_path, path, path_length);
  memcpy(temp_path + path_length, suffix, sizeof(suffix));

  int fd = mkstemp(temp_path);
  if (fd < 0) {
    int saved = errno;
    free(temp_path);
    return iq_error_set(error, path, NULL,
                        "check that the directory exists and is writable",
                        "failed to create a temporary file next to it: %s",
                        strerror(saved));
  }
  /* Keeps child processes from inheriting the descriptor. */
  fcntl(fd, F_SETFD, FD_CLOEXEC);

  const char *step = NULL;
  if (fchmod(fd, output_mode(&target, target_exists)) != 0) {
    step = "set the permissions of";
  } else if (!iq_write_all(fd, data, size)) {
    step = "write";
  } else if (fsync(fd) != 0) {
    step = "flush to disk";
  }
  int saved = errno;
  if (close(fd) != 0 && step == NULL) {
    saved = errno;
    step = "close";
  }
  if (step == NULL && rename(temp_path, path) != 0) {
    saved = errno;
    step = "rename into place";
  }

  if (step != NULL) {
    unlink(temp_path);
    iq_error_set(error, path, NULL,
                 "check free disk space and permissions of the directory",
                 "failed to %s the temporary file %s: %s", step, temp_path,
                 strerror(saved));
    free(temp_path);
    return false;
  }

  free(temp_path);
  sync_parent_directory(path);
  return true;
}
