/* Lowering of an imported, non-LLaMA ONNX graph with static shapes to the
 * MLIR source of `iq_graph_forward(%slots)`. slots[i] contains the address of
 * graph input i, then of each graph output, as raw row-major data (int4 and
 * uint4 packed two per byte, low nibble first, as ONNX stores them). The
 * module also defines `iq_graph_metadata`, a NUL-terminated text with one
 * line per input and output: "input|output NAME DTYPE RANK DIMS...". */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"

#include "GraphLowering.h"
#include "iq/conversion.h"
#include "iq/passes.h"
#include "iq/weight_store.h"

const graph_elem_t graph_f32 = {"f32", 32, true, false, false, "float32"};
const graph_elem_t graph_f64 = {"f64", 64, true, false, false, "float64"};
const graph_elem_t graph_i64 = {"i64", 64, false, false, false, "int64"};
const graph_elem_t graph_i32 = {"i32", 32, false, false, false, "int32"};
const graph_elem_t graph_i1 = {"i1", 1, false, true, false, "bool"};

/* ---- Text emission ------------------------------------------------------- */

bool graph_fail(graph_lowering_t *g, MlirOperation op, const char *format, ...) {
  char message[512];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof message, format, args);
  va_end(args);
  char where[96] = "";
  if (!mlirOperationIsNull(op)) {
    MlirStringRef name = mlirIdentifierStr(mlirOperationGetName(op));
    snprintf(where, sizeof where, "%.*s", (int)name.length, name.data);
  }
  return iq_error_set(g->error, NULL, where[0] ? where : NULL, NULL, "%s", message);
}

int graph_emit(graph_lowering_t *g, const char *format, ...) {
  int id = g->next_id++;
  iq_text_printf(&g->body, "    %%v%d = ", id);
  char line[1024];
  va_list args;
  va_start(args, format);
  vsnprintf(line, sizeof line, format, args);
  va_end(args);
  iq_text_printf(&g->body, "%s\n", line);
  return id;
}

void graph_stmt(graph_lowering_t *g, const char *format, ...) {
  char line[1024];
  va_list args;
  va_start(args, format);
  vsnprintf(line, sizeof line, format, args);
  va_end(args);
  iq_text_printf(&g->body, "    %s\n", line);
}

/* Returns the memref type of `v` in one of a few rotating buffers, so a
 * format may use several at once. */
const char *graph_memref_type(const graph_value_t *v) {
  static char buffers[8][48];
  static int next;
  char *out = buffers[next++ % 8];
  snprintf(out, 48, "memref<%lldx%s>", (long long)v->count, v->elem.type);
  return out;
}

int graph_index_const(graph_lowering_t *g, int64_t value) {
  if (value == 0)
    return GRAPH_C0;
  if (value == 1)
    return GRAPH_C1;
  return graph_emit(g, "arith.constant %lld : index", (long long)value);
}

int graph_int_const(graph_lowering_t *g, int64_t value, const char *type) {
  if (strcmp(type, "i1") == 0)
    return graph_emit(g, "arith.constant %s", value ? "true" : "false");
  return graph_emit(g, "arith.constant %lld : %s", (long long)value, type);
}

/* Infinities and NaN have no decimal literal, so they are written as the
 * bit pattern of the type. */
int graph_float_const(graph_lowering_t *g, double value, const graph_elem_t *elem) {
  if (isfinite(value))
    return graph_emit(g, "arith.constant %.17e : %s", value, elem->type);
  const char *bits = NULL;
  bool negative = signbit(value);
  if (isnan(value))
    bits = elem->bits == 64 ? "0x7FF8000000000000"
           : elem->bits == 32 ? "0x7FC00000"
           : strcmp(elem->type, "bf16") == 0 ? "0x7FC0" : "0x7E00";
  else if (elem->bits == 64)
    bits = negative ? "0xFFF0000000000000" : "0x7FF0000000000000";
  else if (elem->bits == 32)
    bits = negative ? "0xFF800000" : "0x7F800000";
  else if (strcmp(elem->type, "bf16") == 0)
    bits = negative ? "0xFF80" : "0x7F80";
  else
    bits = negative ? "0xFC00" : "0x7C00";
  return graph_emit(g, "arith.constant %s : %s", bits, elem->type);
}

int graph_load(graph_lowering_t *g, const graph_value_t *v, int index) {
  return graph_emit(g, "memref.load %%v%d[%%v%d] : %s", v->buffer, index, graph_memref_type(v));
}

void graph_store(graph_lowering_t *g, int value, const graph_value_t *v, int index) {
  graph_stmt(g, "memref.store %%v%d, %%v%d[%%v%d] : %s", value, v->buffer, index,
             graph_memref_type(v));
}

void graph_alloc(graph_lowering_t *g, graph_value_t *v) {
  v->buffer = graph_emit(g, "memref.alloc() : %s", graph_memref_type(v));
  v->owned = true;
}

void graph_open_loops(graph_lowering_t *g, int rank, const int64_t *dims, int *ivs) {
  for (int d = 0; d < rank; ++d) {
    int bound = graph_index_const(g, dims[d]);
    ivs[d] = g->next_id++;
    graph_stmt(g, "scf.for %%v%d = %%v%d to %%v%d step %%v%d {", ivs[d], GRAPH_C0, bound,
               GRAPH_C1);
  }
}

void graph_close_loops(graph_lowering_t *g, int rank) {
  for (int d = 0; d < rank; ++d)
    graph_stmt(g, "}");
}

/* Row-major linear index; an id below 0 in `ivs` stands for index 0. */
int graph_linear_index(graph_lowering_t *g, int rank, const int64_t *dims, const int *ivs) {
  int result = GRAPH_C0;
  int64_t stride = 1;
  for (int d = rank - 1; d >= 0; --d) {
    if (ivs[d] >= 0 && dims[d] != 1) {
      int term = ivs[d];
      if (stride != 1)
        term = graph_emit(g, "arith.muli %%v%d, %%v%d : index", ivs[d],
                          graph_index_const(g, stride));
      result = result == GRAPH_C0 ? term
                                  : graph_emit(g, "arith.addi %%v%d, %%v%d : index", result, term);
    }
    stride *= dims[d];
  }
  return result;
}

/* The index of `in` for output position `ivs` under numpy broadcasting:
 * dimensions align on the right and size-1 dimensions repeat. */
int graph_broadcast_index(graph_lowering_t *g, const graph_value_t *in, int out_rank,
                          const int *ivs) {
  int in_ivs[GRAPH_MAX_RANK];
  for (int k = 0; k < in->rank; ++k)
    in_ivs[k] = in->dims[k] == 1 ? -1 : ivs[k + out_rank - in->rank];
  return graph_linear_index(g, in->rank, in->dims, in_ivs);
}

/* Converts a scalar with the C-like rules of ONNX Cast: float to integer
 * truncates toward zero, anything to bool tests for nonzero. */
int graph_convert(graph_lowering_t *g, int value, const graph_elem_t *from,
                  const graph_elem_t *to) {
  if (from->is_float && to->is_float) {
    if (strcmp(from->type, to->type) == 0)
      return value;
    if (from->bits == to->bits) { /* f16 <-> bf16 go through f32 */
      int wide = graph_emit(g, "arith.extf %%v%d : %s to f32", value, from->type);
      return graph_emit(g, "arith.truncf %%v%d : f32 to %s", wide, to->type);
    }
    return graph_emit(g, "arith.%s %%v%d : %s to %s", from->bits < to->bits ? "extf" : "truncf",
                      value, from->type, to->type);
  }
  if (from->is_float) {
    if (to->bits == 1) {
      int zero = graph_float_const(g, 0.0, from);
      return graph_emit(g, "arith.cmpf une, %%v%d, %%v%d : %s", value, zero, from->type);
    }
    return graph_emit(g, "arith.%s %%v%d : %s to %s", to->is_unsigned ? "fptoui" : "fptosi",
                      value, from->type, to->type);
  }
  if (to->is_float)
    return graph_emit(g, "arith.%s %%v%d : %s to %s", from->is_unsigned ? "uitofp" : "sitofp",
                      value, from->type, to->type);
  if (to->bits == 1 && from->bits != 1) {
    int zero = graph_int_const(g, 0, from->type);
    return graph_emit(g, "arith.cmpi ne, %%v%d, %%v%d : %s", value, zero, from->type);
  }
  if (from->bits == to->bits)
    return value;
  if (from->bits > to->bits)
    return graph_emit(g, "arith.trunci %%v%d : %s to %s", value, from->type, to->type);
  return graph_emit(g, "arith.%s %%v%d : %s to %s", from->is_unsigned ? "extui" : "extsi", value,
                    from->type, to->type);
}

bool graph_elem_from_type(MlirType type, graph_elem_t *elem) {
  memset(elem, 0, sizeof *elem);
  if (mlirTypeIsAF32(type))
    *elem = graph_f32;
  else if (mlirTypeIsAF64(type))
    *elem = graph_f64;
  else if (mlirTypeIsAF16(type))
    *elem = (graph_elem_t){"f16", 16, true, false, false, "float16"};
  else if (mlirTypeIsABF16(type))
    *elem = (graph_elem_t){"bf16", 16, true, false, false, "bfloat16"};
  else if (mlirTypeIsAInteger(type)) {
    unsigned width = mlirIntegerTypeGetWidth(type);
    bool is_unsigned = mlirIntegerTypeIsUnsigned(type);
    if (width == 1) {
      *elem = graph_i1;
    } else if (width == 4) {
      *elem = (graph_elem_t){"i8", 8, false, is_unsigned, true, ""};
      snprintf(elem->onnx, sizeof elem->onnx, "%s", is_unsigned ? "uint4" : "int4");
    } else if (width == 8 || width == 16 || width == 32 || width == 64) {
      snprintf(elem->type, sizeof elem->type, "i%u", width);
      elem->bits = (int)width;
      elem->is_unsigned = is_unsigned;
      snprintf(elem->onnx, sizeof elem->onnx, "%sint%u", is_unsigned ? "u" : "", width);
    } else {
      return false;
    }
  } else {
    return false;
  }
  return true;
}

/* ---- Attributes ------------------------------------------------------------ */

static MlirAttribute get_attr(MlirOperation op, const char *name) {
  return mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString(name));
}

int64_t graph_attr_int(MlirOperation op, const char *name, int64_t fallback) {
  MlirAttribute attr = get_attr(op, name);
  if (mlirAttributeIsNull(attr) || !mlirAttributeIsAInteger(attr))
    return fallback;
  return mlirIntegerAttrGetValueSInt(attr);
}

double graph_attr_float(MlirOperation op, const char *name, double fallback) {
  MlirAttribute attr = get_attr(op, name);
  if (mlirAttributeIsNull(attr) || !mlirAttributeIsAFloat(attr))
    return fallback;
  return mlirFloatAttrGetValueDouble(attr);
}

int graph_attr_ints(MlirOperation op, const char *name, int64_t *out, int capacity) {
  MlirAttribute attr = get_attr(op, name);
  if (mlirAttributeIsNull(attr) || !mlirAttributeIsADenseI64Array(attr))
    return -1;
  intptr_t n = mlirDenseArrayGetNumElements(attr);
  for (intptr_t i = 0; i < n && i < capacity; ++i)
    out[i] = mlirDenseI64ArrayGetElement(attr, i);
  return (int)n;
}

/* ---- Values ------------------------------------------------------------------- */

static graph_value_t *find_value(graph_lowering_t *g, MlirValue value) {
  for (size_t i = g->num_values; i-- > 0;)
    if (mlirValueEqual(g->values[i].value, value))
      return &g->values[i];
  return NULL;
}

static graph_value_t *add_value(graph_lowering_t *g, const graph_value_t *v) {
  if (g->num_values == g->capacity) {
    size_t capacity = g->capacity ? 2 * g->capacity : 64;
    graph_value_t *grown = realloc(g->values, capacity * sizeof *grown);
    if (!grown)
      return NULL;
    g->values = grown;
    g->capacity = capacity;
  }
  g->values[g->num_values] = *v;
  return &g->values[g->num_values++];
}

static void set_shape(graph_value_t *v, int rank, const int64_t *dims) {
  v->rank = rank;
  v->count = 1;
  for (int d = 0; d < rank; ++d) {
    v->dims[d] = dims[d];
    v->count *= dims[d];
  }
}

/* Fills the shape of `v` from a ranked tensor type with static sizes. */
static bool shape_from_type(MlirType type, graph_value_t *v) {
  if (!mlirTypeIsARankedTensor(type) || !mlirShapedTypeHasStaticShape(type) ||
      mlirShapedTypeGetRank(type) > GRAPH_MAX_RANK)
    return false;
  int64_t dims[GRAPH_MAX_RANK];
  int rank = (int)mlirShapedTypeGetRank(type);
  for (int d = 0; d < rank; ++d)
    dims[d] = mlirShapedTypeGetDimSize(type, d);
  set_shape(v, rank, dims);
  return true;
}

/* The shape of a ReduceMean result whose axes are known at compile time:
 * the `axes` attribute (before opset 18) or a constant second input. */
static bool reduced_shape(MlirOperation op, graph_value_t **ins, int num_ins, graph_value_t *out) {
  int rank = ins[0]->rank;
  bool reduce[GRAPH_MAX_RANK] = {false};
  int64_t axes[GRAPH_MAX_RANK];
  int num_axes = 0;
  MlirAttribute attr = mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("axes"));
  if (!mlirAttributeIsNull(attr) && mlirAttributeIsADenseI64Array(attr)) {
    num_axes = (int)mlirDenseArrayGetNumElements(attr);
    for (int i = 0; i < num_axes && i < GRAPH_MAX_RANK; ++i)
      axes[i] = mlirDenseI64ArrayGetElement(attr, i);
  } else if (num_ins >= 2 && ins[1] && !mlirAttributeIsNull(ins[1]->constant)) {
    num_axes = (int)mlirElementsAttrGetNumElements(ins[1]->constant);
    for (int i = 0; i < num_axes && i < GRAPH_MAX_RANK; ++i)
      axes[i] = mlirDenseElementsAttrGetInt64Value(ins[1]->constant, i);
  } else if (num_ins >= 2 && ins[1]) {
    return false; /* axes computed at run time */
  }
  if (num_axes > GRAPH_MAX_RANK)
    return false;
  MlirAttribute noop =
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("noop_with_empty_axes"));
  bool noop_empty = !mlirAttributeIsNull(noop) && mlirIntegerAttrGetValueInt(noop) != 0;
  for (int i = 0; i < num_axes; ++i) {
    int64_t axis = axes[i] < 0 ? axes[i] + rank : axes[i];
    if (axis < 0 || axis >= rank)
      return false;
    reduce[axis] = true;
  }
  if (num_axes == 0 && !noop_empty)
    for (int d = 0; d < rank; ++d)
      reduce[d] = true;
  MlirAttribute keep = mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("keepdims"));
  bool keepdims = mlirAttributeIsNull(keep) || mlirIntegerAttrGetValueInt(keep) != 0;
  int64_t dims[GRAPH_MAX_RANK];
  int out_rank = 0;
  for (int d = 0; d < rank; ++d) {
    if (!reduce[d])
      dims[out_rank++] = ins[0]->dims[d];
    else if (keepdims)
      dims[out_rank++] = 1;
  }
  set_shape(out, out_rank, dims);
  return true;
}

/* The static shape of an op result: its own type, the type of a
 * tensor.cast that uses it (graph outputs are cast to their declared
 * types), or, for elementwise ops, the broadcast of the input shapes. */
static bool infer_result_shape(graph_lowering_t *g, MlirOperation op, const char *op_type,
                               MlirValue result, graph_value_t **ins, int num_ins,
                               graph_value_t *out) {
  if (shape_from_type(mlirValueGetType(result), out))
    return true;
  for (MlirOpOperand use = mlirValueGetFirstUse(result); !mlirOpOperandIsNull(use);
       use = mlirOpOperandGetNextUse(use)) {
    MlirOperation user = mlirOpOperandGetOwner(use);
    MlirStringRef name = mlirIdentifierStr(mlirOperationGetName(user));
    if (name.length == 11 && memcmp(name.data, "tensor.cast", 11) == 0 &&
        shape_from_type(mlirValueGetType(mlirOperationGetResult(user, 0)), out))
      return true;
  }
  if (strcmp(op_type, "ReduceMean") == 0 && num_ins >= 1 && reduced_shape(op, ins, num_ins, out))
    return true;
  static const char *const elementwise[] = {
      "Add", "Sub", "Mul", "Div", "Pow", "Less", "LessOrEqual", "Greater", "GreaterOrEqual",
      "Equal", "And", "Or", "Not", "Max", "Min", "Where", "Neg", "Sqrt", "Reciprocal", "Sin",
      "Cos", "Exp", "Sigmoid", "Cast", "Identity"};
  bool is_elementwise = false;
  for (size_t i = 0; i < sizeof elementwise / sizeof elementwise[0]; ++i)
    is_elementwise |= strcmp(op_type, elementwise[i]) == 0;
  if (!is_elementwise)
    return graph_fail(g, op, "the shape of the result of %s is unknown; iq --graph needs static "
                      "shapes for every value (declare them in the graph's value_info)", op_type);
  int rank = 0;
  int64_t dims[GRAPH_MAX_RANK];
  for (int i = 0; i < num_ins; ++i)
    rank = ins[i]->rank > rank ? ins[i]->rank : rank;
  for (int d = 0; d < rank; ++d)
    dims[d] = 1;
  for (int i = 0; i < num_ins; ++i)
    for (int k = 0; k < ins[i]->rank; ++k) {
      int64_t *dim = &dims[k + rank - ins[i]->rank];
      if (*dim == 1)
        *dim = ins[i]->dims[k];
      else if (ins[i]->dims[k] != 1 && ins[i]->dims[k] != *dim)
        return graph_fail(g, op, "the input shapes of %s do not broadcast", op_type);
    }
  set_shape(out, rank, dims);
  return true;
}

/* ---- Constants and slots ------------------------------------------------ */

static void append_printed(MlirStringRef text, void *user_data) {
  iq_text_append(user_data, text.data, text.length);
}

/* Defines a private memref.global with the elements of a dense attribute,
 * flattened: the nested brackets of the printed form are dropped, since
 * the global is 1-D. */
static bool emit_constant(graph_lowering_t *g, MlirOperation op, MlirAttribute dense,
                          graph_value_t *v) {
  if (v->count == 0) {
    graph_alloc(g, v);
    return true;
  }
  iq_text_t printed = {0};
  mlirAttributePrint(dense, append_printed, &printed);
  if (!printed.data)
    return graph_fail(g, op, "out of memory");
  char *type_suffix = strstr(printed.data, "> : tensor<");
  if (strncmp(printed.data, "dense<", 6) != 0 || !type_suffix) {
    iq_text_free(&printed);
    return graph_fail(g, op, "only dense constants can be lowered");
  }
  *type_suffix = '\0';
  const char *elements = printed.data + 6;
  int id = g->next_id++;
  iq_text_printf(&g->globals, "  memref.global \"private\" constant @iq_graph_constant%d : %s = dense<",
                 id, graph_memref_type(v));
  bool nested = elements[0] == '[';
  if (nested)
    iq_text_printf(&g->globals, "[");
  for (const char *p = elements; *p; ++p)
    if (*p != '[' && *p != ']')
      iq_text_append(&g->globals, p, 1);
  iq_text_printf(&g->globals, "%s>\n", nested ? "]" : "");
  iq_text_free(&printed);
  v->buffer = graph_emit(g, "memref.get_global @iq_graph_constant%d : %s", id,
                         graph_memref_type(v));
  v->constant = dense;
  return true;
}

/* A large initializer lives in the weight store; its bytes are copied
 * into a global as a hex dense literal. */
static bool emit_weight(graph_lowering_t *g, MlirOperation op, graph_value_t *v) {
  MlirAttribute store_attr =
      mlirOperationGetAttributeByName(g->module, mlirStringRefCreateFromCString("iq.weight_store"));
  MlirAttribute name_attr = get_attr(op, "name");
  if (mlirAttributeIsNull(store_attr) || mlirAttributeIsNull(name_attr))
    return graph_fail(g, op, "the weight has no store (iq.weight_store) or name");
  if (v->elem.bits == 1 || v->elem.packed4)
    return graph_fail(g, op, "bool and 4-bit initializers in the weight store are not supported");
  MlirStringRef reference = mlirStringAttrGetValue(store_attr);
  MlirStringRef name = mlirStringAttrGetValue(name_attr);
  char path[4096], weight_name[512];
  if (reference.length > 0 && reference.data[0] == '/')
    snprintf(path, sizeof path, "%.*s", (int)reference.length, reference.data);
  else
    snprintf(path, sizeof path, "%s/%.*s", iq_weight_store_base_dir(), (int)reference.length,
             reference.data);
  snprintf(weight_name, sizeof weight_name, "%.*s", (int)name.length, name.data);
  iq_weight_store_t *store = iq_weight_store_open(path, g->error);
  if (!store)
    return false;
  const iq_weight_tensor_t *tensor = iq_weight_store_find(store, weight_name);
  if (!tensor || tensor->byte_size != (uint64_t)v->count * (uint64_t)(v->elem.bits / 8)) {
    iq_weight_store_close(store);
    return graph_fail(g, op, "the weight '%s' is missing from %s or has another size", weight_name,
                      path);
  }
  int id = g->next_id++;
  iq_text_printf(&g->globals, "  memref.global \"private\" constant @iq_graph_constant%d : %s = "
                 "dense<\"0x", id, graph_memref_type(v));
  for (uint64_t i = 0; i < tensor->byte_size; ++i)
    iq_text_printf(&g->globals, "%02X", tensor->data[i]);
  iq_text_printf(&g->globals, "\">\n");
  iq_weight_store_close(store);
  v->buffer = graph_emit(g, "memref.get_global @iq_graph_constant%d : %s", id,
                         graph_memref_type(v));
  return true;
}

/* A flat memref<N x type> over the address in slots[slot]. */
static int memref_from_slot(graph_lowering_t *g, int slot, int64_t count, const char *type) {
  const char *descriptor = "!llvm.struct<(ptr, ptr, i64, array<1 x i64>, array<1 x i64>)>";
  int address = graph_emit(g, "llvm.getelementptr %%slots[%d] : (!llvm.ptr) -> !llvm.ptr, i64",
                           slot);
  int bits = graph_emit(g, "llvm.load %%v%d : !llvm.ptr -> i64", address);
  int pointer = graph_emit(g, "llvm.inttoptr %%v%d : i64 to !llvm.ptr", bits);
  int zero = graph_emit(g, "llvm.mlir.constant(0 : i64) : i64");
  int one = graph_emit(g, "llvm.mlir.constant(1 : i64) : i64");
  int size = graph_emit(g, "llvm.mlir.constant(%lld : i64) : i64", (long long)count);
  int d = graph_emit(g, "llvm.mlir.undef : %s", descriptor);
  d = graph_emit(g, "llvm.insertvalue %%v%d, %%v%d[0] : %s", pointer, d, descriptor);
  d = graph_emit(g, "llvm.insertvalue %%v%d, %%v%d[1] : %s", pointer, d, descriptor);
  d = graph_emit(g, "llvm.insertvalue %%v%d, %%v%d[2] : %s", zero, d, descriptor);
  d = graph_emit(g, "llvm.insertvalue %%v%d, %%v%d[3, 0] : %s", size, d, descriptor);
  d = graph_emit(g, "llvm.insertvalue %%v%d, %%v%d[4, 0] : %s", one, d, descriptor);
  return graph_emit(g, "builtin.unrealized_conversion_cast %%v%d : %s to memref<%lldx%s>", d,
                    descriptor, (long long)count, type);
}

/* Unpacks a packed int4/uint4 slot into one value per i8 (sign-extending
 * int4). */
static void unpack_nibbles(graph_lowering_t *g, int packed, graph_value_t *v) {
  graph_alloc(g, v);
  char packed_type[48];
  snprintf(packed_type, sizeof packed_type, "memref<%lldxi8>", (long long)((v->count + 1) / 2));
  int ivs[1];
  graph_open_loops(g, 1, &v->count, ivs);
  int two = graph_index_const(g, 2);
  int byte_index = graph_emit(g, "arith.divui %%v%d, %%v%d : index", ivs[0], two);
  int odd = graph_emit(g, "arith.remui %%v%d, %%v%d : index", ivs[0], two);
  int odd_i8 = graph_emit(g, "arith.index_cast %%v%d : index to i8", odd);
  int shift = graph_emit(g, "arith.muli %%v%d, %%v%d : i8", odd_i8, graph_int_const(g, 4, "i8"));
  int byte = graph_emit(g, "memref.load %%v%d[%%v%d] : %s", packed, byte_index, packed_type);
  int high_first = graph_emit(g, "arith.shrui %%v%d, %%v%d : i8", byte, shift);
  int four = graph_int_const(g, 4, "i8");
  /* Moving the nibble to the top and back sign- or zero-extends it. */
  int top = graph_emit(g, "arith.shli %%v%d, %%v%d : i8", high_first, four);
  int value = graph_emit(g, "arith.%s %%v%d, %%v%d : i8", v->elem.is_unsigned ? "shrui" : "shrsi",
                         top, four);
  graph_store(g, value, v, ivs[0]);
  graph_close_loops(g, 1);
}

static void pack_nibbles(graph_lowering_t *g, const graph_value_t *v, int packed) {
  int64_t bytes = (v->count + 1) / 2;
  char packed_type[48];
  snprintf(packed_type, sizeof packed_type, "memref<%lldxi8>", (long long)bytes);
  int ivs[1];
  graph_open_loops(g, 1, &bytes, ivs);
  int two = graph_index_const(g, 2);
  int low_index = graph_emit(g, "arith.muli %%v%d, %%v%d : index", ivs[0], two);
  int high_index = graph_emit(g, "arith.addi %%v%d, %%v%d : index", low_index, GRAPH_C1);
  /* An odd count leaves the last high nibble zero; clamping the index
   * keeps the load in bounds and the select drops its value. */
  int last = graph_index_const(g, v->count - 1);
  int in_bounds = graph_emit(g, "arith.cmpi ule, %%v%d, %%v%d : index", high_index, last);
  int safe_index = graph_emit(g, "arith.minui %%v%d, %%v%d : index", high_index, last);
  int low = graph_load(g, v, low_index);
  int high_value = graph_load(g, v, safe_index);
  int zero = graph_int_const(g, 0, "i8");
  int high = graph_emit(g, "arith.select %%v%d, %%v%d, %%v%d : i8", in_bounds, high_value, zero);
  int mask = graph_int_const(g, 15, "i8");
  int low_bits = graph_emit(g, "arith.andi %%v%d, %%v%d : i8", low, mask);
  int high_bits = graph_emit(g, "arith.shli %%v%d, %%v%d : i8", high, graph_int_const(g, 4, "i8"));
  int byte = graph_emit(g, "arith.ori %%v%d, %%v%d : i8", low_bits, high_bits);
  graph_stmt(g, "memref.store %%v%d, %%v%d[%%v%d] : %s", byte, packed, ivs[0], packed_type);
  graph_close_loops(g, 1);
}

/* ---- Driver ------------------------------------------------------------------- */

static void string_literal(iq_text_t *out, const char *text) {
  iq_text_append(out, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)text; *p; ++p) {
    if (*p >= 0x20 && *p < 0x7f && *p != '"' && *p != '\\')
      iq_text_append(out, (const char *)p, 1);
    else
      iq_text_printf(out, "\\%02X", *p);
  }
  iq_text_append(out, "\\00\"", 4);
}

/* The iq.name of argument or result `index` of @forward, or a generated
 * name. */
static void io_name(MlirOperation function, const char *attrs_name, intptr_t index, char *out,
                    size_t size) {
  snprintf(out, size, "%s%ld", attrs_name[0] == 'a' ? "input" : "output", (long)index);
  MlirAttribute attrs = get_attr(function, attrs_name);
  if (mlirAttributeIsNull(attrs) || !mlirAttributeIsAArray(attrs) ||
      index >= mlirArrayAttrGetNumElements(attrs))
    return;
  MlirAttribute dict = mlirArrayAttrGetElement(attrs, index);
  if (!mlirAttributeIsADictionary(dict))
    return;
  MlirAttribute name = mlirDictionaryAttrGetElementByName(dict, mlirStringRefCreateFromCString("iq.name"));
  if (!mlirAttributeIsNull(name) && mlirAttributeIsAString(name)) {
    MlirStringRef text = mlirStringAttrGetValue(name);
    snprintf(out, size, "%.*s", (int)text.length, text.data);
    /* Spaces would split the metadata line. */
    for (char *p = out; *p; ++p)
      if (*p == ' ' || *p == '\n')
        *p = '_';
  }
}

static void metadata_line(iq_text_t *meta, const char *kind, const char *name,
                          const graph_value_t *v) {
  iq_text_printf(meta, "%s %s %s %d", kind, name, v->elem.onnx, v->rank);
  for (int d = 0; d < v->rank; ++d)
    iq_text_printf(meta, " %lld", (long long)v->dims[d]);
  iq_text_printf(meta, "\n");
}

static bool op_name_is(MlirOperation op, const char *name) {
  MlirStringRef text = mlirIdentifierStr(mlirOperationGetName(op));
  return text.length == strlen(name) && memcmp(text.data, name, text.length) == 0;
}

static bool lower_body_op(graph_lowering_t *g, MlirOperation op) {
  MlirStringRef full = mlirIdentifierStr(mlirOperationGetName(op));
  char name[96];
  snprintf(name, sizeof name, "%.*s", (int)full.length, full.data);
  if (strcmp(name, "onnx.NoValue") == 0) {
    graph_value_t none = {.value = mlirOperationGetResult(op, 0), .buffer = -1};
    return add_value(g, &none) != NULL;
  }
  if (strcmp(name, "tensor.cast") == 0) {
    graph_value_t *source = find_value(g, mlirOperationGetOperand(op, 0));
    if (!source)
      return graph_fail(g, op, "the operand is not defined before its use");
    graph_value_t alias = *source;
    alias.value = mlirOperationGetResult(op, 0);
    alias.owned = false;
    return add_value(g, &alias) != NULL;
  }
  if (strcmp(name, "arith.constant") == 0 || strcmp(name, "iq.weight") == 0) {
    MlirValue result = mlirOperationGetResult(op, 0);
    graph_value_t v = {.value = result};
    MlirType type = mlirValueGetType(result);
    if (!shape_from_type(type, &v) ||
        !graph_elem_from_type(mlirShapedTypeGetElementType(type), &v.elem))
      return graph_fail(g, op, "constants must be static tensors of a supported element type");
    bool ok = name[0] == 'a' ? emit_constant(g, op, get_attr(op, "value"), &v)
                             : emit_weight(g, op, &v);
    return ok && add_value(g, &v) != NULL;
  }
  if (strncmp(name, "onnx.", 5) != 0 || strchr(name + 5, '.'))
    return graph_fail(g, op, "iq --graph cannot lower '%s'", name);

  const char *op_type = name + 5;
  intptr_t num_ins = mlirOperationGetNumOperands(op);
  intptr_t num_outs = mlirOperationGetNumResults(op);
  if (num_ins > 16 || num_outs > 4)
    return graph_fail(g, op, "too many operands or results");
  graph_value_t *ins[16];
  graph_value_t outs[4];
  for (intptr_t i = 0; i < num_ins; ++i) {
    ins[i] = find_value(g, mlirOperationGetOperand(op, i));
    if (!ins[i])
      return graph_fail(g, op, "operand %ld is not defined before its use", (long)i);
  }
  for (intptr_t i = 0; i < num_outs; ++i) {
    MlirValue result = mlirOperationGetResult(op, i);
    outs[i] = (graph_value_t){.value = result, .buffer = -1};
    MlirType type = mlirValueGetType(result);
    if (!mlirTypeIsAShaped(type) ||
        !graph_elem_from_type(mlirShapedTypeGetElementType(type), &outs[i].elem))
      return graph_fail(g, op, "result %ld of %s has an unsupported element type", (long)i,
                        op_type);
    if (!infer_result_shape(g, op, op_type, result, ins, (int)num_ins, &outs[i]))
      return false;
  }
  /* Pointers into g->values move when it grows, so the inputs are copied. */
  graph_value_t in_copies[16];
  for (intptr_t i = 0; i < num_ins; ++i) {
    in_copies[i] = *ins[i];
    ins[i] = &in_copies[i];
  }
  if (!graph_lower_op(g, op, op_type, ins, (int)num_ins, outs, (int)num_outs))
    return false;
  for (intptr_t i = 0; i < num_outs; ++i)
    if (!add_value(g, &outs[i]))
      return graph_fail(g, op, "out of memory");
  return true;
}

static MlirOperation find_forward(MlirOperation module) {
  MlirBlock body = mlirRegionGetFirstBlock(mlirOperationGetRegion(module, 0));
  for (MlirOperation op = mlirBlockGetFirstOperation(body); !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op)) {
    MlirAttribute symbol = get_attr(op, "sym_name");
    if (!mlirAttributeIsNull(symbol) && mlirAttributeIsAString(symbol)) {
      MlirStringRef name = mlirStringAttrGetValue(symbol);
      if (name.length == 7 && memcmp(name.data, "forward", 7) == 0)
        return op;
    }
  }
  return (MlirOperation){NULL};
}

static int64_t module_opset(MlirOperation module) {
  MlirAttribute opsets = get_attr(module, "iq.onnx_opsets");
  if (mlirAttributeIsNull(opsets) || !mlirAttributeIsADictionary(opsets))
    return 0;
  MlirAttribute version =
      mlirDictionaryAttrGetElementByName(opsets, mlirStringRefCreateFromCString("ai.onnx"));
  return !mlirAttributeIsNull(version) && mlirAttributeIsAInteger(version)
             ? mlirIntegerAttrGetValueInt(version)
             : 0;
}

static bool lower_function(graph_lowering_t *g, MlirOperation function, iq_text_t *meta) {
  MlirBlock block = mlirRegionGetFirstBlock(mlirOperationGetRegion(function, 0));
  iq_text_printf(&g->body, "  func.func @iq_graph_forward(%%slots: !llvm.ptr) {\n"
                           "    %%v0 = arith.constant 0 : index\n"
                           "    %%v1 = arith.constant 1 : index\n");
  g->next_id = 2;
  intptr_t num_inputs = mlirBlockGetNumArguments(block);
  for (intptr_t i = 0; i < num_inputs; ++i) {
    MlirValue argument = mlirBlockGetArgument(block, i);
    MlirType type = mlirValueGetType(argument);
    graph_value_t v = {.value = argument};
    char name[256];
    io_name(function, "arg_attrs", i, name, sizeof name);
    if (!shape_from_type(type, &v))
      return graph_fail(g, function, "graph input '%s' has no static shape; iq --graph compiles "
                        "static shapes only", name);
    if (!graph_elem_from_type(mlirShapedTypeGetElementType(type), &v.elem))
      return graph_fail(g, function, "graph input '%s' has an unsupported element type", name);
    metadata_line(meta, "input", name, &v);
    if (v.elem.packed4) {
      int packed = memref_from_slot(g, (int)i, (v.count + 1) / 2, "i8");
      unpack_nibbles(g, packed, &v);
    } else {
      v.buffer = memref_from_slot(g, (int)i, v.count, v.elem.type);
    }
    if (!add_value(g, &v))
      return graph_fail(g, function, "out of memory");
  }

  MlirOperation terminator = {NULL};
  for (MlirOperation op = mlirBlockGetFirstOperation(block); !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op)) {
    if (op_name_is(op, "func.return")) {
      terminator = op;
      break;
    }
    if (!lower_body_op(g, op))
      return false;
  }
  if (mlirOperationIsNull(terminator))
    return graph_fail(g, function, "@forward has no return");

  intptr_t num_outputs = mlirOperationGetNumOperands(terminator);
  for (intptr_t i = 0; i < num_outputs; ++i) {
    graph_value_t *v = find_value(g, mlirOperationGetOperand(terminator, i));
    char name[256];
    io_name(function, "res_attrs", i, name, sizeof name);
    if (!v || v->buffer < 0)
      return graph_fail(g, function, "graph output '%s' has no value", name);
    metadata_line(meta, "output", name, v);
    int slot = (int)(num_inputs + i);
    if (v->elem.packed4 && v->count > 0) {
      int packed = memref_from_slot(g, slot, (v->count + 1) / 2, "i8");
      pack_nibbles(g, v, packed);
    } else if (v->count > 0 && !v->elem.packed4) {
      int destination = memref_from_slot(g, slot, v->count, v->elem.type);
      graph_stmt(g, "memref.copy %%v%d, %%v%d : %s to %s", v->buffer, destination,
                 graph_memref_type(v), graph_memref_type(v));
    }
  }
  for (size_t i = 0; i < g->num_values; ++i)
    if (g->values[i].owned)
      graph_stmt(g, "memref.dealloc %%v%d : %s", g->values[i].buffer,
                 graph_memref_type(&g->values[i]));
  iq_text_printf(&g->body, "    return\n  }\n");
  return true;
}

char *iq_lower_graph_to_source(MlirOperation module, iq_error_t **error) {
  graph_lowering_t g = {.error = error, .module = module, .opset = module_opset(module)};
  MlirOperation function = find_forward(module);
  if (mlirOperationIsNull(function)) {
    iq_error_set(error, NULL, NULL, "import an ONNX model with iq-opt", "the module has no @forward");
    return NULL;
  }
  iq_text_t meta = {0};
  iq_text_printf(&meta, "iq-graph 1\n");
  bool ok = lower_function(&g, function, &meta);
  iq_text_printf(&meta, "end\n");

  char *result = NULL;
  if (ok) {
    iq_text_t out = {0};
    iq_text_printf(&out, "module {\n");
    iq_text_printf(&out, "  llvm.mlir.global external constant @iq_graph_metadata(");
    string_literal(&out, meta.data ? meta.data : "");
    iq_text_printf(&out, ") {addr_space = 0 : i32} : !llvm.array<%zu x i8>\n", meta.length + 1);
    /* The runtime archive linked into every library refers to the LLaMA
     * entry points. These stubs satisfy the link; the runtime rejects the
     * metadata's first line, so it never calls the empty forward. */
    iq_text_printf(&out, "  llvm.mlir.global external constant @iq_model_metadata(");
    string_literal(&out, "iq-graph 1\nthis library holds a generic graph: call iq_graph_forward\n");
    iq_text_printf(&out, ") {addr_space = 0 : i32} : !llvm.array<%zu x i8>\n",
                   strlen("iq-graph 1\nthis library holds a generic graph: call iq_graph_forward\n") + 1);
    iq_text_printf(&out, "  func.func @iq_model_forward(%%slots: !llvm.ptr) {\n    return\n  }\n");
    if (g.globals.data)
      iq_text_append(&out, g.globals.data, g.globals.length);
    if (g.body.data)
      iq_text_append(&out, g.body.data, g.body.length);
    iq_text_printf(&out, "}\n");
    if (out.failed || g.body.failed || g.globals.failed) {
      iq_error_set(error, NULL, NULL, NULL, "out of memory generating the graph's MLIR");
      iq_text_free(&out);
    } else {
      result = out.data;
    }
  }
  iq_text_free(&meta);
  iq_text_free(&g.body);
  iq_text_free(&g.globals);
  free(g.values);
  return result;
}
