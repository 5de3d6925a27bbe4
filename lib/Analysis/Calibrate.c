/* The calibration driver: compiles the canonical graph with observers for
 * this host, runs it over windows of tokenized text and streams the
 * statistics to a file. Each pass over the windows records a group of
 * layers, so the accumulators stay within a memory budget. */
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"
#include "mlir-c/Diagnostics.h"

#include "calibration_internal.h"
#include "iq/calibration.h"
#include "iq/conversion.h"
#include "iq/ir.h"
#include "iq/iq_runtime.h"
#include "iq/statistics.h"
#include "iq/target.h"
#include "statistics_internal.h"
#include "tokenizer.h"

/* ---- The model's configuration ------------------------------------------ */

static int64_t config_int(MlirAttribute config, const char *key) {
  MlirAttribute value =
      mlirDictionaryAttrGetElementByName(config, mlirStringRefCreateFromCString(key));
  return mlirAttributeIsNull(value) || !mlirAttributeIsAInteger(value)
             ? -1
             : mlirIntegerAttrGetValueInt(value);
}

static bool read_config(MlirOperation module, iq_calibration_model_t *model, iq_error_t **error) {
  MlirAttribute config =
      mlirOperationGetAttributeByName(module, mlirStringRefCreateFromCString("iq.config"));
  if (mlirAttributeIsNull(config) || !mlirAttributeIsADictionary(config))
    return iq_error_set(error, NULL, "iq-calibrate", "run --iq-raise-llama first",
                        "the module has no iq.config: it is not a canonical LLaMA graph");
  model->layers = config_int(config, "layers");
  model->hidden = config_int(config, "hidden_size");
  model->heads = config_int(config, "num_heads");
  model->kv_heads = config_int(config, "num_kv_heads");
  model->head_dim = config_int(config, "head_dim");
  model->ffn = config_int(config, "ffn_size");
  model->vocab = config_int(config, "vocab_size");
  model->max_positions = config_int(config, "max_positions");
  if (model->layers < 1 || model->layers > IQ_OBSERVE_MAX_LAYER - 1 || model->hidden < 1 ||
      model->heads < 1 || model->kv_heads < 1 || model->head_dim < 1 || model->ffn < 1 ||
      model->vocab < 1)
    return iq_error_set(error, NULL, "iq-calibrate", "run --iq-raise-llama first",
                        "iq.config lacks layers, sizes or vocab_size");

  MlirAttribute store =
      mlirOperationGetAttributeByName(module, mlirStringRefCreateFromCString("iq.weight_store"));
  if (mlirAttributeIsNull(store) || !mlirAttributeIsAString(store))
    return iq_error_set(error, NULL, "iq-calibrate",
                        "import the model with iq-opt model.onnx -o model.mlir",
                        "the module names no weight store (iq.weight_store)");
  MlirStringRef reference = mlirStringAttrGetValue(store);
  if (reference.length > 0 && reference.data[0] == '/')
    snprintf(model->weight_path, sizeof model->weight_path, "%.*s", (int)reference.length,
             reference.data);
  else
    snprintf(model->weight_path, sizeof model->weight_path, "%s/%.*s", iq_weight_store_base_dir(),
             (int)reference.length, reference.data);
  return true;
}

uint32_t iq_calibration_channels(const iq_calibration_model_t *model, int point) {
  if (point >= 0 && point < IQ_OBSERVE_POINT_COUNT && model->point_channels[point] > 0)
    return model->point_channels[point];
  switch (point) {
  case IQ_OBSERVE_X:
  case IQ_OBSERVE_P:
  case IQ_OBSERVE_H:
    return (uint32_t)model->hidden;
  case IQ_OBSERVE_V:
    return (uint32_t)(model->kv_heads * model->head_dim);
  case IQ_OBSERVE_M:
    return (uint32_t)(model->heads * model->head_dim);
  case IQ_OBSERVE_Z:
    return (uint32_t)model->ffn;
  default:
    return 0;
  }
}

/* ---- Compiling the instrumented model ----------------------------------- */

/* Records the channel count of each observed point. Transforms may change
 * widths that iq.config describes (a rotation that pads heads, say), so
 * the observers' operand types are what the runtime will send. */
static MlirWalkResult record_channels(MlirOperation op, void *user_data) {
  iq_calibration_model_t *model = user_data;
  if (!iq_op_is(op, "observe"))
    return MlirWalkResultAdvance;
  MlirStringRef point = mlirStringAttrGetValue(
      mlirOperationGetAttributeByName(op, mlirStringRefCreateFromCString("point")));
  MlirType type = mlirValueGetType(mlirOperationGetOperand(op, 0));
  for (int p = 0; p < IQ_OBSERVE_POINT_COUNT; ++p) {
    if (point.length == 1 && point.data[0] == iq_observe_point_name((iq_observe_point_t)p)[0])
      model->point_channels[p] = (uint32_t)mlirShapedTypeGetDimSize(type, 2);
  }
  return MlirWalkResultAdvance;
}

/* Lowers a copy of `module` with observers to kernel source. */
static char *instrumented_source(MlirOperation module, iq_calibration_model_t *model,
                                 iq_error_t **error) {
  MlirOperation copy = mlirOperationClone(module);
  bool ok = iq_insert_observers(copy) && iq_verify(copy);
  if (ok)
    mlirOperationWalk(copy, record_channels, model, MlirWalkPreOrder);
  char *source = NULL;
  if (ok) {
    iq_lowering_options_t lowering = {
        .target = iq_target_host(), .quantization = "none", .threads = IQ_THREADS_OFF};
    source = iq_lower_to_kernel_source(copy, &lowering, error);
  } else {
    iq_error_set(error, NULL, "iq-insert-observers", "run --iq-raise-llama first",
                 "cannot place the observers (see the diagnostics above)");
  }
  mlirOperationDestroy(copy);
  return source;
}

static bool load_symbols(iq_calibration_library_t *lib, iq_error_t **error) {
  struct {
    const char *name;
    void **slot;
  } symbols[] = {
      {"iq_model_open", (void **)&lib->model_open},
      {"iq_model_close", (void **)&lib->model_close},
      {"iq_session_create", (void **)&lib->session_create},
      {"iq_session_destroy", (void **)&lib->session_destroy},
      {"iq_session_forward", (void **)&lib->session_forward},
      {"iq_session_reset", (void **)&lib->session_reset},
      {"iq_last_error", (void **)&lib->last_error},
      {"iq_runtime_set_observer", (void **)&lib->set_observer},
  };
  for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; ++i) {
    void *address = dlsym(lib->handle, symbols[i].name);
    if (!address)
      return iq_error_set(error, NULL, symbols[i].name, "this is a bug in iq; please report it",
                          "the instrumented library lacks %s", symbols[i].name);
    /* POSIX guarantees that a dlsym result converts to a function pointer. */
    memcpy(symbols[i].slot, &address, sizeof address);
  }
  return true;
}

/* Compiles the instrumented model into a temporary folder, loads it and
 * deletes the file (the mapping stays valid). */
static bool build_and_load(MlirOperation module, iq_calibration_model_t *model,
                           iq_calibration_library_t *lib, iq_error_t **error) {
  char *source = instrumented_source(module, model, error);
  if (!source)
    return false;
  const char *temporary = getenv("TMPDIR");
  char folder[4096], library[4200];
  snprintf(folder, sizeof folder, "%s/iq-calibrate.XXXXXX",
           temporary && *temporary ? temporary : "/tmp");
  if (!mkdtemp(folder)) {
    free(source);
    return iq_error_set(error, folder, NULL, "set TMPDIR to a writable folder",
                        "cannot create a temporary folder: %s", strerror(errno));
  }
  snprintf(library, sizeof library, "%s/model.so", folder);
  iq_progress_t *progress = iq_progress_start("calibration codegen", 1, "modules", stderr, false);
  bool ok = iq_target_build_host_library(mlirOperationGetContext(module), source,
                                         iq_llvm_lowering_pipeline, folder, library, error);
  iq_progress_update(progress, 1);
  iq_progress_finish(progress);
  free(source);
  if (ok) {
    lib->handle = dlopen(library, RTLD_NOW | RTLD_LOCAL);
    if (!lib->handle)
      ok = iq_error_set(error, library, NULL, "this is a bug in iq; please report it",
                        "cannot load the instrumented library: %s", dlerror());
  }
  unlink(library);
  rmdir(folder);
  return ok && load_symbols(lib, error);
}

/* ---- Entry points --------------------------------------------------------- */

bool iq_calibrate(MlirOperation module, const iq_calibration_options_t *options,
                  iq_error_t **error) {
  iq_calibration_model_t model = {0};
  if (!read_config(module, &model, error) ||
      !iq_calibration_check_options(options, &model, error))
    return false;

  int32_t *tokens = NULL;
  size_t token_count = 0;
  if (!iq_calibration_tokenize(options, &model, &tokens, &token_count, error))
    return false;

  iq_calibration_library_t lib = {0};
  bool ok = build_and_load(module, &model, &lib, error);
  if (ok)
    ok = iq_calibration_run(&lib, &model, options, tokens, token_count, error);
  if (lib.handle)
    dlclose(lib.handle);
  free(tokens);
  return ok;
}

static bool run_calibrate_pass(MlirOperation root, const iq_pass_options_t *pass_options) {
  iq_calibration_options_t options = {
      .text_path = iq_pass_option_string(pass_options, "text"),
      .tokenizer_path = iq_pass_option_string(pass_options, "tokenizer"),
      .output_path = iq_pass_option_string(pass_options, "output"),
      .windows = iq_pass_option_int(pass_options, "windows"),
      .window_length = iq_pass_option_int(pass_options, "length"),
      .sample_rows = iq_pass_option_int(pass_options, "sample-rows"),
      .budget_mib = iq_pass_option_int(pass_options, "budget-mib"),
      .skip_tokens = iq_pass_option_int(pass_options, "skip-tokens"),
      .max_context = iq_pass_option_int(pass_options, "max-context"),
      .seed = (uint64_t)iq_pass_option_int(pass_options, "seed"),
  };
  iq_error_t *error = NULL;
  if (!*options.text_path || !*options.tokenizer_path || !*options.output_path) {
    iq_error_set(&error, NULL, "iq-calibrate",
                 "e.g. --iq-calibrate='text=wiki.txt tokenizer=tok.bin output=model.iqs'",
                 "the options text, tokenizer and output are required");
  } else {
    iq_calibrate(root, &options, &error);
  }
  if (!error)
    return true;
  char *message = iq_error_format(error);
  mlirEmitError(mlirOperationGetLocation(root), message ? message : "iq-calibrate failed");
  free(message);
  iq_error_destroy(error);
  return false;
}

static const iq_pass_option_info_t calibrate_options[] = {
    {"text", IQ_OPTION_STRING, "", "calibration text file (UTF-8)", NULL, 1, 0},
    {"tokenizer", IQ_OPTION_STRING, "",
     "tokenizer of the model: llama2.c tokenizer.bin, GGUF or tokenizer.json", NULL, 1, 0},
    {"output", IQ_OPTION_STRING, "", "statistics file to write (.iqs)", NULL, 1, 0},
    {"windows", IQ_OPTION_INT, "16", "number of calibration windows", NULL, 1, 1 << 20},
    {"length", IQ_OPTION_INT, "512", "tokens per window", NULL, 1, 1 << 20},
    {"sample-rows", IQ_OPTION_INT, "2048",
     "activation rows kept per layer and point for PSOT (at most windows * length)", NULL, 0,
     1LL << 31},
    {"budget-mib", IQ_OPTION_INT, "2048",
     "memory for the statistics accumulators, in MiB; layers that do not fit are recorded in "
     "further passes over the windows",
     NULL, 1, 1 << 24},
    {"skip-tokens", IQ_OPTION_INT, "0",
     "tokens at the start of the text that no window uses (keeps evaluation text out)", NULL, 0,
     1LL << 40},
    {"max-context", IQ_OPTION_INT, "0",
     "the model's context in tokens; longer windows are rejected (0: iq.config max_positions "
     "when recorded, else unchecked)",
     NULL, 0, 1 << 30},
    {"seed", IQ_OPTION_INT, "0", "seed of the window and sample choice", NULL, 0, 1LL << 62},
};

const iq_pass_info_t iq_calibrate_pass = {
    .name = "iq-calibrate",
    .description = "Run the model on text and write activation statistics (leaves the IR unchanged)",
    .options = calibrate_options,
    .num_options = sizeof calibrate_options / sizeof calibrate_options[0],
    .run = run_calibrate_pass,
};
