/* The in-memory overlay of tensors that weight-rewriting passes create,
 * and the writer that merges it with the module's store into a new one. */
#include "iq/weight_overlay.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mlir-c/BuiltinAttributes.h"

#include "iq/ir.h"
#include "iq/passes.h"

typedef struct overlay_tensor {
  char *name;
  iq_dtype_t dtype;
  uint32_t rank;
  int64_t dims[IQ_WEIGHT_STORE_MAX_RANK];
  void *data;
  uint64_t byte_size;
} overlay_tensor_t;

static overlay_tensor_t *tensors;
static size_t num_tensors, capacity;

/* The input store stays mapped between reads; it is reopened when a module
 * names another file. */
static iq_weight_store_t *cached_store;
static char *cached_path;

static overlay_tensor_t *find_tensor(const char *name) {
  for (size_t i = 0; i < num_tensors; ++i)
    if (strcmp(tensors[i].name, name) == 0)
      return &tensors[i];
  return NULL;
}

static void free_tensor(overlay_tensor_t *tensor) {
  free(tensor->name);
  free(tensor->data);
}

bool iq_overlay_put(const char *name, iq_dtype_t dtype, uint32_t rank, const int64_t *dims,
                    const void *data, uint64_t byte_size, iq_error_t **error) {
  if (rank > IQ_WEIGHT_STORE_MAX_RANK)
    return iq_error_set(error, NULL, name, NULL, "rank %u is above the store's limit of %d", rank,
                        IQ_WEIGHT_STORE_MAX_RANK);
  overlay_tensor_t tensor = {.dtype = dtype, .rank = rank, .byte_size = byte_size};
  memcpy(tensor.dims, dims, rank * sizeof *dims);
  tensor.name = strdup(name);
  tensor.data = malloc(byte_size ? byte_size : 1);
  if (!tensor.name || !tensor.data) {
    free_tensor(&tensor);
    return iq_error_set(error, NULL, name, NULL, "out of memory for a tensor of %llu bytes",
                        (unsigned long long)byte_size);
  }
  if (byte_size)
    memcpy(tensor.data, data, byte_size);

  overlay_tensor_t *existing = find_tensor(name);
  if (existing) {
    free_tensor(existing);
    *existing = tensor;
    return true;
  }
  if (num_tensors == capacity) {
    size_t grown_capacity = capacity ? capacity * 2 : 64;
    overlay_tensor_t *grown = realloc(tensors, grown_capacity * sizeof *grown);
    if (!grown) {
      free_tensor(&tensor);
      return iq_error_set(error, NULL, name, NULL, "out of memory");
    }
    tensors = grown;
    capacity = grown_capacity;
  }
  tensors[num_tensors++] = tensor;
  return true;
}

/* The IEEE binary16 value nearest to `value`, ties to even (the current
 * rounding mode of nearbyint, which is the default one). */
static uint16_t double_to_half(double value) {
  uint16_t sign = signbit(value) ? 0x8000 : 0;
  double magnitude = fabs(value);
  if (isnan(value))
    return sign | 0x7e00;
  if (magnitude >= 65520.0) /* rounds past the largest finite half, 65504 */
    return sign | 0x7c00;
  if (magnitude < 0x1p-14) /* subnormal: a count of 2^-24; 1024 is the smallest normal */
    return sign | (uint16_t)nearbyint(magnitude * 0x1p24);
  int exponent;
  frexp(magnitude, &exponent); /* magnitude = f * 2^exponent, f in [0.5, 1) */
  double significand = nearbyint(ldexp(magnitude, 11 - exponent)); /* 1024 .. 2048 */
  int biased = exponent - 1 + 15;
  if (significand >= 2048.0) {
    significand /= 2.0;
    biased++;
  }
  if (biased >= 31)
    return sign | 0x7c00;
  return sign | (uint16_t)(biased << 10) | ((uint16_t)significand & 0x3ff);
}

/* Adds the float32 or float16 tensor converted from `values`. */
static bool put_converted(const char *name, iq_dtype_t dtype, uint32_t rank, const int64_t *dims,
                          const double *values, iq_error_t **error) {
  uint64_t count = 1;
  for (uint32_t i = 0; i < rank; ++i)
    count *= (uint64_t)dims[i];
  size_t element = dtype == IQ_DTYPE_F16 ? sizeof(uint16_t) : sizeof(float);
  uint8_t *data = malloc(count * element + 1);
  if (!data)
    return iq_error_set(error, NULL, name, NULL, "out of memory");
  for (uint64_t i = 0; i < count; ++i) {
    if (dtype == IQ_DTYPE_F16) {
      uint16_t half = double_to_half(values[i]);
      memcpy(data + i * element, &half, element);
    } else {
      float single = (float)values[i];
      memcpy(data + i * element, &single, element);
    }
  }
  bool ok = iq_overlay_put(name, dtype, rank, dims, data, count * element, error);
  free(data);
  return ok;
}

bool iq_overlay_put_f32(const char *name, uint32_t rank, const int64_t *dims, const double *values,
                        iq_error_t **error) {
  return put_converted(name, IQ_DTYPE_F32, rank, dims, values, error);
}

bool iq_overlay_put_f16(const char *name, uint32_t rank, const int64_t *dims, const double *values,
                        iq_error_t **error) {
  return put_converted(name, IQ_DTYPE_F16, rank, dims, values, error);
}

bool iq_overlay_pending(void) { return num_tensors > 0; }

void iq_overlay_reset(void) {
  for (size_t i = 0; i < num_tensors; ++i)
    free_tensor(&tensors[i]);
  free(tensors);
  tensors = NULL;
  num_tensors = capacity = 0;
  iq_weight_store_close(cached_store);
  cached_store = NULL;
  free(cached_path);
  cached_path = NULL;
}

char *iq_overlay_store_path(MlirOperation module) {
  MlirAttribute attr =
      mlirOperationGetAttributeByName(module, mlirStringRefCreateFromCString("iq.weight_store"));
  if (mlirAttributeIsNull(attr) || !mlirAttributeIsAString(attr))
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

static iq_weight_store_t *open_module_store(MlirOperation module, iq_error_t **error) {
  char *path = iq_overlay_store_path(module);
  if (!path) {
    iq_error_set(error, NULL, NULL, "import the model with iq-opt model.onnx -o model.mlir",
                 "the module names no weight store (iq.weight_store)");
    return NULL;
  }
  if (cached_store && strcmp(cached_path, path) == 0) {
    free(path);
    return cached_store;
  }
  iq_weight_store_t *store = iq_weight_store_open(path, error);
  if (!store) {
    free(path);
    return NULL;
  }
  iq_weight_store_close(cached_store);
  free(cached_path);
  cached_store = store;
  cached_path = path;
  return store;
}

static double half_to_double(uint16_t bits) {
  int exponent = (bits >> 10) & 0x1f;
  int mantissa = bits & 0x3ff;
  double value;
  if (exponent == 0)
    value = ldexp(mantissa, -24);
  else if (exponent == 31)
    value = mantissa ? NAN : INFINITY;
  else
    value = ldexp(mantissa | 0x400, exponent - 25);
  return bits & 0x8000 ? -value : value;
}

static double element_to_double(iq_dtype_t dtype, const uint8_t *data, uint64_t index) {
  switch (dtype) {
  case IQ_DTYPE_F32: {
    float value;
    memcpy(&value, data + index * 4, 4);
    return value;
  }
  case IQ_DTYPE_F64: {
    double value;
    memcpy(&value, data + index * 8, 8);
    return value;
  }
  case IQ_DTYPE_F16: {
    uint16_t bits;
    memcpy(&bits, data + index * 2, 2);
    return half_to_double(bits);
  }
  case IQ_DTYPE_BF16: {
    uint16_t bits;
    memcpy(&bits, data + index * 2, 2);
    uint32_t widened = (uint32_t)bits << 16;
    float value;
    memcpy(&value, &widened, 4);
    return value;
  }
  default:
    return NAN;
  }
}

bool iq_overlay_read(MlirOperation module, const char *name, bool transposed, int64_t rows,
                     int64_t cols, double *values, iq_error_t **error) {
  iq_dtype_t dtype;
  const uint8_t *data;
  uint64_t count;
  overlay_tensor_t *own = find_tensor(name);
  if (own) {
    dtype = own->dtype;
    data = own->data;
    count = 1;
    for (uint32_t i = 0; i < own->rank; ++i)
      count *= (uint64_t)own->dims[i];
  } else {
    iq_weight_store_t *store = open_module_store(module, error);
    if (!store)
      return false;
    const iq_weight_tensor_t *tensor = iq_weight_store_find(store, name);
    if (!tensor)
      return iq_error_set(error, cached_path, name, "check that the IR and its .iqw belong together",
                          "the weight store has no tensor of this name");
    dtype = tensor->dtype;
    data = tensor->data;
    count = tensor->num_elements;
  }
  if (count != (uint64_t)(rows * cols))
    return iq_error_set(error, NULL, name, NULL,
                        "the stored tensor has %llu elements, but the IR expects %lld x %lld",
                        (unsigned long long)count, (long long)rows, (long long)cols);
  if (dtype != IQ_DTYPE_F32 && dtype != IQ_DTYPE_F16 && dtype != IQ_DTYPE_BF16 &&
      dtype != IQ_DTYPE_F64)
    return iq_error_set(error, NULL, name, "rewrite weights before quantizing them",
                        "weights of type %s cannot be read as floats",
                        iq_dtype_name(dtype) ? iq_dtype_name(dtype) : "unknown");
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      uint64_t index = transposed ? (uint64_t)(c * rows + r) : (uint64_t)(r * cols + c);
      values[r * cols + c] = element_to_double(dtype, data, index);
    }
  }
  return true;
}

bool iq_overlay_read_bytes(MlirOperation module, const char *name, iq_dtype_t *dtype,
                           const uint8_t **data, uint64_t *byte_size, iq_error_t **error) {
  overlay_tensor_t *own = find_tensor(name);
  if (own) {
    *dtype = own->dtype;
    *data = own->data;
    *byte_size = own->byte_size;
    return true;
  }
  iq_weight_store_t *store = open_module_store(module, error);
  if (!store)
    return false;
  const iq_weight_tensor_t *tensor = iq_weight_store_find(store, name);
  if (!tensor)
    return iq_error_set(error, cached_path, name, "check that the IR and its .iqw belong together",
                        "the weight store has no tensor of this name");
  *dtype = tensor->dtype;
  *data = tensor->data;
  *byte_size = tensor->byte_size;
  return true;
}

/* ---- Writing the merged store ------------------------------------------- */

typedef struct name_list {
  char **names;
  size_t count, capacity;
  bool failed;
} name_list_t;

static MlirWalkResult collect_weight_name(MlirOperation op, void *user_data) {
  name_list_t *list = user_data;
  if (!iq_op_is(op, "weight"))
    return MlirWalkResultAdvance;
  MlirAttribute attr = mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("name"));
  if (mlirAttributeIsNull(attr) || !mlirAttributeIsAString(attr))
    return MlirWalkResultAdvance;
  MlirStringRef name = mlirStringAttrGetValue(attr);
  for (size_t i = 0; i < list->count; ++i)
    if (strlen(list->names[i]) == name.length && memcmp(list->names[i], name.data, name.length) == 0)
      return MlirWalkResultAdvance;
  if (list->count == list->capacity) {
    size_t grown_capacity = list->capacity ? list->capacity * 2 : 64;
    char **grown = realloc(list->names, grown_capacity * sizeof *grown);
    if (!grown) {
      list->failed = true;
      return MlirWalkResultInterrupt;
    }
    list->names = grown;
    list->capacity = grown_capacity;
  }
  list->names[list->count] = strndup(name.data, name.length);
  if (!list->names[list->count]) {
    list->failed = true;
    return MlirWalkResultInterrupt;
  }
  ++list->count;
  return MlirWalkResultAdvance;
}

bool iq_overlay_write_store(MlirOperation module, const char *path, const char *reference,
                            iq_error_t **error) {
  name_list_t names = {0};
  mlirOperationWalk(module, collect_weight_name, &names, MlirWalkPreOrder);
  bool ok = !names.failed || iq_error_set(error, path, NULL, NULL, "out of memory");

  iq_weight_store_t *store = NULL;
  iq_weight_store_writer_t *writer = ok ? iq_weight_store_writer_create(path, error) : NULL;
  ok = ok && writer;
  for (size_t i = 0; ok && i < names.count; ++i) {
    overlay_tensor_t *own = find_tensor(names.names[i]);
    if (own) {
      ok = iq_weight_store_writer_add(writer, own->name, own->dtype, IQ_LAYOUT_ROW_MAJOR, own->rank,
                                      own->dims, own->data, own->byte_size, error);
      continue;
    }
    if (!store && !(store = open_module_store(module, error))) {
      ok = false;
      break;
    }
    const iq_weight_tensor_t *tensor = iq_weight_store_find(store, names.names[i]);
    if (!tensor) {
      ok = iq_error_set(error, cached_path, names.names[i],
                        "check that the IR and its .iqw belong together",
                        "the weight store has no tensor of this name");
      break;
    }
    ok = iq_weight_store_writer_add(writer, tensor->name, tensor->dtype, tensor->layout,
                                    tensor->rank, tensor->dims, tensor->data, tensor->byte_size,
                                    error);
  }
  if (writer) {
    if (ok)
      ok = iq_weight_store_writer_finish(writer, error);
    else
      iq_weight_store_writer_abandon(writer);
  }
  for (size_t i = 0; i < names.count; ++i)
    free(names.names[i]);
  free(names.names);
  if (!ok)
    return false;

  MlirContext context = mlirOperationGetContext(module);
  mlirOperationSetAttributeByName(
      module, mlirStringRefCreateFromCString("iq.weight_store"),
      mlirStringAttrGet(context, mlirStringRefCreateFromCString(reference)));
  iq_overlay_reset();
  return true;
}
