/* Building a shared library for the host from kernel-level MLIR source,
 * for programs that compile a model and load it in the same run (the
 * calibration driver). The work runs in a child process: LLVM aborts on
 * some invalid input, and the memory the lowering and code generation
 * take is returned when the child exits. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "llvm-c/Core.h"
#include "llvm-c/TargetMachine.h"
#include "mlir-c/Pass.h"

#include "iq/target.h"

bool iq_target_default_runtime(const char *target, char *out, size_t size) {
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
  int written = snprintf(out, size, "%.3900s/../lib/%s/libiq_runtime.a", self, processor);
  return written > 0 && (size_t)written < size && access(out, R_OK) == 0;
}

const char *iq_target_host(void) {
#if defined(__aarch64__)
  return "aarch64-linux-gnu";
#else
  return "x86_64-linux-gnu";
#endif
}

static void print_pipeline_error(MlirStringRef text, void *user_data) {
  fwrite(text.data, 1, text.length, (FILE *)user_data);
}

/* The child's work: parse, lower to the LLVM dialect, emit an object for
 * the host CPU and link it. Returns the exit status. */
static int build_in_child(MlirContext context, const char *source, const char *pipeline,
                          const char *runtime, const char *object, const char *output) {
  MlirModule module = mlirModuleCreateParse(context, mlirStringRefCreateFromCString(source));
  if (mlirModuleIsNull(module)) {
    fputs("iq: error: the generated kernels do not parse (see above); this is a bug in iq\n",
          stderr);
    return 1;
  }
  MlirPassManager pm = mlirPassManagerCreate(context);
  MlirLogicalResult parsed = mlirParsePassPipeline(
      mlirPassManagerGetAsOpPassManager(pm), mlirStringRefCreateFromCString(pipeline),
      print_pipeline_error, stderr);
  bool ok = mlirLogicalResultIsSuccess(parsed) &&
            mlirLogicalResultIsSuccess(mlirPassManagerRunOnOp(pm, mlirModuleGetOperation(module)));
  mlirPassManagerDestroy(pm);
  if (!ok) {
    fputs("iq: error: lowering the generated kernels to LLVM failed (see above)\n", stderr);
    return 1;
  }

  char *cpu = LLVMGetHostCPUName();
  char *features = LLVMGetHostCPUFeatures();
  iq_target_options_t target = {.triple = iq_target_host(), .cpu = cpu, .features = features};
  iq_error_t *error = NULL;
  ok = iq_target_emit(mlirModuleGetOperation(module), &target, IQ_EMIT_OBJECT, object, &error) &&
       iq_target_link_shared(iq_target_host(), object, runtime, strstr(source, "scf.parallel") != NULL,
                             output, &error);
  if (!ok)
    iq_error_print(error, "iq", stderr);
  return ok ? 0 : 1;
}

bool iq_target_build_host_library(MlirContext context, const char *source, const char *pipeline,
                                  const char *folder, const char *output, iq_error_t **error) {
  char runtime[4096];
  if (!iq_target_default_runtime(iq_target_host(), runtime, sizeof runtime))
    return iq_error_set(error, NULL, NULL, "build it (cmake --build build)",
                        "the runtime archive for %s was not found beside this program",
                        iq_target_host());
  char object[4200];
  snprintf(object, sizeof object, "%s/model.o", folder);

  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  if (pid < 0)
    return iq_error_set(error, NULL, NULL, NULL, "cannot start code generation: %s",
                        strerror(errno));
  if (pid == 0) {
    int status = build_in_child(context, source, pipeline, runtime, object, output);
    fflush(stderr);
    _exit(status);
  }
  int status;
  pid_t waited;
  do {
    waited = waitpid(pid, &status, 0);
  } while (waited < 0 && errno == EINTR);
  unlink(object);
  if (waited < 0)
    return iq_error_set(error, NULL, NULL, NULL, "waiting for code generation failed: %s",
                        strerror(errno));
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
    return true;
  if (WIFEXITED(status))
    return iq_error_set(error, NULL, NULL, "the messages above say why",
                        "building the host library %s failed", output);
  return iq_error_set(error, NULL, NULL, "this is a bug in iq or LLVM; please report it",
                      "code generation for the host was killed by signal %d", WTERMSIG(status));
}
