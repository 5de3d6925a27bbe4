/* IR building helpers over the MLIR C API. */
#include "iq/builder.h"

#include <string.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"

MlirOperation iq_build(iq_builder_t *builder, const char *name, MlirLocation location,
                       intptr_t num_operands, const MlirValue *operands, intptr_t num_results,
                       const MlirType *results, intptr_t num_attributes,
                       const MlirNamedAttribute *attributes) {
  MlirOperationState state = mlirOperationStateGet(mlirStringRefCreateFromCString(name), location);
  if (num_operands > 0)
    mlirOperationStateAddOperands(&state, num_operands, operands);
  if (num_results > 0)
    mlirOperationStateAddResults(&state, num_results, results);
  if (num_attributes > 0)
    mlirOperationStateAddAttributes(&state, num_attributes, attributes);
  MlirOperation op = mlirOperationCreate(&state);
  if (mlirOperationIsNull(op))
    return op;
  if (!mlirOperationIsNull(builder->before))
    mlirBlockInsertOwnedOperationBefore(builder->block, builder->before, op);
  else
    mlirBlockAppendOwnedOperation(builder->block, op);
  return op;
}

MlirNamedAttribute iq_named(MlirContext context, const char *name, MlirAttribute value) {
  return mlirNamedAttributeGet(mlirIdentifierGet(context, mlirStringRefCreateFromCString(name)),
                               value);
}

MlirAttribute iq_string_attr(MlirContext context, const char *value) {
  return mlirStringAttrGet(context, mlirStringRefCreateFromCString(value));
}

MlirAttribute iq_i64_attr(MlirContext context, int64_t value) {
  return mlirIntegerAttrGet(mlirIntegerTypeGet(context, 64), value);
}

MlirAttribute iq_f32_attr(MlirContext context, double value) {
  return mlirFloatAttrDoubleGet(context, mlirF32TypeGet(context), value);
}

MlirAttribute iq_bool_attr(MlirContext context, bool value) {
  return mlirBoolAttrGet(context, value);
}

MlirType iq_tensor_type(MlirContext context, intptr_t rank, const int64_t *dims, MlirType element) {
  (void)context;
  int64_t shape[16];
  if (rank > 16)
    return (MlirType){NULL};
  for (intptr_t i = 0; i < rank; ++i)
    shape[i] = dims[i] < 0 ? mlirShapedTypeGetDynamicSize() : dims[i];
  return mlirRankedTensorTypeGet(rank, shape, element, mlirAttributeGetNull());
}
