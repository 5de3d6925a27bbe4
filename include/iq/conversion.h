/* Lowering of a canonical iq graph to MLIR that the upstream pipeline
 * turns into LLVM: the forward function of iq_compiled.h, calling float
 * kernels generated for the model's sizes. */
#ifndef IQ_CONVERSION_H
#define IQ_CONVERSION_H

#include <stdbool.h>

#include "mlir-c/IR.h"

#include "iq/support.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct iq_lowering_options {
  const char *target;       /* recorded in the metadata: "x86_64-linux-gnu" */
  const char *quantization; /* recorded in the metadata: "none" */
  /* Which linear kernels use OpenMP threads: none, the large ones, or
   * all (for tests on small models). */
  enum { IQ_THREADS_OFF, IQ_THREADS_AUTO, IQ_THREADS_ALWAYS } threads;
  /* Linears that iq-pack-int4 marked call the int4 kernels
   * (iq/int4_model.h) instead of the fake-quantized float kernels. */
  bool int4_kernels;
} iq_lowering_options_t;

/* Generates, for the module's canonical @forward (after iq-raise-llama),
 * the MLIR source of a module with `iq_model_forward`, the kernels it
 * calls and the `iq_model_metadata` global. Returns a newly allocated
 * NUL-terminated string the caller frees, or NULL with `*error` naming
 * the op iq cannot lower. */
char *iq_lower_to_kernel_source(MlirOperation module, const iq_lowering_options_t *options,
                                iq_error_t **error);

/* Generates, for the module's @forward of an imported ONNX graph whose
 * values all have static shapes, the MLIR source of a module with
 * `iq_graph_forward(%slots)` (slots[i]: address of graph input i, then of
 * each graph output) and the `iq_graph_metadata` text global. Returns a
 * newly allocated string the caller frees, or NULL with `*error` naming
 * the op iq cannot lower. */
char *iq_lower_graph_to_source(MlirOperation module, iq_error_t **error);

/* The upstream pass pipeline from the generated source to the LLVM
 * dialect. */
extern const char iq_llvm_lowering_pipeline[];

#ifdef __cplusplus
}
#endif

#endif /* IQ_CONVERSION_H */
