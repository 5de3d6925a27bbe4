/* The ONNX ops iq imports one to one, as ops of the `onnx` namespace.
 *
 * IRDL in MLIR 19 binds one constraint variable to one type, so a variadic
 * operand list must have a single type, and ONNX ops whose inputs differ
 * (Concat, Attention, every op with optional inputs) cannot be declared in
 * it. The `onnx` ops are therefore unregistered ops, which iq contexts
 * accept, and this table is their verifier: op name and operand and result
 * counts. Omitted optional inputs in the middle of an ONNX input list are
 * imported as values of `none` type from an `onnx.NoValue` op. */
#include <stdio.h>
#include <string.h>

#include "mlir-c/BuiltinTypes.h"
#include "mlir-c/Diagnostics.h"

#include "iq/ir.h"

#define VARIADIC (-1)

static const iq_onnx_op_info_t onnx_ops[] = {
    /* ai.onnx: generic ops of LLaMA exports. */
    {"", "Add", 2, 2, 1, 1},
    {"", "Cast", 1, 1, 1, 1},
    {"", "Concat", 1, VARIADIC, 1, 1},
    {"", "Constant", 0, 0, 1, 1},
    {"", "ConstantOfShape", 1, 1, 1, 1},
    {"", "Cos", 1, 1, 1, 1},
    {"", "DequantizeLinear", 2, 3, 1, 1},
    {"", "Div", 2, 2, 1, 1},
    {"", "DynamicQuantizeLinear", 1, 1, 3, 3},
    {"", "Equal", 2, 2, 1, 1},
    {"", "Expand", 2, 2, 1, 1},
    {"", "Gather", 2, 2, 1, 1},
    {"", "Gemm", 2, 3, 1, 1},
    {"", "Identity", 1, 1, 1, 1},
    {"", "Less", 2, 2, 1, 1},
    {"", "MatMul", 2, 2, 1, 1},
    {"", "MatMulInteger", 2, 4, 1, 1},
    {"", "Mul", 2, 2, 1, 1},
    {"", "Neg", 1, 1, 1, 1},
    {"", "Pow", 2, 2, 1, 1},
    {"", "QuantizeLinear", 2, 3, 1, 1},
    {"", "Range", 3, 3, 1, 1},
    {"", "Reciprocal", 1, 1, 1, 1},
    {"", "ReduceMean", 1, 2, 1, 1},
    {"", "Reshape", 2, 2, 1, 1},
    {"", "Shape", 1, 1, 1, 1},
    {"", "Sigmoid", 1, 1, 1, 1},
    {"", "Sin", 1, 1, 1, 1},
    {"", "Slice", 3, 5, 1, 1},
    {"", "Softmax", 1, 1, 1, 1},
    {"", "Sqrt", 1, 1, 1, 1},
    {"", "Squeeze", 1, 2, 1, 1},
    {"", "Sub", 2, 2, 1, 1},
    {"", "Tile", 2, 2, 1, 1},
    {"", "Transpose", 1, 1, 1, 1},
    {"", "Trilu", 1, 2, 1, 1},
    {"", "Unsqueeze", 1, 2, 1, 1},
    {"", "Where", 3, 3, 1, 1},
    /* Mask arithmetic of torch.onnx exports (causal and padding masks). */
    {"", "And", 2, 2, 1, 1},
    {"", "Exp", 1, 1, 1, 1},
    {"", "Greater", 2, 2, 1, 1},
    {"", "GreaterOrEqual", 2, 2, 1, 1},
    {"", "LessOrEqual", 2, 2, 1, 1},
    {"", "Max", 1, -1, 1, 1},
    {"", "Min", 1, -1, 1, 1},
    {"", "Not", 1, 1, 1, 1},
    {"", "Or", 2, 2, 1, 1},
    /* ai.onnx opset 23 LLaMA ops. Attention's seventh input,
     * nonpad_kv_seqlen, came with opset 24. */
    {"", "Attention", 3, 7, 1, 4},
    {"", "RMSNormalization", 2, 2, 1, 1},
    {"", "RotaryEmbedding", 3, 4, 1, 1},
    /* onnxruntime registers its contrib SimplifiedLayerNormalization in the
     * default domain as well, and genai exports use it there. */
    {"", "SimplifiedLayerNormalization", 2, 2, 1, 2},
    /* com.microsoft ops of onnxruntime-genai exports. */
    {"com.microsoft", "GroupQueryAttention", 7, 12, 3, 4},
    {"com.microsoft", "MatMulNBits", 3, 6, 1, 1},
    {"com.microsoft", "MultiHeadAttention", 1, 10, 1, 4},
    {"com.microsoft", "RotaryEmbedding", 4, 4, 1, 1},
    {"com.microsoft", "SimplifiedLayerNormalization", 2, 2, 1, 2},
    {"com.microsoft", "SkipSimplifiedLayerNormalization", 3, 4, 1, 4},
};

const iq_onnx_op_info_t *iq_onnx_op_find(const char *domain, const char *op_type) {
  if (strcmp(domain, "ai.onnx") == 0)
    domain = "";
  for (size_t i = 0; i < sizeof onnx_ops / sizeof onnx_ops[0]; ++i)
    if (strcmp(onnx_ops[i].domain, domain) == 0 && strcmp(onnx_ops[i].op_type, op_type) == 0)
      return &onnx_ops[i];
  return NULL;
}

const iq_onnx_op_info_t *iq_onnx_ops_list(size_t *count) {
  *count = sizeof onnx_ops / sizeof onnx_ops[0];
  return onnx_ops;
}

size_t iq_onnx_op_name(const char *domain, const char *op_type, char *buffer, size_t size) {
  if (strcmp(domain, "ai.onnx") == 0)
    domain = "";
  int written = snprintf(buffer, size, "onnx.%s%s%s", domain, *domain ? "." : "", op_type);
  return written < 0 ? 0 : (size_t)written;
}

/* Splits "onnx.com.microsoft.Op" into its domain and op type: the op type
 * is the last dot-separated part. Returns NULL for a name outside the
 * `onnx` namespace. */
static const iq_onnx_op_info_t *find_by_op_name(const char *name, size_t length) {
  if (length < 6 || memcmp(name, "onnx.", 5) != 0)
    return NULL;
  const char *rest = name + 5;
  size_t rest_length = length - 5;
  const char *last_dot = NULL;
  for (size_t i = 0; i < rest_length; ++i)
    if (rest[i] == '.')
      last_dot = rest + i;

  char domain[64] = "", op_type[64];
  const char *type_start = last_dot ? last_dot + 1 : rest;
  size_t domain_length = last_dot ? (size_t)(last_dot - rest) : 0;
  size_t type_length = rest_length - (size_t)(type_start - rest);
  if (domain_length >= sizeof domain || type_length >= sizeof op_type)
    return NULL;
  memcpy(domain, rest, domain_length);
  domain[domain_length] = '\0';
  memcpy(op_type, type_start, type_length);
  op_type[type_length] = '\0';
  return iq_onnx_op_find(domain, op_type);
}

static bool allow_unregistered;

void iq_set_allow_unregistered(bool allow) { allow_unregistered = allow; }

/* Checks one op that the context does not know: an `onnx` op must be in
 * the table with a valid operand and result count; anything else is
 * rejected unless unregistered dialects were allowed. */
bool iq_verify_unregistered_op(MlirOperation op) {
  MlirStringRef name = mlirIdentifierStr(mlirOperationGetName(op));
  char message[320];
  if (name.length == strlen("onnx.NoValue") && memcmp(name.data, "onnx.NoValue", name.length) == 0) {
    if (mlirOperationGetNumOperands(op) == 0 && mlirOperationGetNumResults(op) == 1 &&
        mlirTypeIsANone(mlirValueGetType(mlirOperationGetResult(op, 0))))
      return true;
    mlirEmitError(mlirOperationGetLocation(op),
                  "'onnx.NoValue' op must have no operands and one result of type none");
    return false;
  }

  if (name.length > 5 && memcmp(name.data, "onnx.", 5) == 0) {
    const iq_onnx_op_info_t *info = find_by_op_name(name.data, name.length);
    if (!info) {
      snprintf(message, sizeof message,
               "'%.*s' is not an ONNX op iq supports; the supported ops are listed in "
               "docs/onnx-import.md",
               (int)name.length, name.data);
      mlirEmitError(mlirOperationGetLocation(op), message);
      return false;
    }
    intptr_t inputs = mlirOperationGetNumOperands(op);
    intptr_t outputs = mlirOperationGetNumResults(op);
    if (inputs < info->min_inputs || (info->max_inputs != VARIADIC && inputs > info->max_inputs)) {
      snprintf(message, sizeof message, "'%.*s' op takes %d to %d operands, but has %ld",
               (int)name.length, name.data, info->min_inputs, info->max_inputs, (long)inputs);
      if (info->max_inputs == VARIADIC)
        snprintf(message, sizeof message, "'%.*s' op takes at least %d operands, but has %ld",
                 (int)name.length, name.data, info->min_inputs, (long)inputs);
      mlirEmitError(mlirOperationGetLocation(op), message);
      return false;
    }
    if (outputs < info->min_outputs || outputs > info->max_outputs) {
      snprintf(message, sizeof message, "'%.*s' op has %d to %d results, but has %ld",
               (int)name.length, name.data, info->min_outputs, info->max_outputs, (long)outputs);
      mlirEmitError(mlirOperationGetLocation(op), message);
      return false;
    }
    return true;
  }

  if (allow_unregistered)
    return true;
  snprintf(message, sizeof message,
           "operation '%.*s' belongs to an unregistered dialect; pass "
           "--allow-unregistered-dialect to accept it",
           (int)name.length, name.data);
  mlirEmitError(mlirOperationGetLocation(op), message);
  return false;
}
