/* The iq dialect: context creation with the dialect loaded, op names, and
 * the semantic verifier that checks what IRDL cannot express. */
#ifndef IQ_IR_H
#define IQ_IR_H

#include <stdbool.h>

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

#ifdef __cplusplus
}
#endif

#endif /* IQ_IR_H */
