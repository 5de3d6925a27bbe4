/* Conversion of TensorProto messages into iq_onnx_tensor_t: shape and
 * size checks, and the typed data fields rewritten as raw little-endian
 * bytes. External data is handled in external_data.c. */
#include "reader_internal.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const char *const SIZE_HINT =
    "re-export the model: the tensor's data does not match its declared shape and type";

void format_dims(const int64_t *dims, size_t rank, char *buffer, size_t size) {
  size_t used = 0;
  buffer[0] = '\0';
  used += (size_t)snprintf(buffer, size, "[");
  for (size_t i = 0; i < rank && used < size; ++i) {
    /* Leave room for "...]" and the NUL. */
    char item[32];
    int length = snprintf(item, sizeof(item), "%s%" PRId64, i == 0 ? "" : ", ", dims[i]);
    if (used + (size_t)length + 5 > size) {
      snprintf(buffer + used, size - used, "...");
      used += 3;
      break;
    }
    memcpy(buffer + used, item, (size_t)length + 1);
    used += (size_t)length;
  }
  if (used + 2 <= size) {
    snprintf(buffer + used, size - used, "]");
  }
}

/* The repeated field of TensorProto that contains a type's values when it is not
 * in raw_data (onnx.proto, TensorProto comments). */
typedef enum typed_field {
  FIELD_FLOAT,
  FIELD_INT32,
  FIELD_INT64,
  FIELD_DOUBLE,
  FIELD_UINT64,
} typed_field_t;

static const char *const FIELD_NAMES[] = {"float_data", "int32_data", "int64_data", "double_data",
                                          "uint64_data"};

static typed_field_t field_for_type(int32_t data_type) {
  switch (data_type) {
  case IQ_ONNX_FLOAT:
    return FIELD_FLOAT;
  case IQ_ONNX_INT64:
    return FIELD_INT64;
  case IQ_ONNX_DOUBLE:
    return FIELD_DOUBLE;
  case IQ_ONNX_UINT32:
  case IQ_ONNX_UINT64:
    return FIELD_UINT64;
  default:
    return FIELD_INT32;
  }
}

static size_t field_count(const Onnx__TensorProto *proto, typed_field_t field) {
  switch (field) {
  case FIELD_FLOAT:
    return proto->n_float_data;
  case FIELD_INT32:
    return proto->n_int32_data;
  case FIELD_INT64:
    return proto->n_int64_data;
  case FIELD_DOUBLE:
    return proto->n_double_data;
  case FIELD_UINT64:
    return proto->n_uint64_data;
  }
  return 0;
}

static void store_le(uint8_t *out, uint64_t value, unsigned bytes) {
  for (unsigned i = 0; i < bytes; ++i) {
    out[i] = (uint8_t)(value >> (8 * i));
  }
}

/* Checks the dims and computes the element count and byte size. */
static bool compute_sizes(reader_context_t *context, const Onnx__TensorProto *proto,
                          const char *where, unsigned bits, iq_onnx_tensor_t *tensor) {
  char dims_text[160];
  format_dims(proto->dims, proto->n_dims, dims_text, sizeof(dims_text));

  uint64_t elements = 1;
  for (size_t i = 0; i < proto->n_dims; ++i) {
    if (proto->dims[i] < 0) {
      return iq_error_set(context->error, context->file, where,
                          "re-export the model; a tensor's dimensions must all be 0 or more",
                          "dimension %zu is %" PRId64 " (dims %s); dimensions cannot be negative",
                          i, proto->dims[i], dims_text);
    }
    if (!iq_mul_u64(elements, (uint64_t)proto->dims[i], &elements)) {
      return iq_error_set(context->error, context->file, where,
                          "the dimensions are corrupt; re-export the model",
                          "the element count of dims %s overflows 64 bits", dims_text);
    }
  }

  uint64_t total_bits = 0;
  if (!iq_mul_u64(elements, bits, &total_bits) || total_bits > UINT64_MAX - 7) {
    return iq_error_set(context->error, context->file, where,
                        "the dimensions are corrupt; re-export the model",
                        "%" PRIu64 " elements of type %s (dims %s) need more than 2^64 bytes",
                        elements, iq_onnx_type_name(tensor->data_type), dims_text);
  }
  tensor->rank = proto->n_dims;
  tensor->dims = proto->dims;
  tensor->num_elements = elements;
  tensor->byte_size = (total_bits + 7) / 8;
  return true;
}

/* Stores the range of values an int32_data entry may take for
 * `data_type`. 16- and 8-bit float types store their bit patterns as
 * unsigned integers. Each entry of a 4-bit type packs two elements into
 * its low byte, the first element in the low nibble. */
static void int32_entry_range(int32_t data_type, int64_t *minimum, int64_t *maximum) {
  switch (data_type) {
  case IQ_ONNX_INT32:
    *minimum = INT32_MIN;
    *maximum = INT32_MAX;
    return;
  case IQ_ONNX_INT16:
    *minimum = INT16_MIN;
    *maximum = INT16_MAX;
    return;
  case IQ_ONNX_INT8:
    *minimum = INT8_MIN;
    *maximum = INT8_MAX;
    return;
  case IQ_ONNX_BOOL:
    *minimum = 0;
    *maximum = 1;
    return;
  case IQ_ONNX_UINT16:
  case IQ_ONNX_FLOAT16:
  case IQ_ONNX_BFLOAT16:
    *minimum = 0;
    *maximum = UINT16_MAX;
    return;
  default:
    /* UINT8, the float8 types, and the packed 4-bit types. */
    *minimum = 0;
    *maximum = UINT8_MAX;
    return;
  }
}

/* Rewrites the typed field into a little-endian buffer of byte_size bytes
 * that the arena owns. The caller has checked the entry count. */
static bool convert_typed(reader_context_t *context, const Onnx__TensorProto *proto,
                          const char *where, typed_field_t field, iq_onnx_tensor_t *tensor) {
  uint8_t *out = arena_alloc(&context->state->arena, (size_t)tensor->byte_size);
  if (out == NULL) {
    return reader_out_of_memory(context, where);
  }
  unsigned bits = iq_onnx_type_bits(tensor->data_type);
  unsigned entry_bytes = bits < 8 ? 1 : bits / 8;

  switch (field) {
  case FIELD_FLOAT:
    for (size_t i = 0; i < proto->n_float_data; ++i) {
      uint32_t pattern;
      memcpy(&pattern, &proto->float_data[i], sizeof(pattern));
      store_le(out + 4 * i, pattern, 4);
    }
    break;
  case FIELD_DOUBLE:
    for (size_t i = 0; i < proto->n_double_data; ++i) {
      uint64_t pattern;
      memcpy(&pattern, &proto->double_data[i], sizeof(pattern));
      store_le(out + 8 * i, pattern, 8);
    }
    break;
  case FIELD_INT64:
    for (size_t i = 0; i < proto->n_int64_data; ++i) {
      store_le(out + 8 * i, (uint64_t)proto->int64_data[i], 8);
    }
    break;
  case FIELD_UINT64:
    for (size_t i = 0; i < proto->n_uint64_data; ++i) {
      uint64_t value = proto->uint64_data[i];
      if (entry_bytes == 4 && value > UINT32_MAX) {
        return iq_error_set(context->error, context->file, where, SIZE_HINT,
                            "uint64_data[%zu] is %" PRIu64 ", which does not fit type uint32", i,
                            value);
      }
      store_le(out + entry_bytes * i, value, entry_bytes);
    }
    break;
  case FIELD_INT32: {
    int64_t minimum = 0;
    int64_t maximum = 0;
    int32_entry_range(tensor->data_type, &minimum, &maximum);
    for (size_t i = 0; i < proto->n_int32_data; ++i) {
      int64_t value = proto->int32_data[i];
      if (value < minimum || value > maximum) {
        return iq_error_set(context->error, context->file, where, SIZE_HINT,
                            "int32_data[%zu] is %" PRId64
                            ", outside the range %" PRId64 "..%" PRId64 " of a %s entry",
                            i, value, minimum, maximum, iq_onnx_type_name(tensor->data_type));
      }
      store_le(out + entry_bytes * i, (uint64_t)value, entry_bytes);
    }
    break;
  }
  }
  tensor->data = out;
  return true;
}

/* Fills in the data of a tensor stored inside the model file. */
static bool convert_inline(reader_context_t *context, const Onnx__TensorProto *proto,
                           const char *where, iq_onnx_tensor_t *tensor) {
  const char *type_name = iq_onnx_type_name(tensor->data_type);
  typed_field_t expected = field_for_type(tensor->data_type);

  /* Values in a field that does not belong to the type would be ignored by
   * other readers, so the file is ambiguous. */
  for (typed_field_t field = FIELD_FLOAT; field <= FIELD_UINT64; ++field) {
    size_t count = field_count(proto, field);
    if (count == 0 || (field == expected && !proto->has_raw_data)) {
      continue;
    }
    if (proto->has_raw_data) {
      return iq_error_set(context->error, context->file, where, SIZE_HINT,
                          "has both raw_data and %zu values in %s; only one may hold the data",
                          count, FIELD_NAMES[field]);
    }
    return iq_error_set(context->error, context->file, where, SIZE_HINT,
                        "stores %zu values in %s, but %s tensors keep their values in %s", count,
                        FIELD_NAMES[field], type_name, FIELD_NAMES[expected]);
  }

  if (proto->n_string_data != 0) {
    return iq_error_set(context->error, context->file, where, SIZE_HINT,
                        "stores %zu values in string_data, but it is a %s tensor",
                        proto->n_string_data, type_name);
  }

  char dims_text[160];
  format_dims(tensor->dims, tensor->rank, dims_text, sizeof(dims_text));

  if (proto->has_raw_data) {
    if ((uint64_t)proto->raw_data.len != tensor->byte_size) {
      return iq_error_set(context->error, context->file, where, SIZE_HINT,
                          "raw_data is %zu bytes, but %" PRIu64
                          " elements of type %s (dims %s) need %" PRIu64 " bytes",
                          proto->raw_data.len, tensor->num_elements, type_name, dims_text,
                          tensor->byte_size);
    }
    /* The unpacked message owns raw_data for the model's lifetime. */
    tensor->data = tensor->byte_size == 0 ? NULL : proto->raw_data.data;
    return true;
  }

  /* 4-bit types pack two elements into each entry. */
  uint64_t expected_count = tensor->num_elements;
  if (iq_onnx_type_bits(tensor->data_type) == 4) {
    expected_count = tensor->num_elements / 2 + tensor->num_elements % 2;
  }
  size_t count = field_count(proto, expected);
  if ((uint64_t)count != expected_count) {
    return iq_error_set(context->error, context->file, where, SIZE_HINT,
                        "%s contains %zu values, but %" PRIu64
                        " elements of type %s (dims %s) need %" PRIu64,
                        FIELD_NAMES[expected], count, tensor->num_elements, type_name, dims_text,
                        expected_count);
  }
  if (tensor->byte_size == 0) {
    tensor->data = NULL;
    return true;
  }
  return convert_typed(context, proto, where, expected, tensor);
}

bool tensor_convert(reader_context_t *context, const Onnx__TensorProto *proto, const char *where,
                    iq_onnx_tensor_t *tensor) {
  memset(tensor, 0, sizeof(*tensor));
  tensor->name = proto->name != NULL ? proto->name : "";
  tensor->data_type = proto->has_data_type ? proto->data_type : IQ_ONNX_UNDEFINED;

  unsigned bits = iq_onnx_type_bits(tensor->data_type);
  if (bits == 0) {
    return iq_error_set(context->error, context->file, where,
                        "iq supports numeric tensors (float, float16, bfloat16, int4 to int64, "
                        "uint4 to uint64, bool, double, float8); convert or remove this tensor "
                        "before export",
                        "has unsupported data type %s (%" PRId32 ")",
                        iq_onnx_type_name(tensor->data_type), tensor->data_type);
  }
  if (proto->segment != NULL) {
    return iq_error_set(context->error, context->file, where,
                        "save the tensor whole; iq does not read segmented tensors",
                        "is a segment of a larger tensor (TensorProto.segment is set)");
  }
  if (!compute_sizes(context, proto, where, bits, tensor)) {
    return false;
  }

  int location = proto->has_data_location ? (int)proto->data_location : 0;
  if (location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
    bool has_inline = proto->has_raw_data;
    for (typed_field_t field = FIELD_FLOAT; field <= FIELD_UINT64; ++field) {
      has_inline = has_inline || field_count(proto, field) != 0;
    }
    if (has_inline) {
      return iq_error_set(context->error, context->file, where, SIZE_HINT,
                          "has data_location EXTERNAL but also stores data inside the model");
    }
    return external_data_resolve(context, proto, where, tensor);
  }
  if (location != ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT) {
    return iq_error_set(context->error, context->file, where, SIZE_HINT,
                        "has unknown data_location %d (expected 0, DEFAULT, or 1, EXTERNAL)",
                        location);
  }
  if (proto->n_external_data != 0) {
    return iq_error_set(context->error, context->file, where, SIZE_HINT,
                        "has external_data entries, but its data_location is DEFAULT, not "
                        "EXTERNAL");
  }
  return convert_inline(context, proto, where, tensor);
}
