/* Textual pass pipelines that mix iq passes with upstream MLIR passes.
 *
 * MLIR 19's C API parses pipelines only of registered passes and has no way
 * to register an external pass by name. So the pipeline text is split into
 * elements here: consecutive upstream elements are handed to MLIR's parser
 * as one chunk, iq passes are created and added between the chunks, and an
 * `op-name(...)` element that contains an iq pass is descended into with a
 * nested pass manager. */
#include "iq/passes.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef struct element {
  const char *text; /* the whole element, for handing to MLIR unchanged */
  size_t text_length;
  const char *name;
  size_t name_length;
  const char *options; /* between braces, or NULL */
  size_t options_length;
  const char *nested; /* between parentheses, or NULL */
  size_t nested_length;
} element_t;

static const char *skip_spaces(const char *p, const char *end) {
  while (p < end && isspace((unsigned char)*p))
    ++p;
  return p;
}

static bool is_name_char(char c) {
  return isalnum((unsigned char)c) || c == '_' || c == '-' || c == '.' || c == '$';
}

/* Returns the position just past the bracket that closes the one at `p`,
 * or NULL when it is not closed. Quotes protect brackets inside strings. */
static const char *skip_balanced(const char *p, const char *end) {
  char open = *p, close = open == '{' ? '}' : ')';
  int depth = 0;
  bool quoted = false;
  for (; p < end; ++p) {
    if (quoted) {
      quoted = *p != '"';
    } else if (*p == '"') {
      quoted = true;
    } else if (*p == open) {
      ++depth;
    } else if (*p == close && --depth == 0) {
      return p + 1;
    }
  }
  return NULL;
}

/* Reads the element at `*cursor` and moves past it and its trailing comma.
 * Returns false at the end of the text or on a syntax error (then with
 * `*error` set). */
static bool next_element(const char **cursor, const char *end, element_t *element,
                         const char *pipeline, iq_error_t **error) {
  const char *p = skip_spaces(*cursor, end);
  if (p == end)
    return false;
  memset(element, 0, sizeof *element);
  element->text = p;
  element->name = p;
  while (p < end && is_name_char(*p))
    ++p;
  element->name_length = (size_t)(p - element->name);
  if (element->name_length == 0)
    return iq_error_set(error, NULL, "--pass-pipeline", "write passes as name{options} and "
                        "nested pipelines as op-name(passes), separated by commas",
                        "expected a pass name at offset %ld in '%s'", (long)(p - pipeline),
                        pipeline);

  p = skip_spaces(p, end);
  if (p < end && *p == '{') {
    const char *close = skip_balanced(p, end);
    if (!close)
      return iq_error_set(error, NULL, "--pass-pipeline", NULL,
                          "unclosed '{' after '%.*s' in '%s'", (int)element->name_length,
                          element->name, pipeline);
    element->options = p + 1;
    element->options_length = (size_t)(close - p - 2);
    p = skip_spaces(close, end);
  }
  if (p < end && *p == '(') {
    const char *close = skip_balanced(p, end);
    if (!close)
      return iq_error_set(error, NULL, "--pass-pipeline", NULL,
                          "unclosed '(' after '%.*s' in '%s'", (int)element->name_length,
                          element->name, pipeline);
    element->nested = p + 1;
    element->nested_length = (size_t)(close - p - 2);
    p = skip_spaces(close, end);
  }
  element->text_length = (size_t)(p - element->text);

  if (p < end && *p != ',')
    return iq_error_set(error, NULL, "--pass-pipeline", NULL,
                        "expected ',' or the end of the pipeline at offset %ld in '%s'",
                        (long)(p - pipeline), pipeline);
  *cursor = p < end ? p + 1 : p;
  return true;
}

/* Returns true when the pipeline text names an iq pass at any depth. */
static bool contains_iq_pass(const char *text, size_t length, const char *pipeline) {
  const char *cursor = text, *end = text + length;
  element_t element;
  while (next_element(&cursor, end, &element, pipeline, NULL)) {
    if (element.nested ? contains_iq_pass(element.nested, element.nested_length, pipeline)
                       : iq_pass_lookup(element.name, element.name_length) != NULL)
      return true;
  }
  return false;
}

/* ---- Chunks of upstream passes ------------------------------------------ */

typedef struct text_buffer {
  char *data;
  size_t length, capacity;
} text_buffer_t;

static bool buffer_append(text_buffer_t *buffer, const char *text, size_t length) {
  if (buffer->length + length + 2 > buffer->capacity) {
    size_t capacity = (buffer->capacity + length + 2) * 2;
    char *data = realloc(buffer->data, capacity);
    if (!data)
      return false;
    buffer->data = data;
    buffer->capacity = capacity;
  }
  memcpy(buffer->data + buffer->length, text, length);
  buffer->length += length;
  buffer->data[buffer->length] = '\0';
  return true;
}

/* MLIR reports pipeline errors in fragments; they are collected here. */
static void collect_message(MlirStringRef text, void *user_data) {
  buffer_append(user_data, text.data, text.length);
}

static bool flush_chunk(MlirOpPassManager pm, text_buffer_t *chunk, const char *pipeline,
                        iq_error_t **error) {
  if (chunk->length == 0)
    return true;
  text_buffer_t message = {0};
  MlirLogicalResult result = mlirOpPassManagerAddPipeline(
      pm, mlirStringRefCreate(chunk->data, chunk->length), collect_message, &message);
  bool ok = mlirLogicalResultIsSuccess(result);
  if (!ok)
    iq_error_set(error, NULL, "--pass-pipeline",
                 "iq-opt --help lists the iq passes; upstream passes use mlir-opt's names",
                 "invalid pass '%s' in pipeline '%s': %s", chunk->data, pipeline,
                 message.data ? message.data
                              : "MLIR rejected it (its message is printed above)");
  free(message.data);
  chunk->length = 0;
  return ok;
}

static bool add_elements(MlirOpPassManager pm, const char *text, size_t length,
                         const char *pipeline, iq_error_t **error) {
  text_buffer_t chunk = {0};
  const char *cursor = text, *end = text + length;
  element_t element;
  bool ok = true;

  while (ok && next_element(&cursor, end, &element, pipeline, error)) {
    const iq_pass_info_t *pass = iq_pass_lookup(element.name, element.name_length);
    if (element.nested && contains_iq_pass(element.nested, element.nested_length, pipeline)) {
      ok = flush_chunk(pm, &chunk, pipeline, error);
      if (ok) {
        MlirOpPassManager nested = mlirOpPassManagerGetNestedUnder(
            pm, mlirStringRefCreate(element.name, element.name_length));
        ok = add_elements(nested, element.nested, element.nested_length, pipeline, error);
      }
    } else if (pass && !element.nested) {
      ok = flush_chunk(pm, &chunk, pipeline, error);
      iq_pass_options_t *options =
          ok ? iq_pass_options_parse(pass, element.options, element.options_length, error)
             : NULL;
      if (options)
        mlirOpPassManagerAddOwnedPass(pm, iq_pass_create(pass, options));
      else
        ok = false;
    } else if (pass) {
      ok = iq_error_set(error, NULL, pass->name, "nest passes under an op name such as func.func",
                        "pass '%s' cannot contain a nested pipeline", pass->name);
    } else {
      ok = (chunk.length == 0 || buffer_append(&chunk, ",", 1)) &&
           buffer_append(&chunk, element.text, element.text_length);
    }
  }
  if (error && *error)
    ok = false;
  if (ok)
    ok = flush_chunk(pm, &chunk, pipeline, error);
  free(chunk.data);
  return ok;
}

bool iq_pipeline_add(MlirPassManager pm, const char *pipeline, iq_error_t **error) {
  size_t length = strlen(pipeline);
  const char *cursor = pipeline, *end = pipeline + length;
  element_t first, second;
  iq_error_t *local_error = NULL;
  iq_error_t **slot = error ? error : &local_error;

  /* `builtin.module(...)` names the root explicitly, as mlir-opt requires;
   * a bare list of passes means the same. */
  const char *body = pipeline;
  size_t body_length = length;
  if (next_element(&cursor, end, &first, pipeline, slot)) {
    bool single = !next_element(&cursor, end, &second, pipeline, slot);
    if (single && first.nested && first.name_length == strlen("builtin.module") &&
        memcmp(first.name, "builtin.module", first.name_length) == 0) {
      body = first.nested;
      body_length = first.nested_length;
    }
  }
  if (*slot) {
    iq_error_destroy(local_error);
    return false;
  }
  bool ok = add_elements(mlirPassManagerGetAsOpPassManager(pm), body, body_length, pipeline, slot);
  iq_error_destroy(local_error);
  return ok;
}
