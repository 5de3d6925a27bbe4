/* iq-pack-int4: prepares the W4A4 linears of a quantized LLaMA graph for
 * the int4 kernels. A linear qualifies when its weight is the dequantization
 * of 4-bit per-channel codes (iq-quantize's output) and its input is a
 * 4-bit per-token fake quantization, unsigned and asymmetric. For each one
 * the pass packs the codes into the layout of iqk_weights_pack with the
 * zero points, code sums and scales (iq/int4_model.h), adds the result to
 * the weight store as a u8 tensor named BASE.int4, makes an iq.weight op
 * for it, and names that tensor in the linear's iq.int4_weights attribute.
 * The fake-quantized float ops stay in place, so the float lowering still
 * works; the lowering runs the linear on the kernels when the attribute is
 * there. Other linears (the o_proj input is quantized per head group) are
 * left alone. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"

#include "LlamaGraph.h"
#include "iq/builder.h"
#include "iq/int4_model.h"
#include "iq/ir.h"
#include "iq/passes.h"
#include "iq/weight_overlay.h"

#define PASS "iq-pack-int4"

static MlirOperation owner_of(MlirOperation op, intptr_t index) {
  MlirValue value = mlirOperationGetOperand(op, index);
  return mlirValueIsAOpResult(value) ? mlirOpResultGetOwner(value) : (MlirOperation){NULL};
}

static int64_t int_attribute(MlirOperation op, const char *name) {
  MlirAttribute attr = mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString(name));
  return !mlirAttributeIsNull(attr) && mlirAttributeIsAInteger(attr)
             ? mlirIntegerAttrGetValueInt(attr)
             : -1;
}

static bool bool_attribute(MlirOperation op, const char *name) {
  MlirAttribute attr = mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString(name));
  return !mlirAttributeIsNull(attr) && mlirAttributeIsABool(attr) && mlirBoolAttrGetValue(attr);
}

static bool string_attribute_is(MlirOperation op, const char *name, const char *value) {
  MlirAttribute attr = mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString(name));
  if (mlirAttributeIsNull(attr) || !mlirAttributeIsAString(attr))
    return false;
  MlirStringRef text = mlirStringAttrGetValue(attr);
  return text.length == strlen(value) && memcmp(text.data, value, text.length) == 0;
}

static bool weight_name(MlirOperation weight, char *buffer, size_t size) {
  MlirAttribute attr =
      mlirOperationGetAttributeByName(weight, mlirStringRefCreateFromCString("name"));
  if (mlirAttributeIsNull(attr) || !mlirAttributeIsAString(attr))
    return false;
  MlirStringRef name = mlirStringAttrGetValue(attr);
  snprintf(buffer, size, "%.*s", (int)name.length, name.data);
  return true;
}

/* True when the linear's input is a 4-bit per-token unsigned asymmetric
 * fake quantization along the last axis. */
static bool has_int4_input(MlirOperation linear) {
  MlirOperation dequantize = owner_of(linear, 0);
  if (!llama_is(dequantize, "dequantize"))
    return false;
  MlirOperation quantize = owner_of(dequantize, 0);
  if (!llama_is(quantize, "quantize"))
    return false;
  for (intptr_t i = 1; i < 3; ++i) {
    MlirOperation other = owner_of(dequantize, i);
    if (mlirOperationIsNull(other) || !mlirOperationEqual(other, quantize))
      return false;
  }
  int64_t rank = mlirShapedTypeGetRank(mlirValueGetType(mlirOperationGetOperand(quantize, 0)));
  return int_attribute(quantize, "bits") == 4 &&
         string_attribute_is(quantize, "granularity", "per_token") &&
         int_attribute(quantize, "axis") == rank - 1 && !bool_attribute(quantize, "symmetric") &&
         !bool_attribute(quantize, "signed");
}

/* The weight dequantization of a linear when it is 4-bit per-channel
 * codes, scales and zero points from iq.weight ops; else a null op. */
static MlirOperation int4_weight(MlirOperation linear) {
  MlirOperation dequantize = owner_of(linear, 1);
  if (!llama_is(dequantize, "dequantize") || mlirOperationGetNumOperands(linear) != 2 ||
      int_attribute(dequantize, "bits") != 4 || int_attribute(dequantize, "axis") != 1 ||
      !string_attribute_is(dequantize, "granularity", "per_channel"))
    return (MlirOperation){NULL};
  for (intptr_t i = 0; i < 3; ++i)
    if (!llama_is(owner_of(dequantize, i), "weight"))
      return (MlirOperation){NULL};
  return dequantize;
}

/* Reads a float32 [n, 1] parameter tensor. */
static bool read_parameters(MlirOperation module, MlirOperation weight, int64_t n, float *values,
                            iq_error_t **error) {
  char name[512];
  if (!weight_name(weight, name, sizeof name))
    return iq_error_set(error, NULL, NULL, NULL, "an iq.weight op has no name");
  iq_dtype_t dtype;
  const uint8_t *data;
  uint64_t bytes;
  if (!iq_overlay_read_bytes(module, name, &dtype, &data, &bytes, error))
    return false;
  if (dtype != IQ_DTYPE_F32 || bytes != (uint64_t)n * 4)
    return iq_error_set(error, NULL, name, "quantize the weights with iq-quantize",
                        "expected %lld float32 values, found %llu bytes of %s", (long long)n,
                        (unsigned long long)bytes, iq_dtype_name(dtype) ? iq_dtype_name(dtype) : "?");
  memcpy(values, data, (size_t)bytes);
  return true;
}

/* Packs the codes of `dequantize` ([n, k] u4, low nibble first) with their
 * per-row scales and zero points into `packed` (iq_int4_packed_bytes). */
static bool pack_weight(MlirOperation module, MlirOperation dequantize, int64_t n, int64_t k,
                        uint8_t *packed, iq_error_t **error) {
  char codes_name[512];
  weight_name(owner_of(dequantize, 0), codes_name, sizeof codes_name);
  iq_dtype_t dtype;
  const uint8_t *codes;
  uint64_t bytes;
  if (!iq_overlay_read_bytes(module, codes_name, &dtype, &codes, &bytes, error))
    return false;
  if (dtype != IQ_DTYPE_U4 || bytes != (uint64_t)(n * k + 1) / 2)
    return iq_error_set(error, NULL, codes_name, "quantize the weights with iq-quantize",
                        "expected %lld x %lld u4 codes, found %llu bytes of %s", (long long)n,
                        (long long)k, (unsigned long long)bytes,
                        iq_dtype_name(dtype) ? iq_dtype_name(dtype) : "?");
  float *scales = malloc((size_t)n * sizeof *scales);
  float *zeros = malloc((size_t)n * sizeof *zeros);
  if (!scales || !zeros) {
    free(scales);
    free(zeros);
    return iq_error_set(error, NULL, codes_name, NULL, "out of memory");
  }
  bool ok = read_parameters(module, owner_of(dequantize, 1), n, scales, error) &&
            read_parameters(module, owner_of(dequantize, 2), n, zeros, error);

  int64_t rows = iq_int4_padded_rows(n), blocks = (k + 63) / 64;
  int64_t code_bytes = iq_int4_code_bytes(n, k);
  memset(packed, 0, (size_t)iq_int4_packed_bytes(n, k));
  int32_t *zero_out = (int32_t *)(void *)(packed + code_bytes);
  int32_t *sum_out = (int32_t *)(void *)(packed + code_bytes + 4 * rows);
  float *scale_out = (float *)(void *)(packed + code_bytes + 8 * rows);
  for (int64_t r = 0; ok && r < n; ++r) {
    /* The integer kernels need whole zero points; iq-quantize rounds them. */
    if (!(zeros[r] >= 0.0f && zeros[r] <= 15.0f && zeros[r] == nearbyintf(zeros[r]))) {
      ok = iq_error_set(error, NULL, codes_name, "quantize the weights with iq-quantize",
                        "zero point %g of row %lld is not an integer in 0..15", (double)zeros[r],
                        (long long)r);
      break;
    }
    int64_t group = r / 4, lane = r % 4;
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) {
      uint64_t index = (uint64_t)(r * k + i);
      uint8_t code = (uint8_t)((codes[index / 2] >> (index % 2 ? 4 : 0)) & 15);
      int64_t block = i / 64, j = i % 64;
      uint8_t *byte = &packed[(group * blocks + block) * 128 + lane * 32 + j % 32];
      *byte |= (uint8_t)(j < 32 ? code : code << 4);
      sum += code;
    }
    zero_out[r] = (int32_t)zeros[r];
    sum_out[r] = sum;
    scale_out[r] = scales[r];
  }
  free(scales);
  free(zeros);
  return ok;
}

static bool pack_linear(MlirOperation module, MlirOperation linear, iq_error_t **error) {
  MlirOperation dequantize = int4_weight(linear);
  if (mlirOperationIsNull(dequantize) || !has_int4_input(linear))
    return true;
  MlirType type = mlirValueGetType(mlirOperationGetResult(dequantize, 0));
  if (!mlirTypeIsARankedTensor(type) || mlirShapedTypeGetRank(type) != 2 ||
      !mlirShapedTypeHasStaticShape(type))
    return iq_error_set(error, NULL, NULL, NULL, "the quantized weight needs a static 2-D shape");
  int64_t n = mlirShapedTypeGetDimSize(type, 0), k = mlirShapedTypeGetDimSize(type, 1);
  if (n < 1 || k < 1 || k > (1 << 20) || n > (INT64_C(1) << 31))
    return iq_error_set(error, NULL, NULL, "the int4 kernels take 1 to 2^20 input channels",
                        "cannot pack a [%lld, %lld] weight", (long long)n, (long long)k);

  char codes_name[512], packed_name[600];
  weight_name(owner_of(dequantize, 0), codes_name, sizeof codes_name);
  size_t length = strlen(codes_name);
  if (length > 6 && strcmp(codes_name + length - 6, ".codes") == 0)
    codes_name[length - 6] = '\0';
  snprintf(packed_name, sizeof packed_name, "%s.int4", codes_name);

  int64_t bytes = iq_int4_packed_bytes(n, k);
  uint8_t *packed = malloc((size_t)bytes);
  if (!packed)
    return iq_error_set(error, NULL, packed_name, NULL, "out of memory");
  bool ok = pack_weight(module, dequantize, n, k, packed, error) &&
            iq_overlay_put(packed_name, IQ_DTYPE_U8, 1, &bytes, packed, (uint64_t)bytes, error);
  free(packed);
  if (!ok)
    return false;

  MlirContext context = mlirOperationGetContext(linear);
  iq_builder_t builder = {.context = context, .block = mlirOperationGetBlock(linear),
                          .before = linear};
  MlirType packed_type = iq_tensor_type(context, 1, &bytes, mlirIntegerTypeUnsignedGet(context, 8));
  MlirNamedAttribute attributes[2] = {
      iq_named(context, "name", iq_string_attr(context, packed_name)),
      iq_named(context, "transposed", iq_bool_attr(context, false)),
  };
  MlirOperation weight = iq_build(&builder, "iq.weight", mlirOperationGetLocation(linear), 0,
                                  NULL, 1, &packed_type, 2, attributes);
  if (mlirOperationIsNull(weight))
    return iq_error_set(error, NULL, packed_name, NULL, "cannot create the iq.weight op");
  mlirOperationSetAttributeByName(linear, mlirStringRefCreateFromCString(IQ_INT4_WEIGHTS_ATTRIBUTE),
                                  iq_string_attr(context, packed_name));
  return true;
}

static bool run_pack_int4(MlirOperation op, const iq_pass_options_t *options) {
  (void)options;
  llama_graph_t graph;
  if (!llama_graph_find(op, PASS, &graph)) {
    llama_graph_free(&graph);
    return false;
  }
  bool ok = true;
  iq_error_t *error = NULL;
  MlirOperation where = op;
  for (int64_t i = 0; ok && i < graph.num_layers; ++i) {
    llama_layer_t *layer = &graph.layers[i];
    MlirOperation projections[7] = {layer->q,    layer->k,  layer->v,   layer->o,
                                    layer->gate, layer->up, layer->down};
    for (int p = 0; ok && p < 7; ++p) {
      where = projections[p];
      ok = pack_linear(op, projections[p], &error);
    }
  }
  llama_graph_free(&graph);
  return ok || llama_emit_error(where, PASS, error);
}

const iq_pass_info_t iq_pack_int4_pass = {
    .name = "iq-pack-int4",
    .description = "Pack the 4-bit weights of W4A4 linears (per-token 4-bit inputs) into the "
                   "int4 kernels' layout and mark the linears for the int4 lowering",
    .options = NULL,
    .num_options = 0,
    .run = run_pack_int4,
};
