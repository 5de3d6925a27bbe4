/* LLVM target machines from the LLVM-C API: any supported triple from any
 * host. */
#include <stdlib.h>
#include <string.h>

#include "llvm-c/Analysis.h"
#include "llvm-c/Core.h"
#include "llvm-c/Target.h"
#include "llvm-c/TargetMachine.h"
#include "llvm-c/Transforms/PassBuilder.h"
#include "mlir-c/Target/LLVMIR.h"

#include "iq/target.h"

const char *iq_target_llvm_triple(const char *target) {
  if (strcmp(target, "x86_64-linux-gnu") == 0)
    return "x86_64-unknown-linux-gnu";
  if (strcmp(target, "aarch64-linux-gnu") == 0)
    return "aarch64-unknown-linux-gnu";
  return NULL;
}

static void initialize_targets(void) {
  static bool initialized;
  if (initialized)
    return;
  LLVMInitializeX86TargetInfo();
  LLVMInitializeX86Target();
  LLVMInitializeX86TargetMC();
  LLVMInitializeX86AsmPrinter();
  LLVMInitializeAArch64TargetInfo();
  LLVMInitializeAArch64Target();
  LLVMInitializeAArch64TargetMC();
  LLVMInitializeAArch64AsmPrinter();
  initialized = true;
}

bool iq_target_emit(MlirOperation module, const iq_target_options_t *options,
                    iq_emit_kind_t kind, const char *path, iq_error_t **error) {
  const char *triple = iq_target_llvm_triple(options->triple);
  if (!triple)
    return iq_error_set(error, NULL, "--target", "use x86_64-linux-gnu or aarch64-linux-gnu",
                        "unsupported target '%s'", options->triple);
  initialize_targets();

  LLVMContextRef context = LLVMContextCreate();
  LLVMModuleRef llvm_module = mlirTranslateModuleToLLVMIR(module, context);
  if (!llvm_module) {
    LLVMContextDispose(context);
    return iq_error_set(error, NULL, NULL, NULL,
                        "translation to LLVM IR failed (the diagnostics above say why)");
  }

  char *message = NULL;
  LLVMTargetRef target;
  if (LLVMGetTargetFromTriple(triple, &target, &message)) {
    iq_error_set(error, NULL, "--target", NULL, "no LLVM target for %s: %s", triple, message);
    LLVMDisposeMessage(message);
    LLVMDisposeModule(llvm_module);
    LLVMContextDispose(context);
    return false;
  }
  LLVMTargetMachineRef machine = LLVMCreateTargetMachine(
      target, triple, options->cpu ? options->cpu : "", options->features ? options->features : "",
      LLVMCodeGenLevelAggressive, LLVMRelocPIC, LLVMCodeModelDefault);
  LLVMSetTarget(llvm_module, triple);
  LLVMTargetDataRef layout = LLVMCreateTargetDataLayout(machine);
  LLVMSetModuleDataLayout(llvm_module, layout);
  LLVMDisposeTargetData(layout);

  bool ok = true;
  LLVMPassBuilderOptionsRef pass_options = LLVMCreatePassBuilderOptions();
  LLVMPassBuilderOptionsSetLoopVectorization(pass_options, 1);
  LLVMPassBuilderOptionsSetSLPVectorization(pass_options, 1);
  LLVMErrorRef pass_error = LLVMRunPasses(llvm_module, "default<O3>", machine, pass_options);
  LLVMDisposePassBuilderOptions(pass_options);
  if (pass_error) {
    char *text = LLVMGetErrorMessage(pass_error);
    ok = iq_error_set(error, NULL, NULL, NULL, "LLVM optimization failed: %s", text);
    LLVMDisposeErrorMessage(text);
  }

  if (ok && kind == IQ_EMIT_LLVM_IR) {
    if (LLVMPrintModuleToFile(llvm_module, path, &message)) {
      ok = iq_error_set(error, path, NULL, NULL, "cannot write LLVM IR: %s", message);
      LLVMDisposeMessage(message);
    }
  } else if (ok) {
    LLVMCodeGenFileType file_type = kind == IQ_EMIT_ASSEMBLY ? LLVMAssemblyFile : LLVMObjectFile;
    /* LLVMTargetMachineEmitToFile takes a mutable path. */
    char *mutable_path = strdup(path);
    if (!mutable_path ||
        LLVMTargetMachineEmitToFile(machine, llvm_module, mutable_path, file_type, &message)) {
      ok = iq_error_set(error, path, NULL, NULL, "code generation failed: %s",
                        message ? message : "out of memory");
      if (message)
        LLVMDisposeMessage(message);
    }
    free(mutable_path);
  }

  LLVMDisposeTargetMachine(machine);
  LLVMDisposeModule(llvm_module);
  LLVMContextDispose(context);
  return ok;
}
