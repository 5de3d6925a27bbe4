/* libFuzzer target for the ONNX importer: every byte string the reader
 * accepts must import into a module or be rejected with an error, without
 * crashing, leaking or undefined behavior. An imported module then goes
 * through iq_verify and the iq-raise-llama pass, as `iq-opt model.onnx
 * --iq-raise-llama` runs it. Built by scripts/fuzz-onnx.sh --target
 * import, not by CMake. */
#include <dirent.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mlir-c/Diagnostics.h"
#include "mlir-c/IR.h"
#include "mlir-c/Pass.h"

#include "iq/ir.h"
#include "iq/onnx.h"
#include "iq/onnx_import.h"
#include "iq/passes.h"
#include "iq/support.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The context interns every type, attribute and name it creates and frees
 * them only with the context, so a fresh one replaces it after this many
 * inputs to bound the fuzzer's memory. Creating a context registers every
 * upstream dialect, which is too slow to repeat for each input. */
#define INPUTS_PER_CONTEXT 2000

#define STORE_FILE_NAME "weights.iqw"

static MlirContext context;
static MlirPassManager raise_pipeline;
static size_t inputs_in_context;
/* A folder of its own under $TMPDIR (or /tmp). libFuzzer ends with _Exit
 * after a crash, a timeout or an interrupt, which skips the atexit clean-up
 * and leaves the folder behind. scripts/fuzz-onnx.sh therefore points
 * TMPDIR into its work folder and empties that before each run. */
static char temp_dir[4096];
static char store_path[4096 + sizeof STORE_FILE_NAME];
/* Set by the environment variable IQ_FUZZ_VERBOSE, for triaging one input:
 * diagnostics and import errors are printed instead of dropped. */
static bool verbose;

static void print_to_stderr(MlirStringRef text, void *user_data) {
  (void)user_data;
  fwrite(text.data, 1, text.length, stderr);
}

/* Drops every diagnostic unless `verbose` is set: fuzzed models fail import
 * and verification all the time, and printing each message would bury
 * libFuzzer's own output. */
static MlirLogicalResult handle_diagnostic(MlirDiagnostic diagnostic, void *user_data) {
  (void)user_data;
  if (verbose) {
    mlirDiagnosticPrint(diagnostic, print_to_stderr, NULL);
    fputc('\n', stderr);
  }
  return mlirLogicalResultSuccess();
}

static void destroy_context(void) {
  if (!mlirPassManagerIsNull(raise_pipeline))
    mlirPassManagerDestroy(raise_pipeline);
  raise_pipeline = (MlirPassManager){NULL};
  iq_context_destroy(context);
  context = (MlirContext){NULL};
}

static void create_context(void) {
  context = iq_context_create();
  if (mlirContextIsNull(context)) {
    fputs("onnx_import_fuzzer: error: cannot create the MLIR context\n", stderr);
    abort();
  }
  mlirContextAttachDiagnosticHandler(context, handle_diagnostic, NULL, NULL);

  /* The pass manager's own verifier stays off so that this target can tell
   * a failed pass from a pass that succeeded but left invalid IR. */
  raise_pipeline = mlirPassManagerCreate(context);
  mlirPassManagerEnableVerifier(raise_pipeline, false);
  iq_error_t *error = NULL;
  if (!iq_pipeline_add(raise_pipeline, "iq-raise-llama", &error)) {
    iq_error_print(error, "onnx_import_fuzzer", stderr);
    abort();
  }
  inputs_in_context = 0;
}

static void clean_up(void) {
  destroy_context();
  unlink(store_path);
  rmdir(temp_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  const char *tmp = getenv("TMPDIR");
  snprintf(temp_dir, sizeof temp_dir, "%s/iq-onnx-import-fuzz-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(temp_dir)) {
    perror("onnx_import_fuzzer: error: cannot create a temporary folder");
    abort();
  }
  snprintf(store_path, sizeof store_path, "%s/%s", temp_dir, STORE_FILE_NAME);
  /* The raise pass resolves the module's relative weight store reference
   * against this folder. */
  iq_weight_store_set_base_dir(temp_dir);
  verbose = getenv("IQ_FUZZ_VERBOSE") != NULL;
  iq_log_set_level(verbose ? IQ_LOG_INFO : IQ_LOG_ERROR);
  create_context();
  atexit(clean_up);
  return 0;
}

static bool temp_dir_is_empty(void) {
  DIR *dir = opendir(temp_dir);
  if (!dir) {
    perror("onnx_import_fuzzer: error: cannot list the temporary folder");
    abort();
  }
  bool empty = true;
  for (struct dirent *entry; empty && (entry = readdir(dir)) != NULL;)
    empty = strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0;
  closedir(dir);
  return empty;
}

/* Runs iq-raise-llama on a verified module, and aborts when the pass
 * reports success but leaves IR that fails verification. */
static void raise_module(MlirOperation root) {
  bool raised = mlirLogicalResultIsSuccess(mlirPassManagerRunOnOp(raise_pipeline, root));
  if (verbose)
    fprintf(stderr, "onnx_import_fuzzer: iq-raise-llama %s\n", raised ? "succeeded" : "failed");
  if (raised && !(mlirOperationVerify(root) && iq_verify(root))) {
    fputs("onnx_import_fuzzer: iq-raise-llama succeeded but left invalid IR (rerun with "
          "IQ_FUZZ_VERBOSE=1 for the diagnostics)\n",
          stderr);
    abort();
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (inputs_in_context++ >= INPUTS_PER_CONTEXT) {
    destroy_context();
    create_context();
  }

  iq_error_t *error = NULL;
  /* No base folder: external data is rejected, so the fuzzer never reads
   * files named by its inputs. */
  iq_onnx_model_t *model = iq_onnx_model_load_buffer(data, size, "fuzz.onnx", NULL, &error);
  if (model == NULL) {
    if (verbose)
      iq_error_print(error, "onnx_import_fuzzer", stderr);
    iq_error_destroy(error);
    return 0;
  }

  iq_onnx_import_options_t options = {
      .weight_store_path = store_path,
      .weight_store_reference = STORE_FILE_NAME,
      .inline_limit_bytes = IQ_ONNX_DEFAULT_INLINE_LIMIT,
  };
  MlirModule module = iq_onnx_import(context, model, &options, &error);
  if (mlirModuleIsNull(module)) {
    /* The importer promises to leave no weight store behind on failure,
     * and the writer's temporary file must go too. */
    if (!temp_dir_is_empty()) {
      fputs("onnx_import_fuzzer: a failed import left files in its weight store folder\n",
            stderr);
      abort();
    }
    if (verbose)
      iq_error_print(error, "onnx_import_fuzzer", stderr);
    iq_error_destroy(error);
    iq_onnx_model_destroy(model);
    return 0;
  }

  /* The importer rejects what it cannot represent, so a module it returns
   * must verify: iq-opt hands it to passes without MLIR's verifier. */
  MlirOperation root = mlirModuleGetOperation(module);
  if (!(mlirOperationVerify(root) && iq_verify(root))) {
    fputs("onnx_import_fuzzer: the importer returned a module that fails verification "
          "(rerun with IQ_FUZZ_VERBOSE=1 for the diagnostics)\n",
          stderr);
    abort();
  }
  raise_module(root);

  mlirModuleDestroy(module);
  unlink(store_path);
  if (!temp_dir_is_empty()) {
    fputs("onnx_import_fuzzer: an import left files beside its weight store\n", stderr);
    abort();
  }
  iq_onnx_model_destroy(model);
  return 0;
}
