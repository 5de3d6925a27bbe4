/* A growable text buffer for generating MLIR source. */
#ifndef IQ_TEXT_BUFFER_H
#define IQ_TEXT_BUFFER_H

#include <stdbool.h>
#include <stddef.h>

typedef struct iq_text {
  char *data;
  size_t length, capacity;
  bool failed; /* set when memory ran out; later appends do nothing */
} iq_text_t;

/* Appends printf-formatted text. */
void iq_text_printf(iq_text_t *text, const char *format, ...) __attribute__((format(printf, 2, 3)));
void iq_text_append(iq_text_t *text, const char *data, size_t length);
void iq_text_free(iq_text_t *text);

#endif /* IQ_TEXT_BUFFER_H */
