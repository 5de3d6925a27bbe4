/* Scalar references of the W4A4 kernels (tests only). */
#ifndef IQ_TEST_KERNELS_REFERENCE_H
#define IQ_TEST_KERNELS_REFERENCE_H

#include <stdint.h>

/* y[m][n] from activation codes a[m][k] (za, sa per row) and weight codes
 * w[n][k] (zw, sw per row). */
void reference_matmul(int64_t m, int64_t n, int64_t k, const uint8_t *a, const uint8_t *za,
                      const float *sa, const uint8_t *w, const uint8_t *zw, const float *sw,
                      float *y);

/* The per-token quantizer of iqk_activations_quantize. */
void reference_quantize_row(const float *x, int64_t k, uint8_t *codes, uint8_t *zero,
                            float *scale);

#endif /* IQ_TEST_KERNELS_REFERENCE_H */
