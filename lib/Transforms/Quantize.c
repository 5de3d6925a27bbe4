/* iq-quantize: the W4A4KV4 scheme of InfoQuant on a canonical LLaMA graph.
 *
 * Activations: an iq.quantize / iq.dequantize pair (fake quantization) on
 * the input of every projection of every layer. The inputs of q/k/v,
 * gate/up and down_proj are quantized per token with a range containing 0.
 * q/k/v share one pair and gate/up another, which is exact without learned
 * clipping because they read the same tensor. The o_proj input is
 * quantized per (token, head) group of head_dim with the group's own min
 * and max. The residual converters stay in float, and so does lm_head
 * unless lm-head=w8a8 quantizes its weight to 8 bits per output row (RTN)
 * and its input to 8 bits per token.
 * KV cache: K after the online Hadamard per (token, KV head) with the
 * zero-inclusive per-token formula (attribute zero_in_range), V per
 * (token, KV head) with the group formula.
 * Weights: the seven projections of every layer are quantized per output
 * channel with round-to-nearest and the MSE clip search of
 * iq_quantize_weight_rtn (iq/quant.h), or with GPTQ (iq_gptq_quantize) on
 * the x^T x of a statistics file (weights=gptq statistics=FILE); the store gets the 4-bit codes and
 * per-row scales and zero points, and an iq.dequantize of them replaces
 * the float weight. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"

#include "LlamaGraph.h"
#include "iq/builder.h"
#include "iq/ir.h"
#include "iq/passes.h"
#include "iq/quant.h"
#include "iq/statistics.h"
#include "iq/weight_overlay.h"

#define PASS "iq-quantize"

typedef struct scheme {
  int bits;
  const char *granularity;
  int64_t axis, group_size;
  double clip;
  bool zero_in_range; /* per_group with the per-token range formula */
} scheme_t;

static void scheme_attributes(MlirContext context, const scheme_t *scheme,
                              MlirNamedAttribute *attributes, intptr_t *count) {
  intptr_t n = 0;
  attributes[n++] = iq_named(context, "bits", iq_i64_attr(context, scheme->bits));
  attributes[n++] = iq_named(context, "signed", iq_bool_attr(context, false));
  attributes[n++] = iq_named(context, "granularity", iq_string_attr(context, scheme->granularity));
  attributes[n++] = iq_named(context, "axis", iq_i64_attr(context, scheme->axis));
  attributes[n++] = iq_named(context, "group_size", iq_i64_attr(context, scheme->group_size));
  attributes[n++] = iq_named(context, "symmetric", iq_bool_attr(context, false));
  attributes[n++] = iq_named(context, "clip_ratio", iq_f32_attr(context, scheme->clip));
  if (scheme->zero_in_range)
    attributes[n++] = iq_named(context, "zero_in_range", iq_bool_attr(context, true));
  *count = n;
}

/* Inserts quantize and dequantize of `value` before `before` and returns
 * the dequantized value, or a null value on failure. */
static MlirValue insert_fake_quant(MlirOperation before, MlirValue value, const scheme_t *scheme) {
  MlirContext context = mlirOperationGetContext(before);
  MlirType type = mlirValueGetType(value);
  intptr_t rank = mlirShapedTypeGetRank(type);
  int64_t dims[8];
  for (intptr_t i = 0; i < rank && i < 8; ++i)
    dims[i] = mlirShapedTypeIsDynamicDim(type, i) ? -1 : mlirShapedTypeGetDimSize(type, i);
  int64_t width = dims[rank - 1];
  MlirType codes_type = iq_tensor_type(context, rank, dims, mlirIntegerTypeGet(context, 8));
  dims[rank - 1] = scheme->group_size > 0 ? width / scheme->group_size : 1;
  MlirType params_type = iq_tensor_type(context, rank, dims, mlirF32TypeGet(context));

  MlirNamedAttribute attributes[8];
  intptr_t count;
  scheme_attributes(context, scheme, attributes, &count);
  iq_builder_t builder = {.context = context, .block = mlirOperationGetBlock(before),
                          .before = before};
  MlirLocation location = mlirOperationGetLocation(before);
  MlirType results[3] = {codes_type, params_type, params_type};
  MlirOperation quantize =
      iq_build(&builder, "iq.quantize", location, 1, &value, 3, results, count, attributes);
  if (mlirOperationIsNull(quantize))
    return (MlirValue){NULL};
  MlirValue operands[3] = {mlirOperationGetResult(quantize, 0), mlirOperationGetResult(quantize, 1),
                           mlirOperationGetResult(quantize, 2)};
  MlirOperation dequantize =
      iq_build(&builder, "iq.dequantize", location, 3, operands, 1, &type, count, attributes);
  return mlirOperationIsNull(dequantize) ? (MlirValue){NULL}
                                         : mlirOperationGetResult(dequantize, 0);
}

/* Replaces operand `index` of each of `users` (all reading one value) by
 * its fake quantization, inserted before the first of them. */
static bool quantize_input(MlirOperation *users, int count, intptr_t index, const scheme_t *scheme) {
  /* The first of the users in block order: walk forward from the first
   * op of their block until one of them appears. */
  MlirOperation first = {NULL};
  for (MlirOperation op = mlirBlockGetFirstOperation(mlirOperationGetBlock(users[0]));
       !mlirOperationIsNull(op) && mlirOperationIsNull(first); op = mlirOperationGetNextInBlock(op))
    for (int i = 0; i < count; ++i)
      if (mlirOperationEqual(op, users[i]))
        first = op;
  MlirValue quantized = insert_fake_quant(first, mlirOperationGetOperand(users[0], index), scheme);
  if (mlirValueIsNull(quantized))
    return false;
  for (int i = 0; i < count; ++i)
    mlirOperationSetOperand(users[i], index, quantized);
  return true;
}

/* The XᵀX of a projection's input for GPTQ: the statistics entry of its
 * layer and point, with its token count. NULL `statistics` means RTN. */
typedef struct hessian_source {
  const iq_statistics_t *statistics;
  const char *path;
  uint32_t layer;
  iq_observe_point_t point;
} hessian_source_t;

/* Quantizes the weight of `linear` with RTN, or with GPTQ when `hessian`
 * has statistics, and replaces it by the dequantization of its codes. */
static bool quantize_weight(MlirOperation module, MlirOperation linear, int bits,
                            const hessian_source_t *hessian, iq_error_t **error) {
  int64_t out, in;
  double *values;
  if (!llama_read_linear(module, linear, &out, &in, &values, error))
    return false;
  size_t count = (size_t)(out * in);
  float *weight = malloc(count * sizeof *weight);
  uint8_t *codes = malloc(count);
  uint8_t *packed = calloc(count, 1);
  float *scales = malloc((size_t)out * sizeof *scales);
  float *zeros = malloc((size_t)out * sizeof *zeros);
  bool ok = weight && codes && packed && scales && zeros;
  if (!ok)
    iq_error_set(error, NULL, NULL, NULL, "out of memory");
  for (size_t i = 0; ok && i < count; ++i)
    weight[i] = (float)values[i];
  free(values);

  iq_statistics_point_t entry;
  if (ok && hessian->statistics) {
    const char *point = iq_observe_point_name(hessian->point);
    if (!iq_statistics_find(hessian->statistics, hessian->layer, hessian->point, &entry))
      ok = iq_error_set(error, hessian->path, PASS,
                        "calibrate the graph as it is at quantization time (after iq-rotate)",
                        "the statistics have no entry for layer %u point %s", hessian->layer,
                        point);
    else if ((int64_t)entry.channels != in)
      ok = iq_error_set(error, hessian->path, PASS,
                        "calibrate the graph as it is at quantization time (after iq-rotate)",
                        "layer %u point %s has %u channels; the projection has %lld inputs",
                        hessian->layer, point, entry.channels, (long long)in);
  }
  if (ok && hessian->statistics) {
    iq_gptq_options_t options;
    iq_gptq_options_init(&options);
    options.weight.bits = bits;
    ok = iq_gptq_quantize(weight, (size_t)out, (size_t)in, entry.xtx, (double)entry.token_count,
                          &options, codes, scales, zeros, NULL, error);
  } else if (ok) {
    iq_weight_quant_options_t options;
    iq_weight_quant_options_init(&options);
    options.bits = bits;
    ok = iq_quantize_weight_rtn(weight, (size_t)out, (size_t)in, &options, codes, scales, zeros,
                                NULL, error);
  }
  /* 8-bit codes are stored one per byte, 4-bit ones two per byte. */
  size_t code_bytes = bits == 8 ? count : (count + 1) / 2;
  for (size_t i = 0; ok && i < count; ++i)
    if (bits == 8)
      packed[i] = codes[i];
    else
      packed[i / 2] |= (uint8_t)(codes[i] << (i % 2 ? 4 : 0));

  char base[512], codes_name[600], scales_name[600], zeros_name[600];
  llama_weight_base_name(linear, 1, base, sizeof base);
  snprintf(codes_name, sizeof codes_name, "%s.codes", base);
  snprintf(scales_name, sizeof scales_name, "%s.scales", base);
  snprintf(zeros_name, sizeof zeros_name, "%s.zeros", base);
  int64_t dims[2] = {out, in}, param_dims[2] = {out, 1};
  ok = ok &&
       iq_overlay_put(codes_name, bits == 8 ? IQ_DTYPE_U8 : IQ_DTYPE_U4, 2, dims, packed,
                      code_bytes, error) &&
       iq_overlay_put(scales_name, IQ_DTYPE_F32, 2, param_dims, scales,
                      (size_t)out * sizeof *scales, error) &&
       iq_overlay_put(zeros_name, IQ_DTYPE_F32, 2, param_dims, zeros, (size_t)out * sizeof *zeros,
                      error);
  free(weight);
  free(codes);
  free(packed);
  free(scales);
  free(zeros);
  if (!ok)
    return false;

  MlirContext context = mlirOperationGetContext(linear);
  MlirValue old_value = mlirOperationGetOperand(linear, 1);
  iq_builder_t builder = {.context = context, .block = mlirOperationGetBlock(linear),
                          .before = linear};
  MlirLocation location = mlirOperationGetLocation(linear);
  MlirType types[3] = {
      iq_tensor_type(context, 2, dims, mlirIntegerTypeUnsignedGet(context, (unsigned)bits)),
      iq_tensor_type(context, 2, param_dims, mlirF32TypeGet(context)),
      iq_tensor_type(context, 2, param_dims, mlirF32TypeGet(context)),
  };
  const char *names[3] = {codes_name, scales_name, zeros_name};
  MlirValue operands[3];
  for (int i = 0; i < 3; ++i) {
    MlirNamedAttribute attributes[2] = {
        iq_named(context, "name", iq_string_attr(context, names[i])),
        iq_named(context, "transposed", iq_bool_attr(context, false)),
    };
    MlirOperation weight_op =
        iq_build(&builder, "iq.weight", location, 0, NULL, 1, &types[i], 2, attributes);
    if (mlirOperationIsNull(weight_op))
      return iq_error_set(error, NULL, names[i], NULL, "cannot create the iq.weight op");
    operands[i] = mlirOperationGetResult(weight_op, 0);
  }
  /* Per output channel: one scale per row, so axis 1 is reduced. */
  scheme_t scheme = {.bits = bits, .granularity = "per_channel", .axis = 1, .clip = 1.0};
  MlirNamedAttribute attributes[8];
  intptr_t count_attributes;
  scheme_attributes(context, &scheme, attributes, &count_attributes);
  MlirType float_type = iq_tensor_type(context, 2, dims, mlirF32TypeGet(context));
  MlirOperation dequantize = iq_build(&builder, "iq.dequantize", location, 3, operands, 1,
                                      &float_type, count_attributes, attributes);
  if (mlirOperationIsNull(dequantize))
    return iq_error_set(error, NULL, codes_name, NULL, "cannot create the iq.dequantize op");
  mlirOperationSetOperand(linear, 1, mlirOperationGetResult(dequantize, 0));
  if (mlirValueIsAOpResult(old_value) && mlirOpOperandIsNull(mlirValueGetFirstUse(old_value)))
    mlirOperationDestroy(mlirOpResultGetOwner(old_value));
  return true;
}

static const char *const kv_choices[] = {"k4v4", "k4v16", "none", NULL};
static const char *const weight_choices[] = {"rtn", "gptq", NULL};
static const char *const lm_head_choices[] = {"float", "w8a8", NULL};

static const iq_pass_option_info_t quantize_options[] = {
    {"w-bits", IQ_OPTION_INT, "4", "bits of the projection weights: 4, or 16 to keep them float",
     NULL, 4, 16},
    {"a-bits", IQ_OPTION_INT, "4",
     "bits of the projection inputs, 2 to 8, or 16 to keep them float", NULL, 2, 16},
    {"kv", IQ_OPTION_ENUM, "k4v4",
     "KV cache: k4v4 (4-bit K and V), k4v16 (4-bit K only) or none", kv_choices, 1, 0},
    {"weights", IQ_OPTION_ENUM, "rtn",
     "weight quantizer: rtn (round to nearest with MSE clip search) or gptq", weight_choices, 1,
     0},
    {"statistics", IQ_OPTION_STRING, "",
     "statistics file (.iqs) whose x^T x per layer and point GPTQ uses; record it on the graph "
     "as it is here (after iq-rotate)",
     NULL, 1, 0},
    {"clip", IQ_OPTION_FLOAT, "0.9", "clip ratio of the activation ranges, in (0, 1]", NULL,
     1e-3, 1.0},
    {"kv-clip", IQ_OPTION_FLOAT, "0.9", "clip ratio of the K and V ranges, in (0, 1]", NULL,
     1e-3, 1.0},
    {"lm-head", IQ_OPTION_ENUM, "float",
     "lm_head: float, or w8a8 (8-bit RTN weights per output row and 8-bit per-token inputs)",
     lm_head_choices, 1, 0},
};

static bool run_quantize(MlirOperation op, const iq_pass_options_t *options) {
  int w_bits = (int)iq_pass_option_int(options, "w-bits");
  int a_bits = (int)iq_pass_option_int(options, "a-bits");
  const char *kv = iq_pass_option_string(options, "kv");
  const char *weights = iq_pass_option_string(options, "weights");
  double clip = iq_pass_option_float(options, "clip");
  double kv_clip = iq_pass_option_float(options, "kv-clip");
  bool lm_head_w8a8 = strcmp(iq_pass_option_string(options, "lm-head"), "w8a8") == 0;
  if (w_bits != 4 && w_bits != 16)
    return llama_emit_error(op, PASS,
                            iq_error_create(NULL, "w-bits", "use w-bits=4 or w-bits=16",
                                            "w-bits=%d is not supported: weights are packed as "
                                            "4-bit codes",
                                            w_bits));
  if (a_bits > 8 && a_bits != 16)
    return llama_emit_error(op, PASS,
                            iq_error_create(NULL, "a-bits", "use 2 to 8, or 16 for float inputs",
                                            "a-bits=%d is not supported", a_bits));
  const char *statistics_path = iq_pass_option_string(options, "statistics");
  bool gptq = w_bits == 4 && strcmp(weights, "gptq") == 0;
  if (gptq && !*statistics_path)
    return llama_emit_error(op, PASS,
                            iq_error_create(NULL, "statistics",
                                            "record them with iq-calibrate on the rotated graph "
                                            "and pass statistics=FILE",
                                            "weights=gptq needs the x^T x of calibration "
                                            "statistics"));
  iq_statistics_t *statistics = NULL;
  if (gptq) {
    iq_error_t *open_error = NULL;
    statistics = iq_statistics_open(statistics_path, &open_error);
    if (!statistics)
      return llama_emit_error(op, PASS, open_error);
  }

  llama_graph_t graph;
  if (!llama_graph_find(op, PASS, &graph)) {
    llama_graph_free(&graph);
    iq_statistics_close(statistics);
    return false;
  }
  if (statistics && (int64_t)iq_statistics_get_info(statistics)->layers != graph.num_layers) {
    iq_error_t *mismatch = iq_error_create(
        statistics_path, PASS, "calibrate this model", "the statistics describe %u layers; the "
        "model has %lld", iq_statistics_get_info(statistics)->layers, (long long)graph.num_layers);
    llama_graph_free(&graph);
    iq_statistics_close(statistics);
    return llama_emit_error(op, PASS, mismatch);
  }
  scheme_t per_token = {.bits = a_bits, .granularity = "per_token", .axis = 2, .clip = clip};
  scheme_t per_head = {.bits = a_bits, .granularity = "per_group", .axis = 2,
                       .group_size = graph.head_dim, .clip = clip};
  scheme_t k_scheme = {.bits = 4, .granularity = "per_group", .axis = 2,
                       .group_size = graph.head_dim, .clip = kv_clip, .zero_in_range = true};
  scheme_t v_scheme = {.bits = 4, .granularity = "per_group", .axis = 2,
                       .group_size = graph.head_dim, .clip = kv_clip};
  bool quantize_k = strcmp(kv, "none") != 0, quantize_v = strcmp(kv, "k4v4") == 0;
  bool ok = true;
  MlirOperation where = op;
  iq_error_t *error = NULL;
  for (int64_t i = 0; ok && i < graph.num_layers; ++i) {
    llama_layer_t *layer = &graph.layers[i];
    where = layer->attention;
    if (quantize_k)
      ok = quantize_input(&layer->attention, 1, 1, &k_scheme);
    if (ok && quantize_v)
      ok = quantize_input(&layer->attention, 1, 2, &v_scheme);
    if (ok && a_bits < 16) {
      MlirOperation qkv[3] = {layer->q, layer->k, layer->v};
      MlirOperation gate_up[2] = {layer->gate, layer->up};
      ok = quantize_input(qkv, 3, 0, &per_token) && quantize_input(&layer->o, 1, 0, &per_head) &&
           quantize_input(gate_up, 2, 0, &per_token) &&
           quantize_input(&layer->down, 1, 0, &per_token);
    }
    if (!ok) {
      error = iq_error_create(NULL, NULL, NULL, "cannot create the quantization ops");
      break;
    }
    MlirOperation projections[7] = {layer->q,    layer->k,  layer->v,   layer->o,
                                    layer->gate, layer->up, layer->down};
    /* The observed point of each projection's input (iq-insert-observers). */
    static const iq_observe_point_t inputs[7] = {IQ_OBSERVE_X, IQ_OBSERVE_X, IQ_OBSERVE_X,
                                                 IQ_OBSERVE_M, IQ_OBSERVE_P, IQ_OBSERVE_P,
                                                 IQ_OBSERVE_Z};
    for (int p = 0; ok && w_bits == 4 && p < 7; ++p) {
      where = projections[p];
      hessian_source_t hessian = {.statistics = statistics, .path = statistics_path,
                                  .layer = (uint32_t)i, .point = inputs[p]};
      ok = quantize_weight(op, projections[p], w_bits, &hessian, &error);
    }
  }
  /* The lm_head input keeps its full range (clip 1): 8 bits leave little
   * rounding error, and clipping the logits' input would cut outliers. */
  if (ok && lm_head_w8a8) {
    scheme_t per_token8 = {.bits = 8, .granularity = "per_token", .axis = 2, .clip = 1.0};
    hessian_source_t rtn = {0};
    where = graph.lm_head;
    ok = quantize_input(&graph.lm_head, 1, 0, &per_token8);
    if (!ok)
      iq_error_set(&error, NULL, NULL, NULL, "cannot create the quantization ops");
    ok = ok && quantize_weight(op, graph.lm_head, 8, &rtn, &error);
  }
  llama_graph_free(&graph);
  iq_statistics_close(statistics);
  return ok || llama_emit_error(where, PASS, error);
}

const iq_pass_info_t iq_quantize_pass = {
    .name = "iq-quantize",
    .description = "Quantize projection weights (4-bit RTN or GPTQ codes in the store) and insert fake "
                   "quantization of projection inputs and of the KV cache",
    .options = quantize_options,
    .num_options = sizeof quantize_options / sizeof quantize_options[0],
    .run = run_quantize,
};
