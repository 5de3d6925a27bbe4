/* iq-insert-observers: places iq.observe ops on the canonical LLaMA graph
 * at the tensors InfoQuant's calibration needs, keyed by layer and point.
 *
 * The layers are found by structure, not by name: layer i is the i-th
 * iq.attention of @forward in block order. Its v_proj is the iq.linear
 * producing the attention's v operand, with V its output and X its input.
 * The first iq.linear after the attention is o_proj, whose input is M.
 * The next is gate_proj, whose input is P. The first later iq.linear whose
 * input is not P is down_proj, whose input is Z. The iq.lm_head input is
 * H, with the layer count as its layer. Rotations or Hadamard transforms placed before
 * a projection therefore move the observed point with them, and the
 * residual converters of iq-rotate are skipped. */
#include <stdlib.h>
#include <string.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/Diagnostics.h"

#include "iq/builder.h"
#include "iq/calibration.h"
#include "iq/iq_compiled.h"
#include "iq/ir.h"
#include "iq/passes.h"

static MlirOperation find_forward(MlirOperation module) {
  MlirBlock body = mlirRegionGetFirstBlock(mlirOperationGetRegion(module, 0));
  for (MlirOperation op = mlirBlockGetFirstOperation(body); !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op)) {
    MlirAttribute symbol =
        mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("sym_name"));
    if (mlirAttributeIsNull(symbol) || !mlirAttributeIsAString(symbol))
      continue;
    MlirStringRef name = mlirStringAttrGetValue(symbol);
    if (name.length == 7 && memcmp(name.data, "forward", 7) == 0)
      return op;
  }
  return (MlirOperation){NULL};
}

static MlirOperation defining_op(MlirValue value) {
  return mlirValueIsAOpResult(value) ? mlirOpResultGetOwner(value) : (MlirOperation){NULL};
}

/* Inserts iq.observe(value) right after the op that defines it. */
static bool observe(MlirOperation anchor, MlirValue value, int64_t layer, const char *point) {
  MlirOperation definition = defining_op(value);
  if (mlirOperationIsNull(definition)) {
    mlirEmitError(mlirOperationGetLocation(anchor),
                  "iq-insert-observers: the observed tensor is a function argument");
    return false;
  }
  MlirContext context = mlirOperationGetContext(anchor);
  iq_builder_t builder = {.context = context,
                          .block = mlirOperationGetBlock(definition),
                          .before = mlirOperationGetNextInBlock(definition)};
  MlirNamedAttribute attributes[2] = {
      iq_named(context, "layer", iq_i64_attr(context, layer)),
      iq_named(context, "point", iq_string_attr(context, point)),
  };
  MlirOperation op = iq_build(&builder, "iq.observe", mlirOperationGetLocation(anchor), 1, &value,
                              0, NULL, 2, attributes);
  return !mlirOperationIsNull(op);
}

/* True for the residual converters of iq-rotate: linears whose weight is
 * `iq.rotate.layers.{i}.c1` or `.c2`. They sit on the residual stream
 * between o_proj and gate_proj and between down_proj and the next layer,
 * and are no projection of the layer. */
static bool is_residual_converter(MlirOperation linear) {
  MlirOperation weight = defining_op(mlirOperationGetOperand(linear, 1));
  if (mlirOperationIsNull(weight) || !iq_op_is(weight, "weight"))
    return false;
  MlirAttribute name_attr =
      mlirOperationGetAttributeByName(weight, mlirStringRefCreateFromCString("name"));
  if (mlirAttributeIsNull(name_attr) || !mlirAttributeIsAString(name_attr))
    return false;
  MlirStringRef name = mlirStringAttrGetValue(name_attr);
  static const char prefix[] = "iq.rotate.layers.";
  size_t prefix_length = sizeof prefix - 1;
  if (name.length < prefix_length + 3 || memcmp(name.data, prefix, prefix_length) != 0)
    return false;
  const char *suffix = name.data + name.length - 3;
  return memcmp(suffix, ".c1", 3) == 0 || memcmp(suffix, ".c2", 3) == 0;
}

/* The first iq.linear after position `start` of `ops` and before `end`,
 * skipping residual converters and linears whose input is `skip_input`
 * (when not null). Returns the index or `end`. */
static size_t next_linear(MlirOperation *ops, size_t start, size_t end, MlirValue skip_input) {
  for (size_t i = start; i < end; ++i) {
    if (!iq_op_is(ops[i], "linear") || is_residual_converter(ops[i]))
      continue;
    if (!mlirValueIsNull(skip_input) &&
        mlirValueEqual(mlirOperationGetOperand(ops[i], 0), skip_input))
      continue;
    return i;
  }
  return end;
}

static bool layer_fail(MlirOperation attention, long long layer, const char *what) {
  char message[256];
  snprintf(message, sizeof message,
           "iq-insert-observers: layer %lld: %s; run --iq-raise-llama first (the pass needs the "
           "canonical LLaMA layer structure)",
           layer, what);
  mlirEmitError(mlirOperationGetLocation(attention), message);
  return false;
}

bool iq_insert_observers(MlirOperation module) {
  MlirOperation forward = find_forward(module);
  if (mlirOperationIsNull(forward)) {
    mlirEmitError(mlirOperationGetLocation(module),
                  "iq-insert-observers: the module has no @forward; run --iq-raise-llama first");
    return false;
  }
  MlirBlock block = mlirRegionGetFirstBlock(mlirOperationGetRegion(forward, 0));

  /* Snapshot the ops first: observers are inserted while looking. */
  size_t count = 0;
  for (MlirOperation op = mlirBlockGetFirstOperation(block); !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op)) {
    if (iq_op_is(op, "observe")) {
      mlirEmitError(mlirOperationGetLocation(op),
                    "iq-insert-observers: the module already has observers");
      return false;
    }
    ++count;
  }
  MlirOperation *ops = malloc((count + 1) * sizeof *ops);
  size_t *attentions = malloc((count + 1) * sizeof *attentions);
  if (!ops || !attentions) {
    free(ops);
    free(attentions);
    mlirEmitError(mlirOperationGetLocation(module), "iq-insert-observers: out of memory");
    return false;
  }
  size_t num_attentions = 0, index = 0;
  MlirOperation lm_head = {NULL};
  for (MlirOperation op = mlirBlockGetFirstOperation(block); !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op), ++index) {
    ops[index] = op;
    if (iq_op_is(op, "attention"))
      attentions[num_attentions++] = index;
    if (iq_op_is(op, "lm_head"))
      lm_head = op;
  }

  bool ok = true;
  for (size_t layer = 0; ok && layer < num_attentions; ++layer) {
    MlirOperation attention = ops[attentions[layer]];
    size_t end = layer + 1 < num_attentions ? attentions[layer + 1] : count;
    MlirOperation v_proj = defining_op(mlirOperationGetOperand(attention, 2));
    if (mlirOperationIsNull(v_proj) || !iq_op_is(v_proj, "linear")) {
      ok = layer_fail(attention, (long long)layer, "the attention's v operand is not an iq.linear");
      break;
    }
    size_t o_index = next_linear(ops, attentions[layer] + 1, end, (MlirValue){NULL});
    size_t gate_index = o_index < end ? next_linear(ops, o_index + 1, end, (MlirValue){NULL}) : end;
    MlirValue p = gate_index < end ? mlirOperationGetOperand(ops[gate_index], 0) : (MlirValue){NULL};
    size_t down_index = gate_index < end ? next_linear(ops, gate_index + 1, end, p) : end;
    if (down_index == end) {
      ok = layer_fail(attention, (long long)layer,
                      "cannot find o_proj, gate_proj and down_proj after the attention");
      break;
    }
    ok = observe(attention, mlirOperationGetOperand(v_proj, 0), (long long)layer, "X") &&
         observe(attention, mlirOperationGetResult(v_proj, 0), (long long)layer, "V") &&
         observe(attention, mlirOperationGetOperand(ops[o_index], 0), (long long)layer, "M") &&
         observe(attention, p, (long long)layer, "P") &&
         observe(attention, mlirOperationGetOperand(ops[down_index], 0), (long long)layer, "Z");
  }
  if (ok && num_attentions == 0) {
    mlirEmitError(mlirOperationGetLocation(forward),
                  "iq-insert-observers: @forward has no iq.attention; run --iq-raise-llama first");
    ok = false;
  }
  if (ok && !mlirOperationIsNull(lm_head))
    ok = observe(lm_head, mlirOperationGetOperand(lm_head, 0), (long long)num_attentions, "H");
  free(ops);
  free(attentions);
  return ok;
}

static bool run_insert_observers(MlirOperation root, const iq_pass_options_t *options) {
  (void)options;
  return iq_insert_observers(root);
}

const iq_pass_info_t iq_insert_observers_pass = {
    .name = "iq-insert-observers",
    .description = "Insert iq.observe ops at the tensors calibration records (X, P, V, M, Z per "
                   "layer, and the lm_head input)",
    .options = NULL,
    .num_options = 0,
    .run = run_insert_observers,
};
