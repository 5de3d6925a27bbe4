/* Navigation helpers for recognising LLaMA structure in imported graphs. */
#include "RaiseLlamaMatch.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"

#include "iq/weight_store.h"

bool match_is(MlirOperation op, const char *name) {
  if (mlirOperationIsNull(op))
    return false;
  MlirStringRef actual = mlirIdentifierStr(mlirOperationGetName(op));
  return actual.length == strlen(name) && memcmp(actual.data, name, actual.length) == 0;
}

MlirOperation match_def(MlirValue value) {
  if (mlirValueIsNull(value) || !mlirValueIsAOpResult(value))
    return (MlirOperation){NULL};
  return mlirOpResultGetOwner(value);
}

MlirValue match_skip_casts(MlirValue value) {
  for (int depth = 0; depth < 8; ++depth) {
    MlirOperation op = match_def(value);
    if (!match_is(op, "onnx.Cast") && !match_is(op, "onnx.Identity"))
      break;
    value = mlirOperationGetOperand(op, 0);
  }
  return value;
}

bool match_weight(MlirValue value, intptr_t rank, MlirOperation *source) {
  MlirOperation op = match_def(match_skip_casts(value));
  if (!match_is(op, "iq.weight") && !match_is(op, "arith.constant"))
    return false;
  MlirType type = mlirValueGetType(mlirOperationGetResult(op, 0));
  if (!mlirTypeIsARankedTensor(type) || mlirShapedTypeGetRank(type) != rank)
    return false;
  *source = op;
  return true;
}

/* Returns true for the element types mlirDenseElementsAttrGetInt64Value
 * accepts, signless and signed 64-bit integers. MLIR checks the type only
 * in builds with assertions, which Debian's LLVM 19 is not, and there a
 * narrower type is read past the end of its data. */
static bool is_int64(MlirType type) {
  return mlirTypeIsAInteger(type) && mlirIntegerTypeGetWidth(type) == 64 &&
         !mlirIntegerTypeIsUnsigned(type);
}

bool match_constant_scalar(MlirValue value, double *result) {
  MlirOperation op = match_def(match_skip_casts(value));
  if (!match_is(op, "arith.constant"))
    return false;
  MlirAttribute attr = mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("value"));
  if (mlirAttributeIsNull(attr) || !mlirAttributeIsADenseElements(attr) ||
      mlirElementsAttrGetNumElements(attr) != 1)
    return false;
  MlirType element = mlirShapedTypeGetElementType(mlirAttributeGetType(attr));
  if (mlirTypeIsAF32(element))
    *result = mlirDenseElementsAttrGetFloatValue(attr, 0);
  else if (mlirTypeIsAF64(element))
    *result = mlirDenseElementsAttrGetDoubleValue(attr, 0);
  else if (is_int64(element))
    *result = (double)mlirDenseElementsAttrGetInt64Value(attr, 0);
  else
    return false;
  return true;
}

/* IEEE half and bfloat16 to float, for the rotary tables of fp16 exports. */
static float half_to_float(uint16_t h) {
  int sign = h >> 15, exponent = (h >> 10) & 31, mantissa = h & 1023;
  float value;
  if (exponent == 0)
    value = ldexpf((float)mantissa, -24);
  else if (exponent == 31)
    value = mantissa ? NAN : INFINITY;
  else
    value = ldexpf((float)(mantissa | 1024), exponent - 25);
  return sign ? -value : value;
}

static float bfloat_to_float(uint16_t b) {
  uint32_t bits = (uint32_t)b << 16;
  float value;
  memcpy(&value, &bits, sizeof value);
  return value;
}

static iq_weight_store_t *open_store;

void match_release_store(void) {
  iq_weight_store_close(open_store);
  open_store = NULL;
}

static bool read_stored(MlirOperation weight, const char *store_path, float *values,
                        size_t capacity, size_t *count) {
  if (!store_path)
    return false;
  if (!open_store) {
    open_store = iq_weight_store_open(store_path, NULL);
    if (!open_store)
      return false;
  }
  MlirAttribute name_attr =
      mlirOperationGetAttributeByName(weight, mlirStringRefCreateFromCString("name"));
  MlirStringRef name = mlirStringAttrGetValue(name_attr);
  char buffer[512];
  if (name.length >= sizeof buffer)
    return false;
  memcpy(buffer, name.data, name.length);
  buffer[name.length] = '\0';
  const iq_weight_tensor_t *tensor = iq_weight_store_find(open_store, buffer);
  if (!tensor)
    return false;
  *count = (size_t)tensor->num_elements;
  size_t n = *count < capacity ? *count : capacity;
  for (size_t i = 0; i < n; ++i) {
    if (tensor->dtype == IQ_DTYPE_F32) {
      memcpy(&values[i], tensor->data + 4 * i, 4);
    } else if (tensor->dtype == IQ_DTYPE_F16 || tensor->dtype == IQ_DTYPE_BF16) {
      uint16_t bits;
      memcpy(&bits, tensor->data + 2 * i, 2);
      values[i] = tensor->dtype == IQ_DTYPE_F16 ? half_to_float(bits) : bfloat_to_float(bits);
    } else {
      return false;
    }
  }
  return true;
}

bool match_read_floats(MlirValue value, const char *store_path, float *values, size_t capacity,
                       size_t *count) {
  MlirOperation op = match_def(match_skip_casts(value));
  if (match_is(op, "iq.weight"))
    return read_stored(op, store_path, values, capacity, count);
  if (!match_is(op, "arith.constant"))
    return false;
  MlirAttribute attr = mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("value"));
  if (mlirAttributeIsNull(attr) || !mlirAttributeIsADenseElements(attr))
    return false;
  MlirType element = mlirShapedTypeGetElementType(mlirAttributeGetType(attr));
  if (!mlirTypeIsAF32(element))
    return false;
  *count = (size_t)mlirElementsAttrGetNumElements(attr);
  bool splat = mlirDenseElementsAttrIsSplat(attr);
  for (size_t i = 0; i < *count && i < capacity; ++i)
    values[i] = splat ? mlirDenseElementsAttrGetFloatSplatValue(attr)
                      : mlirDenseElementsAttrGetFloatValue(attr, (intptr_t)i);
  return true;
}

void match_for_each_user(MlirValue value,
                         bool (*visit)(MlirOperation user, intptr_t operand, void *data),
                         void *data) {
  for (MlirOpOperand use = mlirValueGetFirstUse(value); !mlirOpOperandIsNull(use);
       use = mlirOpOperandGetNextUse(use)) {
    if (!visit(mlirOpOperandGetOwner(use), (intptr_t)mlirOpOperandGetOperandNumber(use), data))
      return;
  }
}

MlirOperation match_single_user(MlirValue value) {
  MlirOpOperand use = mlirValueGetFirstUse(value);
  if (mlirOpOperandIsNull(use) || !mlirOpOperandIsNull(mlirOpOperandGetNextUse(use)))
    return (MlirOperation){NULL};
  return mlirOpOperandGetOwner(use);
}
