/* iq-canonicalize: the folds and dead-code removal that MLIR's canonicalize
 * pass cannot do for iq ops, because IRDL ops have no traits (no Pure, no
 * folders) in MLIR 19. */
#include <stdlib.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/Diagnostics.h"

#include "iq/ir.h"
#include "iq/passes.h"

/* A growable list of ops collected by a walk, so the IR is not changed
 * while it is being walked. */
typedef struct op_list {
  MlirOperation *ops;
  size_t count, capacity;
  bool out_of_memory;
} op_list_t;

static MlirWalkResult collect_iq_op(MlirOperation op, void *user_data) {
  op_list_t *list = user_data;
  if (!iq_op_is_iq(op))
    return MlirWalkResultAdvance;
  if (list->count == list->capacity) {
    size_t capacity = list->capacity ? list->capacity * 2 : 64;
    MlirOperation *ops = realloc(list->ops, capacity * sizeof *ops);
    if (!ops) {
      list->out_of_memory = true;
      return MlirWalkResultInterrupt;
    }
    list->ops = ops;
    list->capacity = capacity;
  }
  list->ops[list->count++] = op;
  return MlirWalkResultAdvance;
}

static bool has_uses(MlirValue value) { return !mlirOpOperandIsNull(mlirValueGetFirstUse(value)); }

static bool results_unused(MlirOperation op) {
  for (intptr_t i = 0; i < mlirOperationGetNumResults(op); ++i)
    if (has_uses(mlirOperationGetResult(op, i)))
      return false;
  return true;
}

/* Erases pure iq ops whose results are unused. The list is in walk order,
 * where a use comes after its definition in the same block, so walking it
 * backwards erases a whole chain of dead ops in one sweep. */
static bool erase_dead_ops(op_list_t *list) {
  bool changed = false;
  for (size_t i = list->count; i-- > 0;) {
    MlirOperation op = list->ops[i];
    if (iq_op_is_pure(op) && results_unused(op)) {
      mlirOperationDestroy(op);
      list->ops[i] = (MlirOperation){NULL};
      changed = true;
    }
  }
  return changed;
}

/* The verifier has checked that flags are i1 attributes. */
static bool flag(MlirOperation op, const char *name) {
  return mlirBoolAttrGetValue(
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString(name)));
}

static long long integer(MlirOperation op, const char *name) {
  return mlirIntegerAttrGetValueInt(
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString(name)));
}

/* Returns true when hadamard(hadamard(x)) is x: with H of order n scaled
 * by 1/sqrt(n), H * H^T = I always, and H * H = I when H is symmetric,
 * which holds for the Sylvester construction iq uses for powers of two but
 * not for the K * 2^m tables. */
static bool hadamards_cancel(MlirOperation inner, MlirOperation outer) {
  long long size = integer(inner, "size");
  if (size != integer(outer, "size"))
    return false;
  bool inner_transposed = flag(inner, "transposed");
  bool outer_transposed = flag(outer, "transposed");
  bool power_of_two = (size & (size - 1)) == 0;
  return inner_transposed != outer_transposed || power_of_two;
}

/* Replaces hadamard(hadamard(x)) by x where the two cancel. The outer op is
 * left without uses, for the dead-op sweep. */
static bool fold_hadamard_pairs(op_list_t *list) {
  bool changed = false;
  for (size_t i = 0; i < list->count; ++i) {
    MlirOperation outer = list->ops[i];
    if (mlirOperationIsNull(outer) || !iq_op_is(outer, "hadamard"))
      continue;
    MlirValue result = mlirOperationGetResult(outer, 0);
    MlirValue operand = mlirOperationGetOperand(outer, 0);
    if (!has_uses(result) || !mlirValueIsAOpResult(operand))
      continue;
    MlirOperation inner = mlirOpResultGetOwner(operand);
    if (!iq_op_is(inner, "hadamard") || !hadamards_cancel(inner, outer))
      continue;
    MlirValue source = mlirOperationGetOperand(inner, 0);
    if (!mlirTypeEqual(mlirValueGetType(source), mlirValueGetType(result)))
      continue;
    mlirValueReplaceAllUsesOfWith(result, source);
    changed = true;
  }
  return changed;
}

static bool run_canonicalize(MlirOperation root, const iq_pass_options_t *options) {
  long long max_iterations = iq_pass_option_int(options, "max-iterations");
  bool fold_hadamards = iq_pass_option_bool(options, "fold-hadamard-pairs");
  bool remove_dead = iq_pass_option_bool(options, "remove-dead-ops");

  bool ok = true;
  for (long long iteration = 0; iteration < max_iterations; ++iteration) {
    op_list_t list = {0};
    mlirOperationWalk(root, collect_iq_op, &list, MlirWalkPostOrder);
    if (list.out_of_memory) {
      mlirEmitError(mlirOperationGetLocation(root), "iq-canonicalize: out of memory");
      free(list.ops);
      ok = false;
      break;
    }

    bool changed = false;
    if (fold_hadamards)
      changed = fold_hadamard_pairs(&list) || changed;
    if (remove_dead)
      changed = erase_dead_ops(&list) || changed;
    free(list.ops);
    if (!changed)
      break;
  }
  return ok;
}

static const iq_pass_option_info_t canonicalize_options[] = {
    {"max-iterations", IQ_OPTION_INT, "10",
     "maximum number of fold and erase sweeps before stopping", NULL, 1, 1000000},
    {"fold-hadamard-pairs", IQ_OPTION_BOOL, "true",
     "replace hadamard(hadamard(x)) by x where the transforms cancel", NULL, 1, 0},
    {"remove-dead-ops", IQ_OPTION_BOOL, "true", "erase side-effect-free iq ops with unused results",
     NULL, 1, 0},
};

const iq_pass_info_t iq_canonicalize_pass = {
    .name = "iq-canonicalize",
    .description = "Fold cancelling iq op pairs and erase unused iq ops",
    .options = canonicalize_options,
    .num_options = sizeof canonicalize_options / sizeof canonicalize_options[0],
    .run = run_canonicalize,
};
