/* Semantic verification of iq ops: the element types, shape agreements and
 * attribute ranges that IRDL in MLIR 19 cannot express. */
#include "iq/ir.h"
#include "iq/iq_compiled.h"

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"
#include "mlir-c/Diagnostics.h"

/* Orders K of the non-power-of-two Hadamard matrices shipped with iq (the
 * Sloane tables used by the QuaRot and SpinQuant reference code). */
static const long long hadamard_k_factors[] = {12, 20, 28, 36, 40, 44, 52, 60, 108, 140, 156, 172};

bool iq_hadamard_size_is_supported(long long size) {
  if (size <= 0)
    return false;
  if ((size & (size - 1)) == 0)
    return true;
  for (size_t i = 0; i < sizeof hadamard_k_factors / sizeof hadamard_k_factors[0]; ++i) {
    long long k = hadamard_k_factors[i];
    if (size % k == 0) {
      long long rest = size / k;
      if ((rest & (rest - 1)) == 0)
        return true;
    }
  }
  return false;
}

/* ---- Diagnostics -------------------------------------------------------- */

typedef struct verifier {
  MlirOperation op;
  const char *name; /* the op's full name, NUL-terminated */
  bool ok;
} verifier_t;

static bool fail(verifier_t *v, const char *format, ...) __attribute__((format(printf, 2, 3)));

/* Emits "'iq.X' op MESSAGE" on the op's location, as MLIR's own verifiers
 * word their errors, and records the failure. Always returns false. */
static bool fail(verifier_t *v, const char *format, ...) {
  char message[512];
  int prefix = snprintf(message, sizeof message, "'%s' op ", v->name);
  va_list args;
  va_start(args, format);
  vsnprintf(message + prefix, sizeof message - (size_t)prefix, format, args);
  va_end(args);
  mlirEmitError(mlirOperationGetLocation(v->op), message);
  v->ok = false;
  return false;
}

/* ---- Type and attribute helpers ----------------------------------------- */

static MlirType operand_type(verifier_t *v, intptr_t i) {
  return mlirValueGetType(mlirOperationGetOperand(v->op, i));
}

static MlirType result_type(verifier_t *v, intptr_t i) {
  return mlirValueGetType(mlirOperationGetResult(v->op, i));
}

/* Requires a ranked tensor; `what` names the value in the message. */
static bool expect_ranked(verifier_t *v, MlirType type, const char *what) {
  if (mlirTypeIsARankedTensor(type))
    return true;
  return fail(v, "%s must be a ranked tensor", what);
}

static intptr_t rank_of(MlirType type) { return mlirShapedTypeGetRank(type); }

/* Size of dimension `i`, or -1 when it is dynamic. */
static int64_t dim_of(MlirType type, intptr_t i) {
  if (mlirShapedTypeIsDynamicDim(type, i))
    return -1;
  return mlirShapedTypeGetDimSize(type, i);
}

static bool dims_compatible(int64_t a, int64_t b) { return a < 0 || b < 0 || a == b; }

static bool expect_rank(verifier_t *v, MlirType type, intptr_t rank, const char *what) {
  if (rank_of(type) == rank)
    return true;
  return fail(v, "%s must have rank %ld, but has rank %ld", what, (long)rank, (long)rank_of(type));
}

static bool expect_float_elements(verifier_t *v, MlirType type, const char *what) {
  if (mlirTypeIsAFloat(mlirShapedTypeGetElementType(type)))
    return true;
  return fail(v, "%s must have a floating-point element type", what);
}

static bool expect_integer_elements(verifier_t *v, MlirType type, const char *what) {
  if (mlirTypeIsAInteger(mlirShapedTypeGetElementType(type)) ||
      mlirTypeIsAIndex(mlirShapedTypeGetElementType(type)))
    return true;
  return fail(v, "%s must have an integer element type", what);
}

static bool expect_dim(verifier_t *v, MlirType type, intptr_t i, int64_t expected,
                       const char *what, const char *expected_what) {
  int64_t actual = dim_of(type, i);
  if (dims_compatible(actual, expected))
    return true;
  return fail(v, "%s dimension %ld is %lld, but %s is %lld", what, (long)i, (long long)actual,
              expected_what, (long long)expected);
}

/* Requires `type` to have the shape of `reference` (dynamic sizes match
 * anything) and the same element type. */
static bool expect_same_shape_and_element(verifier_t *v, MlirType type, MlirType reference,
                                          const char *what, const char *reference_what) {
  if (!mlirTypeEqual(mlirShapedTypeGetElementType(type), mlirShapedTypeGetElementType(reference)))
    return fail(v, "%s must have the element type of %s", what, reference_what);
  if (rank_of(type) != rank_of(reference))
    return fail(v, "%s must have the rank of %s (%ld), but has rank %ld", what, reference_what,
                (long)rank_of(reference), (long)rank_of(type));
  for (intptr_t i = 0; i < rank_of(type); ++i) {
    if (!dims_compatible(dim_of(type, i), dim_of(reference, i)))
      return fail(v, "%s dimension %ld is %lld, but %s has %lld", what, (long)i,
                  (long long)dim_of(type, i), reference_what, (long long)dim_of(reference, i));
  }
  return true;
}

static MlirAttribute attribute(verifier_t *v, const char *name) {
  return mlirOperationGetAttributeByName(v->op, mlirStringRefCreateFromCString(name));
}

static int64_t int_attribute(verifier_t *v, const char *name) {
  return mlirIntegerAttrGetValueInt(attribute(v, name));
}

static double float_attribute(verifier_t *v, const char *name) {
  return mlirFloatAttrGetValueDouble(attribute(v, name));
}

static bool string_attribute_is(verifier_t *v, const char *name, const char *value) {
  MlirStringRef text = mlirStringAttrGetValue(attribute(v, name));
  return text.length == strlen(value) && memcmp(text.data, value, text.length) == 0;
}

/* Flags like `transposed`, `signed` and `symmetric` are i1 attributes. */
static bool expect_flag(verifier_t *v, const char *name) {
  MlirAttribute value = attribute(v, name);
  MlirType type = mlirAttributeGetType(value);
  if (mlirTypeIsAInteger(type) && mlirIntegerTypeGetWidth(type) == 1)
    return true;
  return fail(v, "attribute '%s' must be a boolean (true or false)", name);
}

/* ---- Per-op rules ------------------------------------------------------- */

static void verify_weight(verifier_t *v) {
  MlirStringRef name = mlirStringAttrGetValue(attribute(v, "name"));
  if (name.length == 0)
    fail(v, "attribute 'name' must name a tensor of the weight store, but is empty");
  if (!expect_ranked(v, result_type(v, 0), "result") || !expect_flag(v, "transposed"))
    return;
  if (mlirBoolAttrGetValue(attribute(v, "transposed")) && rank_of(result_type(v, 0)) != 2)
    fail(v, "only a 2-D weight can be stored transposed, but the result has rank %ld",
         (long)rank_of(result_type(v, 0)));
}

static void verify_embedding(verifier_t *v) {
  MlirType table = operand_type(v, 0), ids = operand_type(v, 1), out = result_type(v, 0);
  if (!expect_ranked(v, table, "table") || !expect_ranked(v, ids, "ids") ||
      !expect_ranked(v, out, "result"))
    return;
  if (!expect_rank(v, table, 2, "table") || !expect_integer_elements(v, ids, "ids"))
    return;
  if (!expect_rank(v, out, rank_of(ids) + 1, "result (ids rank + 1)"))
    return;
  for (intptr_t i = 0; i < rank_of(ids); ++i)
    if (!expect_dim(v, out, i, dim_of(ids, i), "result", "the matching ids dimension"))
      return;
  expect_dim(v, out, rank_of(ids), dim_of(table, 1), "result", "the table's hidden size");
  if (!mlirTypeEqual(mlirShapedTypeGetElementType(out), mlirShapedTypeGetElementType(table)))
    fail(v, "result must have the element type of the table");
}

static void verify_rms_norm(verifier_t *v) {
  MlirType x = operand_type(v, 0), out = result_type(v, 0);
  if (!expect_ranked(v, x, "input") || !expect_ranked(v, out, "result") ||
      !expect_float_elements(v, x, "input"))
    return;
  if (rank_of(x) < 1) {
    fail(v, "input must have at least one dimension");
    return;
  }
  expect_same_shape_and_element(v, out, x, "result", "the input");
  if (mlirOperationGetNumOperands(v->op) == 2) {
    MlirType gain = operand_type(v, 1);
    if (expect_ranked(v, gain, "gain") && expect_rank(v, gain, 1, "gain"))
      expect_dim(v, gain, 0, dim_of(x, rank_of(x) - 1), "gain", "the input's last dimension");
  }
  double epsilon = float_attribute(v, "epsilon");
  if (!(epsilon > 0.0) || !isfinite(epsilon))
    fail(v, "attribute 'epsilon' must be a positive finite number, but is %g", epsilon);
}

/* Shared by iq.linear and iq.lm_head: x [..., in] times weight [out, in]^T. */
static void verify_projection(verifier_t *v) {
  MlirType x = operand_type(v, 0), weight = operand_type(v, 1), out = result_type(v, 0);
  if (!expect_ranked(v, x, "input") || !expect_ranked(v, weight, "weight") ||
      !expect_ranked(v, out, "result") || !expect_float_elements(v, x, "input"))
    return;
  if (!expect_rank(v, weight, 2, "weight ([out_features, in_features])"))
    return;
  if (rank_of(x) < 1) {
    fail(v, "input must have at least one dimension");
    return;
  }
  intptr_t last = rank_of(x) - 1;
  int64_t in_features = dim_of(x, last);
  if (!dims_compatible(in_features, dim_of(weight, 1))) {
    fail(v, "weight has %lld input features, but the input's last dimension is %lld",
         (long long)dim_of(weight, 1), (long long)in_features);
    return;
  }
  if (!expect_rank(v, out, rank_of(x), "result"))
    return;
  for (intptr_t i = 0; i < last; ++i)
    if (!expect_dim(v, out, i, dim_of(x, i), "result", "the matching input dimension"))
      return;
  expect_dim(v, out, last, dim_of(weight, 0), "result", "the weight's output features");
  expect_float_elements(v, out, "result");

  if (mlirOperationGetNumOperands(v->op) == 3) {
    MlirType bias = operand_type(v, 2);
    if (expect_ranked(v, bias, "bias") && expect_rank(v, bias, 1, "bias"))
      expect_dim(v, bias, 0, dim_of(weight, 0), "bias", "the weight's output features");
  }
}

/* The packed-heads layout shared by iq.rope and iq.attention: [batch, seq,
 * heads * head_dim], with positions [batch, seq]. */
static bool expect_packed_heads(verifier_t *v, MlirType type, int64_t heads, int64_t head_dim,
                                const char *what) {
  if (!expect_ranked(v, type, what) || !expect_rank(v, type, 3, what) ||
      !expect_float_elements(v, type, what))
    return false;
  int64_t width = dim_of(type, 2);
  if (width < 0)
    return fail(v, "%s must have a static last dimension (heads * head_dim)", what);
  if (heads > 0 && head_dim > 0 && width != heads * head_dim)
    return fail(v, "%s last dimension is %lld, but %lld heads of %lld make %lld", what,
                (long long)width, (long long)heads, (long long)head_dim,
                (long long)(heads * head_dim));
  return true;
}

static bool expect_positions(verifier_t *v, MlirType positions, MlirType x) {
  if (!expect_ranked(v, positions, "positions") || !expect_rank(v, positions, 2, "positions") ||
      !expect_integer_elements(v, positions, "positions"))
    return false;
  return expect_dim(v, positions, 0, dim_of(x, 0), "positions", "the batch size") &&
         expect_dim(v, positions, 1, dim_of(x, 1), "positions", "the sequence length");
}

static void verify_rope(verifier_t *v) {
  MlirType x = operand_type(v, 0), positions = operand_type(v, 1), out = result_type(v, 0);
  int64_t head_dim = int_attribute(v, "head_dim");
  if (head_dim <= 0 || head_dim % 2 != 0) {
    fail(v, "attribute 'head_dim' must be positive and even to rotate pairs, but is %lld",
         (long long)head_dim);
    return;
  }
  if (!expect_packed_heads(v, x, 0, 0, "input ([batch, seq, heads * head_dim])") ||
      !expect_positions(v, positions, x) || !expect_ranked(v, out, "result"))
    return;
  if (dim_of(x, 2) % head_dim != 0) {
    fail(v, "input last dimension (%lld) is not a multiple of 'head_dim' (%lld)",
         (long long)dim_of(x, 2), (long long)head_dim);
    return;
  }
  expect_same_shape_and_element(v, out, x, "result", "the input");
  double theta = float_attribute(v, "theta");
  if (!(theta > 0.0) || !isfinite(theta))
    fail(v, "attribute 'theta' must be a positive finite number, but is %g", theta);
}

static void verify_attention(verifier_t *v) {
  int64_t num_heads = int_attribute(v, "num_heads");
  int64_t num_kv_heads = int_attribute(v, "num_kv_heads");
  if (num_heads <= 0 || num_kv_heads <= 0) {
    fail(v, "attributes 'num_heads' (%lld) and 'num_kv_heads' (%lld) must be positive",
         (long long)num_heads, (long long)num_kv_heads);
    return;
  }
  if (num_heads % num_kv_heads != 0) {
    fail(v, "'num_heads' (%lld) must be a multiple of 'num_kv_heads' (%lld)",
         (long long)num_heads, (long long)num_kv_heads);
    return;
  }
  double scale = float_attribute(v, "scale");
  if (!(scale > 0.0) || !isfinite(scale))
    fail(v, "attribute 'scale' must be a positive finite number, but is %g", scale);

  /* The caches fix head_dim: [batch, num_kv_heads, context, head_dim]. */
  static const char *const cache_names[] = {"k_cache", "v_cache"};
  int64_t head_dim = -1;
  for (intptr_t i = 3; i < 5; ++i) {
    MlirType cache = operand_type(v, i);
    const char *what = cache_names[i - 3];
    if (!expect_ranked(v, cache, what) || !expect_rank(v, cache, 4, what) ||
        !expect_float_elements(v, cache, what) ||
        !expect_dim(v, cache, 1, num_kv_heads, what, "'num_kv_heads'"))
      return;
    if (dim_of(cache, 3) < 0) {
      fail(v, "%s must have a static head dimension", what);
      return;
    }
    if (head_dim >= 0 && dim_of(cache, 3) != head_dim) {
      fail(v, "k_cache and v_cache have different head dimensions");
      return;
    }
    head_dim = dim_of(cache, 3);
  }

  MlirType q = operand_type(v, 0);
  if (!expect_packed_heads(v, q, num_heads, head_dim, "q") ||
      !expect_packed_heads(v, operand_type(v, 1), num_kv_heads, head_dim, "k") ||
      !expect_packed_heads(v, operand_type(v, 2), num_kv_heads, head_dim, "v") ||
      !expect_positions(v, operand_type(v, 5), q))
    return;
  if (!expect_ranked(v, result_type(v, 0), "output"))
    return;
  expect_same_shape_and_element(v, result_type(v, 0), q, "output", "q");
  if (expect_ranked(v, result_type(v, 1), "updated k_cache"))
    expect_same_shape_and_element(v, result_type(v, 1), operand_type(v, 3), "updated k_cache",
                                  "k_cache");
  if (expect_ranked(v, result_type(v, 2), "updated v_cache"))
    expect_same_shape_and_element(v, result_type(v, 2), operand_type(v, 4), "updated v_cache",
                                  "v_cache");
}

static void verify_silu_mul(verifier_t *v) {
  MlirType gate = operand_type(v, 0), up = operand_type(v, 1), out = result_type(v, 0);
  if (!expect_ranked(v, gate, "gate") || !expect_ranked(v, up, "up") ||
      !expect_ranked(v, out, "result") || !expect_float_elements(v, gate, "gate"))
    return;
  if (expect_same_shape_and_element(v, up, gate, "up", "gate"))
    expect_same_shape_and_element(v, out, gate, "result", "gate");
}

/* Checks the scheme attributes shared by iq.quantize and iq.dequantize, and
 * that `scale` and `zero_point` have the parameter shape the scheme implies
 * for a tensor of type `data`. */
static void verify_quant_scheme(verifier_t *v, MlirType data, MlirType scale, MlirType zero_point) {
  int64_t bits = int_attribute(v, "bits");
  if (bits < 2 || bits > 8) {
    fail(v, "attribute 'bits' must be between 2 and 8, but is %lld", (long long)bits);
    return;
  }
  if (!expect_flag(v, "signed") || !expect_flag(v, "symmetric"))
    return;
  double clip_ratio = float_attribute(v, "clip_ratio");
  if (!(clip_ratio > 0.0 && clip_ratio <= 1.0)) {
    fail(v, "attribute 'clip_ratio' must be in (0, 1], but is %g", clip_ratio);
    return;
  }

  intptr_t rank = rank_of(data);
  int64_t axis = int_attribute(v, "axis");
  int64_t group_size = int_attribute(v, "group_size");
  bool per_tensor = string_attribute_is(v, "granularity", "per_tensor");
  bool per_group = string_attribute_is(v, "granularity", "per_group");
  if (per_group && group_size <= 0) {
    fail(v, "per_group quantization needs a positive 'group_size', but it is %lld",
         (long long)group_size);
    return;
  }
  if (!per_group && group_size != 0) {
    fail(v, "'group_size' must be 0 unless granularity is per_group, but is %lld",
         (long long)group_size);
    return;
  }
  if (!per_tensor && (axis < 0 || axis >= rank)) {
    fail(v, "attribute 'axis' must be in [0, %ld) for a rank-%ld tensor, but is %lld", (long)rank,
         (long)rank, (long long)axis);
    return;
  }

  const char *names[] = {"scale", "zero_point"};
  MlirType types[] = {scale, zero_point};
  for (int p = 0; p < 2; ++p) {
    if (!expect_ranked(v, types[p], names[p]) ||
        !expect_float_elements(v, types[p], names[p]) ||
        !expect_rank(v, types[p], rank, names[p]))
      return;
    for (intptr_t i = 0; i < rank; ++i) {
      int64_t expected = dim_of(data, i);
      const char *why = "the matching data dimension";
      if (per_tensor) {
        expected = 1;
        why = "one scale for per_tensor";
      } else if (i == axis && per_group) {
        if (expected >= 0 && expected % group_size != 0) {
          fail(v, "dimension %ld (%lld) is not a multiple of 'group_size' (%lld)", (long)i,
               (long long)expected, (long long)group_size);
          return;
        }
        expected = expected < 0 ? -1 : expected / group_size;
        why = "the number of groups";
      } else if (i == axis) {
        expected = 1;
        why = "one scale along the quantization axis";
      }
      if (!dims_compatible(dim_of(types[p], i), expected)) {
        fail(v, "%s dimension %ld is %lld, but must be %lld (%s)", names[p], (long)i,
             (long long)dim_of(types[p], i), (long long)expected, why);
        return;
      }
    }
  }
}

/* Codes hold `bits`-bit values in an integer type at least that wide. */
static bool expect_codes(verifier_t *v, MlirType codes) {
  MlirType element = mlirShapedTypeGetElementType(codes);
  int64_t bits = int_attribute(v, "bits");
  if (!mlirTypeIsAInteger(element))
    return fail(v, "codes must have an integer element type");
  if ((int64_t)mlirIntegerTypeGetWidth(element) < bits)
    return fail(v, "codes of %lld bits do not fit the %u-bit element type", (long long)bits,
                mlirIntegerTypeGetWidth(element));
  return true;
}

static void verify_quantize(verifier_t *v) {
  MlirType x = operand_type(v, 0), codes = result_type(v, 0);
  if (!expect_ranked(v, x, "input") || !expect_float_elements(v, x, "input") ||
      !expect_ranked(v, codes, "codes"))
    return;
  if (!expect_codes(v, codes))
    return;
  for (intptr_t i = 0; i < rank_of(x) || i < rank_of(codes); ++i) {
    if (rank_of(codes) != rank_of(x) || !dims_compatible(dim_of(codes, i), dim_of(x, i))) {
      fail(v, "codes must have the input's shape");
      return;
    }
  }
  verify_quant_scheme(v, x, result_type(v, 1), result_type(v, 2));
}

static void verify_dequantize(verifier_t *v) {
  MlirType codes = operand_type(v, 0), out = result_type(v, 0);
  if (!expect_ranked(v, codes, "codes") || !expect_ranked(v, out, "result") ||
      !expect_float_elements(v, out, "result"))
    return;
  if (!expect_codes(v, codes))
    return;
  for (intptr_t i = 0; i < rank_of(out) || i < rank_of(codes); ++i) {
    if (rank_of(codes) != rank_of(out) || !dims_compatible(dim_of(codes, i), dim_of(out, i))) {
      fail(v, "result must have the shape of the codes");
      return;
    }
  }
  verify_quant_scheme(v, codes, operand_type(v, 1), operand_type(v, 2));
}

static void verify_hadamard(verifier_t *v) {
  MlirType x = operand_type(v, 0), out = result_type(v, 0);
  if (!expect_ranked(v, x, "input") || !expect_ranked(v, out, "result") ||
      !expect_float_elements(v, x, "input") || !expect_flag(v, "transposed"))
    return;
  int64_t size = int_attribute(v, "size");
  if (!iq_hadamard_size_is_supported(size)) {
    fail(v, "no Hadamard matrix of size %lld: use a power of two or K * 2^m with K in "
            "{12, 20, 28, 36, 40, 44, 52, 60, 108, 140, 156, 172}",
         (long long)size);
    return;
  }
  if (rank_of(x) < 1) {
    fail(v, "input must have at least one dimension");
    return;
  }
  int64_t last = dim_of(x, rank_of(x) - 1);
  if (last >= 0 && last % size != 0) {
    fail(v, "the input's last dimension (%lld) is not a multiple of 'size' (%lld)",
         (long long)last, (long long)size);
    return;
  }
  expect_same_shape_and_element(v, out, x, "result", "the input");
}

static void verify_observe(verifier_t *v) {
  MlirType x = operand_type(v, 0);
  if (!expect_ranked(v, x, "input") || !expect_float_elements(v, x, "input"))
    return;
  if (rank_of(x) != 3) {
    fail(v, "input must be [batch, seq, channels], got rank %lld", (long long)rank_of(x));
    return;
  }
  if (dim_of(x, 2) < 1) {
    fail(v, "the channel dimension must be static");
    return;
  }
  int64_t layer = int_attribute(v, "layer");
  if (layer < 0 || layer > IQ_OBSERVE_MAX_LAYER)
    fail(v, "'layer' is %lld, expected 0 to %d", (long long)layer, IQ_OBSERVE_MAX_LAYER);
}

/* ---- Driver ------------------------------------------------------------- */

typedef struct op_rule {
  const char *name;
  void (*verify)(verifier_t *);
} op_rule_t;

static const op_rule_t op_rules[] = {
    {"iq.weight", verify_weight},         {"iq.embedding", verify_embedding},
    {"iq.rms_norm", verify_rms_norm},     {"iq.linear", verify_projection},
    {"iq.rope", verify_rope},             {"iq.attention", verify_attention},
    {"iq.silu_mul", verify_silu_mul},     {"iq.lm_head", verify_projection},
    {"iq.quantize", verify_quantize},     {"iq.dequantize", verify_dequantize},
    {"iq.hadamard", verify_hadamard},     {"iq.observe", verify_observe},
};

static MlirWalkResult verify_one(MlirOperation op, void *user_data) {
  bool *all_ok = user_data;
  if (!iq_op_is_iq(op)) {
    MlirContext context = mlirOperationGetContext(op);
    if (!mlirContextIsRegisteredOperation(context, mlirIdentifierStr(mlirOperationGetName(op))) &&
        !iq_verify_unregistered_op(op))
      *all_ok = false;
    return MlirWalkResultAdvance;
  }

  MlirStringRef name = mlirIdentifierStr(mlirOperationGetName(op));
  char name_buffer[64];
  size_t length = name.length < sizeof name_buffer - 1 ? name.length : sizeof name_buffer - 1;
  memcpy(name_buffer, name.data, length);
  name_buffer[length] = '\0';

  verifier_t v = {op, name_buffer, true};
  for (size_t i = 0; i < sizeof op_rules / sizeof op_rules[0]; ++i) {
    if (strcmp(op_rules[i].name, name_buffer) == 0) {
      op_rules[i].verify(&v);
      break;
    }
  }
  if (!v.ok)
    *all_ok = false;
  return MlirWalkResultAdvance;
}

bool iq_verify(MlirOperation root) {
  bool all_ok = true;
  mlirOperationWalk(root, verify_one, &all_ok, MlirWalkPreOrder);
  return all_ok;
}
