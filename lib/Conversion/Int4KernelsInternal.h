/* Pieces shared by the int4 kernel generator's files. */
#ifndef IQ_INT4_KERNELS_INTERNAL_H
#define IQ_INT4_KERNELS_INTERNAL_H

#include "TextBuffer.h"
#include "iq/int4_kernels.h"

/* The Hadamard K factors, in the order a size is matched against them
 * (the first that divides K with a power-of-two quotient wins). */
#define IQ_INT4_HADAMARD_FACTOR_COUNT 12
extern const int iq_int4_hadamard_factors[IQ_INT4_HADAMARD_FACTOR_COUNT];

/* Emits the ±1 tables as memref.global constants @iqk_hadamard_<order>. */
bool iq_int4_emit_hadamard_tables(iq_text_t *t, iq_error_t **error);

/* Emits iqk_<isa>_quantize (factor 0: no transform), or
 * iqk_<isa>_quantize_h<factor> (1: power-of-two sizes). */
void iq_int4_emit_quantize(iq_text_t *t, const iq_int4_isa_t *isa, int factor);

/* Emits iqk_<isa>_kv_append and iqk_<isa>_attention (Int4Attention.c). */
void iq_int4_emit_kv_append(iq_text_t *t, const iq_int4_isa_t *isa);
void iq_int4_emit_attention(iq_text_t *t, const iq_int4_isa_t *isa);

/* Emits iqk_<isa>_linear_f16, the block-diagonal float16 linear
 * (Int4HalfLinear.c). */
void iq_int4_emit_linear_f16(iq_text_t *t, const iq_int4_isa_t *isa);

#endif /* IQ_INT4_KERNELS_INTERNAL_H */
