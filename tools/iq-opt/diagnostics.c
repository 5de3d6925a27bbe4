/* Printing and verification of diagnostics for iq-opt. The C API of MLIR 19
 * has no source-manager handlers, so both are done here from the printed
 * location of each diagnostic. */
#include "diagnostics.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct text_buffer {
  char *data;
  size_t length, capacity;
} text_buffer_t;

static void append_text(MlirStringRef text, void *user_data) {
  text_buffer_t *buffer = user_data;
  if (buffer->length + text.length + 1 > buffer->capacity) {
    size_t capacity = (buffer->capacity + text.length + 1) * 2;
    char *data = realloc(buffer->data, capacity);
    if (!data)
      return;
    buffer->data = data;
    buffer->capacity = capacity;
  }
  memcpy(buffer->data + buffer->length, text.data, text.length);
  buffer->length += text.length;
  buffer->data[buffer->length] = '\0';
}

static const char *kind_name(diagnostic_kind_t kind) {
  switch (kind) {
  case DIAGNOSTIC_ERROR:
    return "error";
  case DIAGNOSTIC_WARNING:
    return "warning";
  case DIAGNOSTIC_NOTE:
    return "note";
  case DIAGNOSTIC_REMARK:
    return "remark";
  }
  return "error";
}

static diagnostic_kind_t kind_of(MlirDiagnosticSeverity severity) {
  switch (severity) {
  case MlirDiagnosticError:
    return DIAGNOSTIC_ERROR;
  case MlirDiagnosticWarning:
    return DIAGNOSTIC_WARNING;
  case MlirDiagnosticNote:
    return DIAGNOSTIC_NOTE;
  case MlirDiagnosticRemark:
    return DIAGNOSTIC_REMARK;
  }
  return DIAGNOSTIC_ERROR;
}

/* Finds the first file:line:col in a printed location such as
 * loc("x.mlir":3:8) or loc(callsite("a":1:2 at "b":5:6)). */
static void parse_location(MlirLocation location, long *line, long *column, char **node) {
  text_buffer_t text = {0};
  mlirLocationPrint(location, append_text, &text);
  *line = 0;
  *column = 0;
  *node = NULL;
  /* The importer gives each op a name location, loc("NODE"("model":0:0)). */
  if (text.data && strncmp(text.data, "loc(\"", 5) == 0) {
    const char *start = text.data + 5, *end = start;
    while (*end && *end != '"')
      end += end[0] == '\\' && end[1] ? 2 : 1;
    if (end[0] == '"' && end[1] == '(') {
      *node = malloc((size_t)(end - start) + 1);
      if (*node) {
        memcpy(*node, start, (size_t)(end - start));
        (*node)[end - start] = '\0';
      }
    }
  }
  for (const char *p = text.data; p && *p; ++p) {
    if (p[0] == '"' && p[1] == ':' && isdigit((unsigned char)p[2])) {
      char *end;
      *line = strtol(p + 2, &end, 10);
      if (*end == ':')
        *column = strtol(end + 1, NULL, 10);
      break;
    }
  }
  free(text.data);
}

static const char *shown_name(const diagnostic_collector_t *collector) {
  return strcmp(collector->file_name, "-") == 0 ? "<stdin>" : collector->file_name;
}

static void print_record(const diagnostic_collector_t *collector, const diagnostic_record_t *record,
                         const char *prefix) {
  if (record->line > 0)
    fprintf(stderr, "%s:%ld:%ld: %s: %s%s\n", shown_name(collector), record->line, record->column,
            kind_name(record->kind), prefix, record->message);
  else if (record->node)
    fprintf(stderr, "%s: %s: %snode '%s': %s\n", shown_name(collector), kind_name(record->kind),
            prefix, record->node, record->message);
  else
    fprintf(stderr, "%s: %s: %s%s\n", shown_name(collector), kind_name(record->kind), prefix,
            record->message);
}

static void add_record(diagnostic_collector_t *collector, MlirDiagnostic diagnostic) {
  diagnostic_record_t record = {.kind = kind_of(mlirDiagnosticGetSeverity(diagnostic))};
  parse_location(mlirDiagnosticGetLocation(diagnostic), &record.line, &record.column, &record.node);
  text_buffer_t message = {0};
  mlirDiagnosticPrint(diagnostic, append_text, &message);
  record.message = message.data ? message.data : calloc(1, 1);
  if (record.kind == DIAGNOSTIC_ERROR)
    ++collector->error_count;

  if (!collector->verify_mode) {
    print_record(collector, &record, "");
    free(record.message);
    free(record.node);
    return;
  }
  if (collector->count == collector->capacity) {
    size_t capacity = collector->capacity ? collector->capacity * 2 : 16;
    diagnostic_record_t *records = realloc(collector->records, capacity * sizeof *records);
    if (!records) {
      free(record.message);
      free(record.node);
      return;
    }
    collector->records = records;
    collector->capacity = capacity;
  }
  collector->records[collector->count++] = record;
}

MlirLogicalResult diagnostic_collector_handle(MlirDiagnostic diagnostic, void *user_data) {
  diagnostic_collector_t *collector = user_data;
  add_record(collector, diagnostic);
  for (intptr_t i = 0; i < mlirDiagnosticGetNumNotes(diagnostic); ++i)
    add_record(collector, mlirDiagnosticGetNote(diagnostic, i));
  return mlirLogicalResultSuccess();
}

void diagnostic_collector_reset(diagnostic_collector_t *collector) {
  for (size_t i = 0; i < collector->count; ++i) {
    free(collector->records[i].message);
    free(collector->records[i].node);
  }
  free(collector->records);
  collector->records = NULL;
  collector->count = collector->capacity = collector->error_count = 0;
}

/* ---- Expectations ------------------------------------------------------- */

typedef struct expectation {
  diagnostic_kind_t kind;
  long line;          /* the line the diagnostic must be on; 0 for @unknown */
  long written_on;    /* the line of the comment, for messages */
  const char *text;   /* the substring between {{ and }} */
  size_t text_length;
  bool matched;
} expectation_t;

/* Parses the expected-* comments of `source`. Returns false after printing
 * a message for a malformed one. */
static bool parse_expectations(const diagnostic_collector_t *collector, const char *source,
                               size_t source_length, expectation_t **out, size_t *out_count) {
  static const char *const kinds[] = {"error", "warning", "note", "remark"};
  expectation_t *list = NULL;
  size_t count = 0, capacity = 0;
  long line = 1;
  bool ok = true;
  const char *end = source + source_length;

  for (const char *p = source; p < end; ++line) {
    const char *line_end = memchr(p, '\n', (size_t)(end - p));
    if (!line_end)
      line_end = end;
    for (const char *q = p; q < line_end;) {
      const char *found = NULL;
      for (const char *s = q; s + 9 <= line_end; ++s) {
        if (memcmp(s, "expected-", 9) == 0) {
          found = s;
          break;
        }
      }
      if (!found)
        break;
      const char *cursor = found + 9;
      int kind = -1;
      for (int k = 0; k < 4; ++k) {
        size_t length = strlen(kinds[k]);
        if ((size_t)(line_end - cursor) >= length && memcmp(cursor, kinds[k], length) == 0) {
          kind = k;
          cursor += length;
          break;
        }
      }
      q = cursor;
      if (kind < 0)
        continue;

      long target = line;
      /* MLIR allows spaces between the kind and its designator. */
      while (cursor < line_end && (*cursor == ' ' || *cursor == '\t') && cursor + 1 < line_end &&
             (cursor[1] == ' ' || cursor[1] == '\t' || cursor[1] == '@'))
        ++cursor;
      if (cursor < line_end && *cursor == '@') {
        ++cursor;
        char *number_end;
        if ((size_t)(line_end - cursor) >= 5 && memcmp(cursor, "above", 5) == 0) {
          target = line - 1;
          cursor += 5;
        } else if ((size_t)(line_end - cursor) >= 5 && memcmp(cursor, "below", 5) == 0) {
          target = line + 1;
          cursor += 5;
        } else if ((size_t)(line_end - cursor) >= 7 && memcmp(cursor, "unknown", 7) == 0) {
          target = 0;
          cursor += 7;
        } else if (*cursor == '+' || *cursor == '-') {
          long offset = strtol(cursor, &number_end, 10);
          if (number_end == cursor + 1) {
            fprintf(stderr, "%s:%ld: error: expected a line offset after '@%c'\n",
                    collector->file_name, line, *cursor);
            ok = false;
            break;
          }
          target = line + offset;
          cursor = number_end;
        } else {
          fprintf(stderr,
                  "%s:%ld: error: unknown location designator in expected-%s; use @above, "
                  "@below, @unknown, @+N or @-N\n",
                  collector->file_name, line, kinds[kind]);
          ok = false;
          break;
        }
      }
      while (cursor < line_end && (*cursor == ' ' || *cursor == '\t'))
        ++cursor;
      const char *close = NULL;
      if (line_end - cursor >= 2 && cursor[0] == '{' && cursor[1] == '{') {
        for (const char *s = cursor + 2; s + 1 < line_end; ++s) {
          if (s[0] == '}' && s[1] == '}') {
            close = s;
            break;
          }
        }
      }
      if (!close) {
        fprintf(stderr, "%s:%ld: error: expected-%s needs its message as {{text}}\n",
                collector->file_name, line, kinds[kind]);
        ok = false;
        break;
      }
      if (count == capacity) {
        capacity = capacity ? capacity * 2 : 16;
        expectation_t *grown = realloc(list, capacity * sizeof *grown);
        if (!grown) {
          ok = false;
          break;
        }
        list = grown;
      }
      list[count++] = (expectation_t){(diagnostic_kind_t)kind, target, line, cursor + 2,
                                      (size_t)(close - cursor - 2), false};
      q = close + 2;
    }
    p = line_end < end ? line_end + 1 : end;
  }
  *out = list;
  *out_count = count;
  return ok;
}

static bool contains(const char *haystack, const char *needle, size_t needle_length) {
  if (needle_length == 0)
    return true;
  for (const char *p = haystack; *p; ++p)
    if (strncmp(p, needle, needle_length) == 0)
      return true;
  return false;
}

bool diagnostic_collector_verify(diagnostic_collector_t *collector, const char *source,
                                 size_t source_length) {
  expectation_t *expectations = NULL;
  size_t count = 0;
  bool ok = parse_expectations(collector, source, source_length, &expectations, &count);

  for (size_t i = 0; i < collector->count; ++i) {
    diagnostic_record_t *record = &collector->records[i];
    bool matched = false;
    for (size_t j = 0; j < count && !matched; ++j) {
      expectation_t *expected = &expectations[j];
      if (!expected->matched && expected->kind == record->kind && expected->line == record->line &&
          contains(record->message, expected->text, expected->text_length)) {
        expected->matched = true;
        matched = true;
      }
    }
    /* Notes and remarks are checked only where a comment expects them;
     * MLIR attaches notes (such as the failing op) that tests need not
     * spell out. */
    if (!matched && (record->kind == DIAGNOSTIC_ERROR || record->kind == DIAGNOSTIC_WARNING)) {
      const char *prefix = record->kind == DIAGNOSTIC_ERROR ? "unexpected error: "
                                                            : "unexpected warning: ";
      diagnostic_record_t shown = *record;
      shown.kind = DIAGNOSTIC_ERROR;
      print_record(collector, &shown, prefix);
      ok = false;
    }
  }
  for (size_t j = 0; j < count; ++j) {
    if (!expectations[j].matched) {
      fprintf(stderr, "%s:%ld: error: expected %s \"%.*s\" was not produced\n",
              shown_name(collector), expectations[j].written_on, kind_name(expectations[j].kind),
              (int)expectations[j].text_length, expectations[j].text);
      ok = false;
    }
  }
  free(expectations);
  return ok;
}
