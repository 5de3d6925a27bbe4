/* iq-fuse-norms: folds every RMSNorm gain into the input columns of the
 * projections that read the norm, centres the embedding rows, and leaves
 * the norms weightless. This is the norm fusion of QuaRot that InfoQuant
 * inherits:
 *   W[:, c] *= gamma[c] for q/k/v (attention norm), gate/up (MLP norm) and
 *   lm_head (final norm), computed in double;
 *   E[v, :] -= mean_c E[v, c] for the embedding table.
 * Folding the gains is exact. Centring the embedding is not an identity
 * for RMSNorm models (it changes each token's norm), so it is an option.
 * Every new tensor gets a new name, so an lm_head tied to the embedding is
 * untied on the way. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"

#include "LlamaGraph.h"
#include "iq/ir.h"
#include "iq/passes.h"
#include "iq/weight_overlay.h"

#define PASS "iq-fuse-norms"

/* Reads the gain operand of an rms_norm into `gain` [width]. */
static bool read_gain(MlirOperation module, MlirOperation norm, int64_t width, double *gain,
                      iq_error_t **error) {
  MlirValue value = mlirOperationGetOperand(norm, 1);
  MlirOperation source = mlirValueIsAOpResult(value) ? mlirOpResultGetOwner(value)
                                                     : (MlirOperation){NULL};
  if (llama_is(source, "weight")) {
    MlirStringRef name = mlirStringAttrGetValue(
        mlirOperationGetAttributeByName(source, mlirStringRefCreateFromCString("name")));
    char *copy = strndup(name.data, name.length);
    bool ok = copy ? iq_overlay_read(module, copy, false, width, 1, gain, error)
                   : iq_error_set(error, NULL, NULL, NULL, "out of memory");
    free(copy);
    return ok;
  }
  MlirAttribute constant = mlirOperationIsNull(source)
                               ? mlirAttributeGetNull()
                               : mlirOperationGetAttributeByName(
                                     source, mlirStringRefCreateFromCString("value"));
  if (mlirAttributeIsNull(constant) || !mlirAttributeIsADenseFPElements(constant) ||
      !mlirTypeIsAF32(mlirShapedTypeGetElementType(mlirAttributeGetType(constant))) ||
      mlirElementsAttrGetNumElements(constant) != width)
    return iq_error_set(error, NULL, NULL, "import the model again with iq-opt model.onnx",
                        "the norm gain is neither an iq.weight nor a float32 constant of %lld "
                        "elements",
                        (long long)width);
  bool splat = mlirDenseElementsAttrIsSplat(constant);
  for (int64_t i = 0; i < width; ++i)
    gain[i] = splat ? mlirDenseElementsAttrGetFloatSplatValue(constant)
                    : mlirDenseElementsAttrGetFloatValue(constant, i);
  return true;
}

/* Scales the input columns of `linear`'s weight by `gain` and gives the
 * result a new name. */
static bool scale_columns(MlirOperation module, MlirOperation linear, const double *gain,
                          int64_t width, iq_error_t **error) {
  int64_t out, in;
  double *values;
  if (!llama_read_linear(module, linear, &out, &in, &values, error))
    return false;
  if (in != width) {
    free(values);
    return iq_error_set(error, NULL, NULL, NULL,
                        "the projection reads %lld features, but the norm has %lld",
                        (long long)in, (long long)width);
  }
  for (int64_t r = 0; r < out; ++r)
    for (int64_t c = 0; c < in; ++c)
      values[r * in + c] *= gain[c];
  char base[512], name[600];
  llama_weight_base_name(linear, 1, base, sizeof base);
  snprintf(name, sizeof name, "%s.fused", base);
  bool ok = llama_replace_weight(linear, 1, name, out, in, values, error);
  free(values);
  return ok;
}

/* Folds the gain of `norm` into `count` consumers and drops it. A norm
 * without a gain is left alone. */
static bool fuse_norm(MlirOperation module, MlirOperation norm, MlirOperation *consumers,
                      int count, int64_t width) {
  if (mlirOperationGetNumOperands(norm) < 2)
    return true;
  iq_error_t *error = NULL;
  double *gain = malloc((size_t)width * sizeof *gain);
  bool ok = gain ? read_gain(module, norm, width, gain, &error)
                 : iq_error_set(&error, NULL, NULL, NULL, "out of memory");
  MlirOperation failed_at = norm;
  for (int i = 0; ok && i < count; ++i) {
    ok = scale_columns(module, consumers[i], gain, width, &error);
    failed_at = consumers[i];
  }
  free(gain);
  if (!ok)
    return llama_emit_error(failed_at, PASS, error);

  MlirValue gain_value = mlirOperationGetOperand(norm, 1);
  MlirValue x = mlirOperationGetOperand(norm, 0);
  mlirOperationSetOperands(norm, 1, &x);
  if (mlirValueIsAOpResult(gain_value)) {
    MlirOperation source = mlirOpResultGetOwner(gain_value);
    if (mlirOpOperandIsNull(mlirValueGetFirstUse(gain_value)))
      mlirOperationDestroy(source);
  }
  return true;
}

static bool centre_embedding(MlirOperation module, MlirOperation embedding, int64_t vocab,
                             int64_t hidden) {
  MlirValue operand = mlirOperationGetOperand(embedding, 0);
  MlirOperation weight = mlirValueIsAOpResult(operand) ? mlirOpResultGetOwner(operand)
                                                       : (MlirOperation){NULL};
  if (!llama_is(weight, "weight"))
    return llama_emit_error(embedding, PASS,
                            iq_error_create(NULL, NULL, NULL,
                                            "the embedding table is not an iq.weight"));
  MlirType type = mlirValueGetType(operand);
  int64_t rows = mlirShapedTypeGetDimSize(type, 0);
  int64_t cols = mlirShapedTypeGetDimSize(type, 1);
  if (rows != vocab || cols != hidden)
    return llama_emit_error(embedding, PASS,
                            iq_error_create(NULL, NULL, NULL,
                                            "the embedding table is %lld x %lld, but iq.config "
                                            "says %lld x %lld",
                                            (long long)rows, (long long)cols, (long long)vocab,
                                            (long long)hidden));
  bool transposed = mlirBoolAttrGetValue(
      mlirOperationGetAttributeByName(weight, mlirStringRefCreateFromCString("transposed")));
  MlirStringRef name = mlirStringAttrGetValue(
      mlirOperationGetAttributeByName(weight, mlirStringRefCreateFromCString("name")));
  char stored[512], base[512], new_name[600];
  snprintf(stored, sizeof stored, "%.*s", (int)name.length, name.data);
  llama_weight_base_name(embedding, 0, base, sizeof base);
  snprintf(new_name, sizeof new_name, "%s.centred", base);

  iq_error_t *error = NULL;
  double *table = malloc((size_t)(rows * cols) * sizeof *table);
  bool ok = table ? iq_overlay_read(module, stored, transposed, rows, cols, table, &error)
                  : iq_error_set(&error, NULL, NULL, NULL, "out of memory");
  for (int64_t r = 0; ok && r < rows; ++r) {
    double mean = 0.0;
    for (int64_t c = 0; c < cols; ++c)
      mean += table[r * cols + c];
    mean /= (double)cols;
    for (int64_t c = 0; c < cols; ++c)
      table[r * cols + c] -= mean;
  }
  ok = ok && llama_replace_weight(embedding, 0, new_name, rows, cols, table, &error);
  free(table);
  return ok || llama_emit_error(embedding, PASS, error);
}

static const iq_pass_option_info_t fuse_norms_options[] = {
    {"centre-embeddings", IQ_OPTION_BOOL, "true",
     "subtract each embedding row's mean (not an exact identity for RMSNorm models)", NULL, 1, 0},
};

static bool run_fuse_norms(MlirOperation op, const iq_pass_options_t *options) {
  (void)options;
  llama_graph_t graph;
  if (!llama_graph_find(op, PASS, &graph)) {
    llama_graph_free(&graph);
    return false;
  }
  bool ok = true;
  for (int64_t i = 0; ok && i < graph.num_layers; ++i) {
    llama_layer_t *layer = &graph.layers[i];
    MlirOperation attention_inputs[3] = {layer->q, layer->k, layer->v};
    MlirOperation mlp_inputs[2] = {layer->gate, layer->up};
    ok = fuse_norm(op, layer->attn_norm, attention_inputs, 3, graph.hidden) &&
         fuse_norm(op, layer->mlp_norm, mlp_inputs, 2, graph.hidden);
  }
  ok = ok && fuse_norm(op, graph.final_norm, &graph.lm_head, 1, graph.hidden);
  if (ok && iq_pass_option_bool(options, "centre-embeddings"))
    ok = centre_embedding(op, graph.embedding, graph.vocab, graph.hidden);
  llama_graph_free(&graph);
  return ok;
}

const iq_pass_info_t iq_fuse_norms_pass = {
    .name = "iq-fuse-norms",
    .description = "Fold RMSNorm gains into the next projections' input columns and centre the "
                   "embedding rows, leaving the norms weightless; new weights get new names",
    .options = fuse_norms_options,
    .num_options = sizeof fuse_norms_options / sizeof fuse_norms_options[0],
    .run = run_fuse_norms,
};
