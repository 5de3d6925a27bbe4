/* iq-pack-int4: prepares the W4A4 linears of a quantized LLaMA graph for
 * the int4 kernels. A linear qualifies when its weight is the dequantization
 * of 4-bit per-channel codes (iq-quantize's output) and its input is a
 * 4-bit per-token fake quantization, unsigned and asymmetric. For each one
 * the pass packs the codes into the layout of iqk_weights_pack with the
 * zero points, code sums and scales (iq/int4_model.h). It adds the result
 * to the weight store as a u8 tensor named BASE.int4 with an iq.weight op,
 * and names that tensor in the linear's iq.int4_weights attribute.
 * The fake-quantized float ops stay in place, so the float lowering still
 * works; the lowering runs the linear on the kernels when the attribute is
 * there. The o_proj input, quantized per head group, gets the grouped
 * layout, and an lm_head with 8-bit weights and inputs (iq-quantize's
 * lm-head=w8a8) the 8-bit layout, named BASE.int8. A float16 linear that
 * is not quantized (a residual converter) gets its diagonal blocks packed
 * as BASE.blocks. Other linears are left alone. */
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

/* The input quantizations the int4 kernels run: 4-bit per token, 4-bit
 * per group (the o_proj input) and 8-bit per token (an lm_head in w8a8). */
typedef enum { INPUT_NONE, INPUT_PER_TOKEN, INPUT_PER_GROUP, INPUT_8_BIT } input_kind_t;

/* Returns the kind of the linear's input quantization, which must be an
 * unsigned asymmetric fake quantization along the last axis. `group`
 * receives the group size of a per-group one. */
static input_kind_t int4_input(MlirOperation linear, int64_t k, int64_t *group) {
  MlirOperation dequantize = owner_of(linear, 0);
  if (!llama_is(dequantize, "dequantize"))
    return INPUT_NONE;
  MlirOperation quantize = owner_of(dequantize, 0);
  if (!llama_is(quantize, "quantize"))
    return INPUT_NONE;
  for (intptr_t i = 1; i < 3; ++i) {
    MlirOperation other = owner_of(dequantize, i);
    if (mlirOperationIsNull(other) || !mlirOperationEqual(other, quantize))
      return INPUT_NONE;
  }
  int64_t rank = mlirShapedTypeGetRank(mlirValueGetType(mlirOperationGetOperand(quantize, 0)));
  if (int_attribute(quantize, "axis") != rank - 1 || bool_attribute(quantize, "symmetric") ||
      bool_attribute(quantize, "signed"))
    return INPUT_NONE;
  int64_t bits = int_attribute(quantize, "bits");
  *group = int_attribute(quantize, "group_size");
  if (bits == 4 && string_attribute_is(quantize, "granularity", "per_token"))
    return INPUT_PER_TOKEN;
  if (bits == 8 && string_attribute_is(quantize, "granularity", "per_token"))
    return INPUT_8_BIT;
  /* The K cache's zero-in-range groups are not linear inputs. */
  if (bits == 4 && string_attribute_is(quantize, "granularity", "per_group") && *group > 0 &&
      k % *group == 0 && !bool_attribute(quantize, "zero_in_range"))
    return INPUT_PER_GROUP;
  return INPUT_NONE;
}

/* The weight dequantization of a linear when it is `bits`-bit per-channel
 * codes, scales and zero points from iq.weight ops; else a null op. */
static MlirOperation quantized_weight(MlirOperation linear, int bits) {
  MlirOperation dequantize = owner_of(linear, 1);
  if (!llama_is(dequantize, "dequantize") || mlirOperationGetNumOperands(linear) != 2 ||
      int_attribute(dequantize, "bits") != bits || int_attribute(dequantize, "axis") != 1 ||
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

/* Packs one 4-bit code per byte of `codes` ([n, k], row-major) in the plain
 * layout of iq/int4_model.h with the given zero points and scales. */
static void pack_plain(const uint8_t *codes, int64_t n, int64_t k, const int32_t *zeros,
                       const float *scales, uint8_t *packed) {
  int64_t rows = iq_int4_padded_rows(n), blocks = (k + 63) / 64;
  int64_t code_bytes = iq_int4_code_bytes(n, k);
  memset(packed, 0, (size_t)iq_int4_packed_bytes(n, k));
  int32_t *zero_out = (int32_t *)(void *)(packed + code_bytes);
  int32_t *sum_out = (int32_t *)(void *)(packed + code_bytes + 4 * rows);
  float *scale_out = (float *)(void *)(packed + code_bytes + 8 * rows);
  for (int64_t r = 0; r < n; ++r) {
    int64_t group = r / 4, lane = r % 4;
    int32_t sum = 0;
    for (int64_t i = 0; i < k; ++i) {
      uint8_t code = codes[r * k + i];
      int64_t block = i / 64, j = i % 64;
      uint8_t *byte = &packed[(group * blocks + block) * 128 + lane * 32 + j % 32];
      *byte |= (uint8_t)(j < 32 ? code : code << 4);
      sum += code;
    }
    zero_out[r] = zeros[r];
    sum_out[r] = sum;
    scale_out[r] = scales[r];
  }
}

/* Reads the `bits`-bit codes of `dequantize` into one byte per code and
 * its per-row scales and whole zero points (0 .. 2^bits - 1). */
static bool read_codes(MlirOperation module, MlirOperation dequantize, int64_t n, int64_t k,
                       int bits, uint8_t *codes, float *scales, int32_t *zeros,
                       iq_error_t **error) {
  char codes_name[512];
  weight_name(owner_of(dequantize, 0), codes_name, sizeof codes_name);
  iq_dtype_t dtype;
  const uint8_t *data;
  uint64_t bytes;
  if (!iq_overlay_read_bytes(module, codes_name, &dtype, &data, &bytes, error))
    return false;
  iq_dtype_t expected = bits == 8 ? IQ_DTYPE_U8 : IQ_DTYPE_U4;
  uint64_t expected_bytes = bits == 8 ? (uint64_t)(n * k) : (uint64_t)(n * k + 1) / 2;
  if (dtype != expected || bytes != expected_bytes)
    return iq_error_set(error, NULL, codes_name, "quantize the weights with iq-quantize",
                        "expected %lld x %lld %s codes, found %llu bytes of %s", (long long)n,
                        (long long)k, iq_dtype_name(expected), (unsigned long long)bytes,
                        iq_dtype_name(dtype) ? iq_dtype_name(dtype) : "?");
  for (uint64_t i = 0; i < (uint64_t)(n * k); ++i)
    codes[i] = bits == 8 ? data[i] : (uint8_t)((data[i / 2] >> (i % 2 ? 4 : 0)) & 15);
  float *float_zeros = malloc((size_t)n * sizeof *float_zeros);
  if (!float_zeros)
    return iq_error_set(error, NULL, codes_name, NULL, "out of memory");
  bool ok = read_parameters(module, owner_of(dequantize, 1), n, scales, error) &&
            read_parameters(module, owner_of(dequantize, 2), n, float_zeros, error);
  float maxq = (float)((1 << bits) - 1);
  for (int64_t r = 0; ok && r < n; ++r) {
    /* The integer kernels need whole zero points; iq-quantize rounds them. */
    if (!(float_zeros[r] >= 0.0f && float_zeros[r] <= maxq &&
          float_zeros[r] == nearbyintf(float_zeros[r])))
      ok = iq_error_set(error, NULL, codes_name, "quantize the weights with iq-quantize",
                        "zero point %g of row %lld is not an integer in 0..%g",
                        (double)float_zeros[r], (long long)r, (double)maxq);
    else
      zeros[r] = (int32_t)float_zeros[r];
  }
  free(float_zeros);
  return ok;
}

/* Fills `packed` (the size the input kind needs, iq/int4_model.h) from
 * the codes, scales and zero points of `dequantize`. */
static bool pack_weight(MlirOperation module, MlirOperation dequantize, input_kind_t kind,
                        int64_t n, int64_t k, int64_t group, uint8_t *packed, iq_error_t **error) {
  int bits = kind == INPUT_8_BIT ? 8 : 4;
  int64_t rows = iq_int4_padded_rows(n), plain = iq_int4_packed_bytes(n, k);
  uint8_t *codes = malloc((size_t)(n * k));
  float *scales = calloc((size_t)rows, sizeof *scales);
  int32_t *zeros = calloc((size_t)rows, sizeof *zeros);
  float *ones = malloc((size_t)rows * sizeof *ones);
  int32_t *no_zeros = calloc((size_t)rows, sizeof *no_zeros);
  bool ok = codes && scales && zeros && ones && no_zeros;
  if (!ok)
    iq_error_set(error, NULL, NULL, NULL, "out of memory for a [%lld, %lld] weight",
                 (long long)n, (long long)k);
  ok = ok && read_codes(module, dequantize, n, k, bits, codes, scales, zeros, error);
  for (int64_t r = 0; ok && r < rows; ++r)
    ones[r] = 1.0f;

  if (ok && kind == INPUT_PER_TOKEN) {
    pack_plain(codes, n, k, zeros, scales, packed);
  } else if (ok && kind == INPUT_PER_GROUP) {
    int64_t groups = k / group, slice_bytes = iq_int4_packed_bytes(n, group);
    uint8_t *slice = malloc((size_t)(n * group));
    ok = slice != NULL || iq_error_set(error, NULL, NULL, NULL, "out of memory");
    for (int64_t g = 0; ok && g < groups; ++g) {
      for (int64_t r = 0; r < n; ++r)
        memcpy(slice + r * group, codes + r * k + g * group, (size_t)group);
      pack_plain(slice, n, group, no_zeros, ones, packed + g * slice_bytes);
    }
    free(slice);
    int32_t *zero_out = (int32_t *)(void *)(packed + groups * slice_bytes);
    float *scale_out = (float *)(void *)(zero_out + rows);
    memcpy(zero_out, zeros, (size_t)rows * sizeof *zero_out);
    memcpy(scale_out, scales, (size_t)rows * sizeof *scale_out);
  } else if (ok) {
    /* 8-bit: the high and the low halves as two plain matrices. */
    uint8_t *halves = malloc((size_t)(n * k));
    ok = halves != NULL ||
         iq_error_set(error, NULL, NULL, NULL, "out of memory for a [%lld, %lld] weight",
                      (long long)n, (long long)k);
    for (int h = 0; ok && h < 2; ++h) {
      for (int64_t i = 0; i < n * k; ++i)
        halves[i] = h == 0 ? (uint8_t)(codes[i] >> 4) : (uint8_t)(codes[i] & 15);
      pack_plain(halves, n, k, no_zeros, ones, packed + h * plain);
    }
    free(halves);
    int32_t *zero_out = (int32_t *)(void *)(packed + 2 * plain);
    int32_t *sum_out = zero_out + rows;
    float *scale_out = (float *)(void *)(sum_out + rows);
    for (int64_t r = 0; ok && r < rows; ++r) {
      int32_t sum = 0;
      for (int64_t i = 0; r < n && i < k; ++i)
        sum += codes[r * k + i];
      zero_out[r] = r < n ? zeros[r] : 0;
      sum_out[r] = sum;
      scale_out[r] = r < n ? scales[r] : 0.0f;
    }
  }
  free(codes);
  free(scales);
  free(zeros);
  free(ones);
  free(no_zeros);
  return ok;
}

static bool pack_linear(MlirOperation module, MlirOperation linear, iq_error_t **error) {
  MlirOperation any = owner_of(linear, 1);
  if (!llama_is(any, "dequantize"))
    return true;
  MlirType type = mlirValueGetType(mlirOperationGetResult(any, 0));
  if (!mlirTypeIsARankedTensor(type) || mlirShapedTypeGetRank(type) != 2 ||
      !mlirShapedTypeHasStaticShape(type))
    return true;
  int64_t n = mlirShapedTypeGetDimSize(type, 0), k = mlirShapedTypeGetDimSize(type, 1);
  int64_t group = 0;
  input_kind_t kind = int4_input(linear, k, &group);
  MlirOperation dequantize = quantized_weight(linear, kind == INPUT_8_BIT ? 8 : 4);
  if (kind == INPUT_NONE || mlirOperationIsNull(dequantize))
    return true;
  if (n < 1 || k < 1 || k > (1 << 20) || n > (INT64_C(1) << 31))
    return iq_error_set(error, NULL, NULL, "the int4 kernels take 1 to 2^20 input channels",
                        "cannot pack a [%lld, %lld] weight", (long long)n, (long long)k);

  char codes_name[512], packed_name[600];
  weight_name(owner_of(dequantize, 0), codes_name, sizeof codes_name);
  size_t length = strlen(codes_name);
  if (length > 6 && strcmp(codes_name + length - 6, ".codes") == 0)
    codes_name[length - 6] = '\0';
  snprintf(packed_name, sizeof packed_name, "%s.%s", codes_name,
           kind == INPUT_8_BIT ? "int8" : "int4");

  int64_t bytes = kind == INPUT_8_BIT      ? iq_int8_packed_bytes(n, k)
                  : kind == INPUT_PER_GROUP ? iq_int4_grouped_bytes(n, k, group)
                                            : iq_int4_packed_bytes(n, k);
  uint8_t *packed = malloc((size_t)bytes);
  if (!packed)
    return iq_error_set(error, NULL, packed_name, NULL, "out of memory");
  bool ok = pack_weight(module, dequantize, kind, n, k, group, packed, error) &&
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

/* The largest block count b (dividing n) for which every entry of the
 * [n, n] matrix `values` outside its b diagonal blocks is zero. */
static int64_t diagonal_blocks(const double *values, int64_t n) {
  for (int64_t blocks = n; blocks > 1; --blocks) {
    if (n % blocks != 0)
      continue;
    int64_t d = n / blocks;
    bool diagonal = true;
    for (int64_t r = 0; diagonal && r < n; ++r)
      for (int64_t c = 0; diagonal && c < n; ++c)
        diagonal = values[r * n + c] == 0.0 || r / d == c / d;
    if (diagonal)
      return blocks;
  }
  return 1;
}

/* A float16 [n, n] linear that is not quantized (iq-rotate's residual
 * converters with converters=f16): its diagonal blocks are stored as an
 * f16 tensor BASE.blocks, named in the linear's iq.f16_blocks attribute,
 * so the lowering runs it on the kernel threads and skips the zero
 * blocks. */
static bool pack_half_linear(MlirOperation module, MlirOperation linear, iq_error_t **error) {
  if (!llama_is(linear, "linear") || mlirOperationGetNumOperands(linear) != 2)
    return true;
  MlirOperation weight = owner_of(linear, 1);
  if (!llama_is(weight, "weight") || bool_attribute(weight, "transposed") ||
      llama_is(owner_of(linear, 0), "dequantize"))
    return true;
  MlirType type = mlirValueGetType(mlirOperationGetResult(weight, 0));
  if (!mlirTypeIsARankedTensor(type) || mlirShapedTypeGetRank(type) != 2 ||
      !mlirTypeIsAF16(mlirShapedTypeGetElementType(type)))
    return true;
  int64_t n = mlirShapedTypeGetDimSize(type, 0);
  if (n < 1 || mlirShapedTypeGetDimSize(type, 1) != n)
    return true;
  char name[512], packed_name[540];
  if (!weight_name(weight, name, sizeof name))
    return iq_error_set(error, NULL, NULL, NULL, "an iq.weight op has no name");
  double *values = malloc((size_t)(n * n) * sizeof *values);
  if (!values)
    return iq_error_set(error, NULL, name, NULL, "out of memory");
  if (!iq_overlay_read(module, name, false, n, n, values, error)) {
    free(values);
    return false;
  }
  int64_t blocks = diagonal_blocks(values, n), d = n / blocks;
  /* The blocks keep the float16 values exactly: each value read from a
   * float16 tensor converts back without rounding. */
  for (int64_t j = 0; j < blocks; ++j)
    for (int64_t c = 0; c < d; ++c)
      memmove(values + (j * d + c) * d, values + (j * d + c) * n + j * d,
              (size_t)d * sizeof *values);
  snprintf(packed_name, sizeof packed_name, "%s.blocks", name);
  int64_t elements = iq_f16_blocks_elements(n, blocks);
  bool ok = iq_overlay_put_f16(packed_name, 1, &elements, values, error);
  free(values);
  if (!ok)
    return false;

  MlirContext context = mlirOperationGetContext(linear);
  iq_builder_t builder = {.context = context, .block = mlirOperationGetBlock(linear),
                          .before = linear};
  MlirType packed_type = iq_tensor_type(context, 1, &elements, mlirF16TypeGet(context));
  MlirNamedAttribute attributes[2] = {
      iq_named(context, "name", iq_string_attr(context, packed_name)),
      iq_named(context, "transposed", iq_bool_attr(context, false)),
  };
  MlirOperation packed = iq_build(&builder, "iq.weight", mlirOperationGetLocation(linear), 0,
                                  NULL, 1, &packed_type, 2, attributes);
  if (mlirOperationIsNull(packed))
    return iq_error_set(error, NULL, packed_name, NULL, "cannot create the iq.weight op");
  mlirOperationSetAttributeByName(linear, mlirStringRefCreateFromCString(IQ_F16_BLOCKS_ATTRIBUTE),
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
  if (ok) {
    where = graph.lm_head;
    ok = pack_linear(op, graph.lm_head, &error);
  }
  MlirBlock body = mlirRegionGetFirstBlock(mlirOperationGetRegion(graph.function, 0));
  for (MlirOperation linear = mlirBlockGetFirstOperation(body);
       ok && !mlirOperationIsNull(linear); linear = mlirOperationGetNextInBlock(linear)) {
    where = linear;
    ok = pack_half_linear(op, linear, &error);
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
