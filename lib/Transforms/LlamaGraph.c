/* Structural matching of the canonical LLaMA graph that iq-raise-llama
 * builds, for the passes that rewrite its weights. */
#include "LlamaGraph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"
#include "mlir-c/Diagnostics.h"

#include "iq/builder.h"
#include "iq/ir.h"
#include "iq/weight_overlay.h"

bool llama_emit_error(MlirOperation op, const char *pass, iq_error_t *error) {
  char *text = error ? iq_error_format(error) : NULL;
  char message[2048];
  snprintf(message, sizeof message, "%s: %s", pass, text ? text : "out of memory");
  mlirEmitError(mlirOperationGetLocation(op), message);
  free(text);
  iq_error_destroy(error);
  return false;
}

static bool fail_at(MlirOperation op, const char *pass, const char *message) {
  char text[512];
  snprintf(text, sizeof text, "%s: %s; run --iq-raise-llama first", pass, message);
  mlirEmitError(mlirOperationGetLocation(op), text);
  return false;
}

MlirOperation llama_single_user(MlirValue value) {
  MlirOpOperand use = mlirValueGetFirstUse(value);
  if (mlirOpOperandIsNull(use))
    return (MlirOperation){NULL};
  MlirOperation owner = mlirOpOperandGetOwner(use);
  for (use = mlirOpOperandGetNextUse(use); !mlirOpOperandIsNull(use);
       use = mlirOpOperandGetNextUse(use))
    if (!mlirOperationEqual(mlirOpOperandGetOwner(use), owner))
      return (MlirOperation){NULL};
  return owner;
}

static MlirOperation defining_op(MlirOperation op, intptr_t index) {
  if (mlirOperationIsNull(op) || index >= mlirOperationGetNumOperands(op))
    return (MlirOperation){NULL};
  MlirValue value = mlirOperationGetOperand(op, index);
  return mlirValueIsAOpResult(value) ? mlirOpResultGetOwner(value) : (MlirOperation){NULL};
}

/* The op behind operand `index` of `op`, looking through the online
 * Hadamards of iq-rotate and the fake quantization pairs of iq-quantize,
 * so the graph is found at every stage of the pipeline. */
static MlirOperation producer(MlirOperation op, intptr_t index) {
  MlirOperation owner = defining_op(op, index);
  for (;;) {
    if (llama_is(owner, "hadamard"))
      owner = defining_op(owner, 0);
    else if (llama_is(owner, "dequantize") && llama_is(defining_op(owner, 0), "quantize"))
      owner = defining_op(defining_op(owner, 0), 0);
    else
      return owner;
  }
}

/* The single consumer of `value`, looking through the same ops. */
static MlirOperation consumer(MlirValue value) {
  MlirOperation user = llama_single_user(value);
  for (;;) {
    if (llama_is(user, "hadamard")) {
      user = llama_single_user(mlirOperationGetResult(user, 0));
    } else if (llama_is(user, "quantize")) {
      MlirOperation dequantize = llama_single_user(mlirOperationGetResult(user, 0));
      if (!llama_is(dequantize, "dequantize"))
        return (MlirOperation){NULL};
      user = llama_single_user(mlirOperationGetResult(dequantize, 0));
    } else {
      return user;
    }
  }
}

static bool is_named(MlirOperation op, const char *name) {
  if (mlirOperationIsNull(op))
    return false;
  MlirStringRef actual = mlirIdentifierStr(mlirOperationGetName(op));
  return actual.length == strlen(name) && memcmp(actual.data, name, actual.length) == 0;
}

static int64_t config_int(MlirAttribute config, const char *key) {
  MlirAttribute value =
      mlirDictionaryAttrGetElementByName(config, mlirStringRefCreateFromCString(key));
  return mlirAttributeIsNull(value) || !mlirAttributeIsAInteger(value)
             ? -1
             : mlirIntegerAttrGetValueInt(value);
}

/* The residual add that reads the output of the projection `producer`. */
static MlirOperation residual_add(MlirOperation producer) {
  MlirOperation add = llama_single_user(mlirOperationGetResult(producer, 0));
  return is_named(add, "arith.addf") ? add : (MlirOperation){NULL};
}

static bool find_layer(MlirOperation attention, const char *pass, llama_layer_t *layer) {
  layer->attention = attention;
  layer->rope_q = producer(attention, 0);
  layer->rope_k = producer(attention, 1);
  layer->v = producer(attention, 2);
  layer->q = producer(layer->rope_q, 0);
  layer->k = producer(layer->rope_k, 0);
  if (!llama_is(layer->rope_q, "rope") || !llama_is(layer->rope_k, "rope") ||
      !llama_is(layer->q, "linear") || !llama_is(layer->k, "linear") ||
      !llama_is(layer->v, "linear"))
    return fail_at(attention, pass, "expected q and k from iq.linear through iq.rope, and v from "
                                    "iq.linear");
  layer->attn_norm = producer(layer->q, 0);
  if (!llama_is(layer->attn_norm, "rms_norm") ||
      !mlirOperationEqual(producer(layer->k, 0), layer->attn_norm) ||
      !mlirOperationEqual(producer(layer->v, 0), layer->attn_norm))
    return fail_at(attention, pass, "expected q, k and v to read one iq.rms_norm");

  layer->o = consumer(mlirOperationGetResult(attention, 0));
  if (!llama_is(layer->o, "linear"))
    return fail_at(attention, pass, "expected the attention output to feed one iq.linear");
  layer->attn_residual = residual_add(layer->o);
  if (mlirOperationIsNull(layer->attn_residual))
    return fail_at(layer->o, pass, "expected o_proj to feed one residual arith.addf");

  /* The residual feeds the MLP norm and the next residual add. */
  MlirValue h_mid = mlirOperationGetResult(layer->attn_residual, 0);
  for (MlirOpOperand use = mlirValueGetFirstUse(h_mid); !mlirOpOperandIsNull(use);
       use = mlirOpOperandGetNextUse(use)) {
    MlirOperation owner = mlirOpOperandGetOwner(use);
    if (llama_is(owner, "rms_norm"))
      layer->mlp_norm = owner;
  }
  if (mlirOperationIsNull(layer->mlp_norm))
    return fail_at(layer->attn_residual, pass, "expected the residual to feed an iq.rms_norm");
  /* The gate and up projections read the norm, possibly through one
   * fake quantization pair; silu_mul joins them. */
  layer->silu_mul = (MlirOperation){NULL};
  for (MlirOperation op = mlirOperationGetNextInBlock(layer->mlp_norm);
       !mlirOperationIsNull(op) && mlirOperationIsNull(layer->silu_mul);
       op = mlirOperationGetNextInBlock(op))
    if (llama_is(op, "silu_mul"))
      layer->silu_mul = op;
  layer->gate = defining_op(layer->silu_mul, 0);
  layer->up = defining_op(layer->silu_mul, 1);
  if (!llama_is(layer->gate, "linear") || !llama_is(layer->up, "linear") ||
      !mlirOperationEqual(producer(layer->gate, 0), layer->mlp_norm) ||
      !mlirOperationEqual(producer(layer->up, 0), layer->mlp_norm))
    return fail_at(layer->mlp_norm, pass, "expected the MLP norm to feed gate and up iq.linear "
                                          "ops joined by iq.silu_mul");
  layer->down = consumer(mlirOperationGetResult(layer->silu_mul, 0));
  if (!llama_is(layer->down, "linear"))
    return fail_at(layer->silu_mul, pass, "expected iq.silu_mul to feed one iq.linear (down_proj)");
  layer->mlp_residual = residual_add(layer->down);
  if (mlirOperationIsNull(layer->mlp_residual))
    return fail_at(layer->down, pass, "expected down_proj to feed one residual arith.addf");
  return true;
}

bool llama_graph_find(MlirOperation module, const char *pass, llama_graph_t *graph) {
  memset(graph, 0, sizeof *graph);
  graph->module = module;
  MlirAttribute config =
      mlirOperationGetAttributeByName(module, mlirStringRefCreateFromCString("iq.config"));
  if (mlirAttributeIsNull(config) || !mlirAttributeIsADictionary(config))
    return fail_at(module, pass, "the module has no iq.config");
  graph->num_layers = config_int(config, "layers");
  graph->hidden = config_int(config, "hidden_size");
  graph->heads = config_int(config, "num_heads");
  graph->kv_heads = config_int(config, "num_kv_heads");
  graph->head_dim = config_int(config, "head_dim");
  graph->ffn = config_int(config, "ffn_size");
  graph->vocab = config_int(config, "vocab_size");
  if (graph->num_layers <= 0 || graph->hidden <= 0 || graph->heads <= 0 || graph->kv_heads <= 0 ||
      graph->head_dim <= 0 || graph->ffn <= 0 || graph->vocab <= 0)
    return fail_at(module, pass, "iq.config lacks a positive layers, hidden_size, num_heads, "
                                 "num_kv_heads, head_dim, ffn_size or vocab_size");

  MlirBlock body = mlirRegionGetFirstBlock(mlirOperationGetRegion(module, 0));
  for (MlirOperation op = mlirBlockGetFirstOperation(body); !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op)) {
    MlirAttribute symbol =
        mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("sym_name"));
    if (!mlirAttributeIsNull(symbol) && mlirAttributeIsAString(symbol)) {
      MlirStringRef name = mlirStringAttrGetValue(symbol);
      if (name.length == 7 && memcmp(name.data, "forward", 7) == 0)
        graph->function = op;
    }
  }
  if (mlirOperationIsNull(graph->function))
    return fail_at(module, pass, "the module has no @forward");

  graph->layers = calloc((size_t)graph->num_layers, sizeof *graph->layers);
  if (!graph->layers)
    return fail_at(module, pass, "out of memory");
  int64_t found = 0;
  MlirBlock block = mlirRegionGetFirstBlock(mlirOperationGetRegion(graph->function, 0));
  for (MlirOperation op = mlirBlockGetFirstOperation(block); !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op)) {
    if (llama_is(op, "embedding") && mlirOperationIsNull(graph->embedding))
      graph->embedding = op;
    if (llama_is(op, "lm_head"))
      graph->lm_head = op;
    if (!llama_is(op, "attention"))
      continue;
    if (found == graph->num_layers)
      return fail_at(op, pass, "more iq.attention ops than iq.config's layers");
    if (!find_layer(op, pass, &graph->layers[found]))
      return false;
    ++found;
  }
  if (found != graph->num_layers)
    return fail_at(graph->function, pass, "fewer iq.attention ops than iq.config's layers");
  if (mlirOperationIsNull(graph->embedding) || mlirOperationIsNull(graph->lm_head))
    return fail_at(graph->function, pass, "expected one iq.embedding and one iq.lm_head");
  graph->final_norm = producer(graph->lm_head, 0);
  if (!llama_is(graph->final_norm, "rms_norm"))
    return fail_at(graph->lm_head, pass, "expected iq.lm_head to read an iq.rms_norm");
  return true;
}

void llama_graph_free(llama_graph_t *graph) {
  free(graph->layers);
  graph->layers = NULL;
}

static MlirStringRef weight_name(MlirOperation weight) {
  return mlirStringAttrGetValue(
      mlirOperationGetAttributeByName(weight, mlirStringRefCreateFromCString("name")));
}

bool llama_weight_base_name(MlirOperation op, intptr_t index, char *buffer, size_t size) {
  MlirOperation weight = defining_op(op, index);
  if (!llama_is(weight, "weight"))
    return false;
  MlirStringRef name = weight_name(weight);
  size_t length = name.length;
  if (length > 2 && memcmp(name.data + length - 2, ".T", 2) == 0)
    length -= 2;
  snprintf(buffer, size, "%.*s", (int)length, name.data);
  return true;
}

bool llama_read_linear(MlirOperation module, MlirOperation linear, int64_t *out, int64_t *in,
                       double **values, iq_error_t **error) {
  MlirOperation weight = defining_op(linear, 1);
  if (!llama_is(weight, "weight"))
    return iq_error_set(error, NULL, NULL, "run the weight passes before iq-quantize",
                        "the weight of this projection is not an iq.weight");
  MlirType type = mlirValueGetType(mlirOperationGetResult(weight, 0));
  if (!mlirTypeIsARankedTensor(type) || mlirShapedTypeGetRank(type) != 2 ||
      !mlirShapedTypeHasStaticShape(type))
    return iq_error_set(error, NULL, NULL, NULL, "projection weights must be static 2-D tensors");
  *out = mlirShapedTypeGetDimSize(type, 0);
  *in = mlirShapedTypeGetDimSize(type, 1);
  bool transposed = mlirBoolAttrGetValue(
      mlirOperationGetAttributeByName(weight, mlirStringRefCreateFromCString("transposed")));
  MlirStringRef name = weight_name(weight);
  char *copy = strndup(name.data, name.length);
  *values = malloc((size_t)(*out * *in) * sizeof **values);
  bool ok = copy && *values;
  if (!ok)
    iq_error_set(error, NULL, NULL, NULL, "out of memory");
  ok = ok && iq_overlay_read(module, copy, transposed, *out, *in, *values, error);
  free(copy);
  if (!ok) {
    free(*values);
    *values = NULL;
  }
  return ok;
}

bool llama_replace_weight(MlirOperation user, intptr_t index, const char *name, int64_t rows,
                          int64_t cols, const double *values, iq_error_t **error) {
  int64_t dims[2] = {rows, cols};
  uint32_t rank = cols > 0 ? 2 : 1;
  if (!iq_overlay_put_f32(name, rank, dims, values, error))
    return false;
  MlirContext context = mlirOperationGetContext(user);
  MlirOperation old = defining_op(user, index);
  iq_builder_t builder = {.context = context,
                          .block = mlirOperationGetBlock(user),
                          .before = user};
  MlirType type = iq_tensor_type(context, rank, dims, mlirF32TypeGet(context));
  MlirNamedAttribute attributes[2] = {
      iq_named(context, "name", iq_string_attr(context, name)),
      iq_named(context, "transposed", iq_bool_attr(context, false)),
  };
  MlirOperation weight = iq_build(&builder, "iq.weight", mlirOperationGetLocation(user), 0, NULL, 1,
                                  &type, 2, attributes);
  if (mlirOperationIsNull(weight))
    return iq_error_set(error, NULL, name, NULL, "cannot create the iq.weight op");
  mlirOperationSetOperand(user, index, mlirOperationGetResult(weight, 0));
  if (!mlirOperationIsNull(old) && mlirOpOperandIsNull(mlirValueGetFirstUse(
                                       mlirOperationGetResult(old, 0))))
    mlirOperationDestroy(old);
  return true;
}
