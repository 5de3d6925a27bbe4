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
#include "iq/int4_model.h"
#include "iq/iq_compiled.h"
#include "iq/ir.h"
#include "iq/quant.h"

/* scf.parallel loops become OpenMP regions. The conversion wraps loop
 * bodies in memref.alloca_scope ops, which convert-scf-to-cf cannot lower
 * once they contain several blocks, so canonicalize inlines them first.
 * The RMSNorm kernel sums in vector lanes (vector dialect). */
const char iq_llvm_lowering_pipeline[] =
    "builtin.module(convert-scf-to-openmp,canonicalize,convert-scf-to-cf,"
    "convert-vector-to-llvm,expand-strided-metadata,lower-affine,convert-math-to-llvm,convert-arith-to-llvm,"
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
  char value[40], type[80]; /* the memref of the first op reading it */
} weight_entry_t;

typedef struct lowering {
  iq_text_t body, kernels, globals;
  iq_kernel_set_t kernel_set;
  /* Each value is allocated on its own, so pointers to it stay valid
   * while the array of pointers grows. */
  lowered_value_t **values;
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
  bool int4_kernels;     /* lower marked linears to iq_int4_linear calls */
  bool int4_declared;    /* @iq_int4_linear is declared in globals */
  bool grouped_declared; /* @iq_int4_linear_grouped is declared in globals */
  bool int8_declared;    /* @iq_int8_linear is declared in globals */
  bool fused_declared;   /* @iq_int4_linear_fused is declared in globals */
  bool f16_blocks_declared; /* @iq_f16_linear_blocks is declared in globals */
  bool int4_cache;       /* every attention runs on an int4 KV cache */
  bool int4_attention_declared;
  MlirOperation *skipped; /* ops the int4 attention computes itself */
  size_t num_skipped;
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
    if (mlirValueEqual(l->values[i]->value, value))
      return l->values[i];
  return NULL;
}

static lowered_value_t *add_value(lowering_t *l, MlirValue value, const char *name,
                                  const char *type, bool owned) {
  if (l->num_values == l->capacity) {
    size_t capacity = l->capacity ? l->capacity * 2 : 256;
    lowered_value_t **grown = realloc(l->values, capacity * sizeof *grown);
    if (!grown)
      return NULL;
    l->values = grown;
    l->capacity = capacity;
  }
  lowered_value_t *entry = calloc(1, sizeof *entry);
  if (!entry)
    return NULL;
  l->values[l->num_values++] = entry;
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
  /* Packed int4 weights (iq-pack-int4): a flat byte array. */
  bool packed_bytes = mlirTypeIsAInteger(element) && mlirIntegerTypeGetWidth(element) == 8 &&
               mlirIntegerTypeIsUnsigned(element) && rank == 1;
  /* 8-bit weight codes [n, k]: a flat memref of n * k bytes. */
  bool codes8 = mlirTypeIsAInteger(element) && mlirIntegerTypeGetWidth(element) == 8 &&
                mlirIntegerTypeIsUnsigned(element) && rank == 2;
  if (packed_bytes || codes8)
    dtype = "u8";
  if (!dtype || rank < 1 || rank > 2)
    return lower_fail(l, op, "weights must be 1-D or 2-D f32, f16 or bf16 tensors, 4-bit "
                             "or 8-bit codes or 1-D u8 packed int4 weights");

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
  } else if (codes8) {
    long long bytes = (long long)entry.dims[0] * entry.dims[1];
    snprintf(sizes[0], sizeof sizes[0], "%lld", bytes);
    snprintf(memref_type, sizeof memref_type, "memref<%lldxi8>", bytes);
    rank = 1;
  } else if (packed_bytes)
    snprintf(memref_type, sizeof memref_type, "memref<%lldxi8>", (long long)d0);
  else if (rank == 1)
    snprintf(memref_type, sizeof memref_type, "memref<%lldx%s>", (long long)d0, dtype);
  else
    snprintf(memref_type, sizeof memref_type, "memref<%lldx%lldx%s>", (long long)d0,
             (long long)d1, dtype);
  snprintf(result, sizeof result, "%%weight%d", l->next_id++);
  memref_from_slot(l, result, IQ_SLOT_FIRST_WEIGHT(l->layers) + (int)index, (int)rank, size_list,
                   memref_type);
  if (!l->weights[index].value[0]) {
    snprintf(l->weights[index].value, sizeof l->weights[index].value, "%s", result);
    snprintf(l->weights[index].type, sizeof l->weights[index].type, "%s", memref_type);
  }
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

static bool lower_linear_codes(lowering_t *l, MlirOperation op, MlirOperation dequantize,
                               MlirValue logits);
static bool is_int4_linear(const lowering_t *l, MlirOperation op);
static bool lower_linear_int4(lowering_t *l, MlirOperation op, MlirValue logits);

/* The output buffer of a linear: the logits argument for the lm_head
 * result, else a new buffer. */
static lowered_value_t *linear_output(lowering_t *l, MlirOperation op, MlirValue logits,
                                      int64_t out) {
  MlirValue result = mlirOperationGetResult(op, 0);
  if (!mlirValueIsNull(logits) && mlirValueEqual(result, logits)) {
    char logits_type[64];
    snprintf(logits_type, sizeof logits_type, "memref<1x?x%lldxf32>", (long long)l->vocab);
    return add_value(l, result, "%logits", logits_type, false);
  }
  return allocate(l, result, out);
}

static bool lower_linear_f16_blocks(lowering_t *l, MlirOperation op, MlirAttribute attr,
                                    MlirValue logits);

static bool lower_linear(lowering_t *l, MlirOperation op, MlirValue logits) {
  if (is_int4_linear(l, op))
    return lower_linear_int4(l, op, logits);
  MlirAttribute blocks_attr =
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString(IQ_F16_BLOCKS_ATTRIBUTE));
  if (l->int4_kernels && !mlirAttributeIsNull(blocks_attr))
    return lower_linear_f16_blocks(l, op, blocks_attr, logits);
  MlirOperation weight = weight_op(op);
  if (!mlirOperationIsNull(weight) && iq_op_is(weight, "dequantize") &&
      mlirOperationGetNumOperands(op) == 2)
    return lower_linear_codes(l, op, weight, logits);
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

static bool feeds_only_int4(const lowering_t *l, MlirOperation quantize);
static MlirOperation fusable_hadamard(MlirOperation quantize);

static bool lower_hadamard(lowering_t *l, MlirOperation op) {
  /* The int4 quantizer applies a fused transform itself. */
  MlirOpOperand use = mlirValueGetFirstUse(mlirOperationGetResult(op, 0));
  if (!mlirOpOperandIsNull(use)) {
    MlirOperation reader = mlirOpOperandGetOwner(use);
    if (is_iq_op(reader, "quantize") && feeds_only_int4(l, reader) &&
        !mlirOperationIsNull(fusable_hadamard(reader)))
      return true;
  }
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

/* ---- Int4 kernel path ---------------------------------------------------- */

/* A linear that iq-pack-int4 marked, when the int4 path is on. */
static bool is_int4_linear(const lowering_t *l, MlirOperation op) {
  return l->int4_kernels && (iq_op_is(op, "linear") || iq_op_is(op, "lm_head")) &&
         !mlirAttributeIsNull(mlirOperationGetAttributeByName(
             op, mlirStringRefCreateFromCString(IQ_INT4_WEIGHTS_ATTRIBUTE)));
}

/* True when every op reading the dequantized result of `quantize` is an
 * int4 linear, which quantizes its input itself, so the fake quantization
 * need not be computed. */
static bool feeds_only_int4(const lowering_t *l, MlirOperation quantize) {
  MlirOperation dequantize = paired_dequantize(quantize);
  if (mlirOperationIsNull(dequantize))
    return false;
  MlirOpOperand use = mlirValueGetFirstUse(mlirOperationGetResult(dequantize, 0));
  if (mlirOpOperandIsNull(use))
    return false;
  for (; !mlirOpOperandIsNull(use); use = mlirOpOperandGetNextUse(use))
    if (!is_int4_linear(l, mlirOpOperandGetOwner(use)) || mlirOpOperandGetOperandNumber(use) != 0)
      return false;
  return true;
}

/* The iq.hadamard that the int4 quantizer of `quantize` can apply itself:
 * a transform of the whole last axis (not transposed) whose only reader is
 * `quantize`, of a size the kernels support. Else a null op. */
static MlirOperation fusable_hadamard(MlirOperation quantize) {
  MlirOperation hadamard = operand_owner(quantize, 0);
  if (!is_iq_op(hadamard, "hadamard") || int_attribute(quantize, "bits") != 4 ||
      !string_attribute_is(quantize, "granularity", "per_token"))
    return (MlirOperation){NULL};
  MlirValue result = mlirOperationGetResult(hadamard, 0);
  int64_t width = last_dim(result);
  MlirAttribute transposed =
      mlirOperationGetAttributeByName(hadamard, mlirStringRefCreateFromCString("transposed"));
  bool is_transposed = !mlirAttributeIsNull(transposed) &&
                       ((mlirAttributeIsABool(transposed) && mlirBoolAttrGetValue(transposed)) ||
                        (mlirAttributeIsAInteger(transposed) &&
                         mlirIntegerAttrGetValueInt(transposed) != 0));
  MlirOpOperand use = mlirValueGetFirstUse(result);
  bool single = !mlirOpOperandIsNull(use) &&
                mlirOperationEqual(mlirOpOperandGetOwner(use), quantize) &&
                mlirOpOperandIsNull(mlirOpOperandGetNextUse(use));
  if (width < 1 || int_attribute(hadamard, "size") != width || is_transposed || !single)
    return (MlirOperation){NULL};
  size_t factor;
  iq_error_t *error = NULL;
  bool supported = iq_hadamard_factor((size_t)width, &factor, &error);
  iq_error_destroy(error);
  if (!supported)
    return (MlirOperation){NULL};
  return hadamard;
}

/* The float input an int4 linear quantizes: the input of the activation
 * quantize, or of the Hadamard transform before it when that is fused. */
static MlirValue int4_source(MlirOperation linear, bool *hadamard) {
  *hadamard = false;
  MlirOperation input = operand_owner(linear, 0);
  if (!is_iq_op(input, "dequantize"))
    return (MlirValue){NULL};
  MlirOperation quantize = operand_owner(input, 0);
  if (!is_iq_op(quantize, "quantize"))
    return (MlirValue){NULL};
  MlirOperation fused = fusable_hadamard(quantize);
  *hadamard = !mlirOperationIsNull(fused);
  return mlirOperationGetOperand(*hadamard ? fused : quantize, 0);
}

/* Emits `%NAME_ptr`, the aligned pointer of memref `value` as !llvm.ptr. */
static void emit_pointer(lowering_t *l, const lowered_value_t *value, int id, const char *name) {
  iq_text_t *t = &l->body;
  iq_text_printf(t, "    %%int4_%d_%s_index = memref.extract_aligned_pointer_as_index %s : %s -> index\n",
                 id, name, value->name, value->type);
  iq_text_printf(t, "    %%int4_%d_%s_i64 = arith.index_cast %%int4_%d_%s_index : index to i64\n", id,
                 name, id, name);
  iq_text_printf(t, "    %%int4_%d_%s = llvm.inttoptr %%int4_%d_%s_i64 : i64 to !llvm.ptr\n", id,
                 name, id, name);
}

/* The weight entry named `name`, or NULL. */
static const weight_entry_t *find_weight(const lowering_t *l, MlirStringRef name) {
  for (size_t i = 0; i < l->num_weights; ++i)
    if (strlen(l->weights[i].name) == name.length &&
        memcmp(l->weights[i].name, name.data, name.length) == 0)
      return &l->weights[i];
  return NULL;
}

static bool string_attribute_is_ref(MlirOperation op, const char *name, MlirStringRef value) {
  MlirAttribute attr = mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString(name));
  if (mlirAttributeIsNull(attr) || !mlirAttributeIsAString(attr))
    return false;
  MlirStringRef text = mlirStringAttrGetValue(attr);
  return text.length == value.length && memcmp(text.data, value.data, text.length) == 0;
}

/* What the int4 lowering needs of a linear marked by iq-pack-int4. */
typedef struct int4_linear {
  size_t packed; /* index in l->weights of the u8 tensor of packed weights (an index,
                  * because loading a sibling's weights may move the array) */
  int64_t out, in, bits, group; /* group: 0 for a per-token input */
  double clip;
  bool hadamard;
  lowered_value_t *x; /* the float input the runtime quantizes */
} int4_linear_t;

/* Checks a marked linear and fills `info`; false, with the error set,
 * when it cannot run on the int4 kernels. */
static bool resolve_int4_linear(lowering_t *l, MlirOperation op, int4_linear_t *info) {
  MlirAttribute attr =
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString(IQ_INT4_WEIGHTS_ATTRIBUTE));
  MlirOperation input = operand_owner(op, 0), weight = weight_op(op);
  MlirOperation quantize = operand_owner(input, 0);
  MlirType type = is_iq_op(weight, "dequantize")
                      ? mlirValueGetType(mlirOperationGetResult(weight, 0))
                      : (MlirType){NULL};
  int64_t out = mlirTypeIsNull(type) ? -1 : static_dim(type, 0);
  int64_t in = mlirTypeIsNull(type) ? -1 : static_dim(type, 1);
  if (!mlirAttributeIsAString(attr) || !is_iq_op(input, "dequantize") ||
      !is_iq_op(quantize, "quantize") || out < 1 || in < 1)
    return lower_fail(l, op, "a linear marked %s needs a fake-quantized input and 4-bit or 8-bit "
                             "weight codes; run iq-pack-int4 on the output of iq-quantize",
                      IQ_INT4_WEIGHTS_ATTRIBUTE);
  int64_t bits = int_attribute(quantize, "bits");
  bool grouped = string_attribute_is(quantize, "granularity", "per_group");
  int64_t group = grouped ? int_attribute(quantize, "group_size") : 0;
  if ((bits != 4 && bits != 8) || (grouped && (bits != 4 || group < 1 || in % group != 0)))
    return lower_fail(l, op, "the int4 kernels take 4-bit per-token or per-group inputs and "
                             "8-bit per-token inputs, not %lld-bit %s ones; run iq-pack-int4 "
                             "again",
                      (long long)bits, grouped ? "per-group" : "per-token");
  int64_t expected = bits == 8  ? iq_int8_packed_bytes(out, in)
                     : grouped ? iq_int4_grouped_bytes(out, in, group)
                               : iq_int4_packed_bytes(out, in);

  MlirStringRef name = mlirStringAttrGetValue(attr);
  const weight_entry_t *packed = find_weight(l, name);
  /* A linear fused with an earlier sibling runs before the block reaches
   * its packed weights (just before it), which are then loaded first. */
  if (!packed) {
    MlirOperation other = mlirBlockGetFirstOperation(mlirOperationGetBlock(op));
    for (; !mlirOperationIsNull(other); other = mlirOperationGetNextInBlock(other))
      if (iq_op_is(other, "weight") && string_attribute_is_ref(other, "name", name))
        break;
    if (!mlirOperationIsNull(other) && !lower_weight(l, other))
      return false;
    packed = find_weight(l, name);
  }
  if (!packed || strcmp(packed->dtype, "u8") != 0 || packed->rank != 1 ||
      packed->dims[0] != expected)
    return lower_fail(l, op, "no u8 weight '%.*s' of %lld bytes precedes this linear; run "
                             "iq-pack-int4 again",
                      (int)name.length, name.data, (long long)expected);
  double clip = mlirFloatAttrGetValueDouble(
      mlirOperationGetAttributeByName(quantize, mlirStringRefCreateFromCString("clip_ratio")));
  if (!(clip > 0.0 && clip <= 1.0))
    return lower_fail(l, op, "the input quantization's clip_ratio %g is outside (0, 1]", clip);

  bool hadamard;
  MlirValue source = int4_source(op, &hadamard);
  lowered_value_t *x = mlirValueIsNull(source) ? NULL : find_value(l, source);
  if (!x)
    return lower_fail(l, op, "the input of the int4 linear was not computed");
  *info = (int4_linear_t){.packed = (size_t)(packed - l->weights), .out = out, .in = in, .bits = bits, .group = group,
                          .clip = clip, .hadamard = hadamard, .x = x};
  return true;
}

/* The maximum number of linears of one iq_int4_linear_fused call. */
#define INT4_FUSED_MAX 3

/* Collects into `ops` the linears (op first, at most INT4_FUSED_MAX) that
 * read the same fake-quantized input as `op`, a 4-bit per-token one, and
 * are not lowered yet: q, k and v, or gate and up. They share the
 * quantize op, so their input quantization is the same. */
static int int4_siblings(lowering_t *l, MlirOperation op, MlirOperation *ops) {
  int count = 0;
  ops[count++] = op;
  MlirValue input = mlirOperationGetOperand(op, 0);
  for (MlirOpOperand use = mlirValueGetFirstUse(input);
       !mlirOpOperandIsNull(use) && count < INT4_FUSED_MAX; use = mlirOpOperandGetNextUse(use)) {
    MlirOperation owner = mlirOpOperandGetOwner(use);
    if (mlirOperationEqual(owner, op) || mlirOpOperandGetOperandNumber(use) != 0 ||
        !is_int4_linear(l, owner) || find_value(l, mlirOperationGetResult(owner, 0)))
      continue;
    ops[count++] = owner;
  }
  return count;
}

/* Lowers a linear marked by iq-pack-int4 to a call of the int4 model
 * runtime (iq/int4_model.h), which quantizes the rows at run time and runs
 * the integer matrix multiply on the packed weights. A 4-bit per-token
 * input (after the fused Hadamard transform) calls iq_int4_linear, or
 * iq_int4_linear_fused together with the other linears of that input. A
 * 4-bit per-group input calls iq_int4_linear_grouped, and an 8-bit
 * per-token input with 8-bit weights iq_int8_linear. */
static bool lower_linear_int4(lowering_t *l, MlirOperation op, MlirValue logits) {
  /* Lowered already, in the fused call of an earlier sibling. */
  if (find_value(l, mlirOperationGetResult(op, 0)))
    return true;
  int4_linear_t info;
  if (!resolve_int4_linear(l, op, &info))
    return false;
  bool per_token4 = info.bits == 4 && info.group == 0;
  MlirOperation ops[INT4_FUSED_MAX];
  int count = per_token4 ? int4_siblings(l, op, ops) : 1;
  if (count > 1) {
    int4_linear_t linears[INT4_FUSED_MAX];
    linears[0] = info;
    for (int i = 1; i < count; ++i)
      if (!resolve_int4_linear(l, ops[i], &linears[i]))
        return false;
    int id = l->next_id++;
    iq_text_t *t = &l->body;
    for (int i = 0; i < INT4_FUSED_MAX; ++i) {
      char name[8];
      if (i < count) {
        lowered_value_t weights = {0};
        const weight_entry_t *packed = &l->weights[linears[i].packed];
        snprintf(weights.name, sizeof weights.name, "%s", packed->value);
        snprintf(weights.type, sizeof weights.type, "%s", packed->type);
        lowered_value_t *y = linear_output(l, ops[i], logits, linears[i].out);
        if (!y)
          return false;
        snprintf(name, sizeof name, "w%d", i);
        emit_pointer(l, &weights, id, name);
        snprintf(name, sizeof name, "y%d", i);
        emit_pointer(l, y, id, name);
      } else {
        iq_text_printf(t, "    %%int4_%d_w%d = llvm.mlir.zero : !llvm.ptr\n", id, i);
        iq_text_printf(t, "    %%int4_%d_y%d = llvm.mlir.zero : !llvm.ptr\n", id, i);
      }
      iq_text_printf(t, "    %%int4_%d_n%d = arith.constant %lld : i64\n", id, i,
                     (long long)(i < count ? linears[i].out : 0));
    }
    emit_pointer(l, info.x, id, "x");
    iq_text_printf(t, "    %%int4_%d_count = arith.constant %d : i64\n", id, count);
    iq_text_printf(t, "    %%int4_%d_k = arith.constant %lld : i64\n", id, (long long)info.in);
    iq_text_printf(t, "    %%int4_%d_h = arith.constant %d : i64\n", id, info.hadamard ? 1 : 0);
    iq_text_printf(t, "    %%int4_%d_clip = arith.constant %.9e : f32\n", id,
                   (double)(float)info.clip);
    if (!l->fused_declared)
      iq_text_printf(&l->globals, "  func.func private @iq_int4_linear_fused(i64, !llvm.ptr, i64, "
                                  "!llvm.ptr, !llvm.ptr, i64, !llvm.ptr, !llvm.ptr, i64, "
                                  "!llvm.ptr, i64, !llvm.ptr, i64, i64, f32)\n");
    l->fused_declared = true;
    iq_text_printf(t, "    func.call @iq_int4_linear_fused(%%int4_%d_count", id);
    for (int i = 0; i < INT4_FUSED_MAX; ++i)
      iq_text_printf(t, ", %%int4_%d_w%d, %%int4_%d_n%d, %%int4_%d_y%d", id, i, id, i, id, i);
    iq_text_printf(t, ", %%int4_%d_k, %%int4_%d_x, %%tokens_i64, %%int4_%d_h, %%int4_%d_clip) : "
                      "(i64, !llvm.ptr, i64, !llvm.ptr, !llvm.ptr, i64, !llvm.ptr, !llvm.ptr, "
                      "i64, !llvm.ptr, i64, !llvm.ptr, i64, i64, f32) -> ()\n",
                   id, id, id, id);
    return true;
  }

  lowered_value_t weights = {0};
  snprintf(weights.name, sizeof weights.name, "%s", l->weights[info.packed].value);
  snprintf(weights.type, sizeof weights.type, "%s", l->weights[info.packed].type);
  lowered_value_t *y = linear_output(l, op, logits, info.out);
  if (!y)
    return false;

  int id = l->next_id++;
  emit_pointer(l, &weights, id, "w");
  emit_pointer(l, info.x, id, "x");
  emit_pointer(l, y, id, "y");
  iq_text_t *t = &l->body;
  iq_text_printf(t, "    %%int4_%d_n = arith.constant %lld : i64\n", id, (long long)info.out);
  iq_text_printf(t, "    %%int4_%d_k = arith.constant %lld : i64\n", id, (long long)info.in);
  iq_text_printf(t, "    %%int4_%d_clip = arith.constant %.9e : f32\n", id,
                 (double)(float)info.clip);
  if (info.bits == 8) {
    if (!l->int8_declared)
      iq_text_printf(&l->globals, "  func.func private @iq_int8_linear(!llvm.ptr, i64, i64, "
                                  "!llvm.ptr, i64, !llvm.ptr, f32)\n");
    l->int8_declared = true;
    iq_text_printf(t, "    func.call @iq_int8_linear(%%int4_%d_w, %%int4_%d_n, %%int4_%d_k, "
                      "%%int4_%d_x, %%tokens_i64, %%int4_%d_y, %%int4_%d_clip) : "
                      "(!llvm.ptr, i64, i64, !llvm.ptr, i64, !llvm.ptr, f32) -> ()\n",
                   id, id, id, id, id, id);
  } else if (info.group > 0) {
    if (!l->grouped_declared)
      iq_text_printf(&l->globals, "  func.func private @iq_int4_linear_grouped(!llvm.ptr, i64, "
                                  "i64, i64, !llvm.ptr, i64, !llvm.ptr, f32)\n");
    l->grouped_declared = true;
    iq_text_printf(t, "    %%int4_%d_group = arith.constant %lld : i64\n", id,
                   (long long)info.group);
    iq_text_printf(t, "    func.call @iq_int4_linear_grouped(%%int4_%d_w, %%int4_%d_n, "
                      "%%int4_%d_k, %%int4_%d_group, %%int4_%d_x, %%tokens_i64, %%int4_%d_y, "
                      "%%int4_%d_clip) : (!llvm.ptr, i64, i64, i64, !llvm.ptr, i64, !llvm.ptr, "
                      "f32) -> ()\n",
                   id, id, id, id, id, id, id);
  } else {
    if (!l->int4_declared)
      iq_text_printf(&l->globals, "  func.func private @iq_int4_linear(!llvm.ptr, i64, i64, "
                                  "!llvm.ptr, i64, !llvm.ptr, i64, f32)\n");
    l->int4_declared = true;
    iq_text_printf(t, "    %%int4_%d_h = arith.constant %d : i64\n", id, info.hadamard ? 1 : 0);
    iq_text_printf(t, "    func.call @iq_int4_linear(%%int4_%d_w, %%int4_%d_n, %%int4_%d_k, "
                      "%%int4_%d_x, %%tokens_i64, %%int4_%d_y, %%int4_%d_h, %%int4_%d_clip) : "
                      "(!llvm.ptr, i64, i64, !llvm.ptr, i64, !llvm.ptr, i64, f32) -> ()\n",
                   id, id, id, id, id, id, id);
  }
  return true;
}

/* Lowers a float16 linear that iq-pack-int4 packed into diagonal blocks
 * to a call of iq_f16_linear_blocks, which runs it on the kernel threads. */
static bool lower_linear_f16_blocks(lowering_t *l, MlirOperation op, MlirAttribute attr,
                                    MlirValue logits) {
  MlirOperation weight = weight_op(op);
  MlirType type = iq_op_is(weight, "weight") ? mlirValueGetType(mlirOperationGetResult(weight, 0))
                                              : (MlirType){NULL};
  int64_t n = mlirTypeIsNull(type) ? -1 : static_dim(type, 0);
  const weight_entry_t *packed =
      mlirAttributeIsAString(attr) ? find_weight(l, mlirStringAttrGetValue(attr)) : NULL;
  int64_t elements = packed && packed->rank == 1 ? packed->dims[0] : 0;
  if (n < 1 || !packed || strcmp(packed->dtype, "f16") != 0 || elements < 1 ||
      (n * n) % elements != 0 || n % ((n * n) / elements) != 0)
    return lower_fail(l, op, "a linear marked %s needs an f16 weight of its diagonal blocks "
                             "before it; run iq-pack-int4 again",
                      IQ_F16_BLOCKS_ATTRIBUTE);
  lowered_value_t *x = operand(l, op, 0);
  lowered_value_t *y = x ? linear_output(l, op, logits, n) : NULL;
  if (!y)
    return false;
  lowered_value_t weights = {0};
  snprintf(weights.name, sizeof weights.name, "%s", packed->value);
  snprintf(weights.type, sizeof weights.type, "%s", packed->type);
  int id = l->next_id++;
  emit_pointer(l, &weights, id, "w");
  emit_pointer(l, x, id, "x");
  emit_pointer(l, y, id, "y");
  iq_text_t *t = &l->body;
  iq_text_printf(t, "    %%int4_%d_n = arith.constant %lld : i64\n", id, (long long)n);
  iq_text_printf(t, "    %%int4_%d_blocks = arith.constant %lld : i64\n", id,
                 (long long)((n * n) / elements));
  if (!l->f16_blocks_declared)
    iq_text_printf(&l->globals, "  func.func private @iq_f16_linear_blocks(!llvm.ptr, i64, i64, "
                                "!llvm.ptr, i64, !llvm.ptr)\n");
  l->f16_blocks_declared = true;
  iq_text_printf(t, "    func.call @iq_f16_linear_blocks(%%int4_%d_w, %%int4_%d_n, "
                    "%%int4_%d_blocks, %%int4_%d_x, %%tokens_i64, %%int4_%d_y) : (!llvm.ptr, i64, "
                    "i64, !llvm.ptr, i64, !llvm.ptr) -> ()\n",
                 id, id, id, id, id);
  return true;
}

/* The ops between RoPE and an attention whose K and V are quantized to
 * 4 bits as iq-quantize's kv=k4v4 does: q and k each pass a Hadamard
 * transform of head_dim, K is quantized per (token, KV head) with the
 * range containing 0 and V with the group's own range. */
typedef struct int4_attention {
  MlirOperation q_hadamard, k_hadamard, k_quantize, k_dequantize, v_quantize, v_dequantize;
  MlirValue q, k, v; /* the float inputs the int4 attention reads */
  double k_clip, v_clip;
} int4_attention_t;

/* True when `op` has exactly one reader, `reader`. */
static bool read_only_by(MlirOperation op, MlirOperation reader) {
  MlirOpOperand use = mlirValueGetFirstUse(mlirOperationGetResult(op, 0));
  return !mlirOpOperandIsNull(use) && mlirOperationEqual(mlirOpOperandGetOwner(use), reader) &&
         mlirOpOperandIsNull(mlirOpOperandGetNextUse(use));
}

static bool is_head_hadamard(MlirOperation op, int64_t head_dim) {
  if (!is_iq_op(op, "hadamard") || int_attribute(op, "size") != head_dim)
    return false;
  MlirAttribute transposed =
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("transposed"));
  return mlirAttributeIsNull(transposed) ||
         (mlirAttributeIsABool(transposed) && !mlirBoolAttrGetValue(transposed)) ||
         (mlirAttributeIsAInteger(transposed) && mlirIntegerAttrGetValueInt(transposed) == 0);
}

/* A 4-bit unsigned asymmetric per_group quantization of head_dim groups
 * along the last axis whose paired dequantize only `attention` reads. */
static bool is_head_quantize(MlirOperation quantize, MlirOperation dequantize,
                             MlirOperation attention, int64_t head_dim, bool zero_in_range) {
  if (!is_iq_op(quantize, "quantize") || !is_iq_op(dequantize, "dequantize") ||
      !mlirOperationEqual(paired_dequantize(quantize), dequantize) ||
      !read_only_by(dequantize, attention))
    return false;
  MlirValue result = mlirOperationGetResult(dequantize, 0);
  int64_t rank = mlirShapedTypeGetRank(mlirValueGetType(result));
  MlirAttribute zero_attr =
      mlirOperationGetAttributeByName(quantize, mlirStringRefCreateFromCString("zero_in_range"));
  bool has_zero = !mlirAttributeIsNull(zero_attr) && mlirAttributeIsABool(zero_attr) &&
                  mlirBoolAttrGetValue(zero_attr);
  double clip = mlirFloatAttrGetValueDouble(
      mlirOperationGetAttributeByName(quantize, mlirStringRefCreateFromCString("clip_ratio")));
  return int_attribute(quantize, "bits") == 4 &&
         string_attribute_is(quantize, "granularity", "per_group") &&
         int_attribute(quantize, "group_size") == head_dim &&
         int_attribute(quantize, "axis") == rank - 1 && has_zero == zero_in_range &&
         !mlirBoolAttrGetValue(mlirOperationGetAttributeByName(
             quantize, mlirStringRefCreateFromCString("symmetric"))) &&
         !mlirBoolAttrGetValue(mlirOperationGetAttributeByName(
             quantize, mlirStringRefCreateFromCString("signed"))) &&
         clip > 0.0 && clip <= 1.0;
}

/* Matches the int4 KV pattern at `attention`; the softmax scale must be
 * 1/sqrt(head_dim), the one the int4 kernel applies. */
static bool match_int4_attention(const lowering_t *l, MlirOperation attention,
                                 int4_attention_t *match) {
  int64_t head_dim = l->head_dim;
  double scale = mlirFloatAttrGetValueDouble(
      mlirOperationGetAttributeByName(attention, mlirStringRefCreateFromCString("scale")));
  if ((float)scale != (float)(1.0 / sqrt((double)head_dim)) || head_dim < 2 ||
      (head_dim & (head_dim - 1)) != 0)
    return false;
  match->q_hadamard = operand_owner(attention, 0);
  match->k_dequantize = operand_owner(attention, 1);
  match->v_dequantize = operand_owner(attention, 2);
  if (!is_head_hadamard(match->q_hadamard, head_dim) ||
      !read_only_by(match->q_hadamard, attention) || !is_iq_op(match->k_dequantize, "dequantize") ||
      !is_iq_op(match->v_dequantize, "dequantize"))
    return false;
  match->k_quantize = operand_owner(match->k_dequantize, 0);
  match->v_quantize = operand_owner(match->v_dequantize, 0);
  if (!is_head_quantize(match->k_quantize, match->k_dequantize, attention, head_dim, true) ||
      !is_head_quantize(match->v_quantize, match->v_dequantize, attention, head_dim, false))
    return false;
  match->k_hadamard = operand_owner(match->k_quantize, 0);
  if (!is_head_hadamard(match->k_hadamard, head_dim) ||
      !read_only_by(match->k_hadamard, match->k_quantize))
    return false;
  match->q = mlirOperationGetOperand(match->q_hadamard, 0);
  match->k = mlirOperationGetOperand(match->k_hadamard, 0);
  match->v = mlirOperationGetOperand(match->v_quantize, 0);
  match->k_clip = mlirFloatAttrGetValueDouble(mlirOperationGetAttributeByName(
      match->k_quantize, mlirStringRefCreateFromCString("clip_ratio")));
  match->v_clip = mlirFloatAttrGetValueDouble(mlirOperationGetAttributeByName(
      match->v_quantize, mlirStringRefCreateFromCString("clip_ratio")));
  return true;
}

static bool is_skipped(const lowering_t *l, MlirOperation op) {
  for (size_t i = 0; i < l->num_skipped; ++i)
    if (mlirOperationEqual(l->skipped[i], op))
      return true;
  return false;
}

/* Decides whether the KV caches are int4: when the int4 path is on and
 * every attention matches, and then records the ops the int4 attention
 * replaces. */
static bool plan_int4_cache(lowering_t *l, MlirBlock block) {
  size_t attentions = 0, matched = 0;
  int4_attention_t match;
  for (MlirOperation op = mlirBlockGetFirstOperation(block); !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op)) {
    if (!iq_op_is(op, "attention"))
      continue;
    ++attentions;
    if (match_int4_attention(l, op, &match))
      ++matched;
  }
  l->int4_cache = l->int4_kernels && attentions > 0 && matched == attentions;
  if (!l->int4_cache)
    return true;
  l->skipped = calloc(6 * attentions, sizeof *l->skipped);
  if (!l->skipped)
    return lower_fail(l, (MlirOperation){NULL}, "out of memory");
  for (MlirOperation op = mlirBlockGetFirstOperation(block); !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op)) {
    if (!iq_op_is(op, "attention") || !match_int4_attention(l, op, &match))
      continue;
    MlirOperation replaced[6] = {match.q_hadamard, match.k_hadamard, match.k_quantize,
                                 match.k_dequantize, match.v_quantize, match.v_dequantize};
    for (int i = 0; i < 6; ++i)
      l->skipped[l->num_skipped++] = replaced[i];
  }
  return true;
}

/* An attention over an int4 KV cache becomes a call of iq_int4_attention
 * (iq/int4_model.h) on the cache object in the layer's first cache slot,
 * with q and k before their Hadamard transforms and v before
 * quantization: the kernels transform and quantize them themselves. */
static bool lower_attention_int4(lowering_t *l, MlirOperation op) {
  int4_attention_t match;
  if (!match_int4_attention(l, op, &match))
    return lower_fail(l, op, "the attention does not match the int4 KV cache pattern");
  int64_t heads = int_attribute(op, "num_heads");
  lowered_value_t *q = find_value(l, match.q), *k = find_value(l, match.k);
  lowered_value_t *v = find_value(l, match.v);
  lowered_value_t *cache = operand(l, op, 3), *values = operand(l, op, 4);
  lowered_value_t *positions = operand(l, op, 5);
  if (!q || !k || !v || !cache || !values || !positions)
    return lower_fail(l, op, "the inputs of the int4 attention were not computed");
  if (mlirValueIsABlockArgument(mlirOperationGetOperand(op, 3)) == false ||
      mlirValueIsABlockArgument(mlirOperationGetOperand(op, 4)) == false)
    return lower_fail(l, op, "the attention's caches must be function arguments");
  lowered_value_t *out = allocate(l, mlirOperationGetResult(op, 0), heads * l->head_dim);
  if (!out)
    return false;
  /* The results name the cache arguments, as on the float path. */
  if (!add_value(l, mlirOperationGetResult(op, 1), cache->name, cache->type, false) ||
      !add_value(l, mlirOperationGetResult(op, 2), values->name, values->type, false))
    return lower_fail(l, op, "out of memory");

  if (!l->int4_attention_declared) {
    iq_text_printf(&l->globals, "  func.func private @iq_int4_attention(!llvm.ptr, !llvm.ptr, "
                                "!llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, f32, f32, i64, "
                                "!llvm.ptr)\n");
    l->int4_attention_declared = true;
  }
  int id = l->next_id++;
  emit_pointer(l, cache, id, "cache");
  emit_pointer(l, q, id, "q");
  emit_pointer(l, k, id, "k");
  emit_pointer(l, v, id, "v");
  emit_pointer(l, positions, id, "positions");
  emit_pointer(l, out, id, "out");
  iq_text_t *t = &l->body;
  iq_text_printf(t, "    %%int4_%d_heads = arith.constant %lld : i64\n", id, (long long)heads);
  iq_text_printf(t, "    %%int4_%d_k_clip = arith.constant %.9e : f32\n", id,
                 (double)(float)match.k_clip);
  iq_text_printf(t, "    %%int4_%d_v_clip = arith.constant %.9e : f32\n", id,
                 (double)(float)match.v_clip);
  iq_text_printf(t, "    %%int4_%d_v_group = arith.constant 1 : i64\n", id);
  iq_text_printf(t, "    func.call @iq_int4_attention(%%int4_%d_cache, %%int4_%d_q, %%int4_%d_k, "
                    "%%int4_%d_v, %%int4_%d_positions, %%tokens_i64, %%int4_%d_heads, "
                    "%%int4_%d_k_clip, %%int4_%d_v_clip, %%int4_%d_v_group, %%int4_%d_out) : "
                    "(!llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, !llvm.ptr, i64, i64, f32, f32, "
                    "i64, !llvm.ptr) -> ()\n",
                 id, id, id, id, id, id, id, id, id, id);
  return true;
}

/* A quantize whose results only a dequantize reads is fake quantization:
 * one kernel computes the dequantized values, and the codes, scales and
 * zero points are never stored. */
static bool lower_quantize(lowering_t *l, MlirOperation op) {
  if (feeds_only_int4(l, op))
    return true;
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
  MlirOperation quantize = operand_owner(op, 0);
  if (is_iq_op(quantize, "quantize") && feeds_only_int4(l, quantize))
    return true;
  if (is_iq_op(operand_owner(op, 0), "weight"))
    return true;
  return lower_fail(l, op, "iq.dequantize lowers only after its iq.quantize or on weight codes");
}

static bool lower_linear_codes(lowering_t *l, MlirOperation op, MlirOperation dequantize,
                               MlirValue logits) {
  MlirOperation codes = operand_owner(dequantize, 0);
  MlirType type = mlirValueGetType(mlirOperationGetResult(dequantize, 0));
  int64_t out = static_dim(type, 0), in = static_dim(type, 1);
  int64_t bits = int_attribute(dequantize, "bits");
  if (!is_iq_op(codes, "weight") || !is_iq_op(operand_owner(dequantize, 1), "weight") ||
      !is_iq_op(operand_owner(dequantize, 2), "weight") || out < 0 || in < 0 ||
      (bits != 4 && bits != 8) || int_attribute(dequantize, "axis") != 1 ||
      !string_attribute_is(dequantize, "granularity", "per_channel"))
    return lower_fail(l, op, "quantized weights lower only as 4-bit or 8-bit per_channel codes "
                             "(axis 1), scales and zero points from iq.weight ops");
  char kernel[IQ_KERNEL_NAME_SIZE];
  iq_kernel_linear_codes(&l->kernels, &l->kernel_set, in, out, (int)bits, kernel);
  lowered_value_t *x = operand(l, op, 0);
  lowered_value_t *c = operand(l, dequantize, 0), *s = operand(l, dequantize, 1);
  lowered_value_t *z = operand(l, dequantize, 2);
  if (!x || !c || !s || !z)
    return false;
  lowered_value_t *y = linear_output(l, op, logits, out);
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
  if (is_skipped(l, op))
    return true;
  if (l->int4_cache && iq_op_is(op, "attention"))
    return lower_attention_int4(l, op);
  char kernel[IQ_KERNEL_NAME_SIZE];
  MlirValue result = mlirOperationGetNumResults(op) > 0 ? mlirOperationGetResult(op, 0)
                                                         : (MlirValue){NULL};
  /* A fused int4 linear may have loaded the weights already. */
  if (iq_op_is(op, "weight"))
    return find_value(l, result) ? true : lower_weight(l, op);
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
  iq_text_printf(&text, "config %lld %lld %lld %lld %lld %lld %lld %.9g %.9g\ncache %s\n",
                 (long long)l->layers, (long long)l->hidden, (long long)l->heads,
                 (long long)l->kv_heads, (long long)l->head_dim, (long long)l->ffn,
                 (long long)l->vocab, l->theta, l->epsilon, l->int4_cache ? "int4" : "f32");
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
  lowering_t l = {.error = error, .threads = options->threads,
                  .int4_kernels = options->int4_kernels};
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

  /* The table of lowered values is sized once for every value the function
   * can define (block arguments and op results, twice over), so it does
   * not grow while ops are lowered. */
  MlirBlock block = mlirRegionGetFirstBlock(mlirOperationGetRegion(function, 0));
  size_t defined = (size_t)mlirBlockGetNumArguments(block);
  for (MlirOperation op = mlirBlockGetFirstOperation(block); !mlirOperationIsNull(op);
       op = mlirOperationGetNextInBlock(op))
    defined += (size_t)mlirOperationGetNumResults(op);
  l.capacity = 2 * defined + 64;
  l.values = calloc(l.capacity, sizeof *l.values);
  if (!l.values) {
    iq_error_set(error, NULL, NULL, NULL, "out of memory");
    return NULL;
  }
  bool ok = emit_prologue(&l, function);
  ok = ok && plan_int4_cache(&l, block);

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
    /* An int4 linear also reads the float input of its quantization. */
    intptr_t operands = mlirOperationGetNumOperands(op);
    bool int4 = is_int4_linear(&l, op);
    /* So does an int4 attention, of its q, k and v before the transforms. */
    int4_attention_t attention;
    bool int4_attention = l.int4_cache && iq_op_is(op, "attention") &&
                          match_int4_attention(&l, op, &attention);
    MlirValue attention_inputs[3] = {{NULL}, {NULL}, {NULL}};
    if (int4_attention) {
      attention_inputs[0] = attention.q;
      attention_inputs[1] = attention.k;
      attention_inputs[2] = attention.v;
    }
    for (intptr_t i = 0; i < operands + 4; ++i) {
      bool hadamard;
      MlirValue value = i < operands      ? mlirOperationGetOperand(op, i)
                        : i == operands   ? (int4 ? int4_source(op, &hadamard) : (MlirValue){NULL})
                                          : attention_inputs[i - operands - 1];
      if (mlirValueIsNull(value))
        continue;
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
      lowered_value_t *value = l.values[v];
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
  for (size_t v = 0; v < l.num_values; ++v)
    free(l.values[v]);
  free(l.values);
  free(l.weights);
  free(l.skipped);
  return result;
}
