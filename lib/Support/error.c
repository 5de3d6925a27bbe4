/* Errors that carry their context: see iq/support.h for the contract. */
#include "iq/support.h"

#include <stdlib.h>
#include <string.h>

/* Copies `text` into a new heap string the caller frees. A NULL `text`
 * yields NULL without a failure. Exhausted memory sets `*failed`. */
static char *copy_optional(const char *text, bool *failed) {
  if (text == NULL) {
    return NULL;
  }
  char *copy = strdup(text);
  if (copy == NULL) {
    *failed = true;
  }
  return copy;
}

/* Formats into a new heap string the caller frees, or NULL when memory is
 * exhausted or the format is invalid. */
static char *format_message(const char *format, va_list args) {
  va_list measure;
  va_copy(measure, args);
  int length = vsnprintf(NULL, 0, format, measure);
  va_end(measure);
  if (length < 0) {
    return NULL;
  }

  char *message = malloc((size_t)length + 1);
  if (message == NULL) {
    return NULL;
  }
  vsnprintf(message, (size_t)length + 1, format, args);
  return message;
}

static iq_error_t *error_create_v(const char *file, const char *where,
                                  const char *hint, const char *format,
                                  va_list args) {
  iq_error_t *error = calloc(1, sizeof(*error));
  if (error == NULL) {
    return NULL;
  }

  bool failed = false;
  error->file = copy_optional(file, &failed);
  error->where = copy_optional(where, &failed);
  error->hint = copy_optional(hint, &failed);
  error->message = format_message(format, args);
  if (failed || error->message == NULL) {
    iq_error_destroy(error);
    return NULL;
  }
  return error;
}

iq_error_t *iq_error_create(const char *file, const char *where,
                            const char *hint, const char *format, ...) {
  va_list args;
  va_start(args, format);
  iq_error_t *error = error_create_v(file, where, hint, format, args);
  va_end(args);
  return error;
}

bool iq_error_set(iq_error_t **slot, const char *file, const char *where,
                  const char *hint, const char *format, ...) {
  if (slot == NULL || *slot != NULL) {
    return false;
  }
  va_list args;
  va_start(args, format);
  *slot = error_create_v(file, where, hint, format, args);
  va_end(args);
  return false;
}

char *iq_error_format(const iq_error_t *error) {
  /* A NULL error means iq_error_create ran out of memory, so the text
   * reports that instead of being empty. */
  const char *message = "out of memory while recording an error";
  const char *file = NULL;
  const char *where = NULL;
  const char *hint = NULL;
  if (error != NULL) {
    message = error->message != NULL ? error->message : "unknown error";
    file = error->file;
    where = error->where;
    hint = error->hint;
  }

  const char *file_separator = file != NULL ? ": " : "";
  const char *where_separator = where != NULL ? ": " : "";
  const char *hint_prefix = hint != NULL ? "\n  hint: " : "";
  int length = snprintf(NULL, 0, "%s%s%s%s%s%s%s", file != NULL ? file : "",
                        file_separator, where != NULL ? where : "",
                        where_separator, message, hint_prefix,
                        hint != NULL ? hint : "");
  if (length < 0) {
    return NULL;
  }

  char *text = malloc((size_t)length + 1);
  if (text == NULL) {
    return NULL;
  }
  snprintf(text, (size_t)length + 1, "%s%s%s%s%s%s%s", file != NULL ? file : "",
           file_separator, where != NULL ? where : "", where_separator, message,
           hint_prefix, hint != NULL ? hint : "");
  return text;
}

void iq_error_print(const iq_error_t *error, const char *program, FILE *stream) {
  if (stream == NULL) {
    stream = stderr;
  }
  const char *name = program != NULL ? program : "iq";

  char *text = iq_error_format(error);
  if (text == NULL) {
    fprintf(stream, "%s: error: out of memory while printing an error\n", name);
    return;
  }
  /* One call, so lines from other threads cannot land inside the message. */
  fprintf(stream, "%s: error: %s\n", name, text);
  free(text);
}

void iq_error_destroy(iq_error_t *error) {
  if (error == NULL) {
    return;
  }
  free(error->file);
  free(error->where);
  free(error->message);
  free(error->hint);
  free(error);
}
