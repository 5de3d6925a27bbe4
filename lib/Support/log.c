/* Leveled logging: see iq/support.h for the contract. */
#include "iq/support.h"
#include "support_internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* -1 until the first use reads IQ_LOG_LEVEL. Atomics keep concurrent first
 * uses from printing the invalid-value warning twice. */
#define LEVEL_UNSET (-1)
static atomic_int current_level = LEVEL_UNSET;
/* NULL means stderr. */
static _Atomic(FILE *) current_stream = NULL;

static const char *const level_names[] = {"error", "warning", "info", "debug"};
#define LEVEL_COUNT (sizeof(level_names) / sizeof(level_names[0]))

static FILE *log_stream(void) {
  FILE *stream = atomic_load(&current_stream);
  return stream != NULL ? stream : stderr;
}

bool iq_log_parse_level(const char *text, iq_log_level_t *level) {
  if (text == NULL) {
    return false;
  }
  for (size_t i = 0; i < LEVEL_COUNT; ++i) {
    if (strcmp(text, level_names[i]) == 0) {
      if (level != NULL) {
        *level = (iq_log_level_t)i;
      }
      return true;
    }
  }
  return false;
}

iq_log_level_t iq_log_level_from_env(const char *value, FILE *stream) {
  if (value == NULL || value[0] == '\0') {
    return IQ_LOG_WARNING;
  }
  iq_log_level_t level;
  if (iq_log_parse_level(value, &level)) {
    return level;
  }
  fprintf(stream != NULL ? stream : stderr,
          "iq: warning: IQ_LOG_LEVEL value '%s' is invalid, so logging stays "
          "at level warning. Set it to error, warning, info or debug.\n",
          value);
  return IQ_LOG_WARNING;
}

iq_log_level_t iq_log_get_level(void) {
  int level = atomic_load(&current_level);
  if (level != LEVEL_UNSET) {
    return (iq_log_level_t)level;
  }

  /* Only the thread that wins the exchange prints the warning about an
   * invalid value, so read the variable without warning first. */
  const char *value = getenv("IQ_LOG_LEVEL");
  iq_log_level_t parsed = IQ_LOG_WARNING;
  bool valid = value == NULL || value[0] == '\0' ||
               iq_log_parse_level(value, &parsed);
  int expected = LEVEL_UNSET;
  if (atomic_compare_exchange_strong(&current_level, &expected, (int)parsed)) {
    if (!valid) {
      iq_log_level_from_env(value, log_stream());
    }
    return parsed;
  }
  /* Another thread initialized the level, or iq_log_set_level ran. */
  return (iq_log_level_t)expected;
}

void iq_log_set_level(iq_log_level_t level) {
  if (level < IQ_LOG_ERROR) {
    level = IQ_LOG_ERROR;
  }
  if (level > IQ_LOG_DEBUG) {
    level = IQ_LOG_DEBUG;
  }
  atomic_store(&current_level, (int)level);
}

void iq_log_set_stream(FILE *stream) { atomic_store(&current_stream, stream); }

void iq_log_v(iq_log_level_t level, const char *format, va_list args) {
  if (level > iq_log_get_level()) {
    return;
  }
  if (level < IQ_LOG_ERROR) {
    level = IQ_LOG_ERROR;
  }
  if (level > IQ_LOG_DEBUG) {
    level = IQ_LOG_DEBUG;
  }

  /* The whole line goes out in one fputs, so lines from different threads
   * do not interleave. Most messages fit the stack buffer. */
  char prefix[32];
  int prefix_length =
      snprintf(prefix, sizeof(prefix), "iq: %s: ", level_names[level]);
  va_list measure;
  va_copy(measure, args);
  int message_length = vsnprintf(NULL, 0, format, measure);
  va_end(measure);
  if (prefix_length < 0 || message_length < 0) {
    return;
  }

  /* prefix + message + newline + NUL */
  size_t line_size = (size_t)prefix_length + (size_t)message_length + 2;
  char stack_line[512];
  char *line = stack_line;
  if (line_size > sizeof(stack_line)) {
    line = malloc(line_size);
    if (line == NULL) {
      /* Keep the start of the message rather than losing it. */
      line = stack_line;
      line_size = sizeof(stack_line);
    }
  }

  memcpy(line, prefix, (size_t)prefix_length);
  size_t message_room = line_size - (size_t)prefix_length - 1;
  vsnprintf(line + prefix_length, message_room, format, args);
  size_t length = strlen(line);
  if (length == 0 || line[length - 1] != '\n') {
    line[length] = '\n';
    line[length + 1] = '\0';
  }

  fputs(line, log_stream());
  if (line != stack_line) {
    free(line);
  }
}

void iq_log(iq_log_level_t level, const char *format, ...) {
  va_list args;
  va_start(args, format);
  iq_log_v(level, format, args);
  va_end(args);
}
