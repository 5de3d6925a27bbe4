/* The ONNX ops of the generic graph lowering, each as scf.for loop nests
 * over flat memrefs (see GraphLowering.h). Output shapes come from the
 * result types, so ops whose output shape depends on an input's values
 * (Reshape, Expand, Tile, Range, ConstantOfShape) need only the values
 * that the elements depend on, and those are read at run time. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"

#include "GraphLowering.h"

static bool is(const char *op_type, const char *name) { return strcmp(op_type, name) == 0; }

static bool present(const graph_value_t *const *ins, int num_ins, int index) {
  return index < num_ins && ins[index]->buffer >= 0;
}

static int normalize_axis(int64_t axis, int rank) { return (int)(axis < 0 ? axis + rank : axis); }

/* Loads element 0 of a scalar (or 1-element) input as i64. */
static int load_scalar_i64(graph_lowering_t *g, const graph_value_t *v) {
  int value = graph_load(g, v, GRAPH_C0);
  return graph_convert(g, value, &v->elem, &graph_i64);
}

/* ---- Elementwise ops ---------------------------------------------------------- */

static int unary_scalar(graph_lowering_t *g, const char *op_type, int x, const graph_elem_t *e) {
  const char *t = e->type;
  if (is(op_type, "Neg")) {
    if (e->is_float)
      return graph_emit(g, "arith.negf %%v%d : %s", x, t);
    return graph_emit(g, "arith.subi %%v%d, %%v%d : %s", graph_int_const(g, 0, t), x, t);
  }
  if (is(op_type, "Not"))
    return graph_emit(g, "arith.xori %%v%d, %%v%d : i1", x, graph_int_const(g, 1, "i1"));
  if (is(op_type, "Sqrt"))
    return graph_emit(g, "math.sqrt %%v%d : %s", x, t);
  if (is(op_type, "Sin"))
    return graph_emit(g, "math.sin %%v%d : %s", x, t);
  if (is(op_type, "Cos"))
    return graph_emit(g, "math.cos %%v%d : %s", x, t);
  if (is(op_type, "Exp"))
    return graph_emit(g, "math.exp %%v%d : %s", x, t);
  if (is(op_type, "Reciprocal"))
    return graph_emit(g, "arith.divf %%v%d, %%v%d : %s", graph_float_const(g, 1.0, e), x, t);
  if (is(op_type, "Sigmoid")) {
    int negated = graph_emit(g, "arith.negf %%v%d : %s", x, t);
    int exp = graph_emit(g, "math.exp %%v%d : %s", negated, t);
    int one = graph_float_const(g, 1.0, e);
    int denominator = graph_emit(g, "arith.addf %%v%d, %%v%d : %s", one, exp, t);
    return graph_emit(g, "arith.divf %%v%d, %%v%d : %s", one, denominator, t);
  }
  return x; /* Identity, Expand, Tile: a copy */
}

/* Pow: float bases use math.powf in their type; integer bases go through
 * f64 and truncate back, as the reference does with numpy. */
static int pow_scalar(graph_lowering_t *g, int x, const graph_elem_t *ex, int y,
                      const graph_elem_t *ey) {
  if (ex->is_float) {
    int exponent = graph_convert(g, y, ey, ex);
    return graph_emit(g, "math.powf %%v%d, %%v%d : %s", x, exponent, ex->type);
  }
  int base = graph_convert(g, x, ex, &graph_f64);
  int exponent = graph_convert(g, y, ey, &graph_f64);
  int result = graph_emit(g, "math.powf %%v%d, %%v%d : f64", base, exponent);
  return graph_convert(g, result, &graph_f64, ex);
}

static int binary_scalar(graph_lowering_t *g, const char *op_type, int a, int b,
                         const graph_elem_t *e) {
  const char *t = e->type;
  bool f = e->is_float, u = e->is_unsigned;
  static const struct {
    const char *op, *float_op, *signed_op, *unsigned_op;
  } arithmetic[] = {
      {"Add", "addf", "addi", "addi"},          {"Sub", "subf", "subi", "subi"},
      {"Mul", "mulf", "muli", "muli"},          {"Div", "divf", "divsi", "divui"},
      {"Max", "maximumf", "maxsi", "maxui"},    {"Min", "minimumf", "minsi", "minui"},
      {"And", "andi", "andi", "andi"},          {"Or", "ori", "ori", "ori"},
  };
  for (size_t i = 0; i < sizeof arithmetic / sizeof arithmetic[0]; ++i)
    if (is(op_type, arithmetic[i].op))
      return graph_emit(g, "arith.%s %%v%d, %%v%d : %s",
                        f ? arithmetic[i].float_op
                          : (u ? arithmetic[i].unsigned_op : arithmetic[i].signed_op),
                        a, b, t);
  static const struct {
    const char *op, *float_predicate, *signed_predicate, *unsigned_predicate;
  } comparisons[] = {
      {"Less", "olt", "slt", "ult"},          {"LessOrEqual", "ole", "sle", "ule"},
      {"Greater", "ogt", "sgt", "ugt"},       {"GreaterOrEqual", "oge", "sge", "uge"},
      {"Equal", "oeq", "eq", "eq"},
  };
  for (size_t i = 0; i < sizeof comparisons / sizeof comparisons[0]; ++i)
    if (is(op_type, comparisons[i].op))
      return graph_emit(g, "arith.%s %s, %%v%d, %%v%d : %s", f ? "cmpf" : "cmpi",
                        f ? comparisons[i].float_predicate
                          : (u ? comparisons[i].unsigned_predicate : comparisons[i].signed_predicate),
                        a, b, t);
  return a;
}

/* Every op whose output element depends only on the input elements at the
 * same (broadcast) position. */
static bool lower_elementwise(graph_lowering_t *g, MlirOperation op, const char *op_type,
                              graph_value_t **ins, int num_ins, graph_value_t *out) {
  graph_alloc(g, out);
  int ivs[GRAPH_MAX_RANK];
  graph_open_loops(g, out->rank, out->dims, ivs);
  int out_index = graph_linear_index(g, out->rank, out->dims, ivs);
  int values[16];
  for (int i = 0; i < num_ins; ++i) {
    if (is(op_type, "Tile")) {
      if (i > 0)
        break;
      /* Output position modulo the input size repeats the input. */
      int in_ivs[GRAPH_MAX_RANK];
      for (int d = 0; d < ins[0]->rank; ++d)
        in_ivs[d] = ins[0]->dims[d] == 1 ? -1
                                         : graph_emit(g, "arith.remui %%v%d, %%v%d : index", ivs[d],
                                                      graph_index_const(g, ins[0]->dims[d]));
      values[0] = graph_load(g, ins[0], graph_linear_index(g, ins[0]->rank, ins[0]->dims, in_ivs));
      continue;
    }
    if (is(op_type, "Expand") && i > 0)
      break;
    values[i] = graph_load(g, ins[i], graph_broadcast_index(g, ins[i], out->rank, ivs));
  }
  const graph_elem_t *e = &ins[0]->elem;
  int result;
  if (is(op_type, "Cast")) {
    result = graph_convert(g, values[0], e, &out->elem);
  } else if (is(op_type, "Where")) {
    result = graph_emit(g, "arith.select %%v%d, %%v%d, %%v%d : %s", values[0], values[1],
                        values[2], out->elem.type);
  } else if (is(op_type, "Pow")) {
    result = pow_scalar(g, values[0], e, values[1], &ins[1]->elem);
  } else if (is(op_type, "Max") || is(op_type, "Min")) {
    result = values[0];
    for (int i = 1; i < num_ins; ++i)
      result = binary_scalar(g, op_type, result, values[i], e);
  } else if (num_ins == 2 && !is(op_type, "Expand") && !is(op_type, "Tile")) {
    result = binary_scalar(g, op_type, values[0], values[1], e);
  } else {
    result = unary_scalar(g, op_type, values[0], e);
  }
  (void)op;
  graph_store(g, result, out, out_index);
  graph_close_loops(g, out->rank);
  return true;
}

/* ---- Data movement -------------------------------------------------------------- */

static bool lower_transpose(graph_lowering_t *g, MlirOperation op, graph_value_t *in,
                            graph_value_t *out) {
  int64_t perm[GRAPH_MAX_RANK];
  int n = graph_attr_ints(op, "perm", perm, GRAPH_MAX_RANK);
  if (n < 0) {
    n = in->rank;
    for (int d = 0; d < n; ++d)
      perm[d] = n - 1 - d;
  }
  if (n != in->rank)
    return graph_fail(g, op, "perm has %d entries for a rank-%d input", n, in->rank);
  graph_alloc(g, out);
  int ivs[GRAPH_MAX_RANK], in_ivs[GRAPH_MAX_RANK];
  graph_open_loops(g, out->rank, out->dims, ivs);
  for (int k = 0; k < n; ++k)
    in_ivs[perm[k]] = ivs[k];
  int value = graph_load(g, in, graph_linear_index(g, in->rank, in->dims, in_ivs));
  graph_store(g, value, out, graph_linear_index(g, out->rank, out->dims, ivs));
  graph_close_loops(g, out->rank);
  return true;
}

static bool lower_gather(graph_lowering_t *g, MlirOperation op, graph_value_t *data,
                         graph_value_t *indices, graph_value_t *out) {
  int axis = normalize_axis(graph_attr_int(op, "axis", 0), data->rank);
  if (axis < 0 || axis >= data->rank)
    return graph_fail(g, op, "axis is out of range");
  graph_alloc(g, out);
  int ivs[GRAPH_MAX_RANK], data_ivs[GRAPH_MAX_RANK];
  graph_open_loops(g, out->rank, out->dims, ivs);
  int index_index = graph_linear_index(g, indices->rank, indices->dims, ivs + axis);
  int raw = graph_convert(g, graph_load(g, indices, index_index), &indices->elem, &graph_i64);
  /* Negative indices count from the end of the axis. */
  int zero = graph_int_const(g, 0, "i64");
  int negative = graph_emit(g, "arith.cmpi slt, %%v%d, %%v%d : i64", raw, zero);
  int wrapped = graph_emit(g, "arith.addi %%v%d, %%v%d : i64", raw,
                           graph_int_const(g, data->dims[axis], "i64"));
  int index = graph_emit(g, "arith.select %%v%d, %%v%d, %%v%d : i64", negative, wrapped, raw);
  for (int d = 0; d < data->rank; ++d)
    data_ivs[d] = d < axis    ? ivs[d]
                  : d > axis ? ivs[d - 1 + indices->rank]
                             : graph_emit(g, "arith.index_cast %%v%d : i64 to index", index);
  int value = graph_load(g, data, graph_linear_index(g, data->rank, data->dims, data_ivs));
  graph_store(g, value, out, graph_linear_index(g, out->rank, out->dims, ivs));
  graph_close_loops(g, out->rank);
  return true;
}

static bool lower_concat(graph_lowering_t *g, MlirOperation op, graph_value_t **ins, int num_ins,
                         graph_value_t *out) {
  int axis = normalize_axis(graph_attr_int(op, "axis", 0), out->rank);
  if (axis < 0 || axis >= out->rank)
    return graph_fail(g, op, "axis is out of range");
  graph_alloc(g, out);
  int64_t offset = 0;
  for (int i = 0; i < num_ins; ++i) {
    graph_value_t *in = ins[i];
    int ivs[GRAPH_MAX_RANK], out_ivs[GRAPH_MAX_RANK];
    graph_open_loops(g, in->rank, in->dims, ivs);
    for (int d = 0; d < in->rank; ++d)
      out_ivs[d] = ivs[d];
    if (offset != 0)
      out_ivs[axis] = graph_emit(g, "arith.addi %%v%d, %%v%d : index", ivs[axis],
                                 graph_index_const(g, offset));
    int value = graph_load(g, in, graph_linear_index(g, in->rank, in->dims, ivs));
    graph_store(g, value, out, graph_linear_index(g, out->rank, out->dims, out_ivs));
    graph_close_loops(g, in->rank);
    offset += in->dims[axis];
  }
  return true;
}

/* Slice: the output shape is static, so only each dimension's clamped
 * start and its step are needed. They are computed at run time from the
 * starts, axes and steps inputs, which may therefore be graph inputs. */
static bool lower_slice(graph_lowering_t *g, MlirOperation op, graph_value_t **ins, int num_ins,
                        graph_value_t *out) {
  if (num_ins < 3)
    return graph_fail(g, op, "Slice needs starts and ends inputs (opset 10 and later)");
  graph_value_t *data = ins[0], *starts = ins[1];
  int rank = data->rank;
  if (out->rank != rank)
    return graph_fail(g, op, "the output rank differs from the input rank");
  int start[GRAPH_MAX_RANK], step[GRAPH_MAX_RANK];
  for (int d = 0; d < rank; ++d) {
    start[d] = graph_int_const(g, 0, "i64");
    step[d] = graph_int_const(g, 1, "i64");
  }
  int64_t n = starts->count;
  for (int64_t j = 0; j < n; ++j) {
    int position = graph_index_const(g, j);
    int axis;
    if (present((const graph_value_t *const *)ins, num_ins, 3)) {
      int raw = graph_convert(g, graph_load(g, ins[3], position), &ins[3]->elem, &graph_i64);
      int negative = graph_emit(g, "arith.cmpi slt, %%v%d, %%v%d : i64", raw,
                                graph_int_const(g, 0, "i64"));
      int wrapped = graph_emit(g, "arith.addi %%v%d, %%v%d : i64", raw,
                               graph_int_const(g, rank, "i64"));
      axis = graph_emit(g, "arith.select %%v%d, %%v%d, %%v%d : i64", negative, wrapped, raw);
    } else {
      axis = graph_int_const(g, j, "i64");
    }
    int start_j = graph_convert(g, graph_load(g, starts, position), &starts->elem, &graph_i64);
    int step_j = present((const graph_value_t *const *)ins, num_ins, 4)
                     ? graph_convert(g, graph_load(g, ins[4], position), &ins[4]->elem, &graph_i64)
                     : graph_int_const(g, 1, "i64");
    for (int d = 0; d < rank; ++d) {
      int match = graph_emit(g, "arith.cmpi eq, %%v%d, %%v%d : i64", axis,
                             graph_int_const(g, d, "i64"));
      start[d] = graph_emit(g, "arith.select %%v%d, %%v%d, %%v%d : i64", match, start_j, start[d]);
      step[d] = graph_emit(g, "arith.select %%v%d, %%v%d, %%v%d : i64", match, step_j, step[d]);
    }
  }
  int start_index[GRAPH_MAX_RANK], step_index[GRAPH_MAX_RANK];
  for (int d = 0; d < rank; ++d) {
    /* Negative starts count from the end; then clamp to [0, dim] for
     * positive steps and to [0, dim - 1] for negative ones. */
    int dim = graph_int_const(g, data->dims[d], "i64");
    int zero = graph_int_const(g, 0, "i64");
    int negative = graph_emit(g, "arith.cmpi slt, %%v%d, %%v%d : i64", start[d], zero);
    int wrapped = graph_emit(g, "arith.addi %%v%d, %%v%d : i64", start[d], dim);
    int s = graph_emit(g, "arith.select %%v%d, %%v%d, %%v%d : i64", negative, wrapped, start[d]);
    int backward = graph_emit(g, "arith.cmpi slt, %%v%d, %%v%d : i64", step[d], zero);
    int dim_minus_one = graph_int_const(g, data->dims[d] - 1, "i64");
    int upper = graph_emit(g, "arith.select %%v%d, %%v%d, %%v%d : i64", backward, dim_minus_one,
                           dim);
    s = graph_emit(g, "arith.maxsi %%v%d, %%v%d : i64", s, zero);
    s = graph_emit(g, "arith.minsi %%v%d, %%v%d : i64", s, upper);
    start_index[d] = graph_emit(g, "arith.index_cast %%v%d : i64 to index", s);
    step_index[d] = graph_emit(g, "arith.index_cast %%v%d : i64 to index", step[d]);
  }
  graph_alloc(g, out);
  int ivs[GRAPH_MAX_RANK], in_ivs[GRAPH_MAX_RANK];
  graph_open_loops(g, rank, out->dims, ivs);
  for (int d = 0; d < rank; ++d) {
    int scaled = graph_emit(g, "arith.muli %%v%d, %%v%d : index", ivs[d], step_index[d]);
    in_ivs[d] = graph_emit(g, "arith.addi %%v%d, %%v%d : index", start_index[d], scaled);
  }
  int value = graph_load(g, data, graph_linear_index(g, rank, data->dims, in_ivs));
  graph_store(g, value, out, graph_linear_index(g, rank, out->dims, ivs));
  graph_close_loops(g, rank);
  return true;
}

/* ---- Generators ------------------------------------------------------------------- */

static bool lower_range(graph_lowering_t *g, graph_value_t **ins, graph_value_t *out) {
  graph_alloc(g, out);
  const graph_elem_t *e = &out->elem;
  int start = graph_load(g, ins[0], GRAPH_C0);
  int delta = graph_load(g, ins[2], GRAPH_C0);
  int ivs[1];
  graph_open_loops(g, 1, out->dims, ivs);
  int i64 = graph_emit(g, "arith.index_cast %%v%d : index to i64", ivs[0]);
  int i = graph_convert(g, i64, &graph_i64, e);
  int scaled = graph_emit(g, "arith.%s %%v%d, %%v%d : %s", e->is_float ? "mulf" : "muli", i,
                          delta, e->type);
  int value = graph_emit(g, "arith.%s %%v%d, %%v%d : %s", e->is_float ? "addf" : "addi", start,
                         scaled, e->type);
  graph_store(g, value, out, ivs[0]);
  graph_close_loops(g, 1);
  return true;
}

/* Fills `out` with one scalar value computed before the loop. */
static void fill(graph_lowering_t *g, graph_value_t *out, int value) {
  int ivs[1];
  graph_open_loops(g, 1, &out->count, ivs);
  graph_store(g, value, out, ivs[0]);
  graph_close_loops(g, 1);
}

/* Element `index` of a dense attribute as a constant of `elem`. */
static bool dense_scalar(graph_lowering_t *g, MlirOperation op, MlirAttribute dense,
                         intptr_t index, const graph_elem_t *elem, int *result) {
  MlirType type = mlirShapedTypeGetElementType(mlirAttributeGetType(dense));
  if (mlirTypeIsAF32(type))
    *result = graph_float_const(g, mlirDenseElementsAttrGetFloatValue(dense, index), elem);
  else if (mlirTypeIsAF64(type))
    *result = graph_float_const(g, mlirDenseElementsAttrGetDoubleValue(dense, index), elem);
  else if (mlirTypeIsAInteger(type) && mlirIntegerTypeGetWidth(type) == 1)
    *result = graph_int_const(g, mlirDenseElementsAttrGetBoolValue(dense, index), "i1");
  else if (mlirTypeIsAInteger(type) && elem->bits >= 8 && !elem->is_float) {
    unsigned width = mlirIntegerTypeGetWidth(type);
    int64_t value = width == 64   ? mlirDenseElementsAttrGetInt64Value(dense, index)
                    : width == 32 ? mlirDenseElementsAttrGetInt32Value(dense, index)
                    : width == 16 ? mlirDenseElementsAttrGetInt16Value(dense, index)
                                  : mlirDenseElementsAttrGetInt8Value(dense, index);
    *result = graph_int_const(g, value, elem->type);
  } else {
    return graph_fail(g, op, "the value attribute's element type is not supported");
  }
  return true;
}

static bool lower_constant_of_shape(graph_lowering_t *g, MlirOperation op, graph_value_t *out) {
  graph_alloc(g, out);
  MlirAttribute value =
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("value"));
  int scalar;
  if (mlirAttributeIsNull(value))
    scalar = out->elem.is_float ? graph_float_const(g, 0.0, &out->elem)
                                : graph_int_const(g, 0, out->elem.type);
  else if (!dense_scalar(g, op, value, 0, &out->elem, &scalar))
    return false;
  if (out->count > 0)
    fill(g, out, scalar);
  return true;
}

static int64_t clamp(int64_t value, int64_t low, int64_t high) {
  if (value < low)
    return low;
  return value > high ? high : value;
}

static bool lower_shape(graph_lowering_t *g, MlirOperation op, graph_value_t *in,
                        graph_value_t *out) {
  int64_t rank = in->rank;
  int64_t start = graph_attr_int(op, "start", 0), end = graph_attr_int(op, "end", rank);
  start = start < 0 ? start + rank : start;
  end = end < 0 ? end + rank : end;
  start = clamp(start, 0, rank);
  end = clamp(end, 0, rank);
  if (out->count != (end > start ? end - start : 0))
    return graph_fail(g, op, "the declared output size does not match start and end");
  graph_alloc(g, out);
  for (int64_t d = start; d < end; ++d)
    graph_store(g, graph_int_const(g, in->dims[d], out->elem.type), out,
                graph_index_const(g, d - start));
  return true;
}

static bool lower_trilu(graph_lowering_t *g, MlirOperation op, graph_value_t **ins, int num_ins,
                        graph_value_t *out) {
  graph_value_t *in = ins[0];
  if (in->rank < 2)
    return graph_fail(g, op, "the input must have rank 2 or more");
  bool upper = graph_attr_int(op, "upper", 1) != 0;
  int k = present((const graph_value_t *const *)ins, num_ins, 1) ? load_scalar_i64(g, ins[1])
                                                                 : graph_int_const(g, 0, "i64");
  graph_alloc(g, out);
  int zero = in->elem.is_float ? graph_float_const(g, 0.0, &in->elem)
                               : graph_int_const(g, 0, in->elem.type);
  int ivs[GRAPH_MAX_RANK];
  graph_open_loops(g, out->rank, out->dims, ivs);
  int index = graph_linear_index(g, out->rank, out->dims, ivs);
  int row = graph_emit(g, "arith.index_cast %%v%d : index to i64", ivs[out->rank - 2]);
  int column = graph_emit(g, "arith.index_cast %%v%d : index to i64", ivs[out->rank - 1]);
  int diagonal = graph_emit(g, "arith.subi %%v%d, %%v%d : i64", column, row);
  int keep = graph_emit(g, "arith.cmpi %s, %%v%d, %%v%d : i64", upper ? "sge" : "sle", diagonal, k);
  int value = graph_load(g, in, index);
  int result = graph_emit(g, "arith.select %%v%d, %%v%d, %%v%d : %s", keep, value, zero,
                          in->elem.type);
  graph_store(g, result, out, index);
  graph_close_loops(g, out->rank);
  return true;
}

/* ---- Contractions ----------------------------------------------------------------- */

static void zero_fill(graph_lowering_t *g, graph_value_t *out) {
  int zero = out->elem.is_float ? graph_float_const(g, 0.0, &out->elem)
                                : graph_int_const(g, 0, out->elem.type);
  if (out->count > 0)
    fill(g, out, zero);
}

/* MatMul and MatMulInteger with numpy semantics: 1-D operands gain a
 * dimension that the output drops, batch dimensions broadcast. The output
 * buffer is indexed as [batch..., M, N], which has the same layout as the
 * declared shape. MatMulInteger subtracts scalar or per-row (A) and
 * per-column (B) zero points and accumulates in i32. */
static bool lower_matmul(graph_lowering_t *g, MlirOperation op, graph_value_t **ins, int num_ins,
                         graph_value_t *out, bool integer) {
  graph_value_t a = *ins[0], b = *ins[1];
  if (a.rank == 1) {
    a.dims[1] = a.dims[0];
    a.dims[0] = 1;
    a.rank = 2;
  }
  if (b.rank == 1) {
    b.dims[1] = 1;
    b.rank = 2;
  }
  int64_t m = a.dims[a.rank - 2], k = a.dims[a.rank - 1], n = b.dims[b.rank - 1];
  if (b.dims[b.rank - 2] != k)
    return graph_fail(g, op, "the inner dimensions do not match (%lld and %lld)", (long long)k,
                      (long long)b.dims[b.rank - 2]);
  int batch_rank = (a.rank > b.rank ? a.rank : b.rank) - 2;
  int64_t dims[GRAPH_MAX_RANK + 1];
  for (int d = 0; d < batch_rank; ++d) {
    int ad = d - (batch_rank - (a.rank - 2)), bd = d - (batch_rank - (b.rank - 2));
    int64_t x = ad >= 0 ? a.dims[ad] : 1, y = bd >= 0 ? b.dims[bd] : 1;
    dims[d] = x == 1 ? y : x;
  }
  dims[batch_rank] = m;
  dims[batch_rank + 1] = n;
  dims[batch_rank + 2] = k;
  int64_t expected = m * n;
  for (int d = 0; d < batch_rank; ++d)
    expected *= dims[d];
  if (expected != out->count)
    return graph_fail(g, op, "the declared output has %lld elements, the product %lld",
                      (long long)out->count, (long long)expected);
  graph_alloc(g, out);
  zero_fill(g, out);
  const graph_elem_t *acc = &out->elem;
  int ivs[GRAPH_MAX_RANK + 1];
  graph_open_loops(g, batch_rank + 3, dims, ivs);
  int iv_m = ivs[batch_rank], iv_n = ivs[batch_rank + 1], iv_k = ivs[batch_rank + 2];
  int a_ivs[GRAPH_MAX_RANK], b_ivs[GRAPH_MAX_RANK];
  for (int d = 0; d < a.rank - 2; ++d)
    a_ivs[d] = a.dims[d] == 1 ? -1 : ivs[d + batch_rank - (a.rank - 2)];
  for (int d = 0; d < b.rank - 2; ++d)
    b_ivs[d] = b.dims[d] == 1 ? -1 : ivs[d + batch_rank - (b.rank - 2)];
  a_ivs[a.rank - 2] = iv_m;
  a_ivs[a.rank - 1] = iv_k;
  b_ivs[b.rank - 2] = iv_k;
  b_ivs[b.rank - 1] = iv_n;
  int x = graph_convert(g, graph_load(g, &a, graph_linear_index(g, a.rank, a.dims, a_ivs)),
                        &a.elem, acc);
  int y = graph_convert(g, graph_load(g, &b, graph_linear_index(g, b.rank, b.dims, b_ivs)),
                        &b.elem, acc);
  if (integer) {
    for (int operand = 0; operand < 2; ++operand) {
      if (!present((const graph_value_t *const *)ins, num_ins, 2 + operand))
        continue;
      graph_value_t *zp = ins[2 + operand];
      int zp_index = zp->count == 1 ? GRAPH_C0 : (operand == 0 ? iv_m : iv_n);
      int zp_value = graph_convert(g, graph_load(g, zp, zp_index), &zp->elem, acc);
      int *target = operand == 0 ? &x : &y;
      *target = graph_emit(g, "arith.subi %%v%d, %%v%d : %s", *target, zp_value, acc->type);
    }
  }
  int out_ivs[GRAPH_MAX_RANK + 1];
  for (int d = 0; d < batch_rank; ++d)
    out_ivs[d] = ivs[d];
  out_ivs[batch_rank] = iv_m;
  out_ivs[batch_rank + 1] = iv_n;
  int out_index = graph_linear_index(g, batch_rank + 2, dims, out_ivs);
  bool f = acc->is_float;
  int product = graph_emit(g, "arith.%s %%v%d, %%v%d : %s", f ? "mulf" : "muli", x, y, acc->type);
  int sum = graph_emit(g, "arith.%s %%v%d, %%v%d : %s", f ? "addf" : "addi",
                       graph_load(g, out, out_index), product, acc->type);
  graph_store(g, sum, out, out_index);
  graph_close_loops(g, batch_rank + 3);
  return true;
}

/* Gemm: Y = alpha * A' B' + beta * C, with C broadcast to [M, N]. */
static bool lower_gemm(graph_lowering_t *g, MlirOperation op, graph_value_t **ins, int num_ins,
                       graph_value_t *out) {
  graph_value_t *a = ins[0], *b = ins[1];
  bool trans_a = graph_attr_int(op, "transA", 0) != 0, trans_b = graph_attr_int(op, "transB", 0) != 0;
  double alpha = graph_attr_float(op, "alpha", 1.0), beta = graph_attr_float(op, "beta", 1.0);
  if (a->rank != 2 || b->rank != 2 || out->rank != 2)
    return graph_fail(g, op, "A, B and Y must be 2-D");
  int64_t k = trans_a ? a->dims[0] : a->dims[1];
  int64_t dims[3] = {out->dims[0], out->dims[1], k};
  const graph_elem_t *e = &out->elem;
  const char *t = e->type;
  bool f = e->is_float;
  graph_alloc(g, out);
  zero_fill(g, out);
  int ivs[3];
  graph_open_loops(g, 3, dims, ivs);
  int a_ivs[2] = {trans_a ? ivs[2] : ivs[0], trans_a ? ivs[0] : ivs[2]};
  int b_ivs[2] = {trans_b ? ivs[1] : ivs[2], trans_b ? ivs[2] : ivs[1]};
  int x = graph_load(g, a, graph_linear_index(g, 2, a->dims, a_ivs));
  int y = graph_load(g, b, graph_linear_index(g, 2, b->dims, b_ivs));
  int out_index = graph_linear_index(g, 2, out->dims, ivs);
  int product = graph_emit(g, "arith.%s %%v%d, %%v%d : %s", f ? "mulf" : "muli", x, y, t);
  int sum = graph_emit(g, "arith.%s %%v%d, %%v%d : %s", f ? "addf" : "addi",
                       graph_load(g, out, out_index), product, t);
  graph_store(g, sum, out, out_index);
  graph_close_loops(g, 3);

  graph_open_loops(g, 2, out->dims, ivs);
  out_index = graph_linear_index(g, 2, out->dims, ivs);
  int scale = f ? graph_float_const(g, alpha, e) : graph_int_const(g, (int64_t)alpha, t);
  int value = graph_emit(g, "arith.%s %%v%d, %%v%d : %s", f ? "mulf" : "muli",
                         graph_load(g, out, out_index), scale, t);
  if (present((const graph_value_t *const *)ins, num_ins, 2)) {
    graph_value_t *c = ins[2];
    int c_value = graph_load(g, c, graph_broadcast_index(g, c, 2, ivs));
    int c_scale = f ? graph_float_const(g, beta, e) : graph_int_const(g, (int64_t)beta, t);
    int scaled = graph_emit(g, "arith.%s %%v%d, %%v%d : %s", f ? "mulf" : "muli", c_value,
                            c_scale, t);
    value = graph_emit(g, "arith.%s %%v%d, %%v%d : %s", f ? "addf" : "addi", value, scaled, t);
  }
  graph_store(g, value, out, out_index);
  graph_close_loops(g, 2);
  return true;
}

/* ---- Reductions ---------------------------------------------------------------- */

/* Strides (index ids) into a reduced buffer for positions of the full
 * input: 0 along reduced dimensions (i1 ids in `reduced`), else the
 * product of the kept dimensions to the right. Works whether or not the
 * reduced dimensions are kept as size 1, and when `reduced` is only known
 * at run time. */
static void reduced_strides(graph_lowering_t *g, const graph_value_t *in, const int *reduced,
                            int *strides) {
  int acc = GRAPH_C1;
  for (int d = in->rank - 1; d >= 0; --d) {
    strides[d] = graph_emit(g, "arith.select %%v%d, %%v%d, %%v%d : index", reduced[d], GRAPH_C0,
                            acc);
    int grown = graph_emit(g, "arith.muli %%v%d, %%v%d : index", acc,
                           graph_index_const(g, in->dims[d]));
    acc = graph_emit(g, "arith.select %%v%d, %%v%d, %%v%d : index", reduced[d], acc, grown);
  }
}

static int strided_index(graph_lowering_t *g, int rank, const int *ivs, const int *strides) {
  int result = GRAPH_C0;
  for (int d = 0; d < rank; ++d) {
    int term = graph_emit(g, "arith.muli %%v%d, %%v%d : index", ivs[d], strides[d]);
    result = graph_emit(g, "arith.addi %%v%d, %%v%d : index", result, term);
  }
  return result;
}

static bool lower_reduce_mean(graph_lowering_t *g, MlirOperation op, graph_value_t **ins,
                              int num_ins, graph_value_t *out) {
  graph_value_t *in = ins[0];
  const graph_elem_t *e = &in->elem;
  int reduced[GRAPH_MAX_RANK];
  int64_t attr_axes[GRAPH_MAX_RANK];
  int num_attr_axes = graph_attr_ints(op, "axes", attr_axes, GRAPH_MAX_RANK);
  bool have_input = present((const graph_value_t *const *)ins, num_ins, 1);
  int64_t num_axes = have_input ? ins[1]->count : (num_attr_axes > 0 ? num_attr_axes : 0);
  if (num_axes == 0) {
    /* No axes: reduce everything, or copy with noop_with_empty_axes. */
    bool noop = graph_attr_int(op, "noop_with_empty_axes", 0) != 0;
    for (int d = 0; d < in->rank; ++d)
      reduced[d] = graph_int_const(g, !noop, "i1");
  } else {
    for (int d = 0; d < in->rank; ++d)
      reduced[d] = graph_int_const(g, 0, "i1");
    for (int64_t j = 0; j < num_axes; ++j) {
      int axis;
      if (have_input) {
        int raw = graph_convert(g, graph_load(g, ins[1], graph_index_const(g, j)), &ins[1]->elem,
                                &graph_i64);
        int negative = graph_emit(g, "arith.cmpi slt, %%v%d, %%v%d : i64", raw,
                                  graph_int_const(g, 0, "i64"));
        int wrapped = graph_emit(g, "arith.addi %%v%d, %%v%d : i64", raw,
                                 graph_int_const(g, in->rank, "i64"));
        axis = graph_emit(g, "arith.select %%v%d, %%v%d, %%v%d : i64", negative, wrapped, raw);
      } else {
        axis = graph_int_const(g, normalize_axis(attr_axes[j], in->rank), "i64");
      }
      for (int d = 0; d < in->rank; ++d) {
        int match = graph_emit(g, "arith.cmpi eq, %%v%d, %%v%d : i64", axis,
                               graph_int_const(g, d, "i64"));
        reduced[d] = graph_emit(g, "arith.ori %%v%d, %%v%d : i1", reduced[d], match);
      }
    }
  }
  int strides[GRAPH_MAX_RANK];
  reduced_strides(g, in, reduced, strides);
  int count = GRAPH_C1;
  for (int d = 0; d < in->rank; ++d) {
    int size = graph_emit(g, "arith.select %%v%d, %%v%d, %%v%d : index", reduced[d],
                          graph_index_const(g, in->dims[d]), GRAPH_C1);
    count = graph_emit(g, "arith.muli %%v%d, %%v%d : index", count, size);
  }
  int count_i64 = graph_emit(g, "arith.index_cast %%v%d : index to i64", count);
  int divisor = graph_convert(g, count_i64, &graph_i64, e);

  graph_alloc(g, out);
  zero_fill(g, out);
  int ivs[GRAPH_MAX_RANK];
  graph_open_loops(g, in->rank, in->dims, ivs);
  int out_index = strided_index(g, in->rank, ivs, strides);
  int value = graph_load(g, in, graph_linear_index(g, in->rank, in->dims, ivs));
  int sum = graph_emit(g, "arith.%s %%v%d, %%v%d : %s", e->is_float ? "addf" : "addi",
                       graph_load(g, out, out_index), value, e->type);
  graph_store(g, sum, out, out_index);
  graph_close_loops(g, in->rank);

  graph_open_loops(g, 1, &out->count, ivs);
  int mean = graph_emit(g, "arith.%s %%v%d, %%v%d : %s",
                        e->is_float ? "divf" : (e->is_unsigned ? "divui" : "divsi"),
                        graph_load(g, out, ivs[0]), divisor, e->type);
  graph_store(g, mean, out, ivs[0]);
  graph_close_loops(g, 1);
  return true;
}

/* Softmax over one axis (opset 13 and later) or, before opset 13, over
 * the input coerced to 2-D at `axis`: every dimension from `axis` on. */
static bool lower_softmax(graph_lowering_t *g, MlirOperation op, graph_value_t *in,
                          graph_value_t *out) {
  const graph_elem_t *e = &in->elem;
  const char *t = e->type;
  int64_t default_axis = g->opset >= 13 ? -1 : 1;
  int axis = normalize_axis(graph_attr_int(op, "axis", default_axis), in->rank);
  if (axis < 0 || axis >= (in->rank > 0 ? in->rank : 1))
    return graph_fail(g, op, "axis is out of range");
  int reduced[GRAPH_MAX_RANK];
  graph_value_t partial = {.rank = in->rank, .count = 1, .elem = *e};
  for (int d = 0; d < in->rank; ++d) {
    bool r = g->opset >= 13 ? d == axis : d >= axis;
    reduced[d] = graph_int_const(g, r, "i1");
    partial.dims[d] = r ? 1 : in->dims[d];
    partial.count *= partial.dims[d];
  }
  int strides[GRAPH_MAX_RANK];
  reduced_strides(g, in, reduced, strides);
  graph_value_t maximum = partial, sum = partial;
  graph_alloc(g, &maximum);
  graph_alloc(g, &sum);
  graph_alloc(g, out);
  fill(g, &maximum, graph_float_const(g, -INFINITY, e));
  fill(g, &sum, graph_float_const(g, 0.0, e));

  int ivs[GRAPH_MAX_RANK];
  graph_open_loops(g, in->rank, in->dims, ivs);
  int index = graph_linear_index(g, in->rank, in->dims, ivs);
  int partial_index = strided_index(g, in->rank, ivs, strides);
  int larger = graph_emit(g, "arith.maximumf %%v%d, %%v%d : %s", graph_load(g, &maximum, partial_index),
                          graph_load(g, in, index), t);
  graph_store(g, larger, &maximum, partial_index);
  graph_close_loops(g, in->rank);

  graph_open_loops(g, in->rank, in->dims, ivs);
  index = graph_linear_index(g, in->rank, in->dims, ivs);
  partial_index = strided_index(g, in->rank, ivs, strides);
  int shifted = graph_emit(g, "arith.subf %%v%d, %%v%d : %s", graph_load(g, in, index),
                           graph_load(g, &maximum, partial_index), t);
  int exp = graph_emit(g, "math.exp %%v%d : %s", shifted, t);
  graph_store(g, exp, out, index);
  int total = graph_emit(g, "arith.addf %%v%d, %%v%d : %s", graph_load(g, &sum, partial_index),
                         exp, t);
  graph_store(g, total, &sum, partial_index);
  graph_close_loops(g, in->rank);

  graph_open_loops(g, in->rank, in->dims, ivs);
  index = graph_linear_index(g, in->rank, in->dims, ivs);
  partial_index = strided_index(g, in->rank, ivs, strides);
  int quotient = graph_emit(g, "arith.divf %%v%d, %%v%d : %s", graph_load(g, out, index),
                            graph_load(g, &sum, partial_index), t);
  graph_store(g, quotient, out, index);
  graph_close_loops(g, in->rank);
  graph_stmt(g, "memref.dealloc %%v%d : %s", maximum.buffer, graph_memref_type(&maximum));
  graph_stmt(g, "memref.dealloc %%v%d : %s", sum.buffer, graph_memref_type(&sum));
  return true;
}

/* ---- Quantization ------------------------------------------------------------- */

static void quant_range(const graph_elem_t *e, int64_t *low, int64_t *high) {
  int bits = e->packed4 ? 4 : e->bits;
  if (e->is_unsigned) {
    *low = 0;
    *high = (int64_t)((1ULL << bits) - 1);
  } else {
    *low = -(int64_t)(1ULL << (bits - 1));
    *high = (int64_t)((1ULL << (bits - 1)) - 1);
  }
}

/* Index into a scale or zero point for input position `ivs`: per tensor
 * (one element), per axis (1-D along `axis`) or blocked (same rank as the
 * input, `block_size` input elements per entry along `axis`). */
static int quant_param_index(graph_lowering_t *g, const graph_value_t *param,
                             const graph_value_t *in, int axis, int64_t block_size,
                             const int *ivs) {
  if (param->count == 1 && (param->rank <= 1 || block_size <= 0))
    return GRAPH_C0;
  if (block_size <= 0 || param->rank <= 1)
    return ivs[axis];
  int param_ivs[GRAPH_MAX_RANK];
  for (int d = 0; d < in->rank; ++d)
    param_ivs[d] = d == axis ? graph_emit(g, "arith.divui %%v%d, %%v%d : index", ivs[d],
                                          graph_index_const(g, block_size))
                             : ivs[d];
  return graph_linear_index(g, param->rank, param->dims, param_ivs);
}

/* Rounds half to even, adds the zero point, saturates to the range of
 * `q` and converts. All in f32. */
static int quantize_scalar(graph_lowering_t *g, int scaled, int zero_point, const graph_elem_t *q) {
  int64_t low, high;
  quant_range(q, &low, &high);
  int rounded = graph_emit(g, "math.roundeven %%v%d : f32", scaled);
  int shifted = graph_emit(g, "arith.addf %%v%d, %%v%d : f32", rounded, zero_point);
  int clamped = graph_emit(g, "arith.maximumf %%v%d, %%v%d : f32", shifted,
                           graph_float_const(g, (double)low, &graph_f32));
  clamped = graph_emit(g, "arith.minimumf %%v%d, %%v%d : f32", clamped,
                       graph_float_const(g, (double)high, &graph_f32));
  int wide = graph_emit(g, "arith.fptosi %%v%d : f32 to i32", clamped);
  return graph_convert(g, wide, &graph_i32, q);
}

static bool lower_quantize(graph_lowering_t *g, MlirOperation op, graph_value_t **ins, int num_ins,
                           graph_value_t *out, bool dequantize) {
  graph_value_t *in = ins[0], *scale = ins[1];
  bool has_zp = present((const graph_value_t *const *)ins, num_ins, 2);
  int axis = normalize_axis(graph_attr_int(op, "axis", 1), in->rank);
  int64_t block_size = graph_attr_int(op, "block_size", 0);
  if (scale->count != 1 && (axis < 0 || axis >= in->rank))
    return graph_fail(g, op, "axis is out of range");
  if (!dequantize && (out->elem.is_float || out->elem.bits == 1))
    return graph_fail(g, op, "only integer outputs can be quantized to");
  graph_alloc(g, out);
  int ivs[GRAPH_MAX_RANK];
  graph_open_loops(g, in->rank, in->dims, ivs);
  int index = graph_linear_index(g, in->rank, in->dims, ivs);
  int param_index = quant_param_index(g, scale, in, axis, block_size, ivs);
  int scale_value = graph_convert(g, graph_load(g, scale, param_index), &scale->elem, &graph_f32);
  int zero_point = has_zp ? graph_convert(g, graph_load(g, ins[2], param_index), &ins[2]->elem,
                                          &graph_f32)
                          : graph_float_const(g, 0.0, &graph_f32);
  int x = graph_convert(g, graph_load(g, in, index), &in->elem, &graph_f32);
  int result;
  if (dequantize) {
    int centered = graph_emit(g, "arith.subf %%v%d, %%v%d : f32", x, zero_point);
    int product = graph_emit(g, "arith.mulf %%v%d, %%v%d : f32", centered, scale_value);
    result = graph_convert(g, product, &graph_f32, &out->elem);
  } else {
    int scaled = graph_emit(g, "arith.divf %%v%d, %%v%d : f32", x, scale_value);
    result = quantize_scalar(g, scaled, zero_point, &out->elem);
  }
  graph_store(g, result, out, index);
  graph_close_loops(g, in->rank);
  return true;
}

/* DynamicQuantizeLinear to uint8: the range of x widened to include 0
 * sets the scale, (max - min) / 255, and the zero point, round(-min /
 * scale) saturated to [0, 255]. */
static bool lower_dynamic_quantize(graph_lowering_t *g, MlirOperation op, graph_value_t *in,
                                   graph_value_t *outs) {
  graph_value_t *y = &outs[0], *y_scale = &outs[1], *y_zero_point = &outs[2];
  if (!in->elem.is_float || y_scale->count != 1 || y_zero_point->count != 1)
    return graph_fail(g, op, "expected a float input and scalar scale and zero point");
  graph_value_t range = {.rank = 1, .dims = {2}, .count = 2, .elem = graph_f32};
  graph_alloc(g, &range);
  int zero = graph_float_const(g, 0.0, &graph_f32);
  graph_store(g, zero, &range, GRAPH_C0);
  graph_store(g, zero, &range, GRAPH_C1);
  int ivs[1];
  graph_open_loops(g, 1, &in->count, ivs);
  int x = graph_convert(g, graph_load(g, in, ivs[0]), &in->elem, &graph_f32);
  int low = graph_emit(g, "arith.minimumf %%v%d, %%v%d : f32", graph_load(g, &range, GRAPH_C0), x);
  int high = graph_emit(g, "arith.maximumf %%v%d, %%v%d : f32", graph_load(g, &range, GRAPH_C1), x);
  graph_store(g, low, &range, GRAPH_C0);
  graph_store(g, high, &range, GRAPH_C1);
  graph_close_loops(g, 1);

  low = graph_load(g, &range, GRAPH_C0);
  high = graph_load(g, &range, GRAPH_C1);
  int span = graph_emit(g, "arith.subf %%v%d, %%v%d : f32", high, low);
  int scale = graph_emit(g, "arith.divf %%v%d, %%v%d : f32", span,
                         graph_float_const(g, 255.0, &graph_f32));
  int ratio = graph_emit(g, "arith.divf %%v%d, %%v%d : f32", low, scale);
  int negated = graph_emit(g, "arith.negf %%v%d : f32", ratio);
  int zp = quantize_scalar(g, negated, zero, &y_zero_point->elem);
  int zp_float = graph_convert(g, zp, &y_zero_point->elem, &graph_f32);
  graph_alloc(g, y_scale);
  graph_alloc(g, y_zero_point);
  graph_store(g, graph_convert(g, scale, &graph_f32, &y_scale->elem), y_scale, GRAPH_C0);
  graph_store(g, zp, y_zero_point, GRAPH_C0);

  graph_alloc(g, y);
  graph_open_loops(g, 1, &in->count, ivs);
  x = graph_convert(g, graph_load(g, in, ivs[0]), &in->elem, &graph_f32);
  int scaled = graph_emit(g, "arith.divf %%v%d, %%v%d : f32", x, scale);
  graph_store(g, quantize_scalar(g, scaled, zp_float, &y->elem), y, ivs[0]);
  graph_close_loops(g, 1);
  graph_stmt(g, "memref.dealloc %%v%d : %s", range.buffer, graph_memref_type(&range));
  return true;
}

/* ---- Dispatch --------------------------------------------------------------------- */

/* Ops that only reinterpret the flat buffer: the output aliases the input. */
static bool lower_alias(graph_lowering_t *g, MlirOperation op, graph_value_t *in,
                        graph_value_t *out) {
  if (in->count != out->count)
    return graph_fail(g, op, "the declared output has %lld elements, the input %lld",
                      (long long)out->count, (long long)in->count);
  if (strcmp(in->elem.type, out->elem.type) != 0)
    return graph_fail(g, op, "the output element type differs from the input's");
  out->buffer = in->buffer;
  out->owned = false;
  out->constant = in->constant;
  return true;
}

bool graph_lower_op(graph_lowering_t *g, MlirOperation op, const char *op_type,
                    graph_value_t **ins, int num_ins, graph_value_t *outs, int num_outs) {
  (void)num_outs;
  graph_value_t *out = &outs[0];
  static const char *const elementwise[] = {
      "Add", "Sub", "Mul", "Div", "Pow", "Less", "LessOrEqual", "Greater", "GreaterOrEqual",
      "Equal", "And", "Or", "Not", "Max", "Min", "Where", "Neg", "Sqrt", "Reciprocal", "Sin",
      "Cos", "Exp", "Sigmoid", "Cast", "Expand", "Tile"};
  for (size_t i = 0; i < sizeof elementwise / sizeof elementwise[0]; ++i)
    if (is(op_type, elementwise[i]))
      return lower_elementwise(g, op, op_type, ins, num_ins, out);
  if (is(op_type, "Identity") || is(op_type, "Reshape") || is(op_type, "Squeeze") ||
      is(op_type, "Unsqueeze"))
    return lower_alias(g, op, ins[0], out);
  if (is(op_type, "Transpose"))
    return lower_transpose(g, op, ins[0], out);
  if (is(op_type, "Gather"))
    return lower_gather(g, op, ins[0], ins[1], out);
  if (is(op_type, "Concat"))
    return lower_concat(g, op, ins, num_ins, out);
  if (is(op_type, "Slice"))
    return lower_slice(g, op, ins, num_ins, out);
  if (is(op_type, "Range"))
    return lower_range(g, ins, out);
  if (is(op_type, "ConstantOfShape"))
    return lower_constant_of_shape(g, op, out);
  if (is(op_type, "Shape"))
    return lower_shape(g, op, ins[0], out);
  if (is(op_type, "Trilu"))
    return lower_trilu(g, op, ins, num_ins, out);
  if (is(op_type, "MatMul"))
    return lower_matmul(g, op, ins, num_ins, out, false);
  if (is(op_type, "MatMulInteger"))
    return lower_matmul(g, op, ins, num_ins, out, true);
  if (is(op_type, "Gemm"))
    return lower_gemm(g, op, ins, num_ins, out);
  if (is(op_type, "ReduceMean"))
    return lower_reduce_mean(g, op, ins, num_ins, out);
  if (is(op_type, "Softmax"))
    return lower_softmax(g, op, ins[0], out);
  if (is(op_type, "QuantizeLinear"))
    return lower_quantize(g, op, ins, num_ins, out, false);
  if (is(op_type, "DequantizeLinear"))
    return lower_quantize(g, op, ins, num_ins, out, true);
  if (is(op_type, "DynamicQuantizeLinear"))
    return lower_dynamic_quantize(g, op, ins[0], outs);
  if (is(op_type, "Constant")) {
    MlirAttribute value = mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("value"));
    if (mlirAttributeIsNull(value) || !mlirAttributeIsADenseElements(value))
      return graph_fail(g, op, "only Constant with a tensor value can be lowered");
    graph_alloc(g, out);
    for (int64_t i = 0; i < out->count; ++i) {
      int scalar;
      if (!dense_scalar(g, op, value, mlirDenseElementsAttrIsSplat(value) ? 0 : (intptr_t)i,
                        &out->elem, &scalar))
        return false;
      graph_store(g, scalar, out, graph_index_const(g, i));
    }
    return true;
  }
  return graph_fail(g, op, "iq --graph cannot lower onnx.%s yet", op_type);
}
