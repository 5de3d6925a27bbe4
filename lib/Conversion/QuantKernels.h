/* Kernels of the quantized float path, generated as MLIR source like those
 * of Kernels.h: online Hadamard transforms, fake quantization of
 * activations (quantize and dequantize in one pass, in float32) and linear
 * layers over 4-bit weight codes. Their arithmetic matches lib/Quant
 * (iq/quant.h) operation for operation, so the results are bit-identical
 * to that library's quantizers. */
#ifndef IQ_QUANT_KERNELS_H
#define IQ_QUANT_KERNELS_H

#include <stdbool.h>
#include <stdint.h>

#include "Kernels.h"
#include "iq/support.h"

/* y = the normalized Hadamard transform of every block of `size` in rows
 * of `width`: iq_hadamard_transform of iq/quant.h on each block, or
 * iq_hadamard_transform_transposed when `transposed`. A size of K * 2^m
 * runs the fast Walsh-Hadamard butterflies along 2^m, scales by
 * 1/sqrt(size) and mixes the K rows with the K x K table. Fails for a
 * size without a Hadamard matrix. */
bool iq_kernel_hadamard(iq_text_t *text, iq_kernel_set_t *set, int64_t width, int64_t size,
                        bool transposed, char *name, iq_error_t **error);

/* Fake quantization of rows of `width` in groups of `group` columns (the
 * whole row when group == width): asymmetric, `bits` bits, range clipped
 * by `clip`, y = s * (code - z). With `include_zero` the range contains 0
 * and eps is 1e-8, as in iq_quantize_per_token. Without it the range is
 * the group's own min and max and eps is 1e-6, as in
 * iq_quantize_groupwise. */
void iq_kernel_fake_quant(iq_text_t *text, iq_kernel_set_t *set, int64_t width, int64_t group,
                          int bits, double clip, bool include_zero, char *name);

/* y = x * W^T where W [out, in] is s[n] * (code[n, k] - z[n]): codes are
 * `bits` (4 or 8) wide in row-major order in a memref of bytes, 4-bit ones
 * two per byte low nibble first. Scales and zero points are [out, 1]
 * float32. */
void iq_kernel_linear_codes(iq_text_t *text, iq_kernel_set_t *set, int64_t in, int64_t out,
                            int bits, char *name);

#endif /* IQ_QUANT_KERNELS_H */
