/* The weight store reader. The file is untrusted: open() checks every
 * header field and table entry against the file's size before anything
 * points into the mapping, and no arithmetic on file values can wrap. */
#include "weight_store_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char corrupt_hint[] =
    "the file is truncated or corrupt; write the weight store again";

struct iq_weight_store {
  iq_mapped_file_t *file;
  iq_weight_tensor_t *tensors; /* in table order; data points into `file` */
  size_t count;
  char *names; /* NUL-terminated copies of all names, which tensors[i].name point into */
  iq_ws_name_index_t index;
};

/* The header fields, decoded. */
typedef struct header {
  uint32_t version;
  uint32_t count;
  uint64_t data_offset;
  uint64_t data_size;
  uint64_t table_offset;
  uint64_t table_size;
  uint64_t table_checksum;
  uint64_t reserved;
} header_t;

/* Formats the 8 magic bytes as text with non-printable bytes escaped, for
 * an error message. `buffer` needs 8 * 4 + 1 bytes. */
static void describe_magic(const uint8_t *bytes, char *buffer) {
  char *out = buffer;
  for (int i = 0; i < IQ_WS_MAGIC_SIZE; ++i) {
    if (bytes[i] >= 0x20 && bytes[i] < 0x7f && bytes[i] != '"' && bytes[i] != '\\') {
      *out++ = (char)bytes[i];
    } else {
      static const char digits[] = "0123456789abcdef";
      *out++ = '\\';
      *out++ = 'x';
      *out++ = digits[bytes[i] >> 4];
      *out++ = digits[bytes[i] & 15];
    }
  }
  *out = '\0';
}

/* Decodes and checks the header, the placement of the data region and
 * table in the file, and the table checksum. */
static bool read_header(const iq_mapped_file_t *file, header_t *header, iq_error_t **error) {
  const char *path = file->path;
  const uint8_t *bytes = file->data;
  uint64_t file_size = file->size;
  if (file_size < IQ_WEIGHT_STORE_HEADER_SIZE) {
    return iq_error_set(error, path, NULL, corrupt_hint,
                        "is %" PRIu64 " bytes, smaller than the %d-byte weight store header",
                        file_size, IQ_WEIGHT_STORE_HEADER_SIZE);
  }
  if (memcmp(bytes, IQ_WS_MAGIC, IQ_WS_MAGIC_SIZE) != 0) {
    char magic[IQ_WS_MAGIC_SIZE * 4 + 1];
    describe_magic(bytes, magic);
    return iq_error_set(error, path, NULL, "check that the path names an iq weight store",
                        "invalid magic \"%s\", expected \"%s\"", magic, IQ_WS_MAGIC);
  }

  header->version = iq_ws_load_u32(bytes + IQ_WS_HEADER_VERSION);
  header->count = iq_ws_load_u32(bytes + IQ_WS_HEADER_COUNT);
  header->data_offset = iq_ws_load_u64(bytes + IQ_WS_HEADER_DATA_OFFSET);
  header->data_size = iq_ws_load_u64(bytes + IQ_WS_HEADER_DATA_SIZE);
  header->table_offset = iq_ws_load_u64(bytes + IQ_WS_HEADER_TABLE_OFFSET);
  header->table_size = iq_ws_load_u64(bytes + IQ_WS_HEADER_TABLE_SIZE);
  header->table_checksum = iq_ws_load_u64(bytes + IQ_WS_HEADER_TABLE_CHECKSUM);
  header->reserved = iq_ws_load_u64(bytes + IQ_WS_HEADER_RESERVED);

  if (header->version != IQ_WEIGHT_STORE_FORMAT_VERSION) {
    return iq_error_set(error, path, NULL,
                        "write the store again with the iq version that reads it",
                        "unsupported format version %" PRIu32 ", this build reads version %d",
                        header->version, IQ_WEIGHT_STORE_FORMAT_VERSION);
  }
  if (header->reserved != 0) {
    return iq_error_set(error, path, NULL, corrupt_hint,
                        "reserved header bytes 56-63 are 0x%016" PRIx64 ", expected 0",
                        header->reserved);
  }
  if (header->data_offset < IQ_WEIGHT_STORE_HEADER_SIZE ||
      header->data_offset % IQ_WEIGHT_STORE_ALIGNMENT != 0) {
    return iq_error_set(error, path, NULL, corrupt_hint,
                        "data offset %" PRIu64 " is not a multiple of %d at or after the "
                        "%d-byte header",
                        header->data_offset, IQ_WEIGHT_STORE_ALIGNMENT,
                        IQ_WEIGHT_STORE_HEADER_SIZE);
  }
  if (!iq_range_in_bounds(header->data_offset, header->data_size, file_size)) {
    return iq_error_set(error, path, NULL, corrupt_hint,
                        "data region at offset %" PRIu64 " with %" PRIu64
                        " bytes extends past the end of the file (%" PRIu64 " bytes)",
                        header->data_offset, header->data_size, file_size);
  }
  if (!iq_range_in_bounds(header->table_offset, header->table_size, file_size)) {
    return iq_error_set(error, path, NULL, corrupt_hint,
                        "table at offset %" PRIu64 " with %" PRIu64
                        " bytes extends past the end of the file (%" PRIu64 " bytes)",
                        header->table_offset, header->table_size, file_size);
  }
  /* Both ranges are inside the file, so these sums cannot wrap. */
  uint64_t data_end = header->data_offset + header->data_size;
  if (header->table_offset != data_end) {
    return iq_error_set(error, path, NULL, corrupt_hint,
                        "table offset %" PRIu64 " does not follow the data region, which "
                        "ends at %" PRIu64,
                        header->table_offset, data_end);
  }
  if (header->table_offset + header->table_size != file_size) {
    return iq_error_set(error, path, NULL, corrupt_hint,
                        "the table ends at %" PRIu64 " but the file is %" PRIu64 " bytes",
                        header->table_offset + header->table_size, file_size);
  }

  uint64_t actual = iq_weight_store_checksum(bytes + header->table_offset,
                                             (size_t)header->table_size);
  if (actual != header->table_checksum) {
    return iq_error_set(error, path, NULL, corrupt_hint,
                        "table checksum mismatch: the header stores 0x%016" PRIx64
                        " but the table hashes to 0x%016" PRIx64,
                        header->table_checksum, actual);
  }
  if (header->count > header->table_size / IQ_WS_MIN_ENTRY_SIZE) {
    return iq_error_set(error, path, NULL, corrupt_hint,
                        "tensor count %" PRIu32 " cannot fit in a table of %" PRIu64 " bytes",
                        header->count, header->table_size);
  }
  return true;
}

/* A bounded reader over the table; every read checks the bytes left. */
typedef struct table_cursor {
  const uint8_t *bytes;
  uint64_t size;
  uint64_t position;
} table_cursor_t;

static bool cursor_take(table_cursor_t *cursor, uint64_t length, const uint8_t **out) {
  if (!iq_range_in_bounds(cursor->position, length, cursor->size)) {
    return false;
  }
  *out = cursor->bytes + cursor->position;
  cursor->position += length;
  return true;
}

/* Reports an entry that ends past the table while reading `field`. */
static bool truncated_entry(const char *path, const char *where, const char *field,
                            const table_cursor_t *cursor, iq_error_t **error) {
  return iq_error_set(error, path, where, corrupt_hint,
                      "the table entry ends while reading its %s at table offset %" PRIu64
                      " (the table is %" PRIu64 " bytes)",
                      field, cursor->position, cursor->size);
}

/* Checks the fields of a parsed entry against each other and against the
 * data region. `previous_end` is where the previous tensor's data ends,
 * relative to the data region; tensors must not overlap or go backwards. */
static bool check_entry(const char *path, const iq_weight_tensor_t *tensor, uint64_t offset,
                        const header_t *header, uint64_t previous_end, iq_error_t **error) {
  const char *name = tensor->name;
  const char *dtype_name = iq_dtype_name(tensor->dtype);
  if (dtype_name == NULL) {
    return iq_error_set(error, path, name,
                        "the file was written by a newer iq or is corrupt",
                        "unknown dtype %" PRIu32, (uint32_t)tensor->dtype);
  }
  if (tensor->layout != IQ_LAYOUT_ROW_MAJOR) {
    return iq_error_set(error, path, name,
                        "the file was written by a newer iq or is corrupt",
                        "unknown layout %" PRIu32, (uint32_t)tensor->layout);
  }
  for (uint32_t i = 0; i < tensor->rank; ++i) {
    if (tensor->dims[i] < 0) {
      return iq_error_set(error, path, name, corrupt_hint,
                          "dimension %" PRIu32 " is %" PRId64 ", which is negative", i,
                          tensor->dims[i]);
    }
  }
  uint64_t num_elements = 0;
  uint64_t expected_size = 0;
  if (!iq_ws_element_count(tensor->rank, tensor->dims, &num_elements) ||
      !iq_dtype_byte_size(tensor->dtype, num_elements, &expected_size)) {
    return iq_error_set(error, path, name, corrupt_hint,
                        "the byte size of the %" PRIu32 "-d %s shape overflows 64 bits",
                        tensor->rank, dtype_name);
  }
  if (tensor->byte_size != expected_size) {
    return iq_error_set(error, path, name, corrupt_hint,
                        "byte size %" PRIu64 " does not match %" PRIu64
                        " elements of %s, which take %" PRIu64 " bytes",
                        tensor->byte_size, num_elements, dtype_name, expected_size);
  }
  if (offset % IQ_WEIGHT_STORE_ALIGNMENT != 0) {
    return iq_error_set(error, path, name, corrupt_hint,
                        "data offset %" PRIu64 " is not a multiple of %d", offset,
                        IQ_WEIGHT_STORE_ALIGNMENT);
  }
  if (!iq_range_in_bounds(offset, tensor->byte_size, header->data_size)) {
    return iq_error_set(error, path, name, corrupt_hint,
                        "data at offset %" PRIu64 " with %" PRIu64
                        " bytes extends past the data region (%" PRIu64 " bytes)",
                        offset, tensor->byte_size, header->data_size);
  }
  if (offset < previous_end) {
    return iq_error_set(error, path, name, corrupt_hint,
                        "data at offset %" PRIu64 " overlaps the previous tensor's data, "
                        "which ends at %" PRIu64,
                        offset, previous_end);
  }
  return true;
}

/* Parses entry `position` of the table into `tensor`, copying its name to
 * `*names` (advanced past the copy and its NUL), and checks it. */
static bool parse_entry(const iq_mapped_file_t *file, const header_t *header,
                        table_cursor_t *cursor, size_t position, char **names,
                        uint64_t *previous_end, iq_weight_tensor_t *tensor,
                        iq_error_t **error) {
  const char *path = file->path;
  /* Until the name is read, errors name the entry by its position. */
  char label[32];
  snprintf(label, sizeof(label), "tensor #%zu", position);
  const uint8_t *field = NULL;

  if (!cursor_take(cursor, 4, &field)) {
    return truncated_entry(path, label, "name length", cursor, error);
  }
  uint32_t name_length = iq_ws_load_u32(field);
  if (name_length == 0) {
    return iq_error_set(error, path, label, corrupt_hint, "the tensor name is empty");
  }
  if (!cursor_take(cursor, name_length, &field)) {
    return truncated_entry(path, label, "name", cursor, error);
  }
  if (memchr(field, '\0', name_length) != NULL) {
    return iq_error_set(error, path, label, corrupt_hint,
                        "the tensor name contains a NUL byte");
  }
  char *name = *names;
  memcpy(name, field, name_length);
  name[name_length] = '\0';
  *names += name_length + 1;
  tensor->name = name;

  if (!cursor_take(cursor, 12, &field)) {
    return truncated_entry(path, name, "dtype, layout and rank", cursor, error);
  }
  tensor->dtype = (iq_dtype_t)iq_ws_load_u32(field);
  tensor->layout = (iq_layout_t)iq_ws_load_u32(field + 4);
  tensor->rank = iq_ws_load_u32(field + 8);
  if (tensor->rank > IQ_WEIGHT_STORE_MAX_RANK) {
    return iq_error_set(error, path, name, corrupt_hint,
                        "rank %" PRIu32 " is above the maximum of %d", tensor->rank,
                        IQ_WEIGHT_STORE_MAX_RANK);
  }
  for (uint32_t i = 0; i < tensor->rank; ++i) {
    if (!cursor_take(cursor, 8, &field)) {
      return truncated_entry(path, name, "dims", cursor, error);
    }
    tensor->dims[i] = (int64_t)iq_ws_load_u64(field);
  }
  if (!cursor_take(cursor, 24, &field)) {
    return truncated_entry(path, name, "offset, byte size and checksum", cursor, error);
  }
  uint64_t offset = iq_ws_load_u64(field);
  tensor->byte_size = iq_ws_load_u64(field + 8);
  tensor->checksum = iq_ws_load_u64(field + 16);

  if (!check_entry(path, tensor, offset, header, *previous_end, error)) {
    return false;
  }
  iq_ws_element_count(tensor->rank, tensor->dims, &tensor->num_elements);
  *previous_end = offset + tensor->byte_size;
  /* The mapping starts on a page boundary and both offsets are multiples
   * of the alignment, so the pointer is aligned as documented. */
  tensor->data =
      tensor->byte_size > 0 ? file->data + header->data_offset + offset : NULL;
  return true;
}

static bool parse_table(iq_weight_store_t *store, const header_t *header, iq_error_t **error) {
  const iq_mapped_file_t *file = store->file;
  /* Each name takes at least 4 + length table bytes, and its copy
   * length + 1, so the table size bounds the copies. */
  store->tensors = calloc(header->count > 0 ? header->count : 1, sizeof(iq_weight_tensor_t));
  store->names = malloc(header->table_size > 0 ? (size_t)header->table_size : 1);
  if (store->tensors == NULL || store->names == NULL ||
      !iq_ws_name_index_reserve(&store->index, store->tensors, header->count)) {
    return iq_error_set(error, file->path, NULL, NULL,
                        "out of memory while reading a table of %" PRIu32 " tensors",
                        header->count);
  }

  table_cursor_t cursor = {file->data + header->table_offset, header->table_size, 0};
  char *names = store->names;
  uint64_t previous_end = 0;
  for (size_t i = 0; i < header->count; ++i) {
    iq_weight_tensor_t *tensor = &store->tensors[i];
    if (!parse_entry(file, header, &cursor, i, &names, &previous_end, tensor, error)) {
      return false;
    }
    size_t existing = iq_ws_name_index_find(&store->index, store->tensors, tensor->name);
    if (existing != SIZE_MAX) {
      return iq_error_set(error, file->path, tensor->name, corrupt_hint,
                          "the name is used by tensors #%zu and #%zu", existing, i);
    }
    iq_ws_name_index_insert(&store->index, store->tensors, i);
    store->count = i + 1;
  }
  if (cursor.position != cursor.size) {
    return iq_error_set(error, file->path, NULL, corrupt_hint,
                        "the table has %" PRIu64 " bytes left after its %" PRIu32 " entries",
                        cursor.size - cursor.position, header->count);
  }
  return true;
}

iq_weight_store_t *iq_weight_store_open(const char *path, iq_error_t **error) {
  iq_mapped_file_t *file = iq_mapped_file_open(path, error);
  if (file == NULL) {
    return NULL;
  }
  iq_weight_store_t *store = calloc(1, sizeof(*store));
  if (store == NULL) {
    iq_mapped_file_close(file);
    iq_error_set(error, path, NULL, NULL, "out of memory while opening the weight store");
    return NULL;
  }
  store->file = file;

  header_t header = {0};
  if (!read_header(file, &header, error) || !parse_table(store, &header, error)) {
    iq_weight_store_close(store);
    return NULL;
  }
  return store;
}

void iq_weight_store_close(iq_weight_store_t *store) {
  if (store == NULL) {
    return;
  }
  iq_ws_name_index_free(&store->index);
  free(store->names);
  free(store->tensors);
  iq_mapped_file_close(store->file);
  free(store);
}

size_t iq_weight_store_count(const iq_weight_store_t *store) {
  return store == NULL ? 0 : store->count;
}

const iq_weight_tensor_t *iq_weight_store_get(const iq_weight_store_t *store, size_t index) {
  if (store == NULL || index >= store->count) {
    return NULL;
  }
  return &store->tensors[index];
}

const iq_weight_tensor_t *iq_weight_store_find(const iq_weight_store_t *store, const char *name) {
  if (store == NULL || name == NULL) {
    return NULL;
  }
  size_t position = iq_ws_name_index_find(&store->index, store->tensors, name);
  return position == SIZE_MAX ? NULL : &store->tensors[position];
}

bool iq_weight_store_verify(const iq_weight_store_t *store, iq_error_t **error) {
  if (store == NULL) {
    return iq_error_set(error, NULL, NULL, "open the weight store first",
                        "no weight store was given (NULL)");
  }
  for (size_t i = 0; i < store->count; ++i) {
    const iq_weight_tensor_t *tensor = &store->tensors[i];
    uint64_t actual = iq_weight_store_checksum(tensor->data, (size_t)tensor->byte_size);
    if (actual != tensor->checksum) {
      return iq_error_set(error, store->file->path, tensor->name, corrupt_hint,
                          "checksum mismatch: the table stores 0x%016" PRIx64
                          " but the %" PRIu64 " data bytes hash to 0x%016" PRIx64,
                          tensor->checksum, tensor->byte_size, actual);
    }
  }
  return true;
}
