/* Names and storage sizes of TensorProto.DataType values. */
#include "iq/onnx.h"

const char *iq_onnx_type_name(int32_t data_type) {
  switch (data_type) {
  case IQ_ONNX_UNDEFINED:
    return "undefined";
  case IQ_ONNX_FLOAT:
    return "float";
  case IQ_ONNX_UINT8:
    return "uint8";
  case IQ_ONNX_INT8:
    return "int8";
  case IQ_ONNX_UINT16:
    return "uint16";
  case IQ_ONNX_INT16:
    return "int16";
  case IQ_ONNX_INT32:
    return "int32";
  case IQ_ONNX_INT64:
    return "int64";
  case IQ_ONNX_STRING:
    return "string";
  case IQ_ONNX_BOOL:
    return "bool";
  case IQ_ONNX_FLOAT16:
    return "float16";
  case IQ_ONNX_DOUBLE:
    return "double";
  case IQ_ONNX_UINT32:
    return "uint32";
  case IQ_ONNX_UINT64:
    return "uint64";
  case IQ_ONNX_COMPLEX64:
    return "complex64";
  case IQ_ONNX_COMPLEX128:
    return "complex128";
  case IQ_ONNX_BFLOAT16:
    return "bfloat16";
  case IQ_ONNX_FLOAT8E4M3FN:
    return "float8e4m3fn";
  case IQ_ONNX_FLOAT8E4M3FNUZ:
    return "float8e4m3fnuz";
  case IQ_ONNX_FLOAT8E5M2:
    return "float8e5m2";
  case IQ_ONNX_FLOAT8E5M2FNUZ:
    return "float8e5m2fnuz";
  case IQ_ONNX_UINT4:
    return "uint4";
  case IQ_ONNX_INT4:
    return "int4";
  default:
    return "unknown";
  }
}

unsigned iq_onnx_type_bits(int32_t data_type) {
  switch (data_type) {
  case IQ_ONNX_UINT4:
  case IQ_ONNX_INT4:
    return 4;
  case IQ_ONNX_UINT8:
  case IQ_ONNX_INT8:
  case IQ_ONNX_BOOL:
  case IQ_ONNX_FLOAT8E4M3FN:
  case IQ_ONNX_FLOAT8E4M3FNUZ:
  case IQ_ONNX_FLOAT8E5M2:
  case IQ_ONNX_FLOAT8E5M2FNUZ:
    return 8;
  case IQ_ONNX_UINT16:
  case IQ_ONNX_INT16:
  case IQ_ONNX_FLOAT16:
  case IQ_ONNX_BFLOAT16:
    return 16;
  case IQ_ONNX_FLOAT:
  case IQ_ONNX_INT32:
  case IQ_ONNX_UINT32:
    return 32;
  case IQ_ONNX_INT64:
  case IQ_ONNX_DOUBLE:
  case IQ_ONNX_UINT64:
    return 64;
  default:
    /* STRING, COMPLEX64, COMPLEX128, UNDEFINED and values unknown to the
     * ONNX version the reader targets. */
    return 0;
  }
}
