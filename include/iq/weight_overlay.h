/* Tensors that passes create while they rewrite weights. A pass never
 * changes a weight store in place: it reads the module's store, computes
 * new tensors under new names and adds them here. The tool that ran the
 * passes (iq-opt, iq-compile) then writes one new store holding every
 * tensor the module still refers to and points the module's
 * `iq.weight_store` attribute at it. The overlay is process-wide and not
 * thread-safe; iq contexts run passes on one thread. */
#ifndef IQ_WEIGHT_OVERLAY_H
#define IQ_WEIGHT_OVERLAY_H

#include <stdbool.h>
#include <stdint.h>

#include "mlir-c/IR.h"

#include "iq/support.h"
#include "iq/weight_store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Adds a copy of a tensor under `name`, replacing an earlier overlay
 * tensor of that name. The bytes follow weight-store conventions (row-major,
 * 4-bit types packed low nibble first). */
bool iq_overlay_put(const char *name, iq_dtype_t dtype, uint32_t rank, const int64_t *dims,
                    const void *data, uint64_t byte_size, iq_error_t **error);

/* Adds a float32 tensor converted from `values` (rank 1 or 2). */
bool iq_overlay_put_f32(const char *name, uint32_t rank, const int64_t *dims, const double *values,
                        iq_error_t **error);

/* Adds a float16 tensor (IEEE binary16, rounded to nearest, ties to even)
 * converted from `values` (rank 1 or 2). */
bool iq_overlay_put_f16(const char *name, uint32_t rank, const int64_t *dims, const double *values,
                        iq_error_t **error);

/* Returns true when passes added tensors that are not in any store yet. */
bool iq_overlay_pending(void);

/* Drops every overlay tensor and closes the cached input store. */
void iq_overlay_reset(void);

/* Reads the tensor `name` as doubles, from the overlay or else from the
 * store the module's `iq.weight_store` names (resolved against
 * iq_weight_store_base_dir()). It must have rows * cols elements of type
 * f32, f16, bf16 or f64. With `transposed`, the stored 2-D
 * tensor [cols, rows] is returned as its transpose [rows, cols]; `rows`
 * and `cols` are the logical sizes. */
bool iq_overlay_read(MlirOperation module, const char *name, bool transposed, int64_t rows,
                     int64_t cols, double *values, iq_error_t **error);

/* Finds the tensor `name` in the overlay or else in the module's store and
 * returns its type and raw bytes (weight-store conventions) without a
 * copy. The bytes stay valid until the overlay changes or is reset. */
bool iq_overlay_read_bytes(MlirOperation module, const char *name, iq_dtype_t *dtype,
                           const uint8_t **data, uint64_t *byte_size, iq_error_t **error);

/* Writes a store at `path` holding every tensor that an iq.weight op of
 * `module` names (overlay tensors first, then the module's current store),
 * sets the module's `iq.weight_store` to `reference` and clears the
 * overlay. The file appears only when every tensor was written. */
bool iq_overlay_write_store(MlirOperation module, const char *path, const char *reference,
                            iq_error_t **error);

/* The path of the store the module's `iq.weight_store` names, resolved
 * against iq_weight_store_base_dir(); the caller frees it. NULL when the
 * module names none. */
char *iq_overlay_store_path(MlirOperation module);

#ifdef __cplusplus
}
#endif

#endif /* IQ_WEIGHT_OVERLAY_H */
