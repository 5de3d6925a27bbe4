/* The ABI version, status names and the per-thread last-error text. */
#include "runtime_internal.h"

#include <stdarg.h>
#include <stdio.h>

/* Long enough for a path, a tensor name, two shapes and a hint. Longer
 * text is cut off by vsnprintf. */
#define LAST_ERROR_CAPACITY 2048

/* Per thread, so sessions used from different threads never see each
 * other's failures. */
static _Thread_local char last_error[LAST_ERROR_CAPACITY];

uint32_t iq_runtime_abi_version(void) { return IQ_RUNTIME_ABI_VERSION; }

const char *iq_last_error(void) { return last_error; }

iq_status_t iq_rt_fail(iq_status_t status, const char *format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(last_error, sizeof last_error, format, args);
  va_end(args);
  return status;
}

const char *iq_status_name(iq_status_t status) {
  switch (status) {
  case IQ_OK:
    return "ok";
  case IQ_ERROR_INVALID_ARGUMENT:
    return "invalid argument";
  case IQ_ERROR_OUT_OF_RANGE:
    return "out of range";
  case IQ_ERROR_IO:
    return "I/O error";
  case IQ_ERROR_FORMAT:
    return "format error";
  case IQ_ERROR_OUT_OF_MEMORY:
    return "out of memory";
  case IQ_ERROR_INTERNAL:
    return "internal error";
  }
  return "unknown status";
}
