/* The importer: an ONNX model (from the reader) to an MLIR module in iq's
 * graph form, with its weights written to a weight store. */
#ifndef IQ_ONNX_IMPORT_H
#define IQ_ONNX_IMPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "mlir-c/IR.h"

#include "iq/onnx.h"
#include "iq/support.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct iq_onnx_import_options {
  /* The weight store to write. Every initializer and Constant larger than
   * `inline_limit_bytes`, and every 4-bit one, goes there. */
  const char *weight_store_path;
  /* The store's name recorded in the module's `iq.weight_store`
   * attribute, usually its file name, resolved beside the .mlir file. */
  const char *weight_store_reference;
  /* Initializers and Constants of at most this many bytes become
   * arith.constant ops in the IR, so passes can read shapes, axes and
   * epsilons. */
  uint64_t inline_limit_bytes;
} iq_onnx_import_options_t;

#define IQ_ONNX_DEFAULT_INLINE_LIMIT 64

/* Imports `model` into a new module of `context`: one func.func @forward
 * whose arguments are the graph inputs and whose results are the graph
 * outputs, one op per node ("onnx.<OpType>" or "onnx.<domain>.<OpType>",
 * attributes kept by name), weights as iq.weight ops. Symbolic dimensions
 * become dynamic sizes and their names are kept in the `iq.dim_names`
 * argument and result attributes. Returns a null module and sets `*error`
 * naming the node, op type and domain for an op iq cannot import, and
 * leaves no weight store behind on failure. The caller owns the module. */
MlirModule iq_onnx_import(MlirContext context, const iq_onnx_model_t *model,
                          const iq_onnx_import_options_t *options, iq_error_t **error);

#ifdef __cplusplus
}
#endif

#endif /* IQ_ONNX_IMPORT_H */
