/* iq-raise-llama: recognises the LLaMA structure of an imported graph,
 * whichever way it was exported, and rebuilds the function from iq's
 * canonical ops.
 *
 * Recognition works on roles, not on exact op sequences: RMSNorm sites
 * (opset-23 RMSNormalization, the com.microsoft Simplified and
 * SkipSimplified LayerNormalization ops, or the Pow-ReduceMean-Add-Sqrt
 * chain of torch.onnx exports), linear projections (MatMul or Gemm with a
 * weight), and attention cores (opset-23 Attention, com.microsoft
 * MultiHeadAttention and GroupQueryAttention, or a Softmax between two
 * MatMuls). A LLaMA graph has 2L + 1 norms for L attention cores; each
 * layer's projections are then told apart by which norm they read and
 * which attention operand they reach. The function is rebuilt from the
 * recognised weights and configuration, so every export style of one
 * model gives the same canonical graph. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"
#include "mlir-c/Diagnostics.h"

#include "RaiseLlama.h"
#include "RaiseLlamaMatch.h"
#include "iq/builder.h"
#include "iq/ir.h"
#include "iq/passes.h"

bool raise_fail(raise_state_t *s, MlirOperation at, const char *format, ...) {
  char message[640];
  int prefix = snprintf(message, sizeof message, "iq-raise-llama: ");
  va_list args;
  va_start(args, format);
  vsnprintf(message + prefix, sizeof message - (size_t)prefix, format, args);
  va_end(args);
  MlirOperation where = mlirOperationIsNull(at) ? s->function : at;
  mlirEmitError(mlirOperationGetLocation(where), message);
  return false;
}

static size_t position_of(const raise_state_t *s, MlirOperation op) {
  for (size_t i = 0; i < s->num_ops; ++i)
    if (mlirOperationEqual(s->ops[i], op))
      return i;
  return (size_t)-1;
}

static int64_t dim(MlirValue value, intptr_t index) {
  MlirType type = mlirValueGetType(value);
  if (!mlirTypeIsARankedTensor(type) || index >= mlirShapedTypeGetRank(type) ||
      mlirShapedTypeIsDynamicDim(type, index))
    return -1;
  return mlirShapedTypeGetDimSize(type, index);
}

static int64_t int_attr(MlirOperation op, const char *name, int64_t missing) {
  MlirAttribute attr = mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString(name));
  return !mlirAttributeIsNull(attr) && mlirAttributeIsAInteger(attr)
             ? mlirIntegerAttrGetValueInt(attr)
             : missing;
}

static double float_attr(MlirOperation op, const char *name, double missing) {
  MlirAttribute attr = mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString(name));
  return !mlirAttributeIsNull(attr) && mlirAttributeIsAFloat(attr)
             ? mlirFloatAttrGetValueDouble(attr)
             : missing;
}

/* Returns true for the element types mlirDenseElementsAttrGetInt64Value
 * accepts; see the same check in RaiseLlamaMatch.c for why it matters. */
static bool is_int64(MlirType type) {
  return mlirTypeIsAInteger(type) && mlirIntegerTypeGetWidth(type) == 64 &&
         !mlirIntegerTypeIsUnsigned(type);
}

/* ---- Norms -------------------------------------------------------------- */

/* Returns the other operand of a binary op when one operand is `value`. */
static bool other_operand(MlirOperation op, MlirValue value, MlirValue *other) {
  if (mlirOperationGetNumOperands(op) != 2)
    return false;
  if (mlirValueEqual(mlirOperationGetOperand(op, 0), value)) {
    *other = mlirOperationGetOperand(op, 1);
    return true;
  }
  if (mlirValueEqual(mlirOperationGetOperand(op, 1), value)) {
    *other = mlirOperationGetOperand(op, 0);
    return true;
  }
  return false;
}

/* Matches x * (1 / sqrt(mean(x^2) + eps)) [* gain] from its ReduceMean. */
static bool match_decomposed_norm(MlirOperation reduce, norm_site_t *norm) {
  MlirOperation square = match_def(match_skip_casts(mlirOperationGetOperand(reduce, 0)));
  MlirValue x;
  double exponent;
  if (match_is(square, "onnx.Pow") &&
      match_constant_scalar(mlirOperationGetOperand(square, 1), &exponent) && exponent == 2.0)
    x = mlirOperationGetOperand(square, 0);
  else if (match_is(square, "onnx.Mul") &&
           mlirValueEqual(mlirOperationGetOperand(square, 0), mlirOperationGetOperand(square, 1)))
    x = mlirOperationGetOperand(square, 0);
  else
    return false;
  x = match_skip_casts(x);

  MlirOperation add = match_single_user(mlirOperationGetResult(reduce, 0));
  MlirValue epsilon_value;
  if (!match_is(add, "onnx.Add") ||
      !other_operand(add, mlirOperationGetResult(reduce, 0), &epsilon_value) ||
      !match_constant_scalar(epsilon_value, &norm->epsilon))
    return false;
  MlirOperation root = match_single_user(mlirOperationGetResult(add, 0));
  if (!match_is(root, "onnx.Sqrt"))
    return false;

  /* x / sqrt(...), x * reciprocal(sqrt(...)) or x * (1 / sqrt(...)). */
  MlirValue denominator = mlirOperationGetResult(root, 0);
  MlirOperation next = match_single_user(denominator);
  MlirValue scaled;
  if (match_is(next, "onnx.Div") && mlirValueEqual(mlirOperationGetOperand(next, 1), denominator)) {
    double one;
    if (match_constant_scalar(mlirOperationGetOperand(next, 0), &one) && one == 1.0) {
      MlirOperation mul = match_single_user(mlirOperationGetResult(next, 0));
      MlirValue other;
      if (!match_is(mul, "onnx.Mul") ||
          !other_operand(mul, mlirOperationGetResult(next, 0), &other) ||
          !mlirValueEqual(match_skip_casts(other), x))
        return false;
      scaled = mlirOperationGetResult(mul, 0);
    } else if (mlirValueEqual(match_skip_casts(mlirOperationGetOperand(next, 0)), x)) {
      scaled = mlirOperationGetResult(next, 0);
    } else {
      return false;
    }
  } else if (match_is(next, "onnx.Reciprocal")) {
    MlirOperation mul = match_single_user(mlirOperationGetResult(next, 0));
    MlirValue other;
    if (!match_is(mul, "onnx.Mul") || !other_operand(mul, mlirOperationGetResult(next, 0), &other) ||
        !mlirValueEqual(match_skip_casts(other), x))
      return false;
    scaled = mlirOperationGetResult(mul, 0);
  } else {
    return false;
  }

  /* An optional gain, possibly after a cast back to the model's type. */
  norm->output = scaled;
  norm->gain = (MlirValue){NULL};
  norm->op = match_def(scaled);
  MlirOperation user = match_single_user(scaled);
  if (match_is(user, "onnx.Cast")) {
    scaled = mlirOperationGetResult(user, 0);
    user = match_single_user(scaled);
  }
  MlirValue gain;
  MlirOperation gain_source;
  if (match_is(user, "onnx.Mul") && other_operand(user, scaled, &gain) &&
      match_weight(gain, 1, &gain_source)) {
    norm->gain = gain;
    norm->output = mlirOperationGetResult(user, 0);
    norm->op = user;
  }
  return true;
}

static bool collect_norms(raise_state_t *s) {
  s->norms = calloc(s->num_ops + 1, sizeof *s->norms);
  if (!s->norms)
    return raise_fail(s, (MlirOperation){NULL}, "out of memory");
  for (size_t i = 0; i < s->num_ops; ++i) {
    MlirOperation op = s->ops[i];
    norm_site_t norm = {.op = op, .position = i};
    if (match_is(op, "onnx.RMSNormalization") || match_is(op, "onnx.SimplifiedLayerNormalization") ||
        match_is(op, "onnx.com.microsoft.SimplifiedLayerNormalization")) {
      norm.output = mlirOperationGetResult(op, 0);
      norm.gain = mlirOperationGetOperand(op, 1);
      norm.epsilon = float_attr(op, "epsilon", 1e-5);
    } else if (match_is(op, "onnx.com.microsoft.SkipSimplifiedLayerNormalization")) {
      norm.output = mlirOperationGetResult(op, 0);
      norm.gain = mlirOperationGetOperand(op, 2);
      norm.epsilon = float_attr(op, "epsilon", 1e-5);
    } else if (match_is(op, "onnx.ReduceMean")) {
      if (!match_decomposed_norm(op, &norm))
        continue;
      norm.position = position_of(s, norm.op);
    } else {
      continue;
    }
    s->norms[s->num_norms++] = norm;
  }
  return true;
}

/* ---- Linear projections ------------------------------------------------- */

static bool collect_linears(raise_state_t *s) {
  s->linears = calloc(s->num_ops + 1, sizeof *s->linears);
  if (!s->linears)
    return raise_fail(s, (MlirOperation){NULL}, "out of memory");
  for (size_t i = 0; i < s->num_ops; ++i) {
    MlirOperation op = s->ops[i];
    if (match_is(op, "onnx.com.microsoft.MatMulNBits"))
      return raise_fail(s, op,
                  "MatMulNBits (weights already quantized to int4) is not supported yet; "
                  "export the model with float weights");
    bool gemm = match_is(op, "onnx.Gemm");
    if (!match_is(op, "onnx.MatMul") && !gemm)
      continue;

    linear_site_t linear = {.op = op, .position = i};
    MlirValue weight = mlirOperationGetOperand(op, 1);
    MlirOperation transpose = match_def(match_skip_casts(weight));
    bool explicit_transpose = match_is(transpose, "onnx.Transpose");
    if (explicit_transpose)
      weight = mlirOperationGetOperand(transpose, 0);
    if (!match_weight(weight, 2, &linear.weight))
      continue;
    if (gemm && (int_attr(op, "transA", 0) != 0 || mlirOperationGetNumOperands(op) > 2))
      return raise_fail(s, op, "Gemm with transA or a bias is not supported in LLaMA projections");

    /* MatMul computes x * W with W [in, out]; a Transpose in front or
     * Gemm's transB means the stored tensor is [out, in]. */
    bool stored_out_in = explicit_transpose != (gemm && int_attr(op, "transB", 0) != 0);
    MlirValue source = mlirOperationGetResult(linear.weight, 0);
    linear.stored_in_out = !stored_out_in;
    linear.in = dim(source, stored_out_in ? 1 : 0);
    linear.out = dim(source, stored_out_in ? 0 : 1);
    linear.input = match_skip_casts(mlirOperationGetOperand(op, 0));
    linear.output = mlirOperationGetResult(op, 0);
    s->linears[s->num_linears++] = linear;
  }
  return true;
}

/* ---- Attention cores ---------------------------------------------------- */

/* Follows the Softmax input back to the Q * K^T MatMul through the scale,
 * mask and cast ops that exports put between them. */
static MlirOperation find_qk_matmul(MlirOperation softmax, double *scale) {
  MlirValue value = mlirOperationGetOperand(softmax, 0);
  *scale = 0.0;
  for (int depth = 0; depth < 8; ++depth) {
    MlirOperation op = match_def(value);
    if (match_is(op, "onnx.MatMul"))
      return op;
    double constant;
    if (match_is(op, "onnx.Div") && match_constant_scalar(mlirOperationGetOperand(op, 1), &constant))
      *scale = 1.0 / constant;
    else if (match_is(op, "onnx.Mul") &&
             (match_constant_scalar(mlirOperationGetOperand(op, 1), &constant) ||
              match_constant_scalar(mlirOperationGetOperand(op, 0), &constant)))
      *scale = constant;
    if (!match_is(op, "onnx.Add") && !match_is(op, "onnx.Div") && !match_is(op, "onnx.Mul") &&
        !match_is(op, "onnx.Cast") && !match_is(op, "onnx.Where") && !match_is(op, "onnx.Sub"))
      return (MlirOperation){NULL};
    /* The scores are the first operand of Add, Div and Mul, the second
     * of Where (condition, scores or mask, ...) in common exports. */
    intptr_t index = match_is(op, "onnx.Where") ? 2 : 0;
    MlirOperation first = match_def(mlirOperationGetOperand(op, index));
    if (match_is(op, "onnx.Add") && !match_is(first, "onnx.MatMul") &&
        !match_is(first, "onnx.Div") && !match_is(first, "onnx.Mul") &&
        !match_is(first, "onnx.Cast"))
      index = 1;
    value = mlirOperationGetOperand(op, index);
  }
  return (MlirOperation){NULL};
}

static bool collect_attentions(raise_state_t *s) {
  s->attentions = calloc(s->num_ops + 1, sizeof *s->attentions);
  if (!s->attentions)
    return raise_fail(s, (MlirOperation){NULL}, "out of memory");
  for (size_t i = 0; i < s->num_ops; ++i) {
    MlirOperation op = s->ops[i];
    attention_site_t site = {.core = op, .position = i};
    if (match_is(op, "onnx.Attention")) {
      site.num_heads = int_attr(op, "q_num_heads", 0);
      site.num_kv_heads = int_attr(op, "kv_num_heads", 0);
      site.scale = float_attr(op, "scale", 0.0);
      if (mlirOperationGetNumOperands(op) > 4)
        site.head_dim = dim(mlirOperationGetOperand(op, 4), 3);
    } else if (match_is(op, "onnx.com.microsoft.MultiHeadAttention")) {
      site.num_heads = site.num_kv_heads = int_attr(op, "num_heads", 0);
      site.scale = float_attr(op, "scale", 0.0);
      if (mlirOperationGetNumOperands(op) > 6)
        site.head_dim = dim(mlirOperationGetOperand(op, 6), 3);
    } else if (match_is(op, "onnx.com.microsoft.GroupQueryAttention")) {
      site.num_heads = int_attr(op, "num_heads", 0);
      site.num_kv_heads = int_attr(op, "kv_num_heads", 0);
      site.scale = float_attr(op, "scale", 0.0);
      if (mlirOperationGetNumOperands(op) > 3)
        site.head_dim = dim(mlirOperationGetOperand(op, 3), 3);
    } else if (match_is(op, "onnx.Softmax")) {
      site.qk = find_qk_matmul(op, &site.scale);
      MlirValue probabilities = mlirOperationGetResult(op, 0);
      MlirOperation user = match_single_user(probabilities);
      if (match_is(user, "onnx.Cast")) {
        probabilities = mlirOperationGetResult(user, 0);
        user = match_single_user(probabilities);
      }
      if (mlirOperationIsNull(site.qk) || !match_is(user, "onnx.MatMul") ||
          !mlirValueEqual(mlirOperationGetOperand(user, 0), probabilities))
        continue;
      site.pv = user;
    } else {
      continue;
    }
    if (site.head_dim < 0)
      site.head_dim = 0;
    s->attentions[s->num_attentions++] = site;
  }
  return true;
}

/* ---- Roles of q, k and v ------------------------------------------------ */

typedef struct role_search {
  const attention_site_t *attention;
  const raise_state_t *state;
  int role; /* 0 q, 1 k, 2 v, -1 not found */
  MlirValue frontier[256];
  size_t count;
} role_search_t;

static bool is_linear_op(const raise_state_t *s, MlirOperation op) {
  for (size_t i = 0; i < s->num_linears; ++i)
    if (mlirOperationEqual(s->linears[i].op, op))
      return true;
  return false;
}

static bool visit_role(MlirOperation user, intptr_t operand, void *data) {
  role_search_t *search = data;
  const attention_site_t *a = search->attention;
  if (mlirOperationEqual(user, a->core) && mlirOperationIsNull(a->qk)) {
    if (operand <= 2)
      search->role = (int)operand;
    return search->role < 0;
  }
  if (!mlirOperationIsNull(a->qk) && mlirOperationEqual(user, a->qk)) {
    search->role = operand == 0 ? 0 : 1;
    return false;
  }
  if (!mlirOperationIsNull(a->pv) && mlirOperationEqual(user, a->pv)) {
    if (operand == 1)
      search->role = 2;
    return search->role < 0;
  }
  if (is_linear_op(search->state, user) || match_is(user, "func.return"))
    return true;
  for (intptr_t r = 0; r < mlirOperationGetNumResults(user) && search->count < 256; ++r)
    search->frontier[search->count++] = mlirOperationGetResult(user, r);
  return true;
}

/* Returns which operand of `attention` the projection output reaches. */
static int find_role(const raise_state_t *s, const attention_site_t *attention, MlirValue output) {
  role_search_t search = {.attention = attention, .state = s, .role = -1};
  search.frontier[search.count++] = output;
  for (size_t next = 0; next < search.count && search.role < 0; ++next)
    match_for_each_user(search.frontier[next], visit_role, &search);
  return search.role;
}

/* ---- Layers ------------------------------------------------------------- */

static bool reads(const linear_site_t *linear, const norm_site_t *norm) {
  return mlirValueEqual(linear->input, match_skip_casts(norm->output)) ||
         mlirValueEqual(linear->input, norm->output);
}

static bool feeds_sigmoid(const linear_site_t *linear) {
  for (MlirOpOperand use = mlirValueGetFirstUse(linear->output); !mlirOpOperandIsNull(use);
       use = mlirOpOperandGetNextUse(use))
    if (match_is(mlirOpOperandGetOwner(use), "onnx.Sigmoid"))
      return true;
  return false;
}

static linear_site_t *only_linear_between(raise_state_t *s, size_t after, size_t before,
                                          const char *what, size_t layer) {
  linear_site_t *found = NULL;
  for (size_t i = 0; i < s->num_linears; ++i) {
    linear_site_t *linear = &s->linears[i];
    if (linear->used || linear->position <= after || linear->position >= before)
      continue;
    if (found) {
      raise_fail(s, linear->op, "layer %zu has more than one candidate for %s", layer, what);
      return NULL;
    }
    found = linear;
  }
  if (!found)
    raise_fail(s, (MlirOperation){NULL}, "layer %zu: no %s projection found", layer, what);
  else
    found->used = true;
  return found;
}

static bool assign_layer(raise_state_t *s, size_t l) {
  layer_sites_t *layer = &s->layers[l];
  layer->attention_norm = &s->norms[2 * l];
  layer->ffn_norm = &s->norms[2 * l + 1];
  layer->attention = &s->attentions[l];
  size_t next_norm = s->norms[2 * l + 2].position;

  if (!(layer->attention_norm->position < layer->attention->position &&
        layer->attention->position < layer->ffn_norm->position))
    return raise_fail(s, layer->attention->core,
                "layer %zu: the attention does not lie between the layer's two norms", l);

  linear_site_t **roles[3] = {&layer->q, &layer->k, &layer->v};
  static const char *const role_names[] = {"q", "k", "v"};
  for (size_t i = 0; i < s->num_linears; ++i) {
    linear_site_t *linear = &s->linears[i];
    if (!reads(linear, layer->attention_norm))
      continue;
    int role = find_role(s, layer->attention, linear->output);
    if (role < 0)
      return raise_fail(s, linear->op, "layer %zu: a projection of the attention input reaches neither "
                  "q, k nor v of the attention (fused QKV projections are not supported)", l);
    if (*roles[role])
      return raise_fail(s, linear->op, "layer %zu: two projections reach %s", l, role_names[role]);
    *roles[role] = linear;
    linear->used = true;
  }
  for (int r = 0; r < 3; ++r)
    if (!*roles[r])
      return raise_fail(s, layer->attention->core, "layer %zu: no %s projection found", l, role_names[r]);

  layer->o = only_linear_between(s, layer->attention->position, layer->ffn_norm->position,
                                 "o_proj", l);
  if (!layer->o)
    return false;

  for (size_t i = 0; i < s->num_linears; ++i) {
    linear_site_t *linear = &s->linears[i];
    if (!reads(linear, layer->ffn_norm))
      continue;
    linear_site_t **slot = feeds_sigmoid(linear) ? &layer->gate : &layer->up;
    if (*slot)
      return raise_fail(s, linear->op, "layer %zu: two projections of the MLP input look like %s", l,
                  slot == &layer->gate ? "gate_proj" : "up_proj");
    *slot = linear;
    linear->used = true;
  }
  if (!layer->gate || !layer->up)
    return raise_fail(s, layer->ffn_norm->op,
                "layer %zu: the MLP input needs a gate_proj (through SiLU) and an up_proj", l);
  layer->down = only_linear_between(s, layer->ffn_norm->position, next_norm, "down_proj", l);
  return layer->down != NULL;
}

/* ---- Configuration ------------------------------------------------------ */

/* Finds theta from a rotary table: a RotaryEmbedding op's cos/sin caches
 * ([positions, head_dim / 2], cos and sin of p * theta^(-2i / head_dim)),
 * or the inverse frequencies theta^(-2i / head_dim) that decomposed
 * exports feed to Cos and Sin. */
/* Rotary bases of LLaMA-family models are integers (10000 for LLaMA 2,
 * 500000 for LLaMA 3). A base read back from float tables is therefore
 * snapped to the nearest integer when it is within 1e-4 relative of it. */
static double snap_theta(double theta) {
  double nearest = round(theta);
  return fabs(theta - nearest) <= 1e-4 * fabs(theta) ? nearest : theta;
}

static bool find_rope(raise_state_t *s) {
  double forced = iq_pass_option_float(s->options, "rope-theta");
  s->rope_style = "half";
  for (size_t i = 0; i < s->num_ops; ++i) {
    MlirOperation op = s->ops[i];
    bool opset23 = match_is(op, "onnx.RotaryEmbedding");
    bool microsoft = match_is(op, "onnx.com.microsoft.RotaryEmbedding");
    if (!opset23 && !microsoft)
      continue;
    if (int_attr(op, "interleaved", 0) != 0)
      s->rope_style = "interleaved";
    if (forced > 0)
      break;
    MlirValue cos_cache = mlirOperationGetOperand(op, opset23 ? 1 : 2);
    MlirValue sin_cache = mlirOperationGetOperand(op, opset23 ? 2 : 3);
    int64_t half = dim(cos_cache, 1), rows = dim(cos_cache, 0);
    if (half < 2 || rows < 2 || half > 4096)
      return raise_fail(s, op, "cannot read theta from a rotary table of %lld x %lld; pass "
                        "--iq-raise-llama=rope-theta=VALUE", (long long)rows, (long long)half);
    /* Column 1 contains angle p * theta^(-2 / head_dim) at row p. A slope fitted
     * over many rows keeps the estimate exact enough for fp16 tables, whose
     * single entries carry errors near 1e-3. */
    size_t fit_rows = rows < 256 ? (size_t)rows : 256;
    size_t capacity = fit_rows * (size_t)half;
    float *cos_values = malloc(capacity * sizeof *cos_values);
    float *sin_values = malloc(capacity * sizeof *sin_values);
    size_t cos_count = 0, sin_count = 0;
    bool read = cos_values && sin_values &&
                match_read_floats(cos_cache, s->store_path, cos_values, capacity, &cos_count) &&
                match_read_floats(sin_cache, s->store_path, sin_values, capacity, &sin_count) &&
                cos_count >= capacity && sin_count >= capacity;
    double weighted = 0.0, squares = 0.0, unwrapped = 0.0, previous = 0.0;
    for (size_t p = 1; read && p < fit_rows; ++p) {
      double angle = atan2(sin_values[p * (size_t)half + 1], cos_values[p * (size_t)half + 1]);
      double step = angle - previous;
      step -= 2.0 * M_PI * floor((step + M_PI) / (2.0 * M_PI));
      unwrapped += step;
      previous = angle;
      weighted += (double)p * unwrapped;
      squares += (double)p * (double)p;
    }
    free(cos_values);
    free(sin_values);
    if (!read)
      return raise_fail(s, op, "cannot read the rotary cos/sin tables (is the weight store at '%s'?); "
                        "pass --iq-raise-llama=rope-theta=VALUE",
                        s->store_path ? s->store_path : "(unknown)");
    double angle = weighted / squares;
    s->theta = snap_theta(pow(angle, -(double)s->head_dim / 2.0));
    return true;
  }
  if (forced > 0) {
    s->theta = forced;
    return true;
  }

  for (size_t i = 0; i < s->num_ops; ++i) {
    if (!match_is(s->ops[i], "onnx.Cos"))
      continue;
    /* Walk back from Cos to the first float constant with head_dim / 2
     * elements: the inverse frequencies. */
    MlirValue frontier[32];
    size_t count = 0;
    frontier[count++] = mlirOperationGetOperand(s->ops[i], 0);
    for (size_t next = 0; next < count; ++next) {
      float values[512];
      size_t n = 0;
      if (match_read_floats(frontier[next], s->store_path, values, 512, &n) &&
          (int64_t)n * 2 == s->head_dim && n >= 2 && values[0] == 1.0f) {
        s->theta = snap_theta(pow(values[1], -(double)s->head_dim / 2.0));
        return true;
      }
      MlirOperation op = match_def(frontier[next]);
      for (intptr_t o = 0; !mlirOperationIsNull(op) && o < mlirOperationGetNumOperands(op) &&
                           count < 32; ++o)
        frontier[count++] = mlirOperationGetOperand(op, o);
    }
  }
  return raise_fail(s, (MlirOperation){NULL},
              "cannot find the rotary embedding's theta in the graph; pass "
              "--iq-raise-llama=rope-theta=VALUE");
}

/* head_dim from the attention op or its cache, else from a Reshape of q
 * to [batch, seq, heads, head_dim]. */
static bool find_head_dim(raise_state_t *s) {
  const attention_site_t *a = s->layers[0].attention;
  if (a->head_dim > 0) {
    s->head_dim = a->head_dim;
  } else if (a->num_heads > 0 && s->layers[0].q->out % a->num_heads == 0) {
    s->head_dim = s->layers[0].q->out / a->num_heads;
  } else {
    MlirOperation reshape = match_single_user(s->layers[0].q->output);
    MlirOperation shape = match_is(reshape, "onnx.Reshape")
                              ? match_def(mlirOperationGetOperand(reshape, 1))
                              : (MlirOperation){NULL};
    if (match_is(shape, "arith.constant")) {
      MlirAttribute values =
          mlirOperationGetAttributeByName(shape, mlirStringRefCreateFromCString("value"));
      if (mlirAttributeIsADenseElements(values) && mlirElementsAttrGetNumElements(values) == 4 &&
          is_int64(mlirShapedTypeGetElementType(mlirAttributeGetType(values))))
        s->head_dim = mlirDenseElementsAttrGetInt64Value(values, 3);
    }
  }
  if (s->head_dim <= 0 || s->layers[0].q->out % s->head_dim != 0 ||
      s->layers[0].k->out % s->head_dim != 0)
    return raise_fail(s, a->core, "cannot determine the head dimension of the attention");
  s->num_heads = s->layers[0].q->out / s->head_dim;
  s->num_kv_heads = s->layers[0].k->out / s->head_dim;
  if (a->num_heads > 0 && a->num_heads != s->num_heads)
    return raise_fail(s, a->core, "the attention has %lld heads, but q_proj makes %lld of %lld",
                (long long)a->num_heads, (long long)s->num_heads, (long long)s->head_dim);
  s->scale = a->scale > 0 ? a->scale : 1.0 / sqrt((double)s->head_dim);
  return true;
}

static bool check_layer_shapes(raise_state_t *s) {
  for (int64_t l = 0; l < s->num_layers; ++l) {
    layer_sites_t *layer = &s->layers[l];
    struct {
      linear_site_t *linear;
      int64_t in, out;
      const char *name;
    } expected[] = {
        {layer->q, s->hidden, s->num_heads * s->head_dim, "q_proj"},
        {layer->k, s->hidden, s->num_kv_heads * s->head_dim, "k_proj"},
        {layer->v, s->hidden, s->num_kv_heads * s->head_dim, "v_proj"},
        {layer->o, s->num_heads * s->head_dim, s->hidden, "o_proj"},
        {layer->gate, s->hidden, s->ffn, "gate_proj"},
        {layer->up, s->hidden, s->ffn, "up_proj"},
        {layer->down, s->ffn, s->hidden, "down_proj"},
    };
    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; ++i)
      if (expected[i].linear->in != expected[i].in || expected[i].linear->out != expected[i].out)
        return raise_fail(s, expected[i].linear->op,
                    "layer %lld: %s is %lld x %lld, but the configuration needs %lld x %lld",
                    (long long)l, expected[i].name, (long long)expected[i].linear->in,
                    (long long)expected[i].linear->out, (long long)expected[i].in,
                    (long long)expected[i].out);
    if (fabs(layer->attention_norm->epsilon - s->epsilon) > 1e-12 ||
        fabs(layer->ffn_norm->epsilon - s->epsilon) > 1e-12)
      return raise_fail(s, layer->attention_norm->op, "layer %lld: the norms use different epsilons",
                  (long long)l);
  }
  return true;
}

/* Checks the constants read from the graph against what the canonical ops
 * accept. A damaged or unusual export can give NaN, infinite or
 * non-positive values, and check_layer_shapes's epsilon comparison lets NaN
 * through. */
static bool check_constants(raise_state_t *s) {
  if (!(s->theta > 0.0) || !isfinite(s->theta))
    return raise_fail(s, (MlirOperation){NULL},
                      "the rotary theta read from the graph is %g, which is not a positive finite "
                      "number; pass --iq-raise-llama=rope-theta=VALUE",
                      s->theta);
  if (!(s->scale > 0.0) || !isfinite(s->scale))
    return raise_fail(s, s->layers[0].attention->core,
                      "the attention scale %g is not a positive finite number", s->scale);
  for (size_t i = 0; i < s->num_norms; ++i)
    if (!(s->norms[i].epsilon > 0.0) || !isfinite(s->norms[i].epsilon))
      return raise_fail(s, s->norms[i].op,
                        "the RMSNorm epsilon %g is not a positive finite number",
                        s->norms[i].epsilon);
  return true;
}

/* ---- Driver ------------------------------------------------------------- */

static bool find_embedding(raise_state_t *s) {
  for (size_t i = 0; i < s->num_ops; ++i) {
    MlirOperation op = s->ops[i];
    MlirValue ids;
    if (!match_is(op, "onnx.Gather") || !match_weight(mlirOperationGetOperand(op, 0), 2,
                                                      &s->embedding_table))
      continue;
    ids = match_skip_casts(mlirOperationGetOperand(op, 1));
    if (mlirValueIsABlockArgument(ids))
      return true;
  }
  return raise_fail(s, (MlirOperation){NULL}, "no token embedding (Gather of a weight by the input ids) "
              "found");
}

static bool recognise(raise_state_t *s) {
  if (!find_embedding(s) || !collect_norms(s) || !collect_linears(s) || !collect_attentions(s))
    return false;
  size_t layers = s->num_attentions;
  if (layers == 0)
    return raise_fail(s, (MlirOperation){NULL}, "no attention found; is this a LLaMA graph?");
  if (layers > MAX_LAYERS)
    return raise_fail(s, (MlirOperation){NULL}, "%zu layers; iq supports up to %d", layers, MAX_LAYERS);
  if (s->num_norms != 2 * layers + 1)
    return raise_fail(s, (MlirOperation){NULL},
                "found %zu RMSNorms for %zu attention blocks; a LLaMA graph has 2 per layer and "
                "a final one",
                s->num_norms, layers);
  s->num_layers = (int64_t)layers;
  for (size_t l = 0; l < layers; ++l)
    if (!assign_layer(s, l))
      return false;

  s->final_norm = &s->norms[2 * layers];
  for (size_t i = 0; i < s->num_linears; ++i)
    if (!s->linears[i].used && reads(&s->linears[i], s->final_norm))
      s->lm_head = &s->linears[i];
  if (!s->lm_head)
    return raise_fail(s, s->final_norm->op, "no lm_head projection of the final norm found");

  MlirValue table = mlirOperationGetResult(s->embedding_table, 0);
  s->vocab = dim(table, 0);
  s->hidden = dim(table, 1);
  s->ffn = s->layers[0].gate->out;
  s->epsilon = s->layers[0].attention_norm->epsilon;
  if (s->lm_head->out != s->vocab || s->lm_head->in != s->hidden)
    return raise_fail(s, s->lm_head->op, "lm_head is %lld x %lld, but the embedding is %lld x %lld",
                (long long)s->lm_head->in, (long long)s->lm_head->out, (long long)s->vocab,
                (long long)s->hidden);
  return find_head_dim(s) && check_layer_shapes(s) && find_rope(s) && check_constants(s);
}

static char *store_path_for(MlirOperation module) {
  MlirAttribute attr =
      mlirOperationGetAttributeByName(module, mlirStringRefCreateFromCString("iq.weight_store"));
  if (!mlirAttributeIsAString(attr))
    return NULL;
  MlirStringRef reference = mlirStringAttrGetValue(attr);
  const char *base = iq_weight_store_base_dir();
  size_t size = strlen(base) + reference.length + 2;
  char *path = malloc(size);
  if (!path)
    return NULL;
  if (reference.length > 0 && reference.data[0] == '/')
    snprintf(path, size, "%.*s", (int)reference.length, reference.data);
  else
    snprintf(path, size, "%s/%.*s", base, (int)reference.length, reference.data);
  return path;
}

static bool raise_function(MlirOperation module, MlirOperation function,
                           const iq_pass_options_t *options) {
  raise_state_t *s = calloc(1, sizeof *s);
  if (!s) {
    mlirEmitError(mlirOperationGetLocation(function), "iq-raise-llama: out of memory");
    return false;
  }
  s->function = function;
  s->location = mlirOperationGetLocation(function);
  s->options = options;
  char *store_path = store_path_for(module);
  s->store_path = store_path;

  MlirBlock body = mlirRegionGetFirstBlock(mlirOperationGetRegion(function, 0));
  for (MlirOperation op = mlirBlockGetFirstOperation(body); !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op))
    ++s->num_ops;
  s->ops = calloc(s->num_ops + 1, sizeof *s->ops);
  size_t i = 0;
  for (MlirOperation op = mlirBlockGetFirstOperation(body); s->ops && !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op))
    s->ops[i++] = op;

  bool ok = s->ops && recognise(s) && build_canonical(s, module);
  if (ok)
    mlirOperationDestroy(function);

  match_release_store();
  free(store_path);
  free(s->ops);
  free(s->norms);
  free(s->linears);
  free(s->attentions);
  free(s);
  return ok;
}

/* Returns true when the function contains imported ONNX ops. */
static bool has_onnx_ops(MlirOperation function) {
  MlirBlock body = mlirRegionGetFirstBlock(mlirOperationGetRegion(function, 0));
  for (MlirOperation op = mlirBlockGetFirstOperation(body); !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op)) {
    MlirStringRef name = mlirIdentifierStr(mlirOperationGetName(op));
    if (name.length > 5 && memcmp(name.data, "onnx.", 5) == 0)
      return true;
  }
  return false;
}

static bool run_raise(MlirOperation root, const iq_pass_options_t *options) {
  if (!match_is(root, "builtin.module")) {
    mlirEmitError(mlirOperationGetLocation(root),
                  "iq-raise-llama runs on a module; add it at the top of the pipeline");
    return false;
  }
  MlirBlock body = mlirRegionGetFirstBlock(mlirOperationGetRegion(root, 0));
  MlirOperation functions[64];
  size_t count = 0;
  for (MlirOperation op = mlirBlockGetFirstOperation(body); !mlirOperationIsNull(op) && count < 64;
       op = mlirOperationGetNextInBlock(op))
    if (match_is(op, "func.func") && mlirRegionGetFirstBlock(mlirOperationGetRegion(op, 0)).ptr &&
        has_onnx_ops(op))
      functions[count++] = op;
  for (size_t f = 0; f < count; ++f)
    if (!raise_function(root, functions[f], options))
      return false;
  return true;
}

static const iq_pass_option_info_t raise_options[] = {
    {"rope-theta", IQ_OPTION_FLOAT, "0",
     "base of the rotary frequencies; 0 reads it from the graph's rotary tables", NULL, 0, 1e12},
};

const iq_pass_info_t iq_raise_llama_pass = {
    .name = "iq-raise-llama",
    .description = "Recognise LLaMA structure in an imported ONNX graph and rebuild it from "
                   "canonical iq ops",
    .options = raise_options,
    .num_options = sizeof raise_options / sizeof raise_options[0],
    .run = run_raise,
};
