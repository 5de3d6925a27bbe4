/* iq-compile: an ONNX model (or iq MLIR) to a shared library with the
 * runtime ABI of iq_runtime.h, plus its weight file beside it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llvm-c/Core.h"
#include "llvm-c/TargetMachine.h"
#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/Diagnostics.h"
#include "mlir-c/IR.h"
#include "mlir-c/Pass.h"
#include "mlir-c/RegisterEverything.h"

#include "iq/calibration.h"
#include "iq/conversion.h"
#include "iq/ir.h"
#include "iq/onnx.h"
#include "iq/onnx_import.h"
#include "iq/passes.h"
#include "iq/support.h"
#include "iq/target.h"
#include "iq/weight_overlay.h"

#define EXIT_USAGE 2

typedef enum emit_stage { EMIT_LIBRARY, EMIT_MLIR, EMIT_LLVM, EMIT_ASM, EMIT_OBJ } emit_stage_t;

typedef struct options {
  const char *input, *output, *target, *cpu, *features, *quant, *method, *runtime;
  emit_stage_t emit;
  bool graph; /* --graph: a generic graph, lowered op by op without raising */
  int threads; /* an IQ_THREADS_ value of conversion.h */
  /* --calibration: text to record activation statistics on, with the
   * tokenizer and run options; NULL text_path when not calibrating. */
  iq_calibration_options_t calibration;
  const char *statistics; /* --statistics, or NULL for OUTPUT.iqs */
} options_t;

static void print_usage(FILE *stream) {
  fputs("Usage: iq-compile MODEL.onnx|MODEL.mlir -o OUTPUT [options]\n"
        "\n"
        "Compiles a LLaMA-family model to a shared library with the C interface of\n"
        "iq_runtime.h, and writes its weights beside it (libmodel.so -> libmodel.iqw).\n"
        "\n"
        "Options:\n"
        "  -o FILE                  the library (or, with --emit, the stage's output)\n"
        "  --target=TRIPLE          x86_64-linux-gnu (default on x86-64) or aarch64-linux-gnu\n"
        "  --cpu=NAME               LLVM CPU name; default: this machine's CPU when compiling\n"
        "                           for it, else a generic CPU of the target\n"
        "  --features=LIST          LLVM target features, e.g. +avx2,+fma\n"
        "  --quant=SCHEME           none (float32, default), w4a16 (4-bit weights) or w4a4kv4\n"
        "                           (4-bit weights, activations and KV cache, fake-quantized\n"
        "                           in float32)\n"
        "  --method=METHOD          how weights are prepared: rtn (norms fused, no rotation;\n"
        "                           default), quarot (norms fused, QuaRot rotations) or\n"
        "                           infoquant (learned rotations; not available yet)\n"
        "  --emit=STAGE             stop after a stage: mlir (kernel-level MLIR), llvm (LLVM IR),\n"
        "                           asm (assembly) or obj (object file); the weights of an ONNX\n"
        "                           input are still written beside the output (OUTPUT.iqw)\n"
        "  --runtime=FILE           the target's libiq_runtime.a (default: found beside iq-compile)\n"
        "  --threads=MODE           off (default), auto (linear kernels of large matrices use\n"
        "                           OpenMP threads on x86-64) or on (every linear kernel)\n"
        "  --graph                  compile any ONNX graph with static shapes op by op, to\n"
        "                           iq_graph_forward(slots) instead of the LLaMA interface\n"
        "  --calibration FILE       record activation statistics on this text (the model runs\n"
        "                           on the host) and write them to OUTPUT.iqs; needs --tokenizer\n"
        "  --tokenizer FILE         the model's tokenizer: llama2.c tokenizer.bin, GGUF or\n"
        "                           tokenizer.json\n"
        "  --statistics FILE        where to write the statistics (default: OUTPUT.iqs)\n"
        "  --calibration-windows N  number of windows (default 16)\n"
        "  --calibration-length N   tokens per window (default 512)\n"
        "  --calibration-rows N     activation rows sampled per layer and point (default 2048)\n"
        "  --calibration-budget MIB memory for the statistics accumulators (default 2048);\n"
        "                           layers that do not fit are recorded in further passes\n"
        "  --calibration-skip N     tokens at the start of the text no window uses (default 0)\n"
        "  --calibration-seed N     seed of the window and sample choice (default 0)\n"
        "  --max-context N          the model's context; longer windows are rejected\n"
        "  --help                   show this help\n",
        stream);
}

static int usage_error(const char *format, const char *argument) {
  fputs("iq-compile: error: ", stderr);
  fprintf(stderr, format, argument);
  fputs("; see iq-compile --help\n", stderr);
  return EXIT_USAGE;
}

/* Matches "--name VALUE" or "--name=VALUE", storing VALUE (NULL when it
 * is missing) and advancing *i past a separate value. */
static bool valued_option(int argc, char **argv, int *i, const char *name, const char **value) {
  size_t length = strlen(name);
  const char *arg = argv[*i];
  if (strncmp(arg, name, length) != 0 || (arg[length] != '\0' && arg[length] != '='))
    return false;
  if (arg[length] == '=')
    *value = arg + length + 1;
  else
    *value = *i + 1 < argc ? argv[++*i] : NULL;
  return true;
}

/* Parses a non-negative integer option value into *out. */
static int count_option(const char *name, const char *text, int64_t *out) {
  char *end = NULL;
  errno = 0;
  long long value = text ? strtoll(text, &end, 10) : -1;
  if (!text || errno != 0 || end == text || *end != '\0' || value < 0)
    return usage_error("%s needs a non-negative integer", name);
  *out = value;
  return 0;
}

/* Parses the calibration options at argv[*i]. Returns 1 when argv[*i] is
 * none of them, 0 when it was parsed, or the exit code of a usage error. */
static int parse_calibration_option(int argc, char **argv, int *i, options_t *o) {
  const char *value = NULL;
  iq_calibration_options_t *c = &o->calibration;
  int64_t seed = 0;
  int status = 0;
  if (valued_option(argc, argv, i, "--calibration", &value)) {
    c->text_path = value;
    return value ? 0 : usage_error("%s needs a text file", "--calibration");
  }
  if (valued_option(argc, argv, i, "--tokenizer", &value)) {
    c->tokenizer_path = value;
    return value ? 0 : usage_error("%s needs a tokenizer file", "--tokenizer");
  }
  if (valued_option(argc, argv, i, "--statistics", &value)) {
    o->statistics = value;
    return value ? 0 : usage_error("%s needs a file name", "--statistics");
  }
  if (valued_option(argc, argv, i, "--calibration-windows", &value))
    return count_option("--calibration-windows", value, &c->windows);
  if (valued_option(argc, argv, i, "--calibration-length", &value))
    return count_option("--calibration-length", value, &c->window_length);
  if (valued_option(argc, argv, i, "--calibration-rows", &value))
    return count_option("--calibration-rows", value, &c->sample_rows);
  if (valued_option(argc, argv, i, "--calibration-budget", &value))
    return count_option("--calibration-budget", value, &c->budget_mib);
  if (valued_option(argc, argv, i, "--calibration-skip", &value))
    return count_option("--calibration-skip", value, &c->skip_tokens);
  if (valued_option(argc, argv, i, "--max-context", &value))
    return count_option("--max-context", value, &c->max_context);
  if (valued_option(argc, argv, i, "--calibration-seed", &value)) {
    status = count_option("--calibration-seed", value, &seed);
    c->seed = (uint64_t)seed;
    return status;
  }
  return 1;
}

static int parse_arguments(int argc, char **argv, options_t *o) {
  for (int i = 1; i < argc; ++i) {
    const char *arg = argv[i];
    int calibration_status = parse_calibration_option(argc, argv, &i, o);
    if (calibration_status != 1) {
      if (calibration_status != 0)
        return calibration_status;
      continue;
    }
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      print_usage(stdout);
      return -1;
    } else if (strcmp(arg, "-o") == 0) {
      if (++i == argc)
        return usage_error("%s needs a file name", "-o");
      o->output = argv[i];
    } else if (strncmp(arg, "--target=", 9) == 0) {
      o->target = arg + 9;
    } else if (strncmp(arg, "--cpu=", 6) == 0) {
      o->cpu = arg + 6;
    } else if (strncmp(arg, "--features=", 11) == 0) {
      o->features = arg + 11;
    } else if (strncmp(arg, "--quant=", 8) == 0) {
      o->quant = arg + 8;
    } else if (strncmp(arg, "--method=", 9) == 0) {
      o->method = arg + 9;
    } else if (strcmp(arg, "--graph") == 0) {
      o->graph = true;
    } else if (strncmp(arg, "--threads=", 10) == 0) {
      const char *mode = arg + 10;
      if (strcmp(mode, "auto") == 0)
        o->threads = IQ_THREADS_AUTO;
      else if (strcmp(mode, "on") == 0)
        o->threads = IQ_THREADS_ALWAYS;
      else if (strcmp(mode, "off") == 0)
        o->threads = IQ_THREADS_OFF;
      else
        return usage_error("invalid --threads '%s'; use auto, on or off", mode);
    } else if (strncmp(arg, "--runtime=", 10) == 0) {
      o->runtime = arg + 10;
    } else if (strncmp(arg, "--emit=", 7) == 0) {
      const char *stage = arg + 7;
      if (strcmp(stage, "mlir") == 0)
        o->emit = EMIT_MLIR;
      else if (strcmp(stage, "llvm") == 0)
        o->emit = EMIT_LLVM;
      else if (strcmp(stage, "asm") == 0)
        o->emit = EMIT_ASM;
      else if (strcmp(stage, "obj") == 0)
        o->emit = EMIT_OBJ;
      else
        return usage_error("invalid --emit '%s'; use mlir, llvm, asm or obj", stage);
    } else if (arg[0] == '-') {
      return usage_error("unknown option '%s'", arg);
    } else if (o->input) {
      return usage_error("more than one input ('%s')", arg);
    } else {
      o->input = arg;
    }
  }
  if (!o->input)
    return usage_error("%s", "no input model given");
  if (!o->output)
    return usage_error("%s", "no output given (-o libmodel.so)");
  if (!iq_target_llvm_triple(o->target))
    return usage_error("unsupported --target '%s'; use x86_64-linux-gnu or aarch64-linux-gnu",
                       o->target);
  if (strcmp(o->quant, "none") != 0 && strcmp(o->quant, "w4a16") != 0 &&
      strcmp(o->quant, "w4a4kv4") != 0)
    return usage_error("invalid --quant '%s'; use none, w4a16 or w4a4kv4", o->quant);
  if (strcmp(o->method, "infoquant") == 0)
    return usage_error("--method=%s needs the calibration statistics and PSOT rotations, which "
                       "iq-compile cannot compute yet; use rtn or quarot, or run iq-rotate "
                       "with method=infoquant rotations=FILE in iq-opt",
                       o->method);
  if (strcmp(o->method, "rtn") != 0 && strcmp(o->method, "quarot") != 0)
    return usage_error("invalid --method '%s'; use rtn, quarot or infoquant", o->method);
  if (o->graph && (strcmp(o->quant, "none") != 0 || strcmp(o->method, "rtn") != 0))
    return usage_error("%s compiles float32 graphs only (--quant=none --method=rtn)", "--graph");
  if (!o->calibration.text_path != !o->calibration.tokenizer_path)
    return usage_error("%s", "--calibration and --tokenizer go together: calibration tokenizes "
                             "the text with the model's tokenizer");
  if (o->calibration.text_path && o->graph)
    return usage_error("%s", "--calibration applies to LLaMA models, not to --graph");
  return 0;
}

/* ---- Diagnostics ----------------------------------------------------------- */

static void print_text(MlirStringRef text, void *user_data) {
  fwrite(text.data, 1, text.length, (FILE *)user_data);
}

static MlirLogicalResult print_diagnostic(MlirDiagnostic diagnostic, void *user_data) {
  const char *input = user_data;
  fprintf(stderr, "%s: %s: ", input,
          mlirDiagnosticGetSeverity(diagnostic) == MlirDiagnosticError ? "error" : "note");
  mlirDiagnosticPrint(diagnostic, print_text, stderr);
  fputc('\n', stderr);
  return mlirLogicalResultSuccess();
}

/* ---- Steps ------------------------------------------------------------------ */

static bool ends_with(const char *text, const char *suffix) {
  size_t length = strlen(text), suffix_length = strlen(suffix);
  return length >= suffix_length && strcmp(text + length - suffix_length, suffix) == 0;
}

/* OUTPUT with its extension replaced by `extension` (libmodel.so ->
 * libmodel.iqw). */
static void replace_extension(const char *path, const char *extension, char *out, size_t size) {
  const char *slash = strrchr(path, '/');
  const char *dot = strrchr(path, '.');
  size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - path) : strlen(path);
  snprintf(out, size, "%.*s%s", (int)stem, path, extension);
}

static void directory_of(const char *path, char *out, size_t size) {
  snprintf(out, size, "%s", path);
  char *slash = strrchr(out, '/');
  if (slash)
    *slash = slash == out ? '\0' + 0 : '\0';
  else
    snprintf(out, size, ".");
  if (!*out)
    snprintf(out, size, "/");
}

static bool run_pipeline(MlirContext context, MlirOperation module, const char *pipeline,
                         iq_error_t **error) {
  MlirPassManager pm = mlirPassManagerCreate(context);
  bool ok = iq_pipeline_add(pm, pipeline, error) &&
            mlirLogicalResultIsSuccess(mlirPassManagerRunOnOp(pm, module));
  mlirPassManagerDestroy(pm);
  if (!ok && error && !*error)
    iq_error_set(error, NULL, NULL, NULL, "the pass pipeline '%s' failed (see above)", pipeline);
  return ok;
}

/* Copies the weight store a parsed .mlir module refers to next to the
 * library, so the library and its weights travel together. */
static bool copy_store(MlirOperation module, const char *input, const char *destination,
                       const char *final_path, bool *copied, iq_error_t **error) {
  MlirAttribute attr =
      mlirOperationGetAttributeByName(module, mlirStringRefCreateFromCString("iq.weight_store"));
  if (mlirAttributeIsNull(attr) || !mlirAttributeIsAString(attr))
    return iq_error_set(error, input, NULL, "import the model with iq-opt model.onnx -o model.mlir",
                        "the module names no weight store (iq.weight_store)");
  MlirStringRef reference = mlirStringAttrGetValue(attr);
  char directory[4096], source[8192];
  directory_of(input, directory, sizeof directory);
  if (reference.length > 0 && reference.data[0] == '/')
    snprintf(source, sizeof source, "%.*s", (int)reference.length, reference.data);
  else
    snprintf(source, sizeof source, "%s/%.*s", directory, (int)reference.length, reference.data);
  /* The library's weights are already where they belong when the module
   * refers to the file the library's name implies (c.mlir -> c.so, c.iqw). */
  char *resolved_source = realpath(source, NULL);
  char *resolved_final = realpath(final_path, NULL);
  bool same = resolved_source && resolved_final && strcmp(resolved_source, resolved_final) == 0;
  free(resolved_source);
  free(resolved_final);
  *copied = false;
  if (same)
    return true;
  iq_mapped_file_t *file = iq_mapped_file_open(source, error);
  if (!file)
    return false;
  bool ok = iq_write_file_atomic(destination, file->data ? (const void *)file->data : "",
                                 file->size, error);
  iq_mapped_file_close(file);
  *copied = ok;
  return ok;
}

/* Emits code in a child process. LLVM reports some invalid options (an
 * unknown --cpu, for one) by aborting the process, and iq-compile must
 * still clean up and report what went wrong. */
static bool emit_in_child(MlirOperation module, const iq_target_options_t *target,
                          iq_emit_kind_t kind, const char *path, iq_error_t **error) {
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0)
    return iq_error_set(error, NULL, NULL, NULL, "cannot start code generation: %s",
                        strerror(errno));
  if (pid == 0) {
    iq_error_t *child_error = NULL;
    bool ok = iq_target_emit(module, target, kind, path, &child_error);
    if (!ok)
      iq_error_print(child_error, "iq-compile", stderr);
    fflush(stderr);
    _exit(ok ? 0 : 1);
  }
  int status;
  if (waitpid(pid, &status, 0) < 0)
    return iq_error_set(error, NULL, NULL, NULL, "waiting for code generation failed: %s",
                        strerror(errno));
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return true;
  if (WIFEXITED(status))
    return false; /* the child printed its error */
  return iq_error_set(error, NULL, "--cpu/--features",
                      "check the CPU name and features for the target (llc-19 -mtriple=TRIPLE "
                      "-mcpu=help lists them)",
                      "LLVM aborted code generation for %s (cpu '%s', features '%s'); its message "
                      "is above",
                      target->triple, target->cpu, target->features);
}

/* The passes of --quant and --method, or NULL for the float model as
 * imported. The embedding is not centred, so the float part of every
 * pipeline computes the imported model's function exactly.
 * NOTE: on stories260K, centring (the QuaRot reference does it) measured
 * 2.2 perplexity points worse in float and mixed under quantization. */
static const char *quantization_pipeline(const options_t *o) {
  bool quarot = strcmp(o->method, "quarot") == 0;
  if (strcmp(o->quant, "w4a4kv4") == 0)
    return quarot ? "builtin.module(iq-fuse-norms{centre-embeddings=false},iq-rotate{method=quarot},"
                    "iq-quantize)"
                  : "builtin.module(iq-fuse-norms{centre-embeddings=false},iq-quantize)";
  if (strcmp(o->quant, "w4a16") == 0)
    return quarot ? "builtin.module(iq-fuse-norms{centre-embeddings=false},iq-rotate{method=quarot},"
                    "iq-quantize{a-bits=16 kv=none})"
                  : "builtin.module(iq-fuse-norms{centre-embeddings=false},"
                    "iq-quantize{a-bits=16 kv=none})";
  return quarot ? "builtin.module(iq-fuse-norms{centre-embeddings=false},iq-rotate{method=quarot})"
                : NULL;
}

static int compile(const options_t *o) {
  iq_error_t *error = NULL;
  char store_final[4096];
  replace_extension(o->output, ".iqw", store_final, sizeof store_final);

  /* Everything is written into a staging folder beside the output and
   * renamed into place at the end, so a failure leaves earlier outputs
   * (and an input's own weight store) untouched and no partial files. */
  char output_dir[4096], staging[4200], store_path[8400], staged_output[8400], object_path[4400];
  directory_of(o->output, output_dir, sizeof output_dir);
  snprintf(staging, sizeof staging, "%s/.iq-compile.XXXXXX", output_dir);
  if (!mkdtemp(staging)) {
    fprintf(stderr, "iq-compile: error: %s: cannot create a staging folder: %s\n", output_dir,
            strerror(errno));
    return 1;
  }
  const char *store_name = strrchr(store_final, '/') ? strrchr(store_final, '/') + 1 : store_final;
  const char *output_name = strrchr(o->output, '/') ? strrchr(o->output, '/') + 1 : o->output;
  snprintf(store_path, sizeof store_path, "%s/%s", staging, store_name);
  snprintf(staged_output, sizeof staged_output, "%s/%s", staging, output_name);
  snprintf(object_path, sizeof object_path, "%s/object.o", staging);
  bool wrote_store = false;

  mlirRegisterAllPasses();
  MlirContext context = iq_context_create();
  if (mlirContextIsNull(context))
    return 1;
  mlirContextAttachDiagnosticHandler(context, print_diagnostic, (void *)o->input, NULL);

  /* 1. Import or parse. */
  MlirModule module = {NULL};
  if (ends_with(o->input, ".onnx")) {
    iq_progress_t *progress = iq_progress_start("import", 1, "models", stderr, false);
    iq_onnx_model_t *model = iq_onnx_model_load(o->input, &error);
    if (model) {
      iq_onnx_import_options_t import_options = {
          .weight_store_path = store_path,
          .weight_store_reference = store_name,
          .inline_limit_bytes = IQ_ONNX_DEFAULT_INLINE_LIMIT,
      };
      module = iq_onnx_import(context, model, &import_options, &error);
      wrote_store = !mlirModuleIsNull(module);
      iq_onnx_model_destroy(model);
    }
    iq_progress_update(progress, 1);
    iq_progress_finish(progress);
    char directory[4096];
    directory_of(store_path, directory, sizeof directory);
    iq_weight_store_set_base_dir(directory);
  } else {
    size_t size;
    char *text = iq_read_text_file(o->input, &size, &error);
    if (text) {
      module = mlirModuleCreateParse(context, mlirStringRefCreate(text, size));
      free(text);
      if (mlirModuleIsNull(module))
        iq_error_set(&error, o->input, NULL, NULL, "the input is not valid MLIR (see above)");
      char directory[4096];
      directory_of(o->input, directory, sizeof directory);
      iq_weight_store_set_base_dir(directory);
    }
  }

  bool ok = !mlirModuleIsNull(module);
  MlirOperation root = ok ? mlirModuleGetOperation(module) : (MlirOperation){NULL};
  if (ok && !ends_with(o->input, ".onnx") && o->emit == EMIT_LIBRARY) {
    ok = copy_store(root, o->input, store_path, store_final, &wrote_store, &error);
  }

  /* 2. Raise to canonical ops unless the input already is canonical. */
  if (ok && !o->graph && mlirAttributeIsNull(mlirOperationGetAttributeByName(
                root, mlirStringRefCreateFromCString("iq.config")))) {
    iq_log(IQ_LOG_INFO, "raising the LLaMA structure");
    ok = run_pipeline(context, root, "builtin.module(iq-raise-llama)", &error);
  }
  ok = ok && iq_verify(root);

  /* 2b. Record activation statistics on the calibration text. */
  char statistics_path[4096];
  if (ok && o->calibration.text_path) {
    if (o->statistics)
      snprintf(statistics_path, sizeof statistics_path, "%s", o->statistics);
    else
      replace_extension(o->output, ".iqs", statistics_path, sizeof statistics_path);
    iq_calibration_options_t calibration = o->calibration;
    calibration.output_path = statistics_path;
    ok = iq_calibrate(root, &calibration, &error);
    if (ok)
      fprintf(stderr, "iq-compile: wrote %s\n", statistics_path);
  }

  /* 2c. Quantization, after calibration saw the float model: fuse the
   * norms, rotate for QuaRot, then quantize. The passes keep their new
   * weights in memory until they are written into the library's store. */
  const char *quant_pipeline = quantization_pipeline(o);
  if (ok && quant_pipeline) {
    iq_log(IQ_LOG_INFO, "quantization pipeline: %s", quant_pipeline);
    ok = run_pipeline(context, root, quant_pipeline, &error) && iq_verify(root);
    if (ok && iq_overlay_pending()) {
      ok = iq_overlay_write_store(root, store_path, store_name, &error);
      wrote_store = wrote_store || ok;
    }
  }
  iq_overlay_reset();

  /* 3. Lower to kernels and on to the LLVM dialect. */
  char *source = NULL;
  if (ok) {
    /* LLVM's OpenMP runtime is installed for the host only, so AArch64
     * libraries keep single-threaded kernels. */
    iq_lowering_options_t lowering = {.target = o->target, .quantization = o->quant,
                                      .threads = o->threads};
    if (strncmp(o->target, "x86_64", 6) != 0 && lowering.threads != IQ_THREADS_OFF) {
      iq_log(IQ_LOG_WARNING, "--threads applies to x86-64 only (no OpenMP runtime is installed "
                             "for %s); compiling single-threaded kernels", o->target);
      lowering.threads = IQ_THREADS_OFF;
    }
    source = o->graph ? iq_lower_graph_to_source(root, &error)
                      : iq_lower_to_kernel_source(root, &lowering, &error);
    ok = source != NULL;
  }
  bool emitted_source = false;
  if (ok && o->emit == EMIT_MLIR) {
    ok = iq_write_file_atomic(staged_output, source, strlen(source), &error);
    emitted_source = true;
  }
  MlirModule lowered = {NULL};
  bool uses_openmp = source && strstr(source, "scf.parallel") != NULL;
  if (ok && !emitted_source) {
    lowered = mlirModuleCreateParse(context, mlirStringRefCreateFromCString(source));
    ok = !mlirModuleIsNull(lowered) ||
         iq_error_set(&error, o->input, NULL, "this is a bug in iq; please report it",
                      "the generated kernels do not parse (see above)");
  }
  free(source);
  if (ok && !emitted_source) {
    iq_progress_t *progress = iq_progress_start("codegen", 1, "modules", stderr, false);
    ok = run_pipeline(context, mlirModuleGetOperation(lowered), iq_llvm_lowering_pipeline, &error);

    /* 4. Emit, then link with the runtime. */
    char *host_cpu = NULL, *host_features = NULL;
    const char *cpu = o->cpu, *features = o->features;
    bool native = strncmp(o->target, "x86_64", 6) == 0;
#if !defined(__x86_64__)
    native = strncmp(o->target, "aarch64", 7) == 0;
#endif
    if (!cpu && native) {
      host_cpu = LLVMGetHostCPUName();
      host_features = LLVMGetHostCPUFeatures();
      cpu = host_cpu;
      if (!features)
        features = host_features;
    }
    iq_target_options_t target = {.triple = o->target,
                                  .cpu = cpu ? cpu : (native ? "" : "generic"),
                                  .features = features ? features : ""};
    const char *emit_path = o->emit == EMIT_LIBRARY ? object_path : staged_output;
    iq_emit_kind_t kind = o->emit == EMIT_LLVM  ? IQ_EMIT_LLVM_IR
                          : o->emit == EMIT_ASM ? IQ_EMIT_ASSEMBLY
                                                : IQ_EMIT_OBJECT;
    if (ok)
      ok = emit_in_child(mlirModuleGetOperation(lowered), &target, kind, emit_path, &error);
    iq_progress_update(progress, 1);
    iq_progress_finish(progress);

    if (ok && o->emit == EMIT_LIBRARY) {
      char runtime[4096];
      if (o->runtime)
        snprintf(runtime, sizeof runtime, "%s", o->runtime);
      else if (!iq_target_default_runtime(o->target, runtime, sizeof runtime))
        ok = iq_error_set(&error, NULL, "--runtime",
                          "build it (cmake --build build) or pass --runtime=FILE",
                          "the runtime archive for %s was not found beside iq-compile",
                          o->target);
      ok = ok && iq_target_link_shared(o->target, object_path, runtime, uses_openmp,
                                       staged_output, &error);
    }
    if (host_cpu)
      LLVMDisposeMessage(host_cpu);
    if (host_features)
      LLVMDisposeMessage(host_features);
  }

  if (!mlirModuleIsNull(lowered))
    mlirModuleDestroy(lowered);
  if (!mlirModuleIsNull(module))
    mlirModuleDestroy(module);
  iq_context_destroy(context);
  /* Move the results into place: the weights first, so a library never
   * appears without its weights. */
  if (ok && wrote_store && rename(store_path, store_final) != 0)
    ok = iq_error_set(&error, store_final, NULL, "check the folder's permissions",
                      "cannot move the weight store into place: %s", strerror(errno));
  if (ok && rename(staged_output, o->output) != 0)
    ok = iq_error_set(&error, o->output, NULL, "check the folder's permissions",
                      "cannot move the output into place: %s", strerror(errno));
  unlink(object_path);
  unlink(staged_output);
  unlink(store_path);
  rmdir(staging);

  if (!ok) {
    if (error)
      iq_error_print(error, "iq-compile", stderr);
    iq_error_destroy(error);
    return 1;
  }
  if (o->emit == EMIT_LIBRARY)
    fprintf(stderr, "iq-compile: wrote %s and %s\n", o->output, store_final);
  return 0;
}

int main(int argc, char **argv) {
  /* NOTE: threads are off by default because the OpenMP-outlined linear
   * loops currently lose LLVM's vectorization and measured slower than the
   * single-threaded kernels on stories260K; --threads=on|auto opts in. */
  options_t options = {.target = "x86_64-linux-gnu", .quant = "none", .method = "rtn",
                       .threads = IQ_THREADS_OFF};
  options.calibration = (iq_calibration_options_t){
      .windows = IQ_CALIBRATION_DEFAULT_WINDOWS,
      .window_length = IQ_CALIBRATION_DEFAULT_LENGTH,
      .sample_rows = IQ_CALIBRATION_DEFAULT_SAMPLE_ROWS,
      .budget_mib = IQ_CALIBRATION_DEFAULT_BUDGET_MIB,
  };
#if defined(__aarch64__)
  options.target = "aarch64-linux-gnu";
#endif
  int status = parse_arguments(argc, argv, &options);
  if (status != 0)
    return status < 0 ? 0 : status;
  return compile(&options);
}
