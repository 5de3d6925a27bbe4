/* A walk over the protobuf wire format that bounds message nesting before
 * protobuf-c unpacks the buffer. */
#include "reader_internal.h"

#include <protobuf-c/protobuf-c.h>

/* ONNX nests Model > Graph > Node > Attribute > Graph ... and TypeProto
 * inside itself. Real models stay far below this depth; crafted ones can
 * nest once per two bytes. */
enum { MAX_MESSAGE_DEPTH = 100 };

typedef enum walk_result {
  WALK_OK,
  WALK_TOO_DEEP,
  WALK_MALFORMED,
} walk_result_t;

static bool read_varint(const uint8_t **cursor, const uint8_t *end, uint64_t *value) {
  uint64_t result = 0;
  for (unsigned shift = 0; shift < 64; shift += 7) {
    if (*cursor == end) {
      return false;
    }
    uint8_t byte = **cursor;
    ++*cursor;
    result |= (uint64_t)(byte & 0x7f) << shift;
    if ((byte & 0x80) == 0) {
      *value = result;
      return true;
    }
  }
  return false;
}

/* Walks the fields of one message; recurses into fields that the
 * descriptor declares as messages. Recursion is bounded by
 * MAX_MESSAGE_DEPTH. */
static walk_result_t walk_message(const ProtobufCMessageDescriptor *descriptor,
                                  const uint8_t *data, size_t size, unsigned depth) {
  if (depth > MAX_MESSAGE_DEPTH) {
    return WALK_TOO_DEEP;
  }
  const uint8_t *cursor = data;
  const uint8_t *end = data + size;
  while (cursor < end) {
    uint64_t tag = 0;
    if (!read_varint(&cursor, end, &tag)) {
      return WALK_MALFORMED;
    }
    uint64_t field_number = tag >> 3;
    if (field_number == 0 || field_number > 0x1fffffff) {
      return WALK_MALFORMED;
    }

    uint64_t skipped = 0;
    switch (tag & 7) {
    case 0: /* varint */
      if (!read_varint(&cursor, end, &skipped)) {
        return WALK_MALFORMED;
      }
      break;
    case 1: /* fixed 64 bits */
      if ((size_t)(end - cursor) < 8) {
        return WALK_MALFORMED;
      }
      cursor += 8;
      break;
    case 5: /* fixed 32 bits */
      if ((size_t)(end - cursor) < 4) {
        return WALK_MALFORMED;
      }
      cursor += 4;
      break;
    case 2: { /* length-delimited: bytes, strings, packed arrays, messages */
      uint64_t length = 0;
      if (!read_varint(&cursor, end, &length) || length > (uint64_t)(end - cursor)) {
        return WALK_MALFORMED;
      }
      const ProtobufCFieldDescriptor *field =
          protobuf_c_message_descriptor_get_field(descriptor, (unsigned)field_number);
      if (field != NULL && field->type == PROTOBUF_C_TYPE_MESSAGE) {
        walk_result_t result =
            walk_message(field->descriptor, cursor, (size_t)length, depth + 1);
        if (result != WALK_OK) {
          return result;
        }
      }
      cursor += length;
      break;
    }
    default:
      /* Groups (3, 4) are obsolete and protobuf-c does not read them; 6
       * and 7 are not wire types. */
      return WALK_MALFORMED;
    }
  }
  return WALK_OK;
}

bool wire_check_depth(const uint8_t *data, size_t size, reader_context_t *context) {
  walk_result_t result = walk_message(&onnx__model_proto__descriptor, data, size, 1);
  if (result == WALK_TOO_DEEP) {
    return iq_error_set(context->error, context->file, NULL,
                        "check that the file is an ONNX model; real models nest far less",
                        "is not a valid ONNX model: its messages nest more than %d levels deep",
                        MAX_MESSAGE_DEPTH);
  }
  if (result == WALK_MALFORMED) {
    return iq_error_set(context->error, context->file, NULL,
                        "check that the file is a complete .onnx model, not a truncated copy "
                        "or an external data file, and re-export it if needed",
                        "is not a valid ONNX model: the protobuf data is truncated or malformed");
  }
  return true;
}
