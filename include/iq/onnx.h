/* The ONNX reader: a model file parsed with protobuf-c, its external data
 * mapped (never copied), and every size, offset and path checked before
 * use, because model files are untrusted input. */
#ifndef IQ_ONNX_H
#define IQ_ONNX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iq/support.h"

#ifdef __cplusplus
extern "C" {
#endif

/* TensorProto.DataType values. onnx.proto 1.12 (Debian's) stops at
 * BFLOAT16 = 16; the 4-bit and 8-bit float types came in ONNX 1.14-1.16. */
enum {
  IQ_ONNX_UNDEFINED = 0,
  IQ_ONNX_FLOAT = 1,
  IQ_ONNX_UINT8 = 2,
  IQ_ONNX_INT8 = 3,
  IQ_ONNX_UINT16 = 4,
  IQ_ONNX_INT16 = 5,
  IQ_ONNX_INT32 = 6,
  IQ_ONNX_INT64 = 7,
  IQ_ONNX_STRING = 8,
  IQ_ONNX_BOOL = 9,
  IQ_ONNX_FLOAT16 = 10,
  IQ_ONNX_DOUBLE = 11,
  IQ_ONNX_UINT32 = 12,
  IQ_ONNX_UINT64 = 13,
  IQ_ONNX_COMPLEX64 = 14,
  IQ_ONNX_COMPLEX128 = 15,
  IQ_ONNX_BFLOAT16 = 16,
  IQ_ONNX_FLOAT8E4M3FN = 17,
  IQ_ONNX_FLOAT8E4M3FNUZ = 18,
  IQ_ONNX_FLOAT8E5M2 = 19,
  IQ_ONNX_FLOAT8E5M2FNUZ = 20,
  IQ_ONNX_UINT4 = 21,
  IQ_ONNX_INT4 = 22,
};

/* Returns the name of a data type ("float", "int4", ...) or "unknown". */
const char *iq_onnx_type_name(int32_t data_type);

/* Returns the storage size of one element in bits (4 for INT4/UINT4), or 0
 * for types iq cannot hold (STRING, complex, undefined, unknown). */
unsigned iq_onnx_type_bits(int32_t data_type);

/* A tensor with its bytes in ONNX's raw little-endian layout: packed two
 * per byte, low nibble first, for 4-bit types. */
typedef struct iq_onnx_tensor {
  const char *name;
  int32_t data_type;
  size_t rank;
  const int64_t *dims; /* `rank` sizes, all >= 0 */
  uint64_t num_elements;
  const uint8_t *data; /* NULL only when byte_size is 0 */
  uint64_t byte_size;
  bool external;        /* data points into a mapped external file */
} iq_onnx_tensor_t;

/* One attribute of a node. `kind` is the AttributeProto.AttributeType
 * value. FLOAT, INT, STRING, TENSOR, FLOATS, INTS and STRINGS carry their
 * values. The other kinds (GRAPH and those after STRINGS) are exposed
 * without a payload, so an importer can name the attribute it rejects. */
enum {
  IQ_ONNX_ATTR_FLOAT = 1,
  IQ_ONNX_ATTR_INT = 2,
  IQ_ONNX_ATTR_STRING = 3,
  IQ_ONNX_ATTR_TENSOR = 4,
  IQ_ONNX_ATTR_GRAPH = 5,
  IQ_ONNX_ATTR_FLOATS = 6,
  IQ_ONNX_ATTR_INTS = 7,
  IQ_ONNX_ATTR_STRINGS = 8,
  IQ_ONNX_ATTR_TENSORS = 9,
  IQ_ONNX_ATTR_GRAPHS = 10,
  IQ_ONNX_ATTR_SPARSE_TENSOR = 11,
  IQ_ONNX_ATTR_SPARSE_TENSORS = 12,
  IQ_ONNX_ATTR_TYPE_PROTO = 13,
  IQ_ONNX_ATTR_TYPE_PROTOS = 14,
};

typedef struct iq_onnx_attribute {
  const char *name;
  int kind;
  float f;
  int64_t i;
  const char *s; /* STRING, NUL-terminated copy */
  size_t s_length;
  const float *floats;
  const int64_t *ints;
  const char *const *strings;     /* STRINGS, NUL-terminated copies */
  size_t count;                   /* elements of floats, ints or strings */
  const iq_onnx_tensor_t *tensor; /* TENSOR */
} iq_onnx_attribute_t;

typedef struct iq_onnx_node {
  const char *name; /* never NULL; "" when the file gives none */
  const char *op_type;
  const char *domain; /* "" for the default ai.onnx domain */
  size_t num_inputs, num_outputs, num_attributes;
  const char *const *inputs;  /* "" marks an omitted optional input */
  const char *const *outputs;
  const iq_onnx_attribute_t *attributes;
} iq_onnx_node_t;

/* A graph input or output: name, element type and shape. A dimension is
 * either a size (dim_params[i] == NULL) or symbolic (dim_params[i] is its
 * name, and dims[i] is -1). Unknown dimensions have dims[i] == -1 and
 * dim_params[i] == NULL. A value without a shape has rank -1. */
typedef struct iq_onnx_value_info {
  const char *name;
  int32_t data_type;
  long rank;
  const int64_t *dims;
  const char *const *dim_params;
} iq_onnx_value_info_t;

typedef struct iq_onnx_opset {
  const char *domain;
  int64_t version;
} iq_onnx_opset_t;

typedef struct iq_onnx_model {
  const char *path;
  int64_t ir_version;
  const char *producer_name;
  size_t num_opsets;
  const iq_onnx_opset_t *opsets;

  size_t num_inputs, num_outputs;
  const iq_onnx_value_info_t *inputs;  /* graph inputs that are not initializers */
  const iq_onnx_value_info_t *outputs;

  size_t num_initializers;
  const iq_onnx_tensor_t *initializers;

  /* Nodes in a topological order (the file's order when it already is
   * one), so every input is defined before its first use. */
  size_t num_nodes;
  const iq_onnx_node_t *nodes;

  void *internal; /* protobuf message, mappings, allocations */
} iq_onnx_model_t;

/* Loads and checks a model. Rejects, with an error naming the tensor or
 * node and the reason: files that do not parse as ModelProto; external
 * data locations that are absolute, contain "..", or resolve outside the
 * model's folder (symbolic links included); offsets and lengths past the
 * end of the external file; data whose size disagrees with the declared
 * shape and type; dimensions that are negative or whose product
 * overflows; graphs with cycles, undefined inputs or values defined
 * twice; and unsupported data types in initializers and TENSOR
 * attributes. The caller owns the result and frees it with
 * iq_onnx_model_destroy. */
iq_onnx_model_t *iq_onnx_model_load(const char *path, iq_error_t **error);

/* Like iq_onnx_model_load, on a buffer already in memory. External data
 * is resolved against `base_dir`; NULL rejects any external data. The
 * buffer is not referenced after the call returns. */
iq_onnx_model_t *iq_onnx_model_load_buffer(const uint8_t *data, size_t size, const char *name,
                                           const char *base_dir, iq_error_t **error);

void iq_onnx_model_destroy(iq_onnx_model_t *model);

/* Drops the resident pages of an external tensor's mapping once a caller
 * has copied its bytes elsewhere, so that streaming a large model through
 * memory does not keep it resident. A later read maps the pages again from
 * the file. Does nothing for inline tensors. */
void iq_onnx_tensor_release_pages(const iq_onnx_tensor_t *tensor);

/* Returns the initializer called `name`, or NULL. */
const iq_onnx_tensor_t *iq_onnx_model_find_initializer(const iq_onnx_model_t *model,
                                                       const char *name);

/* Returns the version of the opset imported for `domain` ("" or "ai.onnx"
 * for the default domain), or 0 when the model does not import it. */
int64_t iq_onnx_model_opset(const iq_onnx_model_t *model, const char *domain);

/* Returns the attribute `name` of `node`, or NULL. */
const iq_onnx_attribute_t *iq_onnx_node_attribute(const iq_onnx_node_t *node, const char *name);

#ifdef __cplusplus
}
#endif

#endif /* IQ_ONNX_H */
