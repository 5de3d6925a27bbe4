/* External tensor data: the location, offset and length entries of a
 * TensorProto checked against the model's folder and the file's size, and
 * each distinct file mapped once for the model's lifetime. */
#include "reader_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

static const char *const LOCATION_HINT =
    "keep external data files in the model's folder or below it, referenced by relative paths; "
    "onnx.save_model(..., save_as_external_data=True) writes them that way";

/* The external_data entries that iq reads (onnx.proto, TensorProto). */
typedef struct external_entries {
  const char *location;
  const char *offset;
  const char *length;
} external_entries_t;

/* Parses a decimal integer of at least one digit with no sign or spaces,
 * as onnx.save_model writes offsets and lengths. */
static bool parse_u64(const char *text, uint64_t *value) {
  if (text == NULL || *text == '\0') {
    return false;
  }
  uint64_t result = 0;
  for (const char *p = text; *p != '\0'; ++p) {
    if (*p < '0' || *p > '9') {
      return false;
    }
    unsigned digit = (unsigned)(*p - '0');
    if (result > (UINT64_MAX - digit) / 10) {
      return false;
    }
    result = result * 10 + digit;
  }
  *value = result;
  return true;
}

static bool collect_entries(reader_context_t *context, const Onnx__TensorProto *proto,
                            const char *where, external_entries_t *entries) {
  memset(entries, 0, sizeof(*entries));
  for (size_t i = 0; i < proto->n_external_data; ++i) {
    const Onnx__StringStringEntryProto *entry = proto->external_data[i];
    const char *key = entry->key != NULL ? entry->key : "";
    const char *value = entry->value != NULL ? entry->value : "";
    const char **slot = NULL;
    if (strcmp(key, "location") == 0) {
      slot = &entries->location;
    } else if (strcmp(key, "offset") == 0) {
      slot = &entries->offset;
    } else if (strcmp(key, "length") == 0) {
      slot = &entries->length;
    } else {
      /* NOTE: "checksum" (a SHA-1 of the file) is not verified, because
       * that would read every weight at load time. Other keys are not
       * defined by ONNX and are ignored. */
      continue;
    }
    if (*slot != NULL) {
      return iq_error_set(context->error, context->file, where, LOCATION_HINT,
                          "external_data has the key '%s' twice ('%s' and '%s')", key, *slot,
                          value);
    }
    *slot = value;
  }
  return true;
}

/* Rejects locations that could name a file outside the model's folder
 * before the file system is asked. Symbolic links are checked after
 * resolution. */
static bool check_location_text(reader_context_t *context, const char *location,
                                const char *where) {
  if (location == NULL || *location == '\0') {
    return iq_error_set(context->error, context->file, where, LOCATION_HINT,
                        "has data_location EXTERNAL but no 'location' entry naming the file");
  }
  if (location[0] == '/') {
    return iq_error_set(context->error, context->file, where, LOCATION_HINT,
                        "external data location '%s' is an absolute path", location);
  }
  const char *component = location;
  for (;;) {
    const char *end = strchr(component, '/');
    size_t length = end != NULL ? (size_t)(end - component) : strlen(component);
    if (length == 2 && component[0] == '.' && component[1] == '.') {
      return iq_error_set(context->error, context->file, where, LOCATION_HINT,
                          "external data location '%s' contains a '..' component", location);
    }
    if (end == NULL) {
      break;
    }
    component = end + 1;
  }
  return true;
}

static bool path_is_inside(const char *path, const char *folder) {
  size_t length = strlen(folder);
  if (length == 1 && folder[0] == '/') {
    return path[0] == '/';
  }
  return strncmp(path, folder, length) == 0 && path[length] == '/';
}

/* Returns the mapping of the file at `real_path`, mapping it on first use.
 * The model's state owns the mapping. */
static const iq_mapped_file_t *map_once(reader_context_t *context, const char *real_path,
                                        const char *location, const char *where) {
  reader_state_t *state = context->state;
  for (size_t i = 0; i < state->num_mapped; ++i) {
    if (strcmp(state->mapped[i].real_path, real_path) == 0) {
      return state->mapped[i].file;
    }
  }

  if (state->num_mapped == state->mapped_capacity) {
    size_t capacity = state->mapped_capacity == 0 ? 4 : state->mapped_capacity * 2;
    mapped_entry_t *grown = realloc(state->mapped, capacity * sizeof(*grown));
    if (grown == NULL) {
      reader_out_of_memory(context, where);
      return NULL;
    }
    state->mapped = grown;
    state->mapped_capacity = capacity;
  }

  iq_error_t *map_error = NULL;
  iq_mapped_file_t *file = iq_mapped_file_open(real_path, &map_error);
  if (file == NULL) {
    iq_error_set(context->error, context->file, where,
                 map_error != NULL && map_error->hint != NULL ? map_error->hint : LOCATION_HINT,
                 "external data file '%s' (%s): %s", location, real_path,
                 map_error != NULL && map_error->message != NULL ? map_error->message
                                                                 : "failed to map");
    iq_error_destroy(map_error);
    return NULL;
  }
  char *path_copy = strdup(real_path);
  if (path_copy == NULL) {
    iq_mapped_file_close(file);
    reader_out_of_memory(context, where);
    return NULL;
  }
  state->mapped[state->num_mapped].real_path = path_copy;
  state->mapped[state->num_mapped].file = file;
  state->num_mapped++;
  return file;
}

/* Resolves `location` against the model's folder, following symbolic
 * links, and maps the file. */
static const iq_mapped_file_t *open_location(reader_context_t *context, const char *location,
                                             const char *where) {
  if (context->real_base_dir == NULL) {
    context->real_base_dir = realpath(context->base_dir, NULL);
    if (context->real_base_dir == NULL) {
      int saved = errno;
      iq_error_set(context->error, context->file, where,
                   "check that the model's folder exists and is readable",
                   "cannot resolve the model's folder '%s' to look up external data: %s",
                   context->base_dir, strerror(saved));
      return NULL;
    }
  }

  char *joined = format_string("%s/%s", context->real_base_dir, location);
  if (joined == NULL) {
    reader_out_of_memory(context, where);
    return NULL;
  }
  char *resolved = realpath(joined, NULL);
  int saved = errno;
  free(joined);
  if (resolved == NULL) {
    iq_error_set(context->error, context->file, where,
                 "copy the external data file next to the model; ONNX resolves 'location' "
                 "relative to the model's folder",
                 "external data file '%s' was not found in '%s': %s", location,
                 context->real_base_dir, strerror(saved));
    return NULL;
  }
  if (!path_is_inside(resolved, context->real_base_dir)) {
    iq_error_set(context->error, context->file, where, LOCATION_HINT,
                 "external data location '%s' resolves to '%s', outside the model's folder '%s'",
                 location, resolved, context->real_base_dir);
    free(resolved);
    return NULL;
  }

  /* NOTE: the path is mapped after it was checked, so a folder swapped
   * for a symbolic link in between could escape the check. The reader
   * assumes that the model's folder does not change while it loads. */
  const iq_mapped_file_t *file = map_once(context, resolved, location, where);
  free(resolved);
  return file;
}

bool external_data_resolve(reader_context_t *context, const Onnx__TensorProto *proto,
                           const char *where, iq_onnx_tensor_t *tensor) {
  if (context->base_dir == NULL) {
    return iq_error_set(context->error, context->file, where,
                        "load the model from its file so that its external data can be found",
                        "uses external data, which a model loaded from memory cannot resolve");
  }

  external_entries_t entries;
  if (!collect_entries(context, proto, where, &entries) ||
      !check_location_text(context, entries.location, where)) {
    return false;
  }

  uint64_t offset = 0;
  if (entries.offset != NULL && !parse_u64(entries.offset, &offset)) {
    return iq_error_set(context->error, context->file, where, LOCATION_HINT,
                        "external data offset '%s' is not a non-negative decimal integer",
                        entries.offset);
  }
  uint64_t length = 0;
  if (entries.length != NULL && !parse_u64(entries.length, &length)) {
    return iq_error_set(context->error, context->file, where, LOCATION_HINT,
                        "external data length '%s' is not a non-negative decimal integer",
                        entries.length);
  }

  const iq_mapped_file_t *file = open_location(context, entries.location, where);
  if (file == NULL) {
    return false;
  }

  const char *const truncated_hint =
      "the external data file is shorter than the model expects; copy it again or re-export "
      "the model";
  if (offset > file->size) {
    return iq_error_set(context->error, context->file, where, truncated_hint,
                        "external data offset %" PRIu64 " is past the end of '%s' (%zu bytes)",
                        offset, entries.location, file->size);
  }
  if (entries.length == NULL) {
    /* ONNX: without a length, the data runs to the end of the file. */
    length = (uint64_t)file->size - offset;
  } else if (!iq_range_in_bounds(offset, length, file->size)) {
    return iq_error_set(context->error, context->file, where, truncated_hint,
                        "external data length %" PRIu64 " at offset %" PRIu64
                        " runs past the end of '%s' (%zu bytes)",
                        length, offset, entries.location, file->size);
  }

  if (length != tensor->byte_size) {
    char dims_text[160];
    format_dims(tensor->dims, tensor->rank, dims_text, sizeof(dims_text));
    return iq_error_set(context->error, context->file, where,
                        "re-export the model: the tensor's data does not match its declared "
                        "shape and type",
                        "external data in '%s' is %" PRIu64 " bytes, but %" PRIu64
                        " elements of type %s (dims %s) need %" PRIu64 " bytes",
                        entries.location, length, tensor->num_elements,
                        iq_onnx_type_name(tensor->data_type), dims_text, tensor->byte_size);
  }

  tensor->external = true;
  tensor->data = length == 0 ? NULL : file->data + offset;
  return true;
}
