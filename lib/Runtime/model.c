/* Opening a model: the compiled code's metadata, the thread count, and
 * the weight store checked tensor by tensor against the metadata. */
#include "runtime_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "iq/iq_compiled.h"

#define WEIGHT_FILE_HINT "recompile, or pass the .iqw written with this library"
#define MAX_THREADS 4096

/* The thread count of the most recently opened model, which compiled code
 * reads through iq_runtime_num_threads. */
static atomic_int process_num_threads = 1;

int32_t iq_runtime_num_threads(void) { return atomic_load(&process_num_threads); }

/* Libraries whose kernels use OpenMP link LLVM's libomp; the others do
 * not, so the call is made only when the symbol resolved. */
extern void omp_set_num_threads(int count) __attribute__((weak));
/* Libraries with int4 linears also link the int4 kernel runtime
 * (iq_kernels.h); the others do not define these. */
extern int iqk_set_num_threads(int threads) __attribute__((weak));
struct iqk_kernel_set;
extern const struct iqk_kernel_set *iqk_selected_set(void) __attribute__((weak));
extern const char *iqk_last_error(void) __attribute__((weak));
struct iqk_kv_cache;
extern struct iqk_kv_cache *iqk_kv_cache_create(int64_t kv_heads, int64_t head_dim,
                                                int64_t capacity) __attribute__((weak));

/* Picks the thread count: the option, else IQ_NUM_THREADS, else the
 * number of online CPUs. */
static iq_status_t resolve_num_threads(const iq_model_options_t *options, int32_t *num_threads) {
  if (options) {
    size_t needed = offsetof(iq_model_options_t, num_threads) + sizeof options->num_threads;
    if (options->struct_size < needed) {
      return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT,
                        "iq_model_open: options->struct_size is %zu, expected at least %zu; set "
                        "it to sizeof(iq_model_options_t)",
                        options->struct_size, needed);
    }
    if (options->num_threads < 0 || options->num_threads > MAX_THREADS) {
      return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT,
                        "iq_model_open: options->num_threads is %d, expected 0 (automatic) to %d",
                        options->num_threads, MAX_THREADS);
    }
    if (options->num_threads > 0) {
      *num_threads = options->num_threads;
      return IQ_OK;
    }
  }

  const char *text = getenv("IQ_NUM_THREADS");
  if (text && *text) {
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || *end != '\0' || value < 1 || value > MAX_THREADS) {
      return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT,
                        "iq_model_open: invalid IQ_NUM_THREADS \"%s\", expected an integer from 1 "
                        "to %d; unset it to use every online CPU",
                        text, MAX_THREADS);
    }
    *num_threads = (int32_t)value;
    return IQ_OK;
  }

  long online = sysconf(_SC_NPROCESSORS_ONLN);
  if (online < 1) {
    online = 1;
  }
  if (online > MAX_THREADS) {
    online = MAX_THREADS;
  }
  *num_threads = (int32_t)online;
  return IQ_OK;
}

/* Formats "f32 [64, 512]" into `buffer`. */
static void describe_tensor(iq_dtype_t dtype, uint32_t rank, const int64_t *dims, char *buffer,
                            size_t size) {
  const char *dtype_name = iq_dtype_name(dtype);
  int used = snprintf(buffer, size, "%s [", dtype_name ? dtype_name : "unknown-dtype");
  for (uint32_t i = 0; i < rank && used > 0 && (size_t)used < size; ++i) {
    used += snprintf(buffer + used, size - (size_t)used, "%s%" PRId64, i ? ", " : "", dims[i]);
  }
  if (used > 0 && (size_t)used < size) {
    snprintf(buffer + used, size - (size_t)used, "]");
  }
}

/* Checks one stored tensor against its metadata record. A transposed
 * matrix is stored as [in, out] while the metadata gives the logical
 * [out, in], so its stored dims are the reverse. */
static iq_status_t check_weight(const char *path, const iq_rt_weight_spec_t *spec,
                                const iq_weight_tensor_t *tensor) {
  if (!tensor) {
    return iq_rt_fail(IQ_ERROR_FORMAT,
                      "%s: weight \"%s\" not found in the weight file; " WEIGHT_FILE_HINT, path,
                      spec->name);
  }
  int64_t expected[IQ_WEIGHT_STORE_MAX_RANK];
  for (uint32_t i = 0; i < spec->rank; ++i) {
    expected[i] = spec->transposed ? spec->dims[spec->rank - 1 - i] : spec->dims[i];
  }
  bool matches = tensor->dtype == spec->dtype && tensor->rank == spec->rank &&
                 tensor->layout == IQ_LAYOUT_ROW_MAJOR;
  for (uint32_t i = 0; matches && i < spec->rank; ++i) {
    matches = tensor->dims[i] == expected[i];
  }
  if (matches) {
    return IQ_OK;
  }
  char expected_text[256];
  char found_text[256];
  describe_tensor(spec->dtype, spec->rank, expected, expected_text, sizeof expected_text);
  describe_tensor(tensor->dtype, tensor->rank, tensor->dims, found_text, sizeof found_text);
  if (tensor->layout != IQ_LAYOUT_ROW_MAJOR) {
    return iq_rt_fail(IQ_ERROR_FORMAT,
                      "%s: weight \"%s\" has layout %d, expected row-major; " WEIGHT_FILE_HINT,
                      path, spec->name, (int)tensor->layout);
  }
  return iq_rt_fail(IQ_ERROR_FORMAT,
                    "%s: weight \"%s\" does not match the compiled model: expected %s%s, found "
                    "%s; " WEIGHT_FILE_HINT,
                    path, spec->name, expected_text, spec->transposed ? " (stored transposed)" : "",
                    found_text);
}

static iq_status_t open_weights(iq_model_t *model, const char *path) {
  iq_error_t *error = NULL;
  model->store = iq_weight_store_open(path, &error);
  if (!model->store) {
    char *text = error ? iq_error_format(error) : NULL;
    /* Keep iq_last_error() on one line: "MESSAGE; HINT". */
    char *hint = text ? strstr(text, "\n  hint: ") : NULL;
    if (hint) {
      memmove(hint + 2, hint + 9, strlen(hint + 9) + 1);
      hint[0] = ';';
      hint[1] = ' ';
    }
    /* The store reports a missing or unreadable file and a corrupt one the
     * same way, so tell them apart with access(). */
    bool readable = access(path, R_OK) == 0;
    iq_status_t status =
        iq_rt_fail(readable ? IQ_ERROR_FORMAT : IQ_ERROR_IO, "%s%s",
                   text ? text : path, text ? "" : ": cannot open the weight file");
    free(text);
    iq_error_destroy(error);
    return status;
  }

  size_t count = model->metadata.weight_count;
  model->weights = calloc(count, sizeof *model->weights);
  if (!model->weights) {
    return iq_rt_fail(IQ_ERROR_OUT_OF_MEMORY, "out of memory for %zu weight pointers", count);
  }
  for (size_t i = 0; i < count; ++i) {
    const iq_rt_weight_spec_t *spec = &model->metadata.weights[i];
    const iq_weight_tensor_t *tensor = iq_weight_store_find(model->store, spec->name);
    iq_status_t status = check_weight(path, spec, tensor);
    if (status != IQ_OK) {
      return status;
    }
    model->weights[i] = tensor->data;
  }
  return IQ_OK;
}

static void free_model(iq_model_t *model) {
  iq_weight_store_close(model->store);
  free(model->weights);
  iq_rt_metadata_free(&model->metadata);
  free(model);
}

iq_status_t iq_model_open(const char *weight_file, const iq_model_options_t *options,
                          iq_model_t **model) {
  if (!model) {
    return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT, "iq_model_open: model is NULL");
  }
  *model = NULL;
  if (!weight_file) {
    return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT, "iq_model_open: weight_file is NULL");
  }
  int32_t num_threads = 1;
  iq_status_t status = resolve_num_threads(options, &num_threads);
  if (status != IQ_OK) {
    return status;
  }

  iq_model_t *result = calloc(1, sizeof *result);
  if (!result) {
    return iq_rt_fail(IQ_ERROR_OUT_OF_MEMORY, "out of memory opening %s", weight_file);
  }
  atomic_init(&result->references, 1);
  result->num_threads = num_threads;
  status = iq_rt_metadata_parse(iq_model_metadata, &result->metadata);
  if (status == IQ_OK && result->metadata.int4_cache && !iqk_kv_cache_create) {
    status = iq_rt_fail(IQ_ERROR_FORMAT, "iq_model_metadata: the library declares an int4 KV "
                                         "cache but does not contain the int4 kernels; recompile "
                                         "the model with iq-compile");
  }
  if (status == IQ_OK) {
    status = open_weights(result, weight_file);
  }
  if (status != IQ_OK) {
    free_model(result);
    return status;
  }
  /* The int4 kernels picked their instruction set when the library was
   * loaded; none is picked when IQ_KERNEL names a set this CPU lacks. */
  if (iqk_selected_set && !iqk_selected_set()) {
    free_model(result);
    return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT, "iq_model_open: no int4 kernel set is usable: %s",
                      iqk_last_error ? iqk_last_error() : "unknown reason");
  }
  atomic_store(&process_num_threads, num_threads);
  if (omp_set_num_threads)
    omp_set_num_threads(num_threads);
  /* The kernel pool takes at most 64 threads. */
  if (iqk_set_num_threads)
    iqk_set_num_threads(num_threads > 64 ? 64 : num_threads);
  *model = result;
  return IQ_OK;
}

void iq_rt_model_release(iq_model_t *model) {
  if (atomic_fetch_sub(&model->references, 1) == 1) {
    free_model(model);
  }
}

void iq_model_close(iq_model_t *model) {
  if (model) {
    iq_rt_model_release(model);
  }
}

iq_status_t iq_model_get_config(const iq_model_t *model, iq_model_config_t *config) {
  if (!model) {
    return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT, "iq_model_get_config: model is NULL");
  }
  if (!config) {
    return iq_rt_fail(IQ_ERROR_INVALID_ARGUMENT, "iq_model_get_config: config is NULL");
  }
  *config = model->metadata.config;
  return IQ_OK;
}
