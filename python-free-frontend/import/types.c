/* Conversions from ONNX data types, tensors and attributes to MLIR types
 * and attributes. */
#include "import_internal.h"

#include <stdlib.h>
#include <string.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"

MlirType import_element_type(MlirContext context, int32_t data_type) {
  switch (data_type) {
  case IQ_ONNX_FLOAT:
    return mlirF32TypeGet(context);
  case IQ_ONNX_FLOAT16:
    return mlirF16TypeGet(context);
  case IQ_ONNX_BFLOAT16:
    return mlirBF16TypeGet(context);
  case IQ_ONNX_DOUBLE:
    return mlirF64TypeGet(context);
  case IQ_ONNX_INT8:
    return mlirIntegerTypeGet(context, 8);
  case IQ_ONNX_INT16:
    return mlirIntegerTypeGet(context, 16);
  case IQ_ONNX_INT32:
    return mlirIntegerTypeGet(context, 32);
  case IQ_ONNX_INT64:
    return mlirIntegerTypeGet(context, 64);
  case IQ_ONNX_INT4:
    return mlirIntegerTypeGet(context, 4);
  case IQ_ONNX_UINT8:
    return mlirIntegerTypeUnsignedGet(context, 8);
  case IQ_ONNX_UINT16:
    return mlirIntegerTypeUnsignedGet(context, 16);
  case IQ_ONNX_UINT32:
    return mlirIntegerTypeUnsignedGet(context, 32);
  case IQ_ONNX_UINT64:
    return mlirIntegerTypeUnsignedGet(context, 64);
  case IQ_ONNX_UINT4:
    return mlirIntegerTypeUnsignedGet(context, 4);
  case IQ_ONNX_BOOL:
    return mlirIntegerTypeGet(context, 1);
  default:
    return (MlirType){NULL};
  }
}

bool import_store_dtype(int32_t data_type, iq_dtype_t *dtype) {
  switch (data_type) {
  case IQ_ONNX_FLOAT: *dtype = IQ_DTYPE_F32; return true;
  case IQ_ONNX_FLOAT16: *dtype = IQ_DTYPE_F16; return true;
  case IQ_ONNX_BFLOAT16: *dtype = IQ_DTYPE_BF16; return true;
  case IQ_ONNX_DOUBLE: *dtype = IQ_DTYPE_F64; return true;
  case IQ_ONNX_INT8: *dtype = IQ_DTYPE_I8; return true;
  case IQ_ONNX_UINT8: *dtype = IQ_DTYPE_U8; return true;
  case IQ_ONNX_INT16: *dtype = IQ_DTYPE_I16; return true;
  case IQ_ONNX_UINT16: *dtype = IQ_DTYPE_U16; return true;
  case IQ_ONNX_INT32: *dtype = IQ_DTYPE_I32; return true;
  case IQ_ONNX_UINT32: *dtype = IQ_DTYPE_U32; return true;
  case IQ_ONNX_INT64: *dtype = IQ_DTYPE_I64; return true;
  case IQ_ONNX_UINT64: *dtype = IQ_DTYPE_U64; return true;
  case IQ_ONNX_BOOL: *dtype = IQ_DTYPE_BOOL; return true;
  case IQ_ONNX_INT4: *dtype = IQ_DTYPE_I4; return true;
  case IQ_ONNX_UINT4: *dtype = IQ_DTYPE_U4; return true;
  default: return false;
  }
}

MlirType import_tensor_type(MlirContext context, const iq_onnx_tensor_t *tensor) {
  MlirType element = import_element_type(context, tensor->data_type);
  if (mlirTypeIsNull(element))
    return element;
  return iq_tensor_type(context, (intptr_t)tensor->rank, tensor->dims, element);
}

MlirAttribute import_dense_attr(MlirContext context, const iq_onnx_tensor_t *tensor) {
  MlirType type = import_tensor_type(context, tensor);
  if (mlirTypeIsNull(type) || iq_onnx_type_bits(tensor->data_type) < 8)
    return mlirAttributeGetNull();
  if (tensor->data_type == IQ_ONNX_BOOL) {
    /* MLIR packs i1 elements into bits, ONNX stores a byte per element. */
    if (tensor->num_elements > 4096)
      return mlirAttributeGetNull();
    int values[4096];
    for (uint64_t i = 0; i < tensor->num_elements; ++i)
      values[i] = tensor->data[i] != 0;
    return mlirDenseElementsAttrBoolGet(type, (intptr_t)tensor->num_elements, values);
  }
  return mlirDenseElementsAttrRawBufferGet(type, (size_t)tensor->byte_size, tensor->data);
}

MlirAttribute import_attribute(MlirContext context, const iq_onnx_attribute_t *attribute) {
  switch (attribute->kind) {
  case IQ_ONNX_ATTR_FLOAT:
    return mlirFloatAttrDoubleGet(context, mlirF32TypeGet(context), attribute->f);
  case IQ_ONNX_ATTR_INT:
    return mlirIntegerAttrGet(mlirIntegerTypeSignedGet(context, 64), attribute->i);
  case IQ_ONNX_ATTR_STRING:
    return mlirStringAttrGet(context, mlirStringRefCreate(attribute->s, attribute->s_length));
  case IQ_ONNX_ATTR_INTS:
    return mlirDenseI64ArrayGet(context, (intptr_t)attribute->count, attribute->ints);
  case IQ_ONNX_ATTR_FLOATS:
    return mlirDenseF32ArrayGet(context, (intptr_t)attribute->count, attribute->floats);
  case IQ_ONNX_ATTR_TENSOR:
    return attribute->tensor ? import_dense_attr(context, attribute->tensor)
                             : mlirAttributeGetNull();
  default:
    return mlirAttributeGetNull();
  }
}
