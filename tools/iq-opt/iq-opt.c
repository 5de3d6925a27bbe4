/* iq-opt: reads MLIR, runs iq and upstream passes, writes MLIR. The
 * command-line conventions follow mlir-opt. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mlir-c/IR.h"
#include "mlir-c/Pass.h"
#include "mlir-c/RegisterEverything.h"

#include "diagnostics.h"
#include "iq/ir.h"
#include "iq/onnx.h"
#include "iq/onnx_import.h"
#include "iq/passes.h"
#include "iq/weight_overlay.h"
#include "iq/statistics.h"
#include "iq/support.h"

#define IQ_OPT_VERSION "0.1.0"

typedef struct options {
  const char *input;
  const char *output;
  const char *pipeline; /* --pass-pipeline, or NULL */
  char *flag_pipeline;  /* pipeline assembled from per-pass flags, or NULL */
  const char *split_marker; /* NULL unless --split-input-file */
  bool verify_diagnostics;
  bool print_generic;
  bool print_debug_info;
  bool allow_unregistered;
  const char *weight_store; /* --weight-store, or NULL for the default */
  const char *stats_dump;   /* --iq-stats-dump: a statistics file to summarize */
  const char *stats_csv;    /* --iq-stats-csv: where the dump writes per-channel CSV */
} options_t;

static void print_usage(FILE *stream) {
  fputs("Usage: iq-opt [options] [input.mlir | model.onnx]\n"
        "\n"
        "Reads MLIR (from stdin when the input is '-' or absent) or an ONNX model (.onnx),\n"
        "runs the requested passes and writes MLIR. Passes are named one flag each, in order, or all at once with\n"
        "--pass-pipeline; both accept iq passes and upstream MLIR passes.\n"
        "\n"
        "Options:\n"
        "  -o FILE                       write the output to FILE instead of stdout\n"
        "  --pass-pipeline=PIPELINE      run PIPELINE, e.g.\n"
        "                                'builtin.module(iq-canonicalize,func.func(cse),canonicalize)'\n"
        "  --split-input-file[=MARKER]   process each part between MARKER lines (default\n"
        "                                '// -----') on its own; the output joins them\n"
        "  --verify-diagnostics          check diagnostics against expected-error,\n"
        "                                expected-warning, expected-note and expected-remark\n"
        "                                comments ({{text}}, optionally @above, @below, @+N,\n"
        "                                @-N or @unknown) instead of printing them\n"
        "  --mlir-print-op-generic       print every op in the generic form\n"
        "  --mlir-print-debuginfo        print locations\n"
        "  --allow-unregistered-dialect  accept ops of dialects that are not registered\n"
        "  --weight-store=FILE           where to write the weights of an .onnx input, or the\n"
        "                                weights that passes rewrote (default: the output's\n"
        "                                name with .iqw; for an .onnx input written to stdout,\n"
        "                                the model's name with .iqw in the current folder)\n"
        "  --iq-stats-dump=FILE          print a per-layer summary of a calibration statistics\n"
        "                                file (.iqs) instead of processing an input\n"
        "  --iq-stats-csv=FILE           with --iq-stats-dump: also write per-channel CSV to FILE\n"
        "  --log-level=LEVEL             error, warning (default), info or debug\n"
        "  --help                        show this help and exit\n"
        "  --version                     show the version and exit\n"
        "  --<pass>[=OPTIONS]            add a pass; OPTIONS are 'name=value' items separated\n"
        "                                by spaces or commas, e.g. --iq-canonicalize=max-iterations=3.\n"
        "                                Upstream passes use mlir-opt's names (--canonicalize, --cse).\n"
        "\n"
        "iq passes:\n",
        stream);
  iq_passes_print_help(stream);
}

/* Appends "name{options}" for a --name[=options] flag to the pipeline built
 * from flags. Returns false when out of memory. */
static bool append_flag_pass(options_t *options, const char *flag) {
  const char *equals = strchr(flag, '=');
  size_t name_length = equals ? (size_t)(equals - flag) : strlen(flag);
  const char *pass_options = equals ? equals + 1 : "";
  size_t old_length = options->flag_pipeline ? strlen(options->flag_pipeline) : 0;
  size_t length = old_length + 1 + name_length + strlen(pass_options) + 3;
  char *pipeline = realloc(options->flag_pipeline, length);
  if (!pipeline)
    return false;
  if (!options->flag_pipeline)
    pipeline[0] = '\0';
  options->flag_pipeline = pipeline;
  char *end = pipeline + old_length;
  if (old_length > 0)
    *end++ = ',';
  if (*pass_options)
    snprintf(end, length - (size_t)(end - pipeline), "%.*s{%s}", (int)name_length, flag,
             pass_options);
  else
    snprintf(end, length - (size_t)(end - pipeline), "%.*s", (int)name_length, flag);
  return true;
}

/* Exit status for a malformed command line, as documented. */
#define EXIT_USAGE 2

static int usage_error(const char *format, const char *argument) {
  fputs("iq-opt: error: ", stderr);
  fprintf(stderr, format, argument);
  fputs("; see iq-opt --help\n", stderr);
  return EXIT_USAGE;
}

/* Matches a flag that takes no value: "--name" exactly. "--name=..." is a
 * usage error reported by the caller. */
static bool is_flag(const char *arg, const char *name, bool *has_value) {
  size_t length = strlen(name);
  if (strncmp(arg, name, length) != 0)
    return false;
  *has_value = arg[length] == '=';
  return arg[length] == '\0' || arg[length] == '=';
}

/* Returns 0 to continue, -1 to stop with success (after --help), or the
 * exit code to stop with. */
static int parse_arguments(int argc, char **argv, options_t *options) {
  bool positional_only = false;
  for (int i = 1; i < argc; ++i) {
    const char *arg = argv[i];
    bool has_value = false;
    if (positional_only || arg[0] != '-' || strcmp(arg, "-") == 0) {
      if (options->input) {
        fprintf(stderr, "iq-opt: error: more than one input file ('%s' and '%s')\n",
                options->input, arg);
        return EXIT_USAGE;
      }
      options->input = arg;
    } else if (strcmp(arg, "--") == 0) {
      positional_only = true;
    } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      print_usage(stdout);
      return -1;
    } else if (strcmp(arg, "--version") == 0) {
      printf("iq-opt %s (MLIR %s)\n", IQ_OPT_VERSION, "19.1");
      return -1;
    } else if (strcmp(arg, "-o") == 0 || strncmp(arg, "-o", 2) == 0) {
      /* -o FILE, -o=FILE or -oFILE. */
      const char *path = NULL;
      if (arg[2] == '=')
        path = arg + 3;
      else if (arg[2] != '\0')
        path = arg + 2;
      if (!path && ++i < argc)
        path = argv[i];
      if (!path || !*path)
        return usage_error("%s needs a file name", "-o");
      if (options->output)
        return usage_error("-o is given more than once (last: '%s')", path);
      options->output = path;
    } else if (strncmp(arg, "--pass-pipeline", 15) == 0 && (arg[15] == '=' || !arg[15])) {
      const char *pipeline = arg[15] == '=' ? arg + 16 : (++i < argc ? argv[i] : NULL);
      if (!pipeline)
        return usage_error("%s needs a pipeline", "--pass-pipeline");
      if (options->pipeline)
        return usage_error("%s is given more than once; put every pass in one pipeline",
                           "--pass-pipeline");
      options->pipeline = pipeline;
    } else if (strcmp(arg, "--split-input-file") == 0) {
      options->split_marker = "// -----";
    } else if (strncmp(arg, "--split-input-file=", 19) == 0) {
      options->split_marker = arg + 19;
      if (!*options->split_marker)
        return usage_error("%s needs a marker, e.g. '// -----'", "--split-input-file=");
    } else if (strncmp(arg, "--log-level", 11) == 0 && (arg[11] == '=' || !arg[11])) {
      const char *text = arg[11] == '=' ? arg + 12 : (++i < argc ? argv[i] : NULL);
      iq_log_level_t level;
      if (!text)
        return usage_error("%s needs a level: error, warning, info or debug", "--log-level");
      if (!iq_log_parse_level(text, &level))
        return usage_error("invalid --log-level '%s'; use error, warning, info or debug", text);
      iq_log_set_level(level);
    } else if (strncmp(arg, "--iq-stats-dump=", 16) == 0) {
      options->stats_dump = arg + 16;
      if (!*options->stats_dump)
        return usage_error("%s needs a file name", "--iq-stats-dump=");
    } else if (strncmp(arg, "--iq-stats-csv=", 15) == 0) {
      options->stats_csv = arg + 15;
      if (!*options->stats_csv)
        return usage_error("%s needs a file name", "--iq-stats-csv=");
    } else if (strncmp(arg, "--weight-store=", 15) == 0) {
      options->weight_store = arg + 15;
      if (!*options->weight_store)
        return usage_error("%s needs a file name", "--weight-store=");
    } else if (is_flag(arg, "--verify-diagnostics", &has_value) ||
               is_flag(arg, "--mlir-print-op-generic", &has_value) ||
               is_flag(arg, "--mlir-print-debuginfo", &has_value) ||
               is_flag(arg, "--allow-unregistered-dialect", &has_value)) {
      if (has_value)
        return usage_error("option '%s' takes no value", arg);
      options->verify_diagnostics |= strcmp(arg, "--verify-diagnostics") == 0;
      options->print_generic |= strcmp(arg, "--mlir-print-op-generic") == 0;
      options->print_debug_info |= strcmp(arg, "--mlir-print-debuginfo") == 0;
      options->allow_unregistered |= strcmp(arg, "--allow-unregistered-dialect") == 0;
    } else if (strncmp(arg, "--", 2) == 0) {
      if (!append_flag_pass(options, arg + 2)) {
        fputs("iq-opt: error: out of memory\n", stderr);
        return 1;
      }
    } else {
      return usage_error("unknown option '%s'", arg);
    }
  }
  if (options->pipeline && options->flag_pipeline)
    return usage_error("%s cannot be combined with per-pass flags; put every pass in the "
                       "pipeline",
                       "--pass-pipeline");
  if (!options->input)
    options->input = "-";
  if (!options->output)
    options->output = "-";
  return 0;
}

static void collect_message(MlirStringRef text, void *user_data) {
  char *buffer = user_data;
  size_t used = strlen(buffer);
  size_t room = 1024 - used - 1;
  size_t length = text.length < room ? text.length : room;
  memcpy(buffer + used, text.data, length);
  buffer[used + length] = '\0';
}

/* Checks every per-pass flag on its own, so an error names the flag the
 * user typed: an unknown name, or options the pass rejects. */
static bool check_flag_passes(MlirContext context, const char *flag_pipeline) {
  const char *p = flag_pipeline;
  while (*p) {
    size_t name_length = strcspn(p, "{,");
    const char *next = p + name_length;
    if (*next == '{')
      next = strchr(next, '}') ? strchr(next, '}') + 1 : next + strlen(next);
    char element[1024];
    snprintf(element, sizeof element, "%.*s", (int)(next - p), p);

    const iq_pass_info_t *pass = iq_pass_lookup(p, name_length);
    if (pass) {
      iq_error_t *error = NULL;
      const char *options = name_length < strlen(element) ? element + name_length + 1 : "";
      size_t options_length = strlen(options) > 0 ? strlen(options) - 1 : 0;
      iq_pass_options_t *parsed = iq_pass_options_parse(pass, options, options_length, &error);
      if (!parsed) {
        iq_error_print(error, "iq-opt", stderr);
        iq_error_destroy(error);
        return false;
      }
      iq_pass_options_destroy(parsed);
    } else {
      char message[1024] = "";
      MlirPassManager scratch = mlirPassManagerCreate(context);
      MlirLogicalResult result = mlirOpPassManagerAddPipeline(
          mlirPassManagerGetAsOpPassManager(scratch), mlirStringRefCreateFromCString(element),
          collect_message, message);
      mlirPassManagerDestroy(scratch);
      if (mlirLogicalResultIsFailure(result)) {
        if (strstr(message, "does not refer to a registered pass"))
          fprintf(stderr,
                  "iq-opt: error: unknown option or pass '--%.*s'; iq-opt --help lists the "
                  "options and iq passes, and upstream passes use mlir-opt's names\n",
                  (int)name_length, p);
        else
          fprintf(stderr, "iq-opt: error: invalid options for pass '--%.*s': %s\n",
                  (int)name_length, p,
                  *message ? message : "MLIR rejected them (its message is printed above)");
        return false;
      }
    }
    p = *next == ',' ? next + 1 : next;
  }
  return true;
}

/* ---- Processing --------------------------------------------------------- */

typedef struct output_buffer {
  char *data;
  size_t length, capacity;
  bool failed;
} output_buffer_t;

static void output_append(output_buffer_t *output, const char *text, size_t length) {
  if (output->failed)
    return;
  if (output->length + length + 1 > output->capacity) {
    size_t capacity = (output->capacity + length + 1) * 2;
    char *data = realloc(output->data, capacity);
    if (!data) {
      output->failed = true;
      return;
    }
    output->data = data;
    output->capacity = capacity;
  }
  memcpy(output->data + output->length, text, length);
  output->length += length;
  output->data[output->length] = '\0';
}

static void print_callback(MlirStringRef text, void *user_data) {
  output_append(user_data, text.data, text.length);
}

static void print_module(MlirOperation root, const options_t *options, output_buffer_t *output) {
  MlirOpPrintingFlags flags = mlirOpPrintingFlagsCreate();
  if (options->print_generic)
    mlirOpPrintingFlagsPrintGenericOpForm(flags);
  if (options->print_debug_info)
    mlirOpPrintingFlagsEnableDebugInfo(flags, true, false);
  mlirOperationPrintWithFlags(root, flags, print_callback, output);
  mlirOpPrintingFlagsDestroy(flags);
  output_append(output, "\n", 1);
}

/* Writes the tensors that passes added to the weight overlay, with every
 * other tensor the module still names, into a new store: --weight-store,
 * or the output's name with .iqw. Records the path in `written` so the
 * caller can remove the file if a later step fails. */
static bool write_rewritten_weights(MlirOperation root, const options_t *options, char *written,
                                    size_t written_size) {
  if (!iq_overlay_pending())
    return true;
  char path[4096];
  const char *reference;
  if (options->weight_store) {
    snprintf(path, sizeof path, "%s", options->weight_store);
    reference = options->weight_store;
  } else if (strcmp(options->output, "-") != 0) {
    const char *slash = strrchr(options->output, '/');
    const char *dot = strrchr(options->output, '.');
    size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - options->output)
                                                 : strlen(options->output);
    snprintf(path, sizeof path, "%.*s.iqw", (int)stem, options->output);
    reference = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
  } else {
    iq_overlay_reset();
    fputs("iq-opt: error: the passes rewrote weights, which need a new weight store; give an "
          "output file (-o FILE) or --weight-store=FILE\n",
          stderr);
    return false;
  }
  iq_error_t *error = NULL;
  if (!iq_overlay_write_store(root, path, reference, &error)) {
    iq_error_print(error, "iq-opt", stderr);
    iq_error_destroy(error);
    iq_overlay_reset();
    return false;
  }
  snprintf(written, written_size, "%s", path);
  iq_log(IQ_LOG_INFO, "wrote the rewritten weights to %s", path);
  return true;
}

static char rewritten_store_path[4096];

/* Parses, verifies, transforms and prints one chunk that starts on line
 * `first_line` of the input. Diagnostics go to the context's handler. */
static bool process_chunk(MlirContext context, MlirPassManager pm, const options_t *options,
                          const char *chunk, size_t chunk_length, long first_line,
                          output_buffer_t *output) {
  /* Leading newlines give the parser's locations the line numbers of the
   * original file, which diagnostics and expected-* comments refer to. */
  size_t padding = (size_t)(first_line - 1);
  char *text = malloc(padding + chunk_length + 1);
  if (!text) {
    fputs("iq-opt: error: out of memory\n", stderr);
    return false;
  }
  memset(text, '\n', padding);
  memcpy(text + padding, chunk, chunk_length);
  text[padding + chunk_length] = '\0';

  MlirModule module = mlirModuleCreateParse(context, mlirStringRefCreate(text, padding + chunk_length));
  free(text);
  if (mlirModuleIsNull(module))
    return false;

  MlirOperation root = mlirModuleGetOperation(module);
  iq_overlay_reset();
  bool ok = iq_verify(root);
  if (ok && !mlirPassManagerIsNull(pm))
    ok = mlirLogicalResultIsSuccess(mlirPassManagerRunOnOp(pm, root)) && iq_verify(root);
  ok = ok && write_rewritten_weights(root, options, rewritten_store_path,
                                     sizeof rewritten_store_path);

  if (ok)
    print_module(root, options, output);
  iq_overlay_reset();
  mlirModuleDestroy(module);
  return ok;
}

/* Returns true when the line starting at `p` begins with `marker` after
 * optional indentation. */
static bool is_marker_line(const char *p, const char *end, const char *marker) {
  while (p < end && (*p == ' ' || *p == '\t'))
    ++p;
  size_t length = strlen(marker);
  return (size_t)(end - p) >= length && memcmp(p, marker, length) == 0;
}

static bool ends_with(const char *text, const char *suffix) {
  size_t length = strlen(text), suffix_length = strlen(suffix);
  return length > suffix_length && strcmp(text + length - suffix_length, suffix) == 0;
}

/* Sets the folder weight store references are resolved against: the
 * folder of `path`, or `path` itself when `is_file` is false. */
static void set_base_dir_of(const char *path, bool is_file) {
  char dir[4096];
  snprintf(dir, sizeof dir, "%s", path);
  char *slash = is_file ? strrchr(dir, '/') : NULL;
  if (is_file && !slash)
    snprintf(dir, sizeof dir, ".");
  else if (slash)
    *slash = '\0';
  iq_weight_store_set_base_dir(*dir ? dir : "/");
}

/* Chooses where the weights of an imported model go, and how the module
 * names that file: beside the output with the extension .iqw, or beside
 * the model's name in the current folder when the output is stdout. */
static bool weight_store_location(const options_t *options, char *path, size_t size,
                                  const char **reference) {
  const char *base = strcmp(options->output, "-") != 0 ? options->output : options->input;
  if (options->weight_store) {
    snprintf(path, size, "%s", options->weight_store);
    *reference = options->weight_store;
    return true;
  }
  if (base == options->input) {
    const char *slash = strrchr(base, '/');
    base = slash ? slash + 1 : base;
  }
  const char *slash = strrchr(base, '/');
  const char *dot = strrchr(base, '.');
  size_t stem = dot && (!slash || dot > slash) ? (size_t)(dot - base) : strlen(base);
  if ((size_t)snprintf(path, size, "%.*s.iqw", (int)stem, base) >= size)
    return false;
  const char *name = strrchr(path, '/');
  *reference = name ? name + 1 : path;
  return true;
}

/* Imports an ONNX model, then verifies, transforms and prints it like an
 * MLIR input. `store_path` receives the weight store's path once it has
 * been written, so the caller can remove it if a later step fails. */
static bool process_onnx(MlirContext context, MlirPassManager pm, const options_t *options,
                         const iq_onnx_model_t *model, output_buffer_t *output, char *store_path,
                         size_t store_path_size) {
  char path[4096];
  const char *reference = NULL;
  if (!weight_store_location(options, path, sizeof path, &reference)) {
    fprintf(stderr, "iq-opt: error: the weight store path derived from '%s' is too long\n",
            options->output);
    return false;
  }

  iq_onnx_import_options_t import_options = {
      .weight_store_path = path,
      .weight_store_reference = reference,
      .inline_limit_bytes = IQ_ONNX_DEFAULT_INLINE_LIMIT,
  };
  iq_error_t *error = NULL;
  MlirModule module = iq_onnx_import(context, model, &import_options, &error);
  if (mlirModuleIsNull(module)) {
    iq_error_print(error, "iq-opt", stderr);
    iq_error_destroy(error);
    return false;
  }
  snprintf(store_path, store_path_size, "%s", path);
  iq_log(IQ_LOG_INFO, "wrote the weights to %s", path);
  /* Passes that read weights resolve the module's reference from here. */
  set_base_dir_of(options->weight_store || strcmp(options->output, "-") == 0 ? "." : path, true);

  MlirOperation root = mlirModuleGetOperation(module);
  iq_overlay_reset();
  bool ok = iq_verify(root);
  if (ok && !mlirPassManagerIsNull(pm))
    ok = mlirLogicalResultIsSuccess(mlirPassManagerRunOnOp(pm, root)) && iq_verify(root);
  ok = ok && write_rewritten_weights(root, options, rewritten_store_path,
                                     sizeof rewritten_store_path);
  if (ok)
    print_module(root, options, output);
  iq_overlay_reset();
  mlirModuleDestroy(module);
  return ok;
}

static bool process_input(MlirContext context, MlirPassManager pm, const options_t *options,
                          const char *source, size_t source_length, output_buffer_t *output) {
  set_base_dir_of(strcmp(options->input, "-") == 0 ? "." : options->input,
                  strcmp(options->input, "-") != 0);
  if (!options->split_marker)
    return process_chunk(context, pm, options, source, source_length, 1, output);

  bool all_ok = true;
  const char *end = source + source_length;
  const char *chunk = source;
  long chunk_line = 1, line = 1;
  bool first_chunk = true;
  for (const char *p = source; p <= end; ++line) {
    const char *line_end = memchr(p, '\n', (size_t)(end - p));
    if (!line_end)
      line_end = end;
    bool marker = p < end && is_marker_line(p, line_end, options->split_marker);
    if (marker || line_end == end) {
      const char *chunk_end = marker ? p : end;
      if (!first_chunk)
        output_append(output, "// -----\n", 9);
      first_chunk = false;
      if (!process_chunk(context, pm, options, chunk, (size_t)(chunk_end - chunk), chunk_line,
                         output))
        all_ok = false;
      chunk = line_end < end ? line_end + 1 : end;
      chunk_line = line + 1;
    }
    if (line_end == end)
      break;
    p = line_end + 1;
  }
  return all_ok;
}

/* Returns a copy of argv in which long options written with one dash
 * (-allow-unregistered-dialect, which MLIR's own messages suggest) have
 * two, as LLVM tools accept both. The caller frees it with free_arguments. */
static char **normalize_arguments(int argc, char **argv) {
  char **args = calloc((size_t)argc + 1, sizeof *args);
  if (!args)
    return NULL;
  for (int i = 0; i < argc; ++i) {
    const char *arg = argv[i];
    /* -oFILE is the short option with its value attached. */
    bool single_dash_long = i > 0 && arg[0] == '-' && arg[1] != '-' && arg[1] != 'o' &&
                            arg[1] != '\0' && arg[2] != '\0' && arg[2] != '=';
    size_t length = strlen(arg) + 2;
    args[i] = malloc(length);
    if (!args[i])
      return args; /* the caller sees the NULL entry */
    snprintf(args[i], length, "%s%s", single_dash_long ? "-" : "", arg);
  }
  return args;
}

static void free_arguments(int argc, char **args) {
  for (int i = 0; args && i < argc; ++i)
    free(args[i]);
  free(args);
}

static int run(int argc, char **argv);

int main(int argc, char **argv) {
  char **args = normalize_arguments(argc, argv);
  bool complete = args != NULL;
  for (int i = 0; complete && i < argc; ++i)
    complete = args[i] != NULL;
  if (!complete) {
    fputs("iq-opt: error: out of memory\n", stderr);
    free_arguments(argc, args);
    return 1;
  }
  int status = run(argc, args);
  free_arguments(argc, args);
  return status;
}

static int run(int argc, char **argv) {
  /* Reads IQ_LOG_LEVEL now, so an invalid value is reported at once. */
  iq_log_get_level();
  options_t options = {0};
  int status = parse_arguments(argc, argv, &options);
  if (status != 0) {
    free(options.flag_pipeline);
    return status < 0 ? 0 : status;
  }

  if (options.stats_csv && !options.stats_dump) {
    free(options.flag_pipeline);
    return usage_error("%s needs --iq-stats-dump=FILE", "--iq-stats-csv");
  }
  if (options.stats_dump) {
    iq_error_t *dump_error = NULL;
    bool dumped = iq_statistics_dump(options.stats_dump, stdout, options.stats_csv, &dump_error);
    if (!dumped) {
      iq_error_print(dump_error, "iq-opt", stderr);
      iq_error_destroy(dump_error);
    }
    free(options.flag_pipeline);
    return dumped ? 0 : 1;
  }

  bool onnx_input = ends_with(options.input, ".onnx");
  if (onnx_input && (options.split_marker || options.verify_diagnostics)) {
    free(options.flag_pipeline);
    return usage_error("%s apply to MLIR input, not to an ONNX model",
                       "--split-input-file and --verify-diagnostics");
  }

  iq_error_t *error = NULL;
  size_t source_length = 0;
  char *source = NULL;
  iq_onnx_model_t *model = NULL;
  if (onnx_input) {
    model = iq_onnx_model_load(options.input, &error);
    if (model)
      iq_log(IQ_LOG_INFO, "loaded %s: %zu nodes, %zu initializers", options.input,
             model->num_nodes, model->num_initializers);
  } else {
    source = iq_read_text_file(options.input, &source_length, &error);
  }
  if (!source && !model) {
    iq_error_print(error, "iq-opt", stderr);
    iq_error_destroy(error);
    free(options.flag_pipeline);
    return 1;
  }

  if (source)
    iq_log(IQ_LOG_INFO, "read %zu bytes from %s", source_length, options.input);
  mlirRegisterAllPasses();
  MlirContext context = iq_context_create();
  if (mlirContextIsNull(context)) {
    free(source);
    free(options.flag_pipeline);
    return 1;
  }
  iq_set_allow_unregistered(options.allow_unregistered);

  /* The pipeline is checked before any input is processed, so a typo in a
   * pass name is reported once and not per chunk. */
  MlirPassManager pm = {NULL};
  const char *pipeline = options.pipeline ? options.pipeline : options.flag_pipeline;
  bool ok = true;
  int exit_code = 1;
  if (options.flag_pipeline && !check_flag_passes(context, options.flag_pipeline)) {
    ok = false;
    exit_code = EXIT_USAGE;
  }
  if (ok && pipeline && *pipeline) {
    pm = mlirPassManagerCreate(context);
    if (!iq_pipeline_add(pm, pipeline, &error)) {
      iq_error_print(error, "iq-opt", stderr);
      iq_error_destroy(error);
      ok = false;
      exit_code = EXIT_USAGE;
    }
    iq_log(IQ_LOG_INFO, "pass pipeline: %s", pipeline);
  }

  output_buffer_t output = {0};
  bool processed = false;
  char store_path[4096] = "";
  if (ok) {
    diagnostic_collector_t collector = {.file_name = options.input,
                                        .verify_mode = options.verify_diagnostics};
    MlirDiagnosticHandlerID handler =
        mlirContextAttachDiagnosticHandler(context, diagnostic_collector_handle, &collector, NULL);
    if (model)
      processed = process_onnx(context, pm, &options, model, &output, store_path, sizeof store_path);
    else
      processed = process_input(context, pm, &options, source, source_length, &output);
    mlirContextDetachDiagnosticHandler(context, handler);
    if (options.verify_diagnostics)
      processed = diagnostic_collector_verify(&collector, source, source_length);
    diagnostic_collector_reset(&collector);
  }

  if (ok && processed && output.failed) {
    fputs("iq-opt: error: out of memory while printing the output\n", stderr);
    processed = false;
  }
  /* Nothing is written unless every part succeeded, so a failed run leaves
   * no partial output file behind. */
  if (ok && processed && !iq_write_file_atomic(options.output, output.data ? output.data : "",
                                               output.length, &error)) {
    iq_error_print(error, "iq-opt", stderr);
    iq_error_destroy(error);
    processed = false;
  }

  if (ok && processed)
    iq_log(IQ_LOG_INFO, "wrote %zu bytes to %s", output.length, options.output);
  /* The weight store belongs to the output: without one, remove it. */
  if (!(ok && processed) && *store_path)
    unlink(store_path);
  if (!(ok && processed) && *rewritten_store_path && strcmp(rewritten_store_path, store_path) != 0)
    unlink(rewritten_store_path);
  free(output.data);
  if (!mlirPassManagerIsNull(pm))
    mlirPassManagerDestroy(pm);
  iq_context_destroy(context);
  iq_onnx_model_destroy(model);
  free(source);
  free(options.flag_pipeline);
  return ok && processed ? 0 : exit_code;
}
