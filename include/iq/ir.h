/* The iq dialect: context creation with the dialect loaded, op names, and
 * the semantic verifier that checks what IRDL cannot express. */
#ifndef IQ_IR_H
#define IQ_IR_H

#include <stdbool.h>
#include <stddef.h>

#include "mlir-c/IR.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The IRDL source of the dialect, embedded at build time. */
extern const char iq_dialect_irdl_source[];

/* Creates a context with every upstream dialect registered, the iq dialect
 * loaded from its IRDL definition and multithreading disabled (iq passes
 * hold per-instance state and diagnostics stay in order). The caller owns
 * the context and destroys it with iq_context_destroy. Returns a null
 * context after printing the reason when the IRDL source fails to load,
 * which only a broken build can cause. */
MlirContext iq_context_create(void);

/* Destroys a context made by iq_context_create and its dialect definition. */
void iq_context_destroy(MlirContext context);

/* Returns true for an operation of the iq dialect. */
bool iq_op_is_iq(MlirOperation op);

/* Returns true when `op` has the name "iq.<short_name>". */
bool iq_op_is(MlirOperation op, const char *short_name);

/* Returns true for iq ops without side effects, which may be erased when
 * their results are unused. */
bool iq_op_is_pure(MlirOperation op);

/* Checks every iq op nested in `root` (and `root` itself) against the
 * rules IRDL cannot state: element types, shapes that must agree, and
 * attribute values. Each violation is emitted as an error diagnostic on
 * the op's location. Returns true when no violation was found. */
bool iq_verify(MlirOperation root);

/* Returns true for a Hadamard transform size iq can build: a power of two,
 * or K * 2^m for a K of the bundled Sloane tables. */
bool iq_hadamard_size_is_supported(long long size);

/* ---- The onnx namespace -------------------------------------------------
 * Generic ONNX ops import one to one as unregistered ops named
 * "onnx.<OpType>" (default domain) or "onnx.<domain>.<OpType>", with the
 * node's attributes. The table below is their verifier. */
typedef struct iq_onnx_op_info {
  const char *domain; /* "" for the default ai.onnx domain */
  const char *op_type;
  int min_inputs, max_inputs; /* max_inputs is -1 for a variadic list */
  int min_outputs, max_outputs;
} iq_onnx_op_info_t;

/* Returns the table entry of an op, or NULL when iq does not import it.
 * "ai.onnx" and "" both name the default domain. */
const iq_onnx_op_info_t *iq_onnx_op_find(const char *domain, const char *op_type);
const iq_onnx_op_info_t *iq_onnx_ops_list(size_t *count);

/* Writes the MLIR op name of an ONNX op ("onnx.MatMul",
 * "onnx.com.microsoft.RotaryEmbedding") into `buffer`; returns its length
 * as snprintf does. */
size_t iq_onnx_op_name(const char *domain, const char *op_type, char *buffer, size_t size);

/* Whether ops of unregistered dialects other than `onnx` are accepted by
 * iq_verify (iq-opt's --allow-unregistered-dialect). Off by default. */
void iq_set_allow_unregistered(bool allow);

/* Verifies an op whose name the context does not register; iq_verify
 * calls it for every such op. */
bool iq_verify_unregistered_op(MlirOperation op);

#ifdef __cplusplus
}
#endif

#endif /* IQ_IR_H */
