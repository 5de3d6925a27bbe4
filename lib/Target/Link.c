/* Linking an emitted object with the runtime into a shared library. The
 * target's C compiler driver does the link because it passes the target's
 * C library and startup files, which a bare ld.lld would need as options. */
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "iq/target.h"

extern char **environ;

/* Runs the C compiler driver with `arguments` (NULL-terminated, the driver
 * first) and waits for it. `failure` names the link in the error. */
static bool run_linker(const char *driver, char *const *arguments, const char *output,
                       const char *failure, iq_error_t **error) {
  pid_t pid;
  int status = posix_spawnp(&pid, driver, NULL, NULL, arguments, environ);
  if (status != 0)
    return iq_error_set(error, NULL, driver,
                        "install the target's C compiler (scripts/setup.sh installs gcc and "
                        "gcc-aarch64-linux-gnu)",
                        "cannot run the linker: %s", strerror(status));
  if (waitpid(pid, &status, 0) < 0)
    return iq_error_set(error, NULL, driver, NULL, "waiting for the linker failed: %s",
                        strerror(errno));
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
    return iq_error_set(error, output, driver, "the linker's messages above say why", "%s",
                        failure);
  return true;
}

bool iq_target_link_shared(const char *target, const char *object, const char *runtime_archive,
                           bool openmp, const char *output, iq_error_t **error) {
  const char *driver = NULL;
  if (strcmp(target, "x86_64-linux-gnu") == 0)
    driver = "cc";
  else if (strcmp(target, "aarch64-linux-gnu") == 0)
    driver = "aarch64-linux-gnu-gcc";
  else
    return iq_error_set(error, NULL, "--target", NULL, "unsupported target '%s'", target);

  /* The runtime's exported functions are the library's interface; -lm is
   * for the libm calls (expf, cosf, sinf) the kernels make. */
  /* --whole-archive: nothing in the object calls the runtime, whose
   * functions must all be in the library for its users. */
  char *const arguments[] = {(char *)driver,
                             "-shared",
                             "-o",
                             (char *)output,
                             (char *)object,
                             "-Wl,--whole-archive",
                             (char *)runtime_archive,
                             "-Wl,--no-whole-archive",
                             "-lm",
                             "-Wl,-z,noexecstack",
                             openmp ? "-l:libomp.so.5" : NULL,
                             NULL};
  return run_linker(driver, arguments, output, "linking the shared library failed", error);
}

bool iq_target_link_kernels(const char *target, const char *const *objects, size_t count,
                            const char *kernel_archive, const char *output, iq_error_t **error) {
  const char *driver = NULL;
  if (strcmp(target, "x86_64-linux-gnu") == 0)
    driver = "cc";
  else if (strcmp(target, "aarch64-linux-gnu") == 0)
    driver = "aarch64-linux-gnu-gcc";
  else
    return iq_error_set(error, NULL, "--target", NULL, "unsupported target '%s'", target);
  if (count > 16)
    return iq_error_set(error, NULL, NULL, NULL, "too many kernel objects (%zu, at most 16)",
                        count);

  /* The archive's iqk_* functions are the library's interface, so all of
   * it goes in (--whole-archive). */
  char *arguments[32];
  size_t used = 0;
  arguments[used++] = (char *)driver;
  arguments[used++] = "-shared";
  arguments[used++] = "-o";
  arguments[used++] = (char *)output;
  for (size_t i = 0; i < count; ++i)
    arguments[used++] = (char *)objects[i];
  arguments[used++] = "-Wl,--whole-archive";
  arguments[used++] = (char *)kernel_archive;
  arguments[used++] = "-Wl,--no-whole-archive";
  arguments[used++] = "-pthread";
  arguments[used++] = "-lm";
  arguments[used++] = "-Wl,-z,noexecstack";
  arguments[used] = NULL;

  return run_linker(driver, arguments, output, "linking the kernel library failed", error);
}

/* Writes lib/<processor>/NAME beside the running program's bin/ folder
 * into `out`; false when that file is not readable. */
static bool archive_beside_program(const char *target, const char *name, char *out, size_t size) {
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
  int written = snprintf(out, size, "%.3900s/../lib/%s/%s", self, processor, name);
  return written > 0 && (size_t)written < size && access(out, R_OK) == 0;
}

bool iq_target_link_shared_int4(const char *target, const char *object,
                                const char *runtime_archive, bool openmp, const char *output,
                                iq_error_t **error) {
  const char *driver = NULL;
  if (strcmp(target, "x86_64-linux-gnu") == 0)
    driver = "cc";
  else if (strcmp(target, "aarch64-linux-gnu") == 0)
    driver = "aarch64-linux-gnu-gcc";
  else
    return iq_error_set(error, NULL, "--target", NULL, "unsupported target '%s'", target);
  char kernels[4200], kernel_runtime[4200];
  if (!archive_beside_program(target, "libiq_int4_kernels.a", kernels, sizeof kernels) ||
      !archive_beside_program(target, "libiq_kernels_rt.a", kernel_runtime, sizeof kernel_runtime))
    return iq_error_set(error, NULL, target,
                        "build them (cmake --build build), or compile with --kernels=float",
                        "the int4 kernel archives for %s (libiq_int4_kernels.a and "
                        "libiq_kernels_rt.a) were not found beside this program",
                        target);

  /* Both kernel archives go in whole: the dispatch table of the kernel
   * runtime names every instruction set's functions, and the library
   * exports the iqk_* interface. */
  char *const arguments[] = {(char *)driver,
                             "-shared",
                             "-o",
                             (char *)output,
                             (char *)object,
                             "-Wl,--whole-archive",
                             (char *)runtime_archive,
                             kernel_runtime,
                             kernels,
                             "-Wl,--no-whole-archive",
                             "-pthread",
                             "-lm",
                             "-Wl,-z,noexecstack",
                             openmp ? "-l:libomp.so.5" : NULL,
                             NULL};
  return run_linker(driver, arguments, output, "linking the shared library failed", error);
}
