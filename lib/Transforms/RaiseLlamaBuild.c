/* The canonical function iq-raise-llama builds from a recognised LLaMA:
 *
 *   forward(input_ids [b, s], position_ids [b, s],
 *           cache.L.key, cache.L.value [b, kv_heads, context, head_dim]...)
 *     -> (logits [b, s, vocab], updated caches...)
 *
 * with embedding, per layer rms_norm, q/k/v linears, rope on q and k,
 * attention with its cache, o_proj and a residual add, rms_norm, gate and
 * up linears, silu_mul, down_proj and a residual add, then the final norm
 * and lm_head. Graphs exported without past_key_values get a cache too. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"

#include "RaiseLlama.h"
#include "RaiseLlamaMatch.h"
#include "iq/builder.h"
#include "iq/ir.h"

typedef struct canonical_builder {
  raise_state_t *state;
  iq_builder_t b;
  MlirLocation location;
  MlirType element;
  bool failed;
} canonical_builder_t;

static MlirType activation_type(canonical_builder_t *cb, int64_t width) {
  int64_t dims[3] = {-1, -1, width};
  return iq_tensor_type(cb->b.context, 3, dims, cb->element);
}

static MlirValue build_one(canonical_builder_t *cb, const char *name, intptr_t num_operands,
                           const MlirValue *operands, MlirType result, intptr_t num_attributes,
                           const MlirNamedAttribute *attributes) {
  MlirOperation op = iq_build(&cb->b, name, cb->location, num_operands, operands, 1, &result,
                              num_attributes, attributes);
  if (mlirOperationIsNull(op)) {
    cb->failed = true;
    return (MlirValue){NULL};
  }
  return iq_result(op, 0);
}

/* Re-creates a weight in the new function: an iq.weight with the same name
 * (marked transposed when the source is [in, out]), or a copy of a small
 * constant. */
static MlirValue weight(canonical_builder_t *cb, MlirOperation source, bool stored_in_out,
                        int64_t out, int64_t in) {
  MlirContext c = cb->b.context;
  if (match_is(source, "arith.constant")) {
    if (stored_in_out) {
      raise_fail(cb->state, source, "a constant linear weight stored [in, out] cannot be "
                 "referenced transposed; store it in the weight store");
      cb->failed = true;
      return (MlirValue){NULL};
    }
    MlirOperation copy = mlirOperationClone(source);
    if (!mlirOperationIsNull(cb->b.before))
      mlirBlockInsertOwnedOperationBefore(cb->b.block, cb->b.before, copy);
    else
      mlirBlockAppendOwnedOperation(cb->b.block, copy);
    return iq_result(copy, 0);
  }
  MlirType type = mlirValueGetType(mlirOperationGetResult(source, 0));
  if (out > 0) {
    int64_t dims[2] = {out, in};
    type = iq_tensor_type(c, 2, dims, mlirShapedTypeGetElementType(type));
  }
  MlirNamedAttribute attributes[] = {
      iq_named(c, "name",
               mlirOperationGetAttributeByName(source, mlirStringRefCreateFromCString("name"))),
      iq_named(c, "transposed", iq_bool_attr(c, stored_in_out)),
  };
  return build_one(cb, "iq.weight", 0, NULL, type, 2, attributes);
}

static MlirValue linear(canonical_builder_t *cb, const char *name, MlirValue x,
                        const linear_site_t *site) {
  MlirValue w = weight(cb, site->weight, site->stored_in_out, site->out, site->in);
  if (cb->failed)
    return w;
  MlirValue operands[2] = {x, w};
  return build_one(cb, name, 2, operands, activation_type(cb, site->out), 0, NULL);
}

static MlirValue rms_norm(canonical_builder_t *cb, MlirValue x, const norm_site_t *norm) {
  raise_state_t *s = cb->state;
  MlirNamedAttribute epsilon =
      iq_named(cb->b.context, "epsilon", iq_f32_attr(cb->b.context, norm->epsilon));
  MlirValue operands[2] = {x, {NULL}};
  intptr_t count = 1;
  if (!mlirValueIsNull(norm->gain)) {
    MlirOperation source;
    if (!match_weight(norm->gain, 1, &source)) {
      raise_fail(s, norm->op, "the norm's gain is not a weight");
      cb->failed = true;
      return (MlirValue){NULL};
    }
    operands[count++] = weight(cb, source, false, 0, 0);
  }
  return build_one(cb, "iq.rms_norm", count, operands, activation_type(cb, s->hidden), 1,
                   &epsilon);
}

static MlirValue add(canonical_builder_t *cb, MlirValue a, MlirValue b) {
  MlirValue operands[2] = {a, b};
  return build_one(cb, "arith.addf", 2, operands, mlirValueGetType(a), 0, NULL);
}

static MlirValue rope(canonical_builder_t *cb, MlirValue x, MlirValue positions) {
  raise_state_t *s = cb->state;
  MlirContext c = cb->b.context;
  MlirNamedAttribute attributes[] = {
      iq_named(c, "theta", iq_f32_attr(c, s->theta)),
      iq_named(c, "head_dim", iq_i64_attr(c, s->head_dim)),
      iq_named(c, "style", iq_string_attr(c, s->rope_style)),
  };
  return build_one(cb, "iq.rope", 2, (MlirValue[]){x, positions}, mlirValueGetType(x), 3,
                   attributes);
}

static MlirAttribute config_attr(raise_state_t *s, MlirContext c) {
  MlirNamedAttribute entries[] = {
      iq_named(c, "layers", iq_i64_attr(c, s->num_layers)),
      iq_named(c, "hidden_size", iq_i64_attr(c, s->hidden)),
      iq_named(c, "num_heads", iq_i64_attr(c, s->num_heads)),
      iq_named(c, "num_kv_heads", iq_i64_attr(c, s->num_kv_heads)),
      iq_named(c, "head_dim", iq_i64_attr(c, s->head_dim)),
      iq_named(c, "ffn_size", iq_i64_attr(c, s->ffn)),
      iq_named(c, "vocab_size", iq_i64_attr(c, s->vocab)),
      iq_named(c, "rope_theta", iq_f32_attr(c, s->theta)),
      iq_named(c, "rope_style", iq_string_attr(c, s->rope_style)),
      iq_named(c, "norm_epsilon", iq_f32_attr(c, s->epsilon)),
  };
  return mlirDictionaryAttrGet(c, sizeof entries / sizeof entries[0], entries);
}

static MlirAttribute name_attrs(MlirContext c, const char *name) {
  MlirNamedAttribute entry = iq_named(c, "iq.name", iq_string_attr(c, name));
  return mlirDictionaryAttrGet(c, 1, &entry);
}

bool build_canonical(raise_state_t *s, MlirOperation module) {
  MlirContext c = mlirOperationGetContext(s->function);
  MlirType element =
      mlirShapedTypeGetElementType(mlirValueGetType(mlirOperationGetResult(s->embedding_table, 0)));
  int64_t L = s->num_layers;
  size_t num_args = 2 + 2 * (size_t)L, num_results = 1 + 2 * (size_t)L;

  MlirType *arg_types = calloc(num_args, sizeof *arg_types);
  MlirType *result_types = calloc(num_results, sizeof *result_types);
  MlirAttribute *arg_attrs = calloc(num_args, sizeof *arg_attrs);
  MlirAttribute *result_attrs = calloc(num_results, sizeof *result_attrs);
  MlirLocation *arg_locations = calloc(num_args, sizeof *arg_locations);
  MlirValue *results = calloc(num_results, sizeof *results);
  if (!arg_types || !result_types || !arg_attrs || !result_attrs || !arg_locations || !results) {
    free(arg_types), free(result_types), free(arg_attrs), free(result_attrs);
    free(arg_locations), free(results);
    return raise_fail(s, (MlirOperation){NULL}, "out of memory");
  }

  int64_t ids_dims[2] = {-1, -1};
  int64_t cache_dims[4] = {-1, s->num_kv_heads, -1, s->head_dim};
  MlirType ids_type = iq_tensor_type(c, 2, ids_dims, mlirIntegerTypeGet(c, 64));
  MlirType cache_type = iq_tensor_type(c, 4, cache_dims, element);
  int64_t logits_dims[3] = {-1, -1, s->vocab};

  arg_types[0] = arg_types[1] = ids_type;
  arg_attrs[0] = name_attrs(c, "input_ids");
  arg_attrs[1] = name_attrs(c, "position_ids");
  result_types[0] = iq_tensor_type(c, 3, logits_dims, element);
  result_attrs[0] = name_attrs(c, "logits");
  char name[64];
  for (int64_t l = 0; l < L; ++l) {
    for (int kv = 0; kv < 2; ++kv) {
      arg_types[2 + 2 * l + kv] = result_types[1 + 2 * l + kv] = cache_type;
      snprintf(name, sizeof name, "cache.%lld.%s", (long long)l, kv ? "value" : "key");
      arg_attrs[2 + 2 * l + kv] = name_attrs(c, name);
      snprintf(name, sizeof name, "present.%lld.%s", (long long)l, kv ? "value" : "key");
      result_attrs[1 + 2 * l + kv] = name_attrs(c, name);
    }
  }
  for (size_t i = 0; i < num_args; ++i)
    arg_locations[i] = s->location;

  MlirRegion region = mlirRegionCreate();
  MlirBlock block = mlirBlockCreate((intptr_t)num_args, arg_types, arg_locations);
  mlirRegionAppendOwnedBlock(region, block);
  MlirType function_type =
      mlirFunctionTypeGet(c, (intptr_t)num_args, arg_types, (intptr_t)num_results, result_types);
  MlirNamedAttribute function_attributes[] = {
      iq_named(c, "sym_name", iq_string_attr(c, "forward")),
      iq_named(c, "function_type", mlirTypeAttrGet(function_type)),
      iq_named(c, "arg_attrs", mlirArrayAttrGet(c, (intptr_t)num_args, arg_attrs)),
      iq_named(c, "res_attrs", mlirArrayAttrGet(c, (intptr_t)num_results, result_attrs)),
  };
  MlirOperationState state =
      mlirOperationStateGet(mlirStringRefCreateFromCString("func.func"), s->location);
  mlirOperationStateAddAttributes(&state, 4, function_attributes);
  mlirOperationStateAddOwnedRegions(&state, 1, &region);
  MlirOperation function = mlirOperationCreate(&state);

  canonical_builder_t cb = {.state = s, .b = {c, block, {NULL}}, .location = s->location,
                            .element = element};
  MlirValue ids = mlirBlockGetArgument(block, 0);
  MlirValue positions = mlirBlockGetArgument(block, 1);
  MlirValue table = weight(&cb, s->embedding_table, false, 0, 0);
  MlirValue x = build_one(&cb, "iq.embedding", 2, (MlirValue[]){table, ids},
                          activation_type(&cb, s->hidden), 0, NULL);

  MlirContext ctx = c;
  for (int64_t l = 0; l < L && !cb.failed; ++l) {
    const layer_sites_t *layer = &s->layers[l];
    MlirValue h = rms_norm(&cb, x, layer->attention_norm);
    MlirValue q = linear(&cb, "iq.linear", h, layer->q);
    MlirValue k = linear(&cb, "iq.linear", h, layer->k);
    MlirValue v = linear(&cb, "iq.linear", h, layer->v);
    if (cb.failed)
      break;
    MlirValue q_rotated = rope(&cb, q, positions);
    MlirValue k_rotated = rope(&cb, k, positions);

    MlirValue attention_operands[6] = {q_rotated, k_rotated, v,
                                       mlirBlockGetArgument(block, 2 + 2 * l),
                                       mlirBlockGetArgument(block, 3 + 2 * l), positions};
    MlirType attention_results[3] = {mlirValueGetType(q), cache_type, cache_type};
    MlirNamedAttribute attention_attributes[] = {
        iq_named(ctx, "num_heads", iq_i64_attr(ctx, s->num_heads)),
        iq_named(ctx, "num_kv_heads", iq_i64_attr(ctx, s->num_kv_heads)),
        iq_named(ctx, "scale", iq_f32_attr(ctx, s->scale)),
    };
    MlirOperation attention = iq_build(&cb.b, "iq.attention", cb.location, 6, attention_operands,
                                       3, attention_results, 3, attention_attributes);
    if (mlirOperationIsNull(attention)) {
      cb.failed = true;
      break;
    }
    results[1 + 2 * l] = iq_result(attention, 1);
    results[2 + 2 * l] = iq_result(attention, 2);

    MlirValue o = linear(&cb, "iq.linear", iq_result(attention, 0), layer->o);
    MlirValue x1 = add(&cb, x, o);
    MlirValue h2 = rms_norm(&cb, x1, layer->ffn_norm);
    MlirValue gate = linear(&cb, "iq.linear", h2, layer->gate);
    MlirValue up = linear(&cb, "iq.linear", h2, layer->up);
    if (cb.failed)
      break;
    MlirValue activated = build_one(&cb, "iq.silu_mul", 2, (MlirValue[]){gate, up},
                                    mlirValueGetType(gate), 0, NULL);
    MlirValue down = linear(&cb, "iq.linear", activated, layer->down);
    if (!cb.failed)
      x = add(&cb, x1, down);
  }

  if (!cb.failed) {
    MlirValue h = rms_norm(&cb, x, s->final_norm);
    results[0] = linear(&cb, "iq.lm_head", h, s->lm_head);
  }
  if (!cb.failed)
    iq_build(&cb.b, "func.return", cb.location, (intptr_t)num_results, results, 0, NULL, 0, NULL);

  free(arg_types), free(result_types), free(arg_attrs), free(result_attrs);
  free(arg_locations), free(results);
  if (cb.failed) {
    mlirOperationDestroy(function);
    return raise_fail(s, (MlirOperation){NULL}, "failed to build the canonical graph");
  }

  MlirBlock module_body = mlirRegionGetFirstBlock(mlirOperationGetRegion(module, 0));
  mlirBlockInsertOwnedOperationBefore(module_body, s->function, function);
  /* Recognition checks the configuration piece by piece, and a damaged
   * graph can still combine into ops the verifiers reject (integer weights,
   * an odd head_dim). Verifying here fails the pass with their diagnostics
   * instead of handing invalid IR to the passes after it. */
  if (!mlirOperationVerify(function) || !iq_verify(function)) {
    mlirOperationDestroy(function);
    return raise_fail(s, (MlirOperation){NULL},
                      "the graph rebuilt from the recognised LLaMA structure is invalid; the "
                      "errors above name the ops");
  }
  mlirOperationSetAttributeByName(module, mlirStringRefCreateFromCString("iq.config"),
                                  config_attr(s, c));
  return true;
}
