/* Lowering of the canonical forward function to the entry point of
 * iq_compiled.h: arguments are read from the slot array into memref
 * descriptors, every canonical op becomes a call of a kernel generated for
 * its sizes, intermediate buffers are allocated per call and freed after
 * their last use, and the KV caches are updated in place. The result is
 * MLIR source, parsed and lowered to LLVM by the caller. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"

#include "Kernels.h"
#include "QuantKernels.h"
#include "TextBuffer.h"
#include "iq/conversion.h"
#include "iq/iq_compiled.h"
#include "iq/ir.h"

/* scf.parallel loops become OpenMP regions. The conversion wraps loop
 * bodies in memref.alloca_scope ops, which convert-scf-to-cf cannot lower
 * once they contain several blocks, so canonicalize inlines them first. */
const char iq_llvm_lowering_pipeline[] =
    "builtin.module(convert-scf-to-openmp,canonicalize,convert-scf-to-cf,"
    "expand-strided-metadata,lower-affine,convert-math-to-llvm,convert-arith-to-llvm,"
    "convert-cf-to-llvm,finalize-memref-to-llvm,convert-openmp-to-llvm,convert-func-to-llvm,"
    "reconcile-unrealized-casts)";

typedef struct lowered_value {
  MlirValue value;
  char name[40];
  char type[80];
  bool owned;    /* a buffer this function allocated */
  size_t last_use; /* index of the last op reading it */
} lowered_value_t;

typedef struct weight_entry {
  char name[256];
  char dtype[8];
  bool transposed;
  int64_t dims[2];
  int rank;
} weight_entry_t;

typedef struct lowering {
  iq_text_t body, kernels, globals;
  iq_kernel_set_t kernel_set;
  lowered_value_t *values;
  size_t num_values, capacity;
  weight_entry_t *weights;
  size_t num_weights;
  int next_id;
  int64_t layers, hidden, heads, kv_heads, head_dim, ffn, vocab;
  double theta, epsilon;
  iq_error_t **error;
  const char *source;
  int threads; /* an IQ_THREADS_ value */
  bool observe_declared; /* @iq_runtime_observe is declared in globals */
} lowering_t;

/* The smallest weight matrix (in * out) whose linear kernel runs on
 * several threads, an estimate from stories260K (64 x 172, faster on one
 * thread) and 576 x 1536 matrices. */
#define IQ_PARALLEL_MIN_WEIGHTS 65536

static bool lower_fail(lowering_t *l, MlirOperation op, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

static bool lower_fail(lowering_t *l, MlirOperation op, const char *format, ...) {
  char message[512];
  va_list args;
  va_start(args, format);
  vsnprintf(message, sizeof message, format, args);
  va_end(args);
  char where[128] = "";
  if (!mlirOperationIsNull(op)) {
    MlirStringRef name = mlirIdentifierStr(mlirOperationGetName(op));
    snprintf(where, sizeof where, "op '%.*s'", (int)name.length, name.data);
  }
  return iq_error_set(l->error, l->source, *where ? where : NULL,
                      "run --iq-raise-llama first; the float path lowers canonical LLaMA ops",
                      "%s", message);
}

static lowered_value_t *find_value(lowering_t *l, MlirValue value) {
  for (size_t i = 0; i < l->num_values; ++i)
    if (mlirValueEqual(l->values[i].value, value))
      return &l->values[i];
  return NULL;
}

static lowered_value_t *add_value(lowering_t *l, MlirValue value, const char *name,
                                  const char *type, bool owned) {
  if (l->num_values == l->capacity) {
    size_t capacity = l->capacity ? l->capacity * 2 : 256;
    lowered_value_t *grown = realloc(l->values, capacity * sizeof *grown);
    if (!grown)
      return NULL;
    l->values = grown;
    l->capacity = capacity;
  }
  lowered_value_t *entry = &l->values[l->num_values++];
  memset(entry, 0, sizeof *entry);
  entry->value = value;
  snprintf(entry->name, sizeof entry->name, "%s", name);
  snprintf(entry->type, sizeof entry->type, "%s", type);
  entry->owned = owned;
  return entry;
}

static int64_t static_dim(MlirType type, intptr_t index) {
  if (!mlirTypeIsARankedTensor(type) || index >= mlirShapedTypeGetRank(type) ||
      mlirShapedTypeIsDynamicDim(type, index))
    return -1;
  return mlirShapedTypeGetDimSize(type, index);
}

static int64_t last_dim(MlirValue value) {
  MlirType type = mlirValueGetType(value);
  return mlirTypeIsARankedTensor(type) ? static_dim(type, mlirShapedTypeGetRank(type) - 1) : -1;
}

/* "f32", "f16" or "bf16" for a weight's element type, or NULL. */
static const char *element_name(MlirType element) {
  if (mlirTypeIsAF32(element))
    return "f32";
  if (mlirTypeIsAF16(element))
    return "f16";
  if (mlirTypeIsABF16(element))
    return "bf16";
  return NULL;
}

/* ---- Memref descriptors from slots --------------------------------------- */

/* Emits a memref of `type` over the pointer in slots[slot], with the given
 * sizes: a number, or the SSA name of an i64 value for a dynamic size. */
static void memref_from_slot(lowering_t *l, const char *result, int slot, int rank,
                             const char *const *sizes, const char *type) {
  iq_text_t *t = &l->body;
  int id = l->next_id++;
  char descriptor[96];
  snprintf(descriptor, sizeof descriptor,
           "!llvm.struct<(ptr, ptr, i64, array<%d x i64>, array<%d x i64>)>", rank, rank);
  iq_text_printf(t, "    %%slot%d_address = llvm.getelementptr %%slots[%d] : (!llvm.ptr) -> !llvm.ptr, i64\n",
                 id, slot);
  iq_text_printf(t, "    %%slot%d_bits = llvm.load %%slot%d_address : !llvm.ptr -> i64\n", id, id);
  iq_text_printf(t, "    %%slot%d = llvm.inttoptr %%slot%d_bits : i64 to !llvm.ptr\n", id, id);
  iq_text_printf(t, "    %%d%d_0 = llvm.mlir.undef : %s\n", id, descriptor);
  iq_text_printf(t, "    %%d%d_1 = llvm.insertvalue %%slot%d, %%d%d_0[0] : %s\n", id, id, id, descriptor);
  iq_text_printf(t, "    %%d%d_2 = llvm.insertvalue %%slot%d, %%d%d_1[1] : %s\n", id, id, id, descriptor);
  iq_text_printf(t, "    %%d%d_3 = llvm.insertvalue %%i64_0, %%d%d_2[2] : %s\n", id, id, descriptor);
  /* Row-major strides: the product of the sizes to the right. */
  char stride[64] = "%i64_1";
  int step = 4;
  for (int i = rank - 1; i >= 0; --i) {
    char size_name[64];
    if (sizes[i][0] == '%') {
      snprintf(size_name, sizeof size_name, "%s", sizes[i]);
    } else {
      snprintf(size_name, sizeof size_name, "%%d%d_size%d", id, i);
      iq_text_printf(t, "    %s = arith.constant %s : i64\n", size_name, sizes[i]);
    }
    iq_text_printf(t, "    %%d%d_%d = llvm.insertvalue %s, %%d%d_%d[3, %d] : %s\n", id, step, size_name,
                   id, step - 1, i, descriptor);
    ++step;
    iq_text_printf(t, "    %%d%d_%d = llvm.insertvalue %s, %%d%d_%d[4, %d] : %s\n", id, step, stride, id,
                   step - 1, i, descriptor);
    ++step;
    char next_stride[64];
    snprintf(next_stride, sizeof next_stride, "%%d%d_stride%d", id, i);
    iq_text_printf(t, "    %s = arith.muli %s, %s : i64\n", next_stride, stride, size_name);
    snprintf(stride, sizeof stride, "%s", next_stride);
  }
  iq_text_printf(t, "    %s = builtin.unrealized_conversion_cast %%d%d_%d : %s to %s\n", result, id,
                 step - 1, descriptor, type);
}

/* ---- Ops ----------------------------------------------------------------- */

static lowered_value_t *operand(lowering_t *l, MlirOperation op, intptr_t index) {
  lowered_value_t *value = find_value(l, mlirOperationGetOperand(op, index));
  if (!value)
    lower_fail(l, op, "operand %ld was not lowered", (long)index);
  return value;
}

/* Allocates the float32 activation buffer [1, tokens, width] of a result. */
static lowered_value_t *allocate(lowering_t *l, MlirValue result, int64_t width) {
  char name[40], type[80];
  snprintf(name, sizeof name, "%%buffer%d", l->next_id++);
  snprintf(type, sizeof type, "memref<1x?x%lldxf32>", (long long)width);
  iq_text_printf(&l->body, "    %s = memref.alloc(%%tokens) : %s\n", name, type);
  return add_value(l, result, name, type, true);
}

static bool lower_weight(lowering_t *l, MlirOperation op) {
  MlirType type = mlirValueGetType(mlirOperationGetResult(op, 0));
  MlirStringRef name = mlirStringAttrGetValue(
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("name")));
  bool transposed = mlirBoolAttrGetValue(
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("transposed")));
  MlirType element = mlirShapedTypeGetElementType(type);
  const char *dtype = element_name(element);
  /* 4-bit weight codes: a flat memref of the packed bytes. */
  bool codes = mlirTypeIsAInteger(element) && mlirIntegerTypeGetWidth(element) == 4;
  if (codes)
    dtype = mlirIntegerTypeIsSigned(element) ? "i4" : "u4";
  intptr_t rank = mlirShapedTypeGetRank(type);
  if (!dtype || rank < 1 || rank > 2)
    return lower_fail(l, op, "weights must be 1-D or 2-D f32, f16 or bf16 tensors, or 4-bit "
                             "codes");

  weight_entry_t entry = {.transposed = transposed, .rank = (int)rank};
  snprintf(entry.name, sizeof entry.name, "%.*s", (int)name.length, name.data);
  snprintf(entry.dtype, sizeof entry.dtype, "%s", dtype);
  for (intptr_t i = 0; i < rank; ++i)
    entry.dims[i] = static_dim(type, i);

  size_t index = 0;
  while (index < l->num_weights && strcmp(l->weights[index].name, entry.name) != 0)
    ++index;
  if (index == l->num_weights) {
    weight_entry_t *grown = realloc(l->weights, (l->num_weights + 1) * sizeof *grown);
    if (!grown)
      return lower_fail(l, op, "out of memory");
    l->weights = grown;
    l->weights[l->num_weights++] = entry;
  }

  /* A transposed weight is laid out [in, out] in the store. */
  char sizes[2][32], memref_type[80], result[40];
  int64_t d0 = transposed ? entry.dims[1] : entry.dims[0];
  int64_t d1 = transposed ? entry.dims[0] : entry.dims[1];
  snprintf(sizes[0], sizeof sizes[0], "%lld", (long long)d0);
  snprintf(sizes[1], sizeof sizes[1], "%lld", (long long)d1);
  const char *size_list[2] = {sizes[0], sizes[1]};
  if (codes) {
    long long bytes = ((long long)entry.dims[0] * (rank == 2 ? entry.dims[1] : 1) + 1) / 2;
    snprintf(sizes[0], sizeof sizes[0], "%lld", bytes);
    snprintf(memref_type, sizeof memref_type, "memref<%lldxi8>", bytes);
    rank = 1;
  } else if (rank == 1)
    snprintf(memref_type, sizeof memref_type, "memref<%lldx%s>", (long long)d0, dtype);
  else
    snprintf(memref_type, sizeof memref_type, "memref<%lldx%lldx%s>", (long long)d0,
             (long long)d1, dtype);
  snprintf(result, sizeof result, "%%weight%d", l->next_id++);
  memref_from_slot(l, result, IQ_SLOT_FIRST_WEIGHT(l->layers) + (int)index, (int)rank, size_list,
                   memref_type);
  return add_value(l, mlirOperationGetResult(op, 0), result, memref_type, false) != NULL;
}

static void append_printed(MlirStringRef text, void *user_data) {
  iq_text_append(user_data, text.data, text.length);
}

/* A small constant (a norm gain kept inline by the importer) becomes a
 * private memref global. */
static bool lower_constant(lowering_t *l, MlirOperation op) {
  MlirValue result = mlirOperationGetResult(op, 0);
  MlirType type = mlirValueGetType(result);
  const char *dtype = mlirTypeIsARankedTensor(type)
                          ? element_name(mlirShapedTypeGetElementType(type))
                          : NULL;
  if (!dtype || mlirShapedTypeGetRank(type) != 1 || static_dim(type, 0) < 0)
    return lower_fail(l, op, "only 1-D float constants (norm gains) can be lowered");

  /* The attribute prints as `dense<...> : tensor<NxT>`; a memref.global
   * takes the `dense<...>` part and the memref type. */
  iq_text_t printed = {0};
  MlirAttribute value =
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("value"));
  mlirAttributePrint(value, append_printed, &printed);
  char *type_suffix = printed.data ? strstr(printed.data, " : tensor<") : NULL;
  if (type_suffix)
    *type_suffix = '\0';
  int id = l->next_id++;
  char name[40], memref_type[64];
  snprintf(name, sizeof name, "%%constant%d", id);
  snprintf(memref_type, sizeof memref_type, "memref<%lldx%s>", (long long)static_dim(type, 0),
           dtype);
  iq_text_printf(&l->globals, "  memref.global \"private\" constant @iq_constant%d : %s = %s\n", id,
                 memref_type, printed.data ? printed.data : "dense<0.0>");
  iq_text_free(&printed);
  iq_text_printf(&l->body, "    %s = memref.get_global @iq_constant%d : %s\n", name, id,
                 memref_type);
  return add_value(l, result, name, memref_type, false) != NULL;
}

static bool call(lowering_t *l, const char *kernel, int count, lowered_value_t *const *arguments) {
  iq_text_printf(&l->body, "    func.call @%s(", kernel);
  for (int i = 0; i < count; ++i)
    iq_text_printf(&l->body, "%s%s", i ? ", " : "", arguments[i]->name);
  iq_text_printf(&l->body, ") : (");
  for (int i = 0; i < count; ++i)
    iq_text_printf(&l->body, "%s%s", i ? ", " : "", arguments[i]->type);
  iq_text_printf(&l->body, ") -> ()\n");
  return true;
}

/* The weight op behind a linear's weight operand. */
static MlirOperation weight_op(MlirOperation op) {
  MlirValue weight = mlirOperationGetOperand(op, 1);
  return mlirValueIsAOpResult(weight) ? mlirOpResultGetOwner(weight) : (MlirOperation){NULL};
}

static bool lower_linear_u4(lowering_t *l, MlirOperation op, MlirOperation dequantize);

static bool lower_linear(lowering_t *l, MlirOperation op, MlirValue logits) {
  MlirOperation weight = weight_op(op);
  if (!mlirOperationIsNull(weight) && iq_op_is(weight, "dequantize") &&
      mlirOperationGetNumOperands(op) == 2)
    return lower_linear_u4(l, op, weight);
  if (mlirOperationIsNull(weight) || !iq_op_is(weight, "weight") ||
      mlirOperationGetNumOperands(op) != 2)
    return lower_fail(l, op, "linear weights must come from iq.weight, without bias");
  MlirType weight_type = mlirValueGetType(mlirOperationGetResult(weight, 0));
  bool transposed = mlirBoolAttrGetValue(
      mlirOperationGetAttributeByName(weight, mlirStringRefCreateFromCString("transposed")));
  int64_t out = static_dim(weight_type, 0), in = static_dim(weight_type, 1);
  const char *dtype = element_name(mlirShapedTypeGetElementType(weight_type));
  if (out < 0 || in < 0 || !dtype)
    return lower_fail(l, op, "linear weights need static sizes and a float type");

  char kernel[IQ_KERNEL_NAME_SIZE];
  /* Threads pay off once a matrix is large; below that the fork and join
   * of a parallel region costs more than the work. */
  bool parallel = l->threads == IQ_THREADS_ALWAYS ||
                  (l->threads == IQ_THREADS_AUTO && in * out >= IQ_PARALLEL_MIN_WEIGHTS);
  iq_kernel_linear(&l->kernels, &l->kernel_set, in, out, dtype, transposed, parallel, kernel);
  lowered_value_t *x = operand(l, op, 0), *w = operand(l, op, 1);
  if (!x || !w)
    return false;
  MlirValue result = mlirOperationGetResult(op, 0);
  lowered_value_t *y;
  char logits_type[64];
  snprintf(logits_type, sizeof logits_type, "memref<1x?x%lldxf32>", (long long)l->vocab);
  if (!mlirValueIsNull(logits) && mlirValueEqual(result, logits))
    y = add_value(l, result, "%logits", logits_type, false);
  else
    y = allocate(l, result, out);
  return y && call(l, kernel, 3, (lowered_value_t *const[]){x, w, y});
}

/* ---- Quantized float path ---------------------------------------------- */

static MlirOperation operand_owner(MlirOperation op, intptr_t index) {
  MlirValue value = mlirOperationGetOperand(op, index);
  return mlirValueIsAOpResult(value) ? mlirOpResultGetOwner(value) : (MlirOperation){NULL};
}

/* iq_op_is that is false for a null op. */
static bool is_iq_op(MlirOperation op, const char *short_name) {
  return !mlirOperationIsNull(op) && iq_op_is(op, short_name);
}

static int64_t int_attribute(MlirOperation op, const char *name) {
  return mlirIntegerAttrGetValueInt(
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString(name)));
}

static bool string_attribute_is(MlirOperation op, const char *name, const char *value) {
  MlirAttribute attr = mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString(name));
  if (mlirAttributeIsNull(attr) || !mlirAttributeIsAString(attr))
    return false;
  MlirStringRef text = mlirStringAttrGetValue(attr);
  return text.length == strlen(value) && memcmp(text.data, value, text.length) == 0;
}

static bool lower_hadamard(lowering_t *l, MlirOperation op) {
  char kernel[IQ_KERNEL_NAME_SIZE];
  MlirValue result = mlirOperationGetResult(op, 0);
  int64_t width = last_dim(result);
  int64_t size = int_attribute(op, "size");
  bool transposed = mlirBoolAttrGetValue(
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("transposed")));
  if (width < 0)
    return lower_fail(l, op, "the Hadamard input needs a static last dimension");
  if (!iq_kernel_hadamard(&l->kernels, &l->kernel_set, width, size, transposed, kernel, l->error))
    return false;
  lowered_value_t *x = operand(l, op, 0);
  lowered_value_t *y = x ? allocate(l, result, width) : NULL;
  return y && call(l, kernel, 2, (lowered_value_t *const[]){x, y});
}

/* The only op reading the results of `quantize`, when it is a dequantize
 * of the codes, scales and zero points in that order. */
static MlirOperation paired_dequantize(MlirOperation quantize) {
  MlirOperation pair = {NULL};
  for (intptr_t r = 0; r < 3; ++r) {
    for (MlirOpOperand use = mlirValueGetFirstUse(mlirOperationGetResult(quantize, r));
         !mlirOpOperandIsNull(use); use = mlirOpOperandGetNextUse(use)) {
      MlirOperation owner = mlirOpOperandGetOwner(use);
      if (!is_iq_op(owner, "dequantize") || mlirOpOperandGetOperandNumber(use) != (unsigned)r ||
          (!mlirOperationIsNull(pair) && !mlirOperationEqual(pair, owner)))
        return (MlirOperation){NULL};
      pair = owner;
    }
  }
  return pair;
}

/* A quantize whose results only a dequantize reads is fake quantization:
 * one kernel computes the dequantized values, and the codes, scales and
 * zero points are never stored. */
static bool lower_quantize(lowering_t *l, MlirOperation op) {
  MlirOperation dequantize = paired_dequantize(op);
  if (mlirOperationIsNull(dequantize))
    return lower_fail(l, op, "iq.quantize lowers only when a matching iq.dequantize alone reads "
                             "its codes, scales and zero points (fake quantization)");

  MlirValue result = mlirOperationGetResult(dequantize, 0);
  int64_t width = last_dim(result);
  int64_t rank = mlirShapedTypeGetRank(mlirValueGetType(result));
  int64_t bits = int_attribute(op, "bits");
  bool per_token = string_attribute_is(op, "granularity", "per_token");
  bool per_group = string_attribute_is(op, "granularity", "per_group");
  bool symmetric = mlirBoolAttrGetValue(
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("symmetric")));
  bool is_signed = mlirBoolAttrGetValue(
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("signed")));
  if (width < 0 || (!per_token && !per_group) || int_attribute(op, "axis") != rank - 1 ||
      symmetric || is_signed)
    return lower_fail(l, op, "activation quantization lowers only as unsigned asymmetric "
                             "per_token or per_group along the last axis");

  int64_t group = per_group ? int_attribute(op, "group_size") : width;
  /* per_token ranges contain 0; per_group ranges are the group's own min
   * and max unless the op carries zero_in_range = true (the K cache). */
  MlirAttribute zero_attr =
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("zero_in_range"));
  bool include_zero = per_token || (!mlirAttributeIsNull(zero_attr) &&
                                    mlirAttributeIsABool(zero_attr) &&
                                    mlirBoolAttrGetValue(zero_attr));
  double clip = mlirFloatAttrGetValueDouble(
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("clip_ratio")));

  char kernel[IQ_KERNEL_NAME_SIZE];
  iq_kernel_fake_quant(&l->kernels, &l->kernel_set, width, group, (int)bits, clip, include_zero,
                       kernel);
  lowered_value_t *x = operand(l, op, 0);
  lowered_value_t *y = x ? allocate(l, result, width) : NULL;
  return y && call(l, kernel, 2, (lowered_value_t *const[]){x, y});
}

/* A dequantize of activations was computed by its quantize; one of
 * weight codes is read by the linear that uses it. */
static bool lower_dequantize(lowering_t *l, MlirOperation op) {
  if (find_value(l, mlirOperationGetResult(op, 0)))
    return true;
  if (is_iq_op(operand_owner(op, 0), "weight"))
    return true;
  return lower_fail(l, op, "iq.dequantize lowers only after its iq.quantize or on weight codes");
}

static bool lower_linear_u4(lowering_t *l, MlirOperation op, MlirOperation dequantize) {
  MlirOperation codes = operand_owner(dequantize, 0);
  MlirType type = mlirValueGetType(mlirOperationGetResult(dequantize, 0));
  int64_t out = static_dim(type, 0), in = static_dim(type, 1);
  if (!is_iq_op(codes, "weight") || !is_iq_op(operand_owner(dequantize, 1), "weight") ||
      !is_iq_op(operand_owner(dequantize, 2), "weight") || out < 0 || in < 0 ||
      int_attribute(dequantize, "bits") != 4 || int_attribute(dequantize, "axis") != 1 ||
      !string_attribute_is(dequantize, "granularity", "per_channel"))
    return lower_fail(l, op, "quantized weights lower only as 4-bit per_channel codes (axis 1), "
                             "scales and zero points from iq.weight ops");
  char kernel[IQ_KERNEL_NAME_SIZE];
  iq_kernel_linear_u4(&l->kernels, &l->kernel_set, in, out, kernel);
  lowered_value_t *x = operand(l, op, 0);
  lowered_value_t *c = operand(l, dequantize, 0), *s = operand(l, dequantize, 1);
  lowered_value_t *z = operand(l, dequantize, 2);
  if (!x || !c || !s || !z)
    return false;
  lowered_value_t *y = allocate(l, mlirOperationGetResult(op, 0), out);
  return y && call(l, kernel, 5, (lowered_value_t *const[]){x, c, s, z, y});
}

/* An observer becomes a call of iq_runtime_observe (iq_compiled.h) with
 * the buffer's address, its row count (the tokens of this call) and its
 * channel count. Buffers come from memref.alloc, so they are contiguous
 * and start at their aligned pointer. */
static bool lower_observe(lowering_t *l, MlirOperation op) {
  int64_t layer = mlirIntegerAttrGetValueInt(
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("layer")));
  MlirStringRef point = mlirStringAttrGetValue(
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("point")));
  static const char point_names[IQ_OBSERVE_POINT_COUNT] = {'X', 'P', 'V', 'M', 'Z', 'H'};
  int point_index = -1;
  for (int i = 0; i < IQ_OBSERVE_POINT_COUNT; ++i)
    if (point.length == 1 && point.data[0] == point_names[i])
      point_index = i;
  int64_t channels = last_dim(mlirOperationGetOperand(op, 0));
  if (point_index < 0 || layer < 0 || layer > IQ_OBSERVE_MAX_LAYER || channels < 1)
    return lower_fail(l, op, "invalid observer: run iq-verify on the module");
  lowered_value_t *x = operand(l, op, 0);
  if (!x)
    return false;

  if (!l->observe_declared) {
    iq_text_printf(&l->globals,
                   "  func.func private @iq_runtime_observe(i64, !llvm.ptr, i64, i64)\n");
    l->observe_declared = true;
  }
  iq_text_t *t = &l->body;
  int id = l->next_id++;
  iq_text_printf(t, "    %%observe%d_index = memref.extract_aligned_pointer_as_index %s : %s -> index\n",
                 id, x->name, x->type);
  iq_text_printf(t, "    %%observe%d_bits = arith.index_cast %%observe%d_index : index to i64\n", id,
                 id);
  iq_text_printf(t, "    %%observe%d_data = llvm.inttoptr %%observe%d_bits : i64 to !llvm.ptr\n",
                 id, id);
  iq_text_printf(t, "    %%observe%d_id = arith.constant %llu : i64\n", id,
                 (unsigned long long)IQ_OBSERVE_ID(layer, point_index));
  iq_text_printf(t, "    %%observe%d_columns = arith.constant %lld : i64\n", id,
                 (long long)channels);
  iq_text_printf(t, "    func.call @iq_runtime_observe(%%observe%d_id, %%observe%d_data, %%tokens_i64, "
                    "%%observe%d_columns) : (i64, !llvm.ptr, i64, i64) -> ()\n",
                 id, id, id);
  return true;
}

static bool lower_op(lowering_t *l, MlirOperation op, MlirValue logits) {
  char kernel[IQ_KERNEL_NAME_SIZE];
  MlirValue result = mlirOperationGetNumResults(op) > 0 ? mlirOperationGetResult(op, 0)
                                                         : (MlirValue){NULL};
  if (iq_op_is(op, "weight"))
    return lower_weight(l, op);
  if (iq_op_is(op, "linear") || iq_op_is(op, "lm_head"))
    return lower_linear(l, op, logits);
  if (iq_op_is(op, "hadamard"))
    return lower_hadamard(l, op);
  if (iq_op_is(op, "quantize"))
    return lower_quantize(l, op);
  if (iq_op_is(op, "dequantize"))
    return lower_dequantize(l, op);
  if (iq_op_is(op, "observe"))
    return lower_observe(l, op);

  MlirStringRef name = mlirIdentifierStr(mlirOperationGetName(op));
  if (name.length == 14 && memcmp(name.data, "arith.constant", 14) == 0)
    return lower_constant(l, op);

  if (iq_op_is(op, "embedding")) {
    MlirType table = mlirValueGetType(mlirOperationGetOperand(op, 0));
    const char *dtype = element_name(mlirShapedTypeGetElementType(table));
    if (!dtype)
      return lower_fail(l, op, "the embedding table must be f32, f16 or bf16");
    iq_kernel_embedding(&l->kernels, &l->kernel_set, static_dim(table, 0), static_dim(table, 1),
                        dtype, kernel);
    lowered_value_t *t = operand(l, op, 0), *ids = operand(l, op, 1);
    lowered_value_t *y = t && ids ? allocate(l, result, static_dim(table, 1)) : NULL;
    return y && call(l, kernel, 3, (lowered_value_t *const[]){t, ids, y});
  }
  if (iq_op_is(op, "rms_norm")) {
    double epsilon = mlirFloatAttrGetValueDouble(
        mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("epsilon")));
    bool has_gain = mlirOperationGetNumOperands(op) == 2;
    const char *gain_type = has_gain ? element_name(mlirShapedTypeGetElementType(
                                           mlirValueGetType(mlirOperationGetOperand(op, 1))))
                                     : NULL;
    int64_t width = last_dim(result);
    iq_kernel_rms_norm(&l->kernels, &l->kernel_set, width, epsilon, gain_type, kernel);
    lowered_value_t *x = operand(l, op, 0);
    lowered_value_t *g = has_gain ? operand(l, op, 1) : NULL;
    if (!x || (has_gain && !g))
      return false;
    lowered_value_t *y = allocate(l, result, width);
    if (!y)
      return false;
    if (has_gain)
      return call(l, kernel, 3, (lowered_value_t *const[]){x, g, y});
    return call(l, kernel, 2, (lowered_value_t *const[]){x, y});
  }
  if (iq_op_is(op, "rope")) {
    int64_t head_dim = mlirIntegerAttrGetValueInt(
        mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("head_dim")));
    double theta = mlirFloatAttrGetValueDouble(
        mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("theta")));
    MlirStringRef style = mlirStringAttrGetValue(
        mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("style")));
    bool interleaved = style.length == 11 && memcmp(style.data, "interleaved", 11) == 0;

    /* The inverse frequencies, rounded to float32 as PyTorch and
     * onnxruntime compute them: 1 / theta^(2i / head_dim). */
    char table[64];
    snprintf(table, sizeof table, "iq_rope_frequencies_%lld_%lld", (long long)head_dim,
             (long long)llround(theta));
    char marker[96];
    snprintf(marker, sizeof marker, "@%s :", table);
    if (!l->globals.data || !strstr(l->globals.data, marker)) {
      iq_text_printf(&l->globals, "  memref.global \"private\" constant @%s : memref<%lldxf32> = dense<[",
                     table, (long long)(head_dim / 2));
      for (int64_t i = 0; i < head_dim / 2; ++i)
        iq_text_printf(&l->globals, "%s%.9e", i ? ", " : "",
                       (double)(float)(1.0 / pow(theta, (double)(2 * i) / (double)head_dim)));
      iq_text_printf(&l->globals, "]>\n");
    }
    int64_t width = last_dim(result);
    iq_kernel_rope(&l->kernels, &l->kernel_set, width, head_dim, interleaved, table, kernel);
    lowered_value_t *x = operand(l, op, 0), *p = operand(l, op, 1);
    lowered_value_t *y = x && p ? allocate(l, result, width) : NULL;
    return y && call(l, kernel, 3, (lowered_value_t *const[]){x, p, y});
  }
  if (iq_op_is(op, "attention")) {
    int64_t heads = mlirIntegerAttrGetValueInt(
        mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("num_heads")));
    int64_t kv_heads = mlirIntegerAttrGetValueInt(
        mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("num_kv_heads")));
    double scale = mlirFloatAttrGetValueDouble(
        mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("scale")));
    int64_t head_dim = static_dim(mlirValueGetType(mlirOperationGetOperand(op, 3)), 3);
    iq_kernel_attention(&l->kernels, &l->kernel_set, heads, kv_heads, head_dim, scale, kernel);
    lowered_value_t *arguments[7];
    for (int i = 0; i < 6; ++i)
      if (!(arguments[i] = operand(l, op, i)))
        return false;
    if (mlirValueIsABlockArgument(mlirOperationGetOperand(op, 3)) == false ||
        mlirValueIsABlockArgument(mlirOperationGetOperand(op, 4)) == false)
      return lower_fail(l, op, "the attention's caches must be function arguments");
    if (!(arguments[6] = allocate(l, result, heads * head_dim)))
      return false;
    /* The caches are updated in place: the results name the same memrefs. */
    if (!add_value(l, mlirOperationGetResult(op, 1), arguments[3]->name, arguments[3]->type, false) ||
        !add_value(l, mlirOperationGetResult(op, 2), arguments[4]->name, arguments[4]->type, false))
      return lower_fail(l, op, "out of memory");
    return call(l, kernel, 7, arguments);
  }
  if (iq_op_is(op, "silu_mul") ||
      (name.length == 10 && memcmp(name.data, "arith.addf", 10) == 0)) {
    int64_t width = last_dim(result);
    if (iq_op_is(op, "silu_mul"))
      iq_kernel_silu_mul(&l->kernels, &l->kernel_set, width, kernel);
    else
      iq_kernel_add(&l->kernels, &l->kernel_set, width, kernel);
    lowered_value_t *a = operand(l, op, 0), *b = operand(l, op, 1);
    lowered_value_t *y = a && b ? allocate(l, result, width) : NULL;
    return y && call(l, kernel, 3, (lowered_value_t *const[]){a, b, y});
  }
  return lower_fail(l, op, "the float path cannot lower this op");
}

/* ---- The entry point ----------------------------------------------------- */

static int64_t config_int(MlirAttribute config, const char *key) {
  MlirAttribute value = mlirDictionaryAttrGetElementByName(config, mlirStringRefCreateFromCString(key));
  return mlirAttributeIsNull(value) ? -1 : mlirIntegerAttrGetValueInt(value);
}

static double config_float(MlirAttribute config, const char *key) {
  MlirAttribute value = mlirDictionaryAttrGetElementByName(config, mlirStringRefCreateFromCString(key));
  return mlirAttributeIsNull(value) ? 0.0 : mlirFloatAttrGetValueDouble(value);
}

/* Writes `text` as an MLIR string literal, escaping all but plain
 * printable characters. */
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

static bool emit_prologue(lowering_t *l, MlirOperation function) {
  MlirBlock block = mlirRegionGetFirstBlock(mlirOperationGetRegion(function, 0));
  intptr_t arguments = mlirBlockGetNumArguments(block);
  if (arguments != 2 + 2 * l->layers)
    return lower_fail(l, function, "@forward takes %ld arguments; a canonical graph of %lld layers "
                      "takes ids, positions and two caches per layer",
                      (long)arguments, (long long)l->layers);
  iq_text_t *t = &l->body;
  iq_text_printf(t, "  func.func @iq_model_forward(%%slots: !llvm.ptr) {\n"
                    "    %%i64_0 = arith.constant 0 : i64\n"
                    "    %%i64_1 = arith.constant 1 : i64\n");
  iq_text_printf(t, "    %%tokens_address = llvm.getelementptr %%slots[%d] : (!llvm.ptr) -> !llvm.ptr, i64\n"
                    "    %%tokens_i64 = llvm.load %%tokens_address : !llvm.ptr -> i64\n"
                    "    %%tokens = arith.index_cast %%tokens_i64 : i64 to index\n"
                    "    %%capacity_address = llvm.getelementptr %%slots[%d] : (!llvm.ptr) -> !llvm.ptr, i64\n"
                    "    %%capacity_i64 = llvm.load %%capacity_address : !llvm.ptr -> i64\n",
                 IQ_SLOT_TOKENS, IQ_SLOT_CAPACITY);

  const char *ids_sizes[2] = {"1", "%tokens_i64"};
  memref_from_slot(l, "%ids", IQ_SLOT_IDS, 2, ids_sizes, "memref<1x?xi64>");
  add_value(l, mlirBlockGetArgument(block, 0), "%ids", "memref<1x?xi64>", false);
  memref_from_slot(l, "%positions", IQ_SLOT_POSITIONS, 2, ids_sizes, "memref<1x?xi64>");
  add_value(l, mlirBlockGetArgument(block, 1), "%positions", "memref<1x?xi64>", false);

  char vocab[32], logits_type[64];
  snprintf(vocab, sizeof vocab, "%lld", (long long)l->vocab);
  snprintf(logits_type, sizeof logits_type, "memref<1x?x%lldxf32>", (long long)l->vocab);
  const char *logits_sizes[3] = {"1", "%tokens_i64", vocab};
  memref_from_slot(l, "%logits", IQ_SLOT_LOGITS, 3, logits_sizes, logits_type);
  add_value(l, (MlirValue){NULL}, "%logits", logits_type, false);

  char kv_heads[32], head_dim[32], cache_type[64];
  snprintf(kv_heads, sizeof kv_heads, "%lld", (long long)l->kv_heads);
  snprintf(head_dim, sizeof head_dim, "%lld", (long long)l->head_dim);
  snprintf(cache_type, sizeof cache_type, "memref<1x%lldx?x%lldxf32>", (long long)l->kv_heads,
           (long long)l->head_dim);
  const char *cache_sizes[4] = {"1", kv_heads, "%capacity_i64", head_dim};
  for (int64_t i = 0; i < 2 * l->layers; ++i) {
    char name[32];
    snprintf(name, sizeof name, "%%cache%lld", (long long)i);
    memref_from_slot(l, name, IQ_SLOT_CACHES + (int)i, 4, cache_sizes, cache_type);
    add_value(l, mlirBlockGetArgument(block, 2 + i), name, cache_type, false);
  }
  return true;
}

static void emit_metadata(lowering_t *l, const iq_lowering_options_t *options, iq_text_t *out) {
  iq_text_t text = {0};
  iq_text_printf(&text, "iq-model %d\ntarget %s\nquantization %s\n", IQ_COMPILED_METADATA_VERSION,
                 options->target, options->quantization);
  iq_text_printf(&text, "config %lld %lld %lld %lld %lld %lld %lld %.9g %.9g\ncache f32\n",
                 (long long)l->layers, (long long)l->hidden, (long long)l->heads,
                 (long long)l->kv_heads, (long long)l->head_dim, (long long)l->ffn,
                 (long long)l->vocab, l->theta, l->epsilon);
  for (size_t i = 0; i < l->num_weights; ++i) {
    const weight_entry_t *w = &l->weights[i];
    iq_text_printf(&text, "weight %zu %s %s %d %d", i, w->name, w->dtype, w->transposed ? 1 : 0,
                   w->rank);
    for (int d = 0; d < w->rank; ++d)
      iq_text_printf(&text, " %lld", (long long)w->dims[d]);
    iq_text_printf(&text, "\n");
  }
  iq_text_printf(&text, "end\n");
  iq_text_printf(out, "  llvm.mlir.global external constant @iq_model_metadata(");
  string_literal(out, text.data ? text.data : "");
  iq_text_printf(out, ") {addr_space = 0 : i32} : !llvm.array<%zu x i8>\n", text.length + 1);
  iq_text_free(&text);
}

char *iq_lower_to_kernel_source(MlirOperation module, const iq_lowering_options_t *options,
                                iq_error_t **error) {
  lowering_t l = {.error = error, .threads = options->threads};
  MlirAttribute config =
      mlirOperationGetAttributeByName(module, mlirStringRefCreateFromCString("iq.config"));
  if (mlirAttributeIsNull(config) || !mlirAttributeIsADictionary(config)) {
    iq_error_set(error, NULL, NULL, "run --iq-raise-llama first",
                 "the module has no iq.config: it is not a canonical LLaMA graph");
    return NULL;
  }
  l.layers = config_int(config, "layers");
  l.hidden = config_int(config, "hidden_size");
  l.heads = config_int(config, "num_heads");
  l.kv_heads = config_int(config, "num_kv_heads");
  l.head_dim = config_int(config, "head_dim");
  l.ffn = config_int(config, "ffn_size");
  l.vocab = config_int(config, "vocab_size");
  l.theta = config_float(config, "rope_theta");
  l.epsilon = config_float(config, "norm_epsilon");

  MlirOperation function = {NULL};
  MlirBlock module_body = mlirRegionGetFirstBlock(mlirOperationGetRegion(module, 0));
  for (MlirOperation op = mlirBlockGetFirstOperation(module_body); !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op)) {
    MlirAttribute symbol = mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("sym_name"));
    if (!mlirAttributeIsNull(symbol) && mlirAttributeIsAString(symbol)) {
      MlirStringRef name = mlirStringAttrGetValue(symbol);
      if (name.length == 7 && memcmp(name.data, "forward", 7) == 0)
        function = op;
    }
  }
  if (mlirOperationIsNull(function)) {
    iq_error_set(error, NULL, NULL, "run --iq-raise-llama first", "the module has no @forward");
    return NULL;
  }

  bool ok = emit_prologue(&l, function);
  MlirBlock block = mlirRegionGetFirstBlock(mlirOperationGetRegion(function, 0));

  /* The index of each op, and for every value the last op reading it. */
  size_t num_ops = 0;
  for (MlirOperation op = mlirBlockGetFirstOperation(block); !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op))
    ++num_ops;
  MlirOperation terminator = mlirBlockGetTerminator(block);
  MlirValue logits = mlirOperationGetNumOperands(terminator) > 0
                         ? mlirOperationGetOperand(terminator, 0)
                         : (MlirValue){NULL};

  /* The last reader of every value, so buffers are freed right after it. */
  typedef struct last_use {
    MlirValue value;
    size_t index;
  } last_use_t;
  last_use_t *last_uses = calloc(num_ops * 8 + 1, sizeof *last_uses);
  size_t num_last_uses = 0;
  size_t index = 0;
  for (MlirOperation op = mlirBlockGetFirstOperation(block); last_uses && !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op), ++index) {
    for (intptr_t i = 0; i < mlirOperationGetNumOperands(op); ++i) {
      MlirValue value = mlirOperationGetOperand(op, i);
      size_t u = 0;
      while (u < num_last_uses && !mlirValueEqual(last_uses[u].value, value))
        ++u;
      if (u == num_last_uses && num_last_uses < num_ops * 8)
        last_uses[num_last_uses++].value = value;
      if (u < num_last_uses)
        last_uses[u].index = index;
    }
  }
  if (!last_uses)
    ok = lower_fail(&l, function, "out of memory");

  index = 0;
  for (MlirOperation op = mlirBlockGetFirstOperation(block); ok && !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op), ++index) {
    if (mlirOperationEqual(op, terminator))
      break;
    ok = lower_op(&l, op, logits);
    for (size_t v = 0; ok && v < l.num_values; ++v) {
      lowered_value_t *value = &l.values[v];
      if (!value->owned)
        continue;
      for (size_t u = 0; u < num_last_uses; ++u) {
        if (mlirValueEqual(last_uses[u].value, value->value) && last_uses[u].index == index) {
          iq_text_printf(&l.body, "    memref.dealloc %s : %s\n", value->name, value->type);
          value->owned = false;
        }
      }
    }
  }
  free(last_uses);
  (void)num_ops;
  if (ok && !mlirValueIsNull(logits) && !find_value(&l, logits))
    ok = lower_fail(&l, terminator, "the first result must be the lm_head output");
  if (ok)
    iq_text_printf(&l.body, "    return\n  }\n");

  char *result = NULL;
  if (ok) {
    iq_text_t module_text = {0};
    iq_text_printf(&module_text, "module {\n");
    emit_metadata(&l, options, &module_text);
    if (l.globals.data)
      iq_text_append(&module_text, l.globals.data, l.globals.length);
    if (l.kernels.data)
      iq_text_append(&module_text, l.kernels.data, l.kernels.length);
    iq_text_append(&module_text, l.body.data, l.body.length);
    iq_text_printf(&module_text, "}\n");
    if (module_text.failed || l.body.failed || l.kernels.failed || l.globals.failed) {
      iq_error_set(error, NULL, NULL, NULL, "out of memory while generating the kernels");
      iq_text_free(&module_text);
    } else {
      result = module_text.data;
    }
  }
  iq_text_free(&l.body);
  iq_text_free(&l.kernels);
  iq_text_free(&l.globals);
  iq_kernel_set_free(&l.kernel_set);
  free(l.values);
  free(l.weights);
  return result;
}
