/* iq-kernels: the W4A4 integer kernels alone, as a shared library with
 * the C interface of iq_kernels.h (every instruction set of the target in
 * one library, chosen at load time), or one instruction set's MLIR, LLVM
 * IR, assembly or object. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mlir-c/Diagnostics.h"
#include "mlir-c/IR.h"
#include "mlir-c/Pass.h"
#include "mlir-c/RegisterEverything.h"

#include "iq/int4_kernels.h"
#include "iq/ir.h"
#include "iq/passes.h"
#include "iq/support.h"
#include "iq/target.h"

#define EXIT_USAGE 2

typedef enum stage { STAGE_LIBRARY, STAGE_MLIR, STAGE_LLVM, STAGE_ASM, STAGE_OBJ } stage_t;

typedef struct options {
  const char *output, *target, *isa, *archive;
  stage_t stage;
  bool list;
} options_t;

static void print_usage(FILE *stream) {
  fputs("Usage: iq-kernels -o OUTPUT [options]\n"
        "\n"
        "Generates the W4A4 int4 matrix-multiply kernels and links them into a shared\n"
        "library with the C interface of iq/iq_kernels.h. The library holds every\n"
        "instruction set of the target and picks the best one for the CPU at load time\n"
        "(IQ_KERNEL=NAME overrides the choice).\n"
        "\n"
        "Options:\n"
        "  -o FILE                 the library, or the output of --emit\n"
        "  --target=TRIPLE         x86_64-linux-gnu (default on x86-64) or aarch64-linux-gnu\n"
        "  --emit=STAGE            library (default), or mlir, llvm, asm, obj for one\n"
        "                          instruction set (--isa)\n"
        "  --isa=NAME              the instruction set for --emit: generic, avx2, avxvnni,\n"
        "                          avx512vnni (x86-64), generic, dotprod, i8mm (AArch64)\n"
        "  --kernel-runtime=FILE   the target's libiq_kernels_rt.a (default: found beside\n"
        "                          iq-kernels)\n"
        "  --list                  print the target's instruction sets with their LLVM CPU\n"
        "                          and features, and exit\n"
        "  --help                  show this help\n",
        stream);
}

static int usage_error(const char *format, const char *argument) {
  fputs("iq-kernels: error: ", stderr);
  fprintf(stderr, format, argument);
  fputs("; see iq-kernels --help\n", stderr);
  return EXIT_USAGE;
}

static int parse_arguments(int argc, char **argv, options_t *o) {
  for (int i = 1; i < argc; ++i) {
    const char *arg = argv[i];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      print_usage(stdout);
      return -1;
    } else if (strcmp(arg, "-o") == 0) {
      if (++i == argc)
        return usage_error("%s needs a file name", "-o");
      o->output = argv[i];
    } else if (strncmp(arg, "--target=", 9) == 0) {
      o->target = arg + 9;
    } else if (strncmp(arg, "--isa=", 6) == 0) {
      o->isa = arg + 6;
    } else if (strncmp(arg, "--kernel-runtime=", 17) == 0) {
      o->archive = arg + 17;
    } else if (strcmp(arg, "--list") == 0) {
      o->list = true;
    } else if (strncmp(arg, "--emit=", 7) == 0) {
      const char *stage = arg + 7;
      if (strcmp(stage, "library") == 0)
        o->stage = STAGE_LIBRARY;
      else if (strcmp(stage, "mlir") == 0)
        o->stage = STAGE_MLIR;
      else if (strcmp(stage, "llvm") == 0)
        o->stage = STAGE_LLVM;
      else if (strcmp(stage, "asm") == 0)
        o->stage = STAGE_ASM;
      else if (strcmp(stage, "obj") == 0)
        o->stage = STAGE_OBJ;
      else
        return usage_error("invalid --emit '%s'; use library, mlir, llvm, asm or obj", stage);
    } else {
      return usage_error("unknown argument '%s'", arg);
    }
  }
  size_t count;
  if (!iq_int4_isas(o->target, &count))
    return usage_error("unsupported --target '%s'; use x86_64-linux-gnu or aarch64-linux-gnu",
                       o->target);
  if (o->list)
    return 0;
  if (!o->output)
    return usage_error("%s", "no output given (-o libiqk.so)");
  if (o->stage != STAGE_LIBRARY && !o->isa)
    return usage_error("%s", "--emit=mlir|llvm|asm|obj needs --isa=NAME (see --list)");
  /* The runtime in the library calls every set, so a library has them all. */
  if (o->stage == STAGE_LIBRARY && o->isa)
    return usage_error("%s", "--isa applies to --emit=mlir|llvm|asm|obj only; omit it to build "
                             "the library");
  if (o->isa && !iq_int4_isa_find(o->target, o->isa))
    return usage_error("unknown --isa '%s' for this target; see --list", o->isa);
  return 0;
}

static void print_text(MlirStringRef text, void *user_data) {
  fwrite(text.data, 1, text.length, (FILE *)user_data);
}

static MlirLogicalResult print_diagnostic(MlirDiagnostic diagnostic, void *user_data) {
  fprintf(stderr, "iq-kernels: %s: ",
          mlirDiagnosticGetSeverity(diagnostic) == MlirDiagnosticError ? "error" : "note");
  mlirDiagnosticPrint(diagnostic, print_text, stderr);
  fputc('\n', stderr);
  return mlirLogicalResultSuccess();
}

/* Emits code in a child process, because LLVM reports some failures by
 * aborting and the tool must still clean up its staging folder. */
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
      iq_error_print(child_error, "iq-kernels", stderr);
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
  return iq_error_set(error, NULL, NULL, "this is a bug in iq; please report it",
                      "LLVM aborted code generation for %s (cpu '%s', features '%s')",
                      target->triple, target->cpu, target->features);
}

/* Generates one instruction set's kernels and writes `kind` (or the MLIR
 * source when `source_only`) to `path`. */
static bool build_isa(MlirContext context, const iq_int4_isa_t *isa, bool source_only,
                      iq_emit_kind_t kind, const char *path, iq_error_t **error) {
  char *source = iq_int4_kernel_source(isa, error);
  if (!source)
    return false;
  if (source_only) {
    bool ok = iq_write_file_atomic(path, source, strlen(source), error);
    free(source);
    return ok;
  }
  MlirModule module = mlirModuleCreateParse(context, mlirStringRefCreateFromCString(source));
  free(source);
  if (mlirModuleIsNull(module))
    return iq_error_set(error, NULL, isa->name, "this is a bug in iq; please report it",
                        "the generated kernels do not parse (see above)");
  MlirPassManager pm = mlirPassManagerCreate(context);
  bool ok = iq_pipeline_add(pm, iq_int4_lowering_pipeline, error) &&
            mlirLogicalResultIsSuccess(mlirPassManagerRunOnOp(pm, mlirModuleGetOperation(module)));
  mlirPassManagerDestroy(pm);
  if (!ok && error && !*error)
    iq_error_set(error, NULL, isa->name, "this is a bug in iq; please report it",
                 "lowering the generated kernels to the LLVM dialect failed (see above)");
  iq_target_options_t target = {.triple = isa->target, .cpu = isa->cpu, .features = isa->features};
  ok = ok && emit_in_child(mlirModuleGetOperation(module), &target, kind, path, error);
  mlirModuleDestroy(module);
  return ok;
}

/* The default archive: lib/<processor>/libiq_kernels_rt.a next to the
 * folder of this executable (build/bin -> build/lib). */
static bool default_archive(const char *target, char *out, size_t size) {
  char self[4096];
  ssize_t length = readlink("/proc/self/exe", self, sizeof self - 1);
  if (length <= 0)
    return false;
  self[length] = '\0';
  char *slash = strrchr(self, '/');
  if (!slash)
    return false;
  *slash = '\0';
  const char *processor = strncmp(target, "aarch64", 7) == 0 ? "aarch64" : "x86_64";
  int written = snprintf(out, size, "%.3900s/../lib/%s/libiq_kernels_rt.a", self, processor);
  return written > 0 && (size_t)written < size && access(out, R_OK) == 0;
}

static void directory_of(const char *path, char *out, size_t size) {
  const char *slash = strrchr(path, '/');
  if (!slash)
    snprintf(out, size, ".");
  else if (slash == path)
    snprintf(out, size, "/");
  else
    snprintf(out, size, "%.*s", (int)(slash - path), path);
}

static int run(const options_t *o) {
  size_t count;
  const iq_int4_isa_t *isas = iq_int4_isas(o->target, &count);
  if (o->list) {
    for (size_t i = 0; i < count; ++i)
      printf("%-11s cpu=%s features=%s\n", isas[i].name, isas[i].cpu,
             isas[i].features[0] ? isas[i].features : "(none)");
    return 0;
  }

  iq_error_t *error = NULL;
  char archive[4096] = "";
  if (o->stage == STAGE_LIBRARY) {
    if (o->archive)
      snprintf(archive, sizeof archive, "%s", o->archive);
    else if (!default_archive(o->target, archive, sizeof archive)) {
      fprintf(stderr,
              "iq-kernels: error: the kernel runtime archive for %s was not found beside "
              "iq-kernels; build it (cmake --build build) or pass --kernel-runtime=FILE\n",
              o->target);
      return 1;
    }
  }

  /* Outputs are written into a staging folder beside the output and moved
   * into place at the end, so a failure leaves no partial file. */
  char output_dir[4096], staging[4200];
  directory_of(o->output, output_dir, sizeof output_dir);
  snprintf(staging, sizeof staging, "%s/.iq-kernels.XXXXXX", output_dir);
  if (!mkdtemp(staging)) {
    fprintf(stderr, "iq-kernels: error: %s: cannot create a staging folder: %s\n", output_dir,
            strerror(errno));
    return 1;
  }

  mlirRegisterAllPasses();
  MlirContext context = iq_context_create();
  if (mlirContextIsNull(context)) {
    rmdir(staging);
    return 1;
  }
  mlirContextAttachDiagnosticHandler(context, print_diagnostic, NULL, NULL);

  char objects[16][4400];
  const char *object_list[16];
  size_t objects_written = 0;
  char staged_output[4400];
  snprintf(staged_output, sizeof staged_output, "%s/output", staging);
  bool ok = true;
  if (o->stage == STAGE_LIBRARY) {
    for (size_t i = 0; ok && i < count && i < 16; ++i) {
      snprintf(objects[objects_written], sizeof objects[0], "%s/%s.o", staging, isas[i].name);
      ok = build_isa(context, &isas[i], false, IQ_EMIT_OBJECT, objects[objects_written], &error);
      if (ok) {
        object_list[objects_written] = objects[objects_written];
        objects_written++;
      }
    }
    ok = ok && iq_target_link_kernels(o->target, object_list, objects_written, archive,
                                      staged_output, &error);
  } else {
    const iq_int4_isa_t *isa = iq_int4_isa_find(o->target, o->isa);
    iq_emit_kind_t kind = o->stage == STAGE_LLVM  ? IQ_EMIT_LLVM_IR
                          : o->stage == STAGE_ASM ? IQ_EMIT_ASSEMBLY
                                                  : IQ_EMIT_OBJECT;
    ok = build_isa(context, isa, o->stage == STAGE_MLIR, kind, staged_output, &error);
  }
  iq_context_destroy(context);

  if (ok && rename(staged_output, o->output) != 0)
    ok = iq_error_set(&error, o->output, NULL, "check the folder's permissions",
                      "cannot move the output into place: %s", strerror(errno));
  for (size_t i = 0; i < objects_written; ++i)
    unlink(objects[i]);
  unlink(staged_output);
  rmdir(staging);
  if (!ok) {
    if (error)
      iq_error_print(error, "iq-kernels", stderr);
    iq_error_destroy(error);
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  options_t options = {.target = "x86_64-linux-gnu", .stage = STAGE_LIBRARY};
#if defined(__aarch64__)
  options.target = "aarch64-linux-gnu";
#endif
  int status = parse_arguments(argc, argv, &options);
  if (status != 0)
    return status < 0 ? 0 : status;
  return run(&options);
}
