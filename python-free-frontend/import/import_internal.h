/* Shared declarations of the importer's files. */
#ifndef IQ_IMPORT_INTERNAL_H
#define IQ_IMPORT_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "mlir-c/IR.h"

#include "iq/builder.h"
#include "iq/onnx.h"
#include "iq/onnx_import.h"
#include "iq/weight_store.h"

/* ---- Types and attributes (types.c) ------------------------------------- */

/* Returns the MLIR element type of an ONNX data type, or a null type when
 * iq has none for it. Signed integers are signless, as arith expects;
 * unsigned ones keep their signedness so the graph keeps the types ONNX declares. */
MlirType import_element_type(MlirContext context, int32_t data_type);
bool import_store_dtype(int32_t data_type, iq_dtype_t *dtype);
MlirType import_tensor_type(MlirContext context, const iq_onnx_tensor_t *tensor);
/* A DenseElementsAttr holding the tensor, or null for 4-bit types and for
 * bool tensors of more than 4096 elements. */
MlirAttribute import_dense_attr(MlirContext context, const iq_onnx_tensor_t *tensor);
/* The MLIR form of a node attribute, or null for GRAPH and STRINGS. */
MlirAttribute import_attribute(MlirContext context, const iq_onnx_attribute_t *attribute);

/* ---- Value names (value_map.c) ------------------------------------------ */

/* A hash map from ONNX value names to MLIR values. Keys are borrowed from
 * the model, which outlives the map. */
typedef struct value_map {
  const char **keys;
  MlirValue *values;
  size_t capacity, count;
} value_map_t;

bool value_map_init(value_map_t *map, size_t expected);
void value_map_free(value_map_t *map);
bool value_map_put(value_map_t *map, const char *key, MlirValue value);
/* Returns true and sets `*value` when `key` is present. */
bool value_map_get(const value_map_t *map, const char *key, MlirValue *value);

#endif /* IQ_IMPORT_INTERNAL_H */
