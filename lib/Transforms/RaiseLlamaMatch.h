/* Matching helpers of iq-raise-llama: navigation over imported onnx ops
 * and the reading of constant and stored tensor values. */
#ifndef IQ_RAISE_LLAMA_MATCH_H
#define IQ_RAISE_LLAMA_MATCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mlir-c/IR.h"

/* Returns true when `op` is not null and is named `name`. */
bool match_is(MlirOperation op, const char *name);

/* The op defining `value`, or a null op for a block argument. */
MlirOperation match_def(MlirValue value);

/* Follows onnx.Cast and onnx.Identity up from `value`, which exports
 * insert around ops computed in float32. */
MlirValue match_skip_casts(MlirValue value);

/* Returns true when `value` comes, through casts, from an iq.weight or a
 * rank-`rank` arith.constant; sets `*source` to that op. */
bool match_weight(MlirValue value, intptr_t rank, MlirOperation *source);

/* Reads the single value of a scalar or one-element constant. */
bool match_constant_scalar(MlirValue value, double *result);

/* Reads up to `capacity` float elements of a constant or stored tensor
 * (f32, f16 or bf16) into `values`; `*count` is the element count. The
 * weight store is opened on first use from `store_path`. */
bool match_read_floats(MlirValue value, const char *store_path, float *values, size_t capacity,
                       size_t *count);

/* Calls `visit` for every op using `value`, until it returns false. */
void match_for_each_user(MlirValue value, bool (*visit)(MlirOperation user, intptr_t operand,
                                                         void *data),
                         void *data);

/* Returns the single user of `value`, or a null op when it has none or
 * several. */
MlirOperation match_single_user(MlirValue value);

/* Releases the weight store opened by match_read_floats. */
void match_release_store(void);

#endif /* IQ_RAISE_LLAMA_MATCH_H */
