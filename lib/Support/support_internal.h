/* Pieces of the support library that iq/support.h does not export but the
 * unit tests in test/unit call directly, because the public entry points
 * depend on process-wide state, the clock or a terminal. */
#ifndef IQ_SUPPORT_INTERNAL_H
#define IQ_SUPPORT_INTERNAL_H

#include "iq/support.h"

/* Returns the level named by `value`, the text of IQ_LOG_LEVEL. NULL or ""
 * means unset and yields IQ_LOG_WARNING silently. An invalid value also
 * yields IQ_LOG_WARNING and prints one warning to `stream` that names the
 * value and lists the valid ones. */
iq_log_level_t iq_log_level_from_env(const char *value, FILE *stream);

/* Formats the final line, "STAGE: done/total UNIT in m:ss (R UNIT/s)", for
 * a stage that took `elapsed_s` seconds. Returns the number of characters
 * written, as iq_progress_format does. */
size_t iq_progress_format_final(const iq_progress_t *progress, double elapsed_s,
                                char *buffer, size_t size);

/* Overrides the terminal detection done by iq_progress_start. */
void iq_progress_set_terminal(iq_progress_t *progress, bool is_terminal);

#endif /* IQ_SUPPORT_INTERNAL_H */
