/* Context creation with the iq dialect loaded from its IRDL definition. */
#include "iq/ir.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlir-c/Diagnostics.h"
#include "mlir-c/Dialect/IRDL.h"
#include "mlir-c/RegisterEverything.h"

#include "iq/support.h"

static void print_to_stderr(MlirStringRef text, void *user_data) {
  (void)user_data;
  fwrite(text.data, 1, text.length, stderr);
}

/* Prints diagnostics raised while loading the dialect. Such an error means
 * the embedded IRDL source is broken, not that the user did anything wrong. */
static MlirLogicalResult report_irdl_diagnostic(MlirDiagnostic diagnostic, void *user_data) {
  (void)user_data;
  fputs("iq: internal error in the iq dialect definition: ", stderr);
  mlirDiagnosticPrint(diagnostic, print_to_stderr, NULL);
  fputc('\n', stderr);
  return mlirLogicalResultSuccess();
}

/* The IRDL module of every live context. Tools create one or two contexts,
 * so a list is enough; it is not thread-safe, like context creation in iq. */
struct loaded_definition {
  MlirContext context;
  MlirModule definition;
  struct loaded_definition *next;
};
static struct loaded_definition *loaded_definitions;

MlirContext iq_context_create(void) {
  MlirDialectRegistry registry = mlirDialectRegistryCreate();
  mlirRegisterAllDialects(registry);
  MlirContext context = mlirContextCreateWithRegistry(registry, /*threadingEnabled=*/false);
  mlirDialectRegistryDestroy(registry);
  mlirRegisterAllLLVMTranslations(context);

  /* Imported ONNX ops are unregistered ops of the `onnx` namespace (IRDL
   * cannot declare them; see OnnxOps.c). iq_verify rejects unregistered
   * ops of any other namespace unless iq_set_allow_unregistered allows them.
   * Registered dialects, iq included, still reject unknown op names. */
  mlirContextSetAllowUnregisteredDialects(context, true);

  /* The parser loads dialects on demand, but ops built through the C API
   * need their dialect loaded first, or they are created as unregistered
   * ops. These are the dialects iq builds ops of. */
  static const char *const built_dialects[] = {"func", "arith", "tensor", "linalg", "math",
                                               "scf", "memref", "vector"};
  for (size_t i = 0; i < sizeof built_dialects / sizeof built_dialects[0]; ++i)
    mlirContextGetOrLoadDialect(context, mlirStringRefCreateFromCString(built_dialects[i]));

  MlirDialectHandle irdl = mlirGetDialectHandle__irdl__();
  mlirDialectHandleLoadDialect(irdl, context);

  MlirDiagnosticHandlerID handler =
      mlirContextAttachDiagnosticHandler(context, report_irdl_diagnostic, NULL, NULL);
  MlirModule definition =
      mlirModuleCreateParse(context, mlirStringRefCreateFromCString(iq_dialect_irdl_source));
  bool loaded = !mlirModuleIsNull(definition) &&
                mlirLogicalResultIsSuccess(mlirLoadIRDLDialects(definition));
  mlirContextDetachDiagnosticHandler(context, handler);

  if (!loaded) {
    if (!mlirModuleIsNull(definition))
      mlirModuleDestroy(definition);
    mlirContextDestroy(context);
    return (MlirContext){NULL};
  }

  /* The loaded verifiers may refer to the IRDL ops' attributes, so the
   * definition lives exactly as long as the context. */
  struct loaded_definition *entry = malloc(sizeof *entry);
  if (!entry) {
    mlirModuleDestroy(definition);
    mlirContextDestroy(context);
    return (MlirContext){NULL};
  }
  entry->context = context;
  entry->definition = definition;
  entry->next = loaded_definitions;
  loaded_definitions = entry;
  return context;
}

void iq_context_destroy(MlirContext context) {
  if (mlirContextIsNull(context))
    return;
  for (struct loaded_definition **link = &loaded_definitions; *link; link = &(*link)->next) {
    if (mlirContextEqual((*link)->context, context)) {
      struct loaded_definition *entry = *link;
      *link = entry->next;
      mlirModuleDestroy(entry->definition);
      free(entry);
      break;
    }
  }
  mlirContextDestroy(context);
}

static MlirStringRef op_name(MlirOperation op) {
  return mlirIdentifierStr(mlirOperationGetName(op));
}

bool iq_op_is_iq(MlirOperation op) {
  MlirStringRef name = op_name(op);
  return name.length > 3 && memcmp(name.data, "iq.", 3) == 0;
}

bool iq_op_is(MlirOperation op, const char *short_name) {
  MlirStringRef name = op_name(op);
  size_t length = strlen(short_name);
  return name.length == length + 3 && memcmp(name.data, "iq.", 3) == 0 &&
         memcmp(name.data + 3, short_name, length) == 0;
}

bool iq_op_is_pure(MlirOperation op) {
  /* Every op but iq.observe computes a value from its operands only; an
   * observer records its operand, which is an effect. */
  return iq_op_is_iq(op) && !iq_op_is(op, "observe");
}
