/* Kernels of the float path, generated as MLIR source (memref, scf, arith,
 * math) specialized to a model's static sizes. Each function appends one
 * kernel definition to `text` unless one of that name was already
 * emitted, and writes the kernel's name to `name`. Activations are float32
 * memrefs [1, tokens, width]; weights keep their stored element type and
 * are widened to float32 when loaded. */
#ifndef IQ_KERNELS_H
#define IQ_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "TextBuffer.h"

#define IQ_KERNEL_NAME_SIZE 128

/* Names of kernels already in the module, so each is emitted once. */
typedef struct iq_kernel_set {
  char (*names)[IQ_KERNEL_NAME_SIZE];
  size_t count, capacity;
} iq_kernel_set_t;

void iq_kernel_set_free(iq_kernel_set_t *set);

/* Returns true when `name` is new (and records it), false when a kernel of
 * that name was already emitted or memory ran out (then text->failed). */
bool iq_kernel_claim(iq_kernel_set_t *set, const char *name, iq_text_t *text);

/* Writes to `out` MLIR lines (each starting with `indent`) that compute
 * %<prefix> = exp(%<x>) for an f32 %<x>: x clamped to [-87, 88], n =
 * floor(x log2(e) + 0.5), r = x - n ln(2) in two fma steps, Cephes'
 * degree-5 polynomial for exp(r) (S. L. Moshier, Cephes Math Library,
 * expf.c), times 2^n built from the exponent bits. Every step is an
 * explicit fma or a single rounding, so all targets give the same bits.
 * Measured within 1.01 ulp of exp over [-87, 88]. Without a library
 * call, loops of it vectorize. */
void iq_exp_f32_text(char *out, size_t size, const char *indent, const char *prefix,
                     const char *x);

/* table [vocab, hidden] of `weight_type`; ids [1, T] i64 -> [1, T, hidden]. */
void iq_kernel_embedding(iq_text_t *text, iq_kernel_set_t *set, int64_t vocab, int64_t hidden,
                         const char *weight_type, char *name);

/* x / sqrt(mean(x^2) + epsilon) * gain over rows of `width`; without gain
 * when `gain_type` is NULL. */
void iq_kernel_rms_norm(iq_text_t *text, iq_kernel_set_t *set, int64_t width, double epsilon,
                        const char *gain_type, char *name);

/* Output columns per block of the linear kernel; blocks are the unit of
 * work that threads share. */
#define IQ_KERNEL_COLUMN_BLOCK 64

/* y = x * W^T with W [out, in], or stored [in, out] when `stored_in_out`.
 * With `parallel`, column blocks run on OpenMP threads. */
void iq_kernel_linear(iq_text_t *text, iq_kernel_set_t *set, int64_t in, int64_t out,
                      const char *weight_type, bool stored_in_out, bool parallel, char *name);

/* Rotary embedding of heads of `head_dim` in rows of `width`. The inverse
 * frequencies come from the global table `frequencies` of head_dim / 2. */
void iq_kernel_rope(iq_text_t *text, iq_kernel_set_t *set, int64_t width, int64_t head_dim,
                    bool interleaved, const char *frequencies, char *name);

/* Writes k and v at their positions into the caches [1, kv_heads, C,
 * head_dim], then computes causal attention of q over the caches. */
void iq_kernel_attention(iq_text_t *text, iq_kernel_set_t *set, int64_t heads, int64_t kv_heads,
                         int64_t head_dim, double scale, char *name);

/* y = silu(gate) * up. */
void iq_kernel_silu_mul(iq_text_t *text, iq_kernel_set_t *set, int64_t width, char *name);

/* y = a + b. */
void iq_kernel_add(iq_text_t *text, iq_kernel_set_t *set, int64_t width, char *name);

#endif /* IQ_KERNELS_H */
