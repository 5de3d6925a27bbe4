/* Small helpers for building IR through the MLIR C API, which takes every
 * op as an OperationState. */
#ifndef IQ_BUILDER_H
#define IQ_BUILDER_H

#include <stdbool.h>
#include <stdint.h>

#include "mlir-c/IR.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where new ops go: appended to `block`, or before `before` when it is not
 * null. */
typedef struct iq_builder {
  MlirContext context;
  MlirBlock block;
  MlirOperation before;
} iq_builder_t;

/* Creates an op and inserts it at the builder's position. Returns a null op
 * when MLIR rejects the state (the reason is emitted as a diagnostic). */
MlirOperation iq_build(iq_builder_t *builder, const char *name, MlirLocation location,
                       intptr_t num_operands, const MlirValue *operands, intptr_t num_results,
                       const MlirType *results, intptr_t num_attributes,
                       const MlirNamedAttribute *attributes);

MlirNamedAttribute iq_named(MlirContext context, const char *name, MlirAttribute value);

MlirAttribute iq_string_attr(MlirContext context, const char *value);
MlirAttribute iq_i64_attr(MlirContext context, int64_t value);
MlirAttribute iq_f32_attr(MlirContext context, double value);
MlirAttribute iq_bool_attr(MlirContext context, bool value);

/* A ranked tensor type; sizes below 0 are dynamic. Returns a null type
 * for a rank above 16. */
MlirType iq_tensor_type(MlirContext context, intptr_t rank, const int64_t *dims, MlirType element);

/* Result `index` of `op`. */
static inline MlirValue iq_result(MlirOperation op, intptr_t index) {
  return mlirOperationGetResult(op, index);
}

#ifdef __cplusplus
}
#endif

#endif /* IQ_BUILDER_H */
