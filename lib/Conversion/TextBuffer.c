/* A growable text buffer for generating MLIR source. */
#include "TextBuffer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void iq_text_append(iq_text_t *text, const char *data, size_t length) {
  if (text->failed)
    return;
  if (text->length + length + 1 > text->capacity) {
    size_t capacity = text->capacity ? text->capacity : 4096;
    while (capacity < text->length + length + 1)
      capacity *= 2;
    char *grown = realloc(text->data, capacity);
    if (!grown) {
      text->failed = true;
      return;
    }
    text->data = grown;
    text->capacity = capacity;
  }
  memcpy(text->data + text->length, data, length);
  text->length += length;
  text->data[text->length] = '\0';
}

void iq_text_printf(iq_text_t *text, const char *format, ...) {
  char small[1024];
  va_list args;
  va_start(args, format);
  int needed = vsnprintf(small, sizeof small, format, args);
  va_end(args);
  if (needed < 0) {
    text->failed = true;
    return;
  }
  if ((size_t)needed < sizeof small) {
    iq_text_append(text, small, (size_t)needed);
    return;
  }
  char *large = malloc((size_t)needed + 1);
  if (!large) {
    text->failed = true;
    return;
  }
  va_start(args, format);
  vsnprintf(large, (size_t)needed + 1, format, args);
  va_end(args);
  iq_text_append(text, large, (size_t)needed);
  free(large);
}

void iq_text_free(iq_text_t *text) {
  free(text->data);
  text->data = NULL;
  text->length = text->capacity = 0;
}
