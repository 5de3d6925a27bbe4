/* iq-compile: an ONNX model (or iq MLIR) to a shared library with the
 * runtime ABI of iq_runtime.h, plus its weight file beside it. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
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
  const char *weights;    /* --weights: rtn or gptq */
  const char *kv;         /* --kv: k4v4 or k4v16, for --quant=w4a4kv4 */
  const char *lm_head;    /* --lm-head: float or w8a8, for --quant=w4a4kv4 */
  const char *rotations;  /* --rotations, or NULL for OUTPUT.rotations.iqw */
  const char *use_rotations; /* --use-rotations: rotations of an earlier run, so no PSOT */
  iq_psot_options_t psot; /* --block-diag and the --psot-* options */
  const char *kernels;    /* --kernels: "int4", "float", or NULL for the default */
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
        "  --quant=SCHEME           none (float32, default), w4a16 (4-bit weights), w4a4kv4\n"
        "                           (4-bit weights, activations and KV cache) or a4kv4 (float\n"
        "                           weights, 4-bit inputs and KV cache: an ablation that\n"
        "                           isolates the activation error)\n"
        "  --method=METHOD          how weights are prepared: rtn (norms fused, no rotation;\n"
        "                           default), quarot (norms fused, QuaRot rotations) or\n"
        "                           infoquant (PSOT rotations learned on --calibration text,\n"
        "                           see below)\n"
        "  --kv=MODE                KV cache of --quant=w4a4kv4: k4v4 (4-bit K and V; default)\n"
        "                           or k4v16 (4-bit K, float V)\n"
        "  --lm-head=MODE           lm_head of --quant=w4a4kv4: float (default) or w8a8 (8-bit\n"
        "                           weights per output row, 8-bit per-token inputs)\n"
        "  --weights=QUANTIZER      rtn (round to nearest with MSE clip search; default) or\n"
        "                           gptq (needs --calibration: a second calibration run on the\n"
        "                           rotated float graph records the x^T x GPTQ uses)\n"
        "  --kernels=KIND           int4 (default for w4a4kv4): the quantized linears (4-bit\n"
        "                           per-token or per-group inputs, or the 8-bit lm_head) run\n"
        "                           on the generated int4 kernels;\n"
        "                           float: every op runs on float32 kernels (fake quantization)\n"
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
        "  --seed N                 seed of the random rotations: QuaRot's Hadamard signs, and\n"
        "                           PSOT's Hadamard start, shuffles and retractions (default 0)\n"
        "  --help                   show this help\n"
        "\n"
        "InfoQuant (--method=infoquant, needs --calibration): the norm-fused float graph is\n"
        "calibrated keeping every row of every window (--calibration-rows is ignored), PSOT\n"
        "learns each layer's rotations from those rows, and iq-rotate folds them in.\n"
        "  --rotations FILE         where to write the learned rotations (default:\n"
        "                           OUTPUT.rotations.iqw; iq-rotate method=infoquant reads it)\n"
        "  --use-rotations FILE     fold the rotations of an earlier run (its --rotations\n"
        "                           file, same model and --block-diag) instead of calibrating\n"
        "                           and running PSOT again\n"
        "  --block-diag N           blocks of the residual rotations (default 2; must divide\n"
        "                           the hidden size)\n"
        "  --psot-epochs N          PSOT passes over the windows per layer (default 4)\n"
        "  --psot-lr X              PSOT learning rate of the three stages (default 2)\n"
        "  --psot-aug-token X       weight of outlier tokens in the PSOT cost; 1 turns token\n"
        "                           weighting off (default 30)\n"
        "  --psot-keep-best on|off  keep, per stage, the matrices with the lowest loss rather\n"
        "                           than the last ones (default on)\n",
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

/* Parses a finite positive number into *out. */
static int positive_option(const char *name, const char *text, double *out) {
  char *end = NULL;
  errno = 0;
  double value = text ? strtod(text, &end) : -1.0;
  if (!text || errno != 0 || end == text || *end != '\0' || !(value > 0.0) ||
      value > 1e30)
    return usage_error("%s needs a positive number", name);
  *out = value;
  return 0;
}

/* Parses the InfoQuant options at argv[*i], like parse_calibration_option. */
static int parse_psot_option(int argc, char **argv, int *i, options_t *o) {
  const char *value = NULL;
  iq_psot_options_t *psot = &o->psot;
  int64_t count = 0;
  int status = 0;
  if (valued_option(argc, argv, i, "--weights", &value)) {
    o->weights = value;
    return value ? 0 : usage_error("%s needs rtn or gptq", "--weights");
  }
  if (valued_option(argc, argv, i, "--lm-head", &value)) {
    o->lm_head = value;
    if (!value || (strcmp(value, "float") != 0 && strcmp(value, "w8a8") != 0))
      return usage_error("%s needs float or w8a8", "--lm-head");
    return 0;
  }
  if (valued_option(argc, argv, i, "--kv", &value)) {
    o->kv = value;
    if (!value || (strcmp(value, "k4v4") != 0 && strcmp(value, "k4v16") != 0))
      return usage_error("%s needs k4v4 or k4v16", "--kv");
    return 0;
  }
  if (valued_option(argc, argv, i, "--use-rotations", &value)) {
    o->use_rotations = value;
    return value ? 0 : usage_error("%s needs a rotations file", "--use-rotations");
  }
  if (valued_option(argc, argv, i, "--rotations", &value)) {
    o->rotations = value;
    return value ? 0 : usage_error("%s needs a file name", "--rotations");
  }
  if (valued_option(argc, argv, i, "--block-diag", &value)) {
    status = count_option("--block-diag", value, &count);
    if (status == 0 && count < 1)
      return usage_error("%s needs a block count of at least 1", "--block-diag");
    psot->block_diag = (size_t)count;
    return status;
  }
  if (valued_option(argc, argv, i, "--psot-epochs", &value)) {
    status = count_option("--psot-epochs", value, &count);
    if (status == 0 && (count < 1 || count > 1000000))
      return usage_error("%s needs 1 to 1000000 epochs", "--psot-epochs");
    psot->epochs = (int)count;
    return status;
  }
  if (valued_option(argc, argv, i, "--psot-lr", &value)) {
    double lr = 0.0;
    status = positive_option("--psot-lr", value, &lr);
    psot->lr[0] = psot->lr[1] = psot->lr[2] = lr;
    return status;
  }
  if (valued_option(argc, argv, i, "--psot-aug-token", &value))
    return positive_option("--psot-aug-token", value, &psot->aug_token);
  if (valued_option(argc, argv, i, "--psot-keep-best", &value)) {
    if (value && strcmp(value, "on") == 0)
      psot->keep_best = true;
    else if (value && strcmp(value, "off") == 0)
      psot->keep_best = false;
    else
      return usage_error("%s needs on or off", "--psot-keep-best");
    return 0;
  }
  if (valued_option(argc, argv, i, "--seed", &value)) {
    status = count_option("--seed", value, &count);
    psot->seed = (uint64_t)count;
    return status;
  }
  return 1;
}

static int parse_arguments(int argc, char **argv, options_t *o) {
  for (int i = 1; i < argc; ++i) {
    const char *arg = argv[i];
    int calibration_status = parse_calibration_option(argc, argv, &i, o);
    if (calibration_status == 1)
      calibration_status = parse_psot_option(argc, argv, &i, o);
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
    } else if (strncmp(arg, "--kernels=", 10) == 0) {
      o->kernels = arg + 10;
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
      strcmp(o->quant, "w4a4kv4") != 0 && strcmp(o->quant, "a4kv4") != 0)
    return usage_error("invalid --quant '%s'; use none, w4a16, w4a4kv4 or a4kv4", o->quant);
  if (strcmp(o->quant, "a4kv4") == 0 && strcmp(o->weights, "rtn") != 0)
    return usage_error("--quant=a4kv4 keeps the weights float; drop --weights=%s", o->weights);
  if (o->kernels && strcmp(o->kernels, "int4") == 0 && strcmp(o->quant, "a4kv4") == 0)
    return usage_error("%s", "--kernels=int4 needs 4-bit weights; --quant=a4kv4 runs on the "
                             "float kernels");
  if (o->kernels && strcmp(o->kernels, "int4") != 0 && strcmp(o->kernels, "float") != 0)
    return usage_error("invalid --kernels '%s'; use int4 or float", o->kernels);
  if (o->kernels && strcmp(o->kernels, "int4") == 0 && strcmp(o->quant, "w4a16") == 0)
    return usage_error("--kernels=int4 needs 4-bit inputs: use --quant=w4a4kv4, or --quant=none "
                       "for an MLIR input that iq-quantize already quantized (not %s)",
                       o->quant);
  if (o->kernels && strcmp(o->kernels, "int4") == 0 && o->graph)
    return usage_error("%s", "--kernels=int4 applies to LLaMA models, not to --graph");
  if (strcmp(o->method, "rtn") != 0 && strcmp(o->method, "quarot") != 0 &&
      strcmp(o->method, "infoquant") != 0)
    return usage_error("invalid --method '%s'; use rtn, quarot or infoquant", o->method);
  if (strcmp(o->method, "infoquant") == 0 && !o->calibration.text_path && !o->use_rotations)
    return usage_error("--method=%s learns its rotations from activations: give the calibration "
                       "text and the model's tokenizer with --calibration FILE --tokenizer FILE",
                       o->method);
  if (o->use_rotations && strcmp(o->method, "infoquant") != 0)
    return usage_error("%s applies to --method=infoquant", "--use-rotations");
  if (strcmp(o->weights, "rtn") != 0 && strcmp(o->weights, "gptq") != 0)
    return usage_error("invalid --weights '%s'; use rtn or gptq", o->weights);
  if (strcmp(o->weights, "gptq") == 0 && !o->calibration.text_path)
    return usage_error("--weights=%s needs the x^T x of calibration activations: give "
                       "--calibration FILE --tokenizer FILE",
                       o->weights);
  if (strcmp(o->weights, "gptq") == 0 && strcmp(o->quant, "none") == 0)
    return usage_error("--weights=%s quantizes weights: add --quant=w4a16 or --quant=w4a4kv4",
                       o->weights);
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

/* The passes of --method before quantization for rtn and quarot, or NULL
 * for the float model as imported. The embedding is not centred, so the
 * float part of every pipeline computes the imported model's function
 * exactly.
 * NOTE: on stories260K, centring (the QuaRot reference does it) measured
 * 2.2 perplexity points worse in float and mixed under quantization. */
static const char *preparation_pipeline(const options_t *o, char *buffer, size_t size) {
  if (strcmp(o->method, "quarot") == 0) {
    snprintf(buffer, size,
             "builtin.module(iq-fuse-norms{centre-embeddings=false},"
             "iq-rotate{method=quarot seed=%llu})",
             (unsigned long long)o->psot.seed);
    return buffer;
  }
  if (strcmp(o->quant, "none") != 0)
    return "builtin.module(iq-fuse-norms{centre-embeddings=false})";
  return NULL;
}

/* Writes `value` in double quotes for a pipeline option. Rejects a path
 * with a quote in it, which the option syntax cannot carry. */
static bool quote_path(const char *path, char *out, size_t size, iq_error_t **error) {
  if (strchr(path, '"'))
    return iq_error_set(error, path, NULL, "rename the file or folder",
                        "a path with a double quote cannot be passed to a pass");
  snprintf(out, size, "\"%s\"", path);
  return true;
}

/* Writes the tensors the passes added into the library's staged store and
 * points the module and the weight base folder at it, so a calibration run
 * reads the weights as the passes left them. */
static bool flush_weights(MlirOperation root, const char *store_path, const char *store_name,
                          bool *wrote_store, iq_error_t **error) {
  if (!iq_overlay_pending())
    return true;
  if (!iq_overlay_write_store(root, store_path, store_name, error))
    return false;
  *wrote_store = true;
  char directory[4096];
  directory_of(store_path, directory, sizeof directory);
  iq_weight_store_set_base_dir(directory);
  return true;
}

typedef struct stage_clock {
  double start_s;
} stage_clock_t;

static double seconds_now(void) {
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  return (double)now.tv_sec + (double)now.tv_nsec * 1e-9;
}

/* Prints how long the stage since the last call took, for the stage
 * timings of the accuracy benchmark. */
static void stage_done(stage_clock_t *clock, const char *stage) {
  double now = seconds_now();
  fprintf(stderr, "iq-compile: %s took %.1f s\n", stage, now - clock->start_s);
  clock->start_s = now;
}

static bool fold_rotations(MlirContext context, MlirOperation root, const options_t *o,
                           const char *rotations_path, stage_clock_t *clock, iq_error_t **error);

/* InfoQuant's preparation: fuse the norms, calibrate the float graph with
 * every row of every window, learn the PSOT rotations and fold them in,
 * or with --use-rotations fold in the rotations of an earlier run. */
static bool prepare_infoquant(MlirContext context, MlirOperation root, const options_t *o,
                              const char *store_path, const char *store_name, bool *wrote_store,
                              stage_clock_t *clock, iq_error_t **error) {
  if (!run_pipeline(context, root, "builtin.module(iq-fuse-norms{centre-embeddings=false})",
                    error) ||
      !flush_weights(root, store_path, store_name, wrote_store, error))
    return false;

  char statistics_path[4096], rotations_path[4096];
  if (o->use_rotations) {
    snprintf(rotations_path, sizeof rotations_path, "%s", o->use_rotations);
    return fold_rotations(context, root, o, rotations_path, clock, error);
  }
  if (o->statistics)
    snprintf(statistics_path, sizeof statistics_path, "%s", o->statistics);
  else
    replace_extension(o->output, ".iqs", statistics_path, sizeof statistics_path);
  if (o->rotations)
    snprintf(rotations_path, sizeof rotations_path, "%s", o->rotations);
  else
    replace_extension(o->output, ".rotations.iqw", rotations_path, sizeof rotations_path);

  /* iq_psot_layer needs windows x tokens rows, so every row is kept. */
  iq_calibration_options_t calibration = o->calibration;
  calibration.output_path = statistics_path;
  calibration.sample_rows = calibration.windows * calibration.window_length;
  if (!iq_calibrate(root, &calibration, error))
    return false;
  fprintf(stderr, "iq-compile: wrote %s\n", statistics_path);
  stage_done(clock, "calibration of the norm-fused graph");

  if (!iq_psot_write_rotations(root, statistics_path, rotations_path, &o->psot, error))
    return false;
  fprintf(stderr, "iq-compile: wrote %s\n", rotations_path);
  stage_done(clock, "PSOT");
  return fold_rotations(context, root, o, rotations_path, clock, error);
}

/* Runs iq-rotate method=infoquant with the rotations at `rotations_path`. */
static bool fold_rotations(MlirContext context, MlirOperation root, const options_t *o,
                           const char *rotations_path, stage_clock_t *clock,
                           iq_error_t **error) {
  char quoted[4200], pipeline[4600];
  if (!quote_path(rotations_path, quoted, sizeof quoted, error))
    return false;
  /* A quantized model keeps its residual converters in 16 bits, as
   * InfoQuant does. The float model keeps float32 ones, so it computes the
   * imported model's function to float32 rounding. */
  snprintf(pipeline, sizeof pipeline,
           "builtin.module(iq-rotate{method=infoquant block-diag=%zu rotations=%s "
           "converters=%s})",
           o->psot.block_diag, quoted, strcmp(o->quant, "none") != 0 ? "f16" : "f32");
  if (!run_pipeline(context, root, pipeline, error) || !iq_verify(root))
    return false;
  stage_done(clock, "rotation");
  return true;
}

/* Quantizes the prepared graph. With --weights=gptq the graph as it is now
 * (norms fused, rotations folded, float) is calibrated once more for x^T x
 * only, into a file in the staging folder. */
static bool quantize_graph(MlirContext context, MlirOperation root, const options_t *o,
                           const char *store_path, const char *store_name, const char *staging,
                           bool *wrote_store, stage_clock_t *clock, iq_error_t **error) {
  char weights_options[4600] = "";
  char hessians_path[4400] = "";
  bool ok = true;
  if (strcmp(o->weights, "gptq") == 0) {
    snprintf(hessians_path, sizeof hessians_path, "%s/gptq.iqs", staging);
    iq_calibration_options_t calibration = o->calibration;
    calibration.output_path = hessians_path;
    calibration.sample_rows = 0;
    char quoted[4500];
    ok = flush_weights(root, store_path, store_name, wrote_store, error) &&
         iq_calibrate(root, &calibration, error) &&
         quote_path(hessians_path, quoted, sizeof quoted, error);
    if (ok) {
      snprintf(weights_options, sizeof weights_options, " weights=gptq statistics=%s", quoted);
      stage_done(clock, "x^T x calibration of the rotated graph for GPTQ");
    }
  }
  char pipeline[4800 + sizeof weights_options];
  if (strcmp(o->quant, "w4a16") == 0)
    snprintf(pipeline, sizeof pipeline, "builtin.module(iq-quantize{a-bits=16 kv=none%s})",
             weights_options);
  else if (strcmp(o->quant, "a4kv4") == 0)
    snprintf(pipeline, sizeof pipeline, "builtin.module(iq-quantize{w-bits=16 kv=%s})", o->kv);
  else
    snprintf(pipeline, sizeof pipeline, "builtin.module(iq-quantize{kv=%s lm-head=%s%s})", o->kv,
             o->lm_head ? o->lm_head : "float", weights_options);
  if (ok) {
    iq_log(IQ_LOG_INFO, "quantization pipeline: %s", pipeline);
    ok = run_pipeline(context, root, pipeline, error) && iq_verify(root);
    if (ok)
      stage_done(clock, "weight quantization");
  }
  if (*hessians_path)
    unlink(hessians_path);
  return ok;
}

/* Whether marked linears run on the int4 kernels: --kernels, by default
 * for w4a4kv4. */
static bool int4_kernels(const options_t *o) {
  if (o->kernels)
    return strcmp(o->kernels, "int4") == 0;
  return strcmp(o->quant, "w4a4kv4") == 0;
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

  stage_clock_t clock = {.start_s = seconds_now()};
  bool infoquant = strcmp(o->method, "infoquant") == 0;

  /* 2b. Record activation statistics of the imported graph on the
   * calibration text. InfoQuant records them on the norm-fused graph
   * instead (prepare_infoquant). With --weights=gptq the text serves the
   * x^T x of the rotated graph, so the imported graph is recorded only
   * when --statistics names its file. */
  char statistics_path[4096];
  bool gptq_only = strcmp(o->weights, "gptq") == 0 && !o->statistics;
  if (ok && o->calibration.text_path && !infoquant && !gptq_only) {
    if (o->statistics)
      snprintf(statistics_path, sizeof statistics_path, "%s", o->statistics);
    else
      replace_extension(o->output, ".iqs", statistics_path, sizeof statistics_path);
    iq_calibration_options_t calibration = o->calibration;
    calibration.output_path = statistics_path;
    ok = iq_calibrate(root, &calibration, &error);
    if (ok) {
      fprintf(stderr, "iq-compile: wrote %s\n", statistics_path);
      stage_done(&clock, "calibration");
    }
  }

  /* Quantization: fuse the norms, rotate (QuaRot or InfoQuant), then
   * quantize. The passes keep their new weights in memory until they are
   * written into the library's store. */
  char preparation_buffer[256];
  const char *preparation =
      infoquant ? NULL : preparation_pipeline(o, preparation_buffer, sizeof preparation_buffer);
  if (ok && infoquant)
    ok = prepare_infoquant(context, root, o, store_path, store_name, &wrote_store, &clock, &error);
  if (ok && preparation) {
    iq_log(IQ_LOG_INFO, "preparation pipeline: %s", preparation);
    ok = run_pipeline(context, root, preparation, &error) && iq_verify(root);
    if (ok)
      stage_done(&clock, "norm fusion and rotation");
  }
  if (ok && strcmp(o->quant, "none") != 0)
    ok = quantize_graph(context, root, o, store_path, store_name, staging, &wrote_store, &clock,
                        &error);
  /* The int4 path packs the weights of the W4A4 linears, which an MLIR
   * input may already contain without --quant. */
  if (ok && !o->graph && int4_kernels(o)) {
    iq_log(IQ_LOG_INFO, "packing the int4 weights");
    ok = run_pipeline(context, root, "builtin.module(iq-pack-int4)", &error) && iq_verify(root);
  }
  if (ok && iq_overlay_pending()) {
    ok = iq_overlay_write_store(root, store_path, store_name, &error);
    wrote_store = wrote_store || ok;
  }
  iq_overlay_reset();

  /* 3. Lower to kernels and on to the LLVM dialect. */
  char *source = NULL;
  if (ok) {
    /* LLVM's OpenMP runtime is installed for the host only, so AArch64
     * libraries keep single-threaded kernels. */
    iq_lowering_options_t lowering = {.target = o->target, .quantization = o->quant,
                                      .threads = o->threads, .int4_kernels = int4_kernels(o)};
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
  bool uses_int4 = source && (strstr(source, "@iq_int4_linear") != NULL ||
                              strstr(source, "@iq_int8_linear") != NULL);
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
      if (uses_int4)
        ok = ok && iq_target_link_shared_int4(o->target, object_path, runtime, uses_openmp,
                                              staged_output, &error);
      else
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
                       .weights = "rtn", .kv = "k4v4", .threads = IQ_THREADS_OFF};
  iq_psot_options_init(&options.psot);
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
