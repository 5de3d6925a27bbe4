/* Support code shared by every part of iq: errors that carry their context,
 * leveled logging, progress reporting for long stages, and read-only file
 * mapping. None of it depends on MLIR, so it also builds for AArch64 and
 * is linked into the runtime. */
#ifndef IQ_SUPPORT_H
#define IQ_SUPPORT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Errors -------------------------------------------------------------
 * An error names where it happened (a file, and a node, op or tensor inside
 * it), what was wrong with which value, and what the user can do about it.
 * Functions that can fail take an `iq_error_t **` and, on failure, store a
 * newly allocated error there (the caller owns it) and return false or NULL.
 * Passing NULL as the error slot discards the error. */
typedef struct iq_error {
  char *file;    /* input file the error is about, or NULL */
  char *where;   /* node, op, tensor or option name, or NULL */
  char *message; /* what is wrong, including the offending value */
  char *hint;    /* what to do next, or NULL */
} iq_error_t;

/* Creates an error; `file`, `where` and `hint` may be NULL. The message is
 * printf-formatted. Returns NULL only when memory is exhausted. */
iq_error_t *iq_error_create(const char *file, const char *where,
                            const char *hint, const char *format, ...)
    __attribute__((format(printf, 4, 5)));

/* Stores a new error in `*slot` when `slot` is not NULL and `*slot` is
 * still empty (the first error wins). Always returns false, so callers can
 * write `return iq_error_set(err, ...);`. */
bool iq_error_set(iq_error_t **slot, const char *file, const char *where,
                  const char *hint, const char *format, ...)
    __attribute__((format(printf, 5, 6)));

/* Formats an error as "FILE: WHERE: MESSAGE\n  hint: HINT" into a newly
 * allocated string the caller frees. */
char *iq_error_format(const iq_error_t *error);

/* Prints "PROGRAM: error: ..." to `stream`. */
void iq_error_print(const iq_error_t *error, const char *program, FILE *stream);

void iq_error_destroy(iq_error_t *error);

/* ---- Logging ------------------------------------------------------------
 * One process-wide level. Messages go to stderr with a level prefix. The
 * level starts at IQ_LOG_WARNING, or at the value of the IQ_LOG_LEVEL
 * environment variable (error, warning, info, debug) on first use. */
typedef enum iq_log_level {
  IQ_LOG_ERROR = 0,
  IQ_LOG_WARNING = 1,
  IQ_LOG_INFO = 2,
  IQ_LOG_DEBUG = 3,
} iq_log_level_t;

void iq_log_set_level(iq_log_level_t level);
iq_log_level_t iq_log_get_level(void);
/* Parses "error", "warning", "info" or "debug"; returns false otherwise. */
bool iq_log_parse_level(const char *text, iq_log_level_t *level);
/* Redirects log output (tests use a temporary file); NULL restores stderr. */
void iq_log_set_stream(FILE *stream);
void iq_log(iq_log_level_t level, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
void iq_log_v(iq_log_level_t level, const char *format, va_list args);

#define IQ_LOG_ERROR_MSG(...) iq_log(IQ_LOG_ERROR, __VA_ARGS__)
#define IQ_LOG_WARN(...) iq_log(IQ_LOG_WARNING, __VA_ARGS__)
#define IQ_LOG_INFO_MSG(...) iq_log(IQ_LOG_INFO, __VA_ARGS__)
#define IQ_LOG_DEBUG_MSG(...) iq_log(IQ_LOG_DEBUG, __VA_ARGS__)

/* ---- Progress -----------------------------------------------------------
 * A progress line for a long stage: "STAGE: done/total UNIT, R UNIT/s,
 * ETA m:ss". On a terminal it redraws in place at most ten times a second.
 * On other streams it prints only the final line, unless `force` is set,
 * which prints a new line at most once a second. */
typedef struct iq_progress iq_progress_t;

/* Starts a stage of `total` units (0 when unknown). The caller owns the
 * result and ends it with iq_progress_finish. */
iq_progress_t *iq_progress_start(const char *stage, uint64_t total,
                                 const char *unit, FILE *stream, bool force);
void iq_progress_update(iq_progress_t *progress, uint64_t done);
void iq_progress_advance(iq_progress_t *progress, uint64_t delta);
/* Prints the final line (with the elapsed time) and frees the reporter. */
void iq_progress_finish(iq_progress_t *progress);
/* Formats "done/total unit, R unit/s, ETA m:ss" for the current state into
 * `buffer`; used by the printer and by tests. `now_s` is seconds since the
 * start. Returns the number of characters written. */
size_t iq_progress_format(const iq_progress_t *progress, double now_s,
                          char *buffer, size_t size);

/* ---- Mapped files -------------------------------------------------------
 * A whole file mapped read-only. Empty files are valid and have data NULL
 * and size 0. */
typedef struct iq_mapped_file {
  const uint8_t *data;
  size_t size;
  char *path;
} iq_mapped_file_t;

/* Maps `path` read-only. Returns NULL and sets `*error` when the file
 * cannot be opened, is not a regular file, or cannot be mapped. The caller
 * owns the result and releases it with iq_mapped_file_close. */
iq_mapped_file_t *iq_mapped_file_open(const char *path, iq_error_t **error);
void iq_mapped_file_close(iq_mapped_file_t *file);

/* Checks that [offset, offset + length) lies inside a buffer of `size`
 * bytes without overflowing. */
bool iq_range_in_bounds(uint64_t offset, uint64_t length, uint64_t size);

/* Multiplies `a` by `b` into `*product`, returning false on overflow. */
bool iq_mul_u64(uint64_t a, uint64_t b, uint64_t *product);

/* Reads a whole file (or stdin for "-") into a NUL-terminated heap buffer
 * the caller frees. Used for text inputs such as .mlir files. */
char *iq_read_text_file(const char *path, size_t *size, iq_error_t **error);

/* Writes all `size` bytes to `fd`, retrying after EINTR and short writes.
 * Returns false with errno set on failure. */
bool iq_write_all(int fd, const void *data, uint64_t size);

/* Writes `size` bytes to `path` atomically: into a temporary file in the
 * same folder, then renamed over `path`, so a failure leaves no partial
 * output. "-" writes to stdout. */
bool iq_write_file_atomic(const char *path, const void *data, size_t size,
                          iq_error_t **error);

#ifdef __cplusplus
}
#endif

#endif /* IQ_SUPPORT_H */
