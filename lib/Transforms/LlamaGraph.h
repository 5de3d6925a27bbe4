/* The ops of a canonical LLaMA graph (the output of iq-raise-llama) found
 * by structure, and helpers that passes rewriting its weights share. */
#ifndef IQ_LLAMA_GRAPH_H
#define IQ_LLAMA_GRAPH_H

#include <stdbool.h>
#include <stdint.h>

#include "mlir-c/IR.h"

#include "iq/ir.h"
#include "iq/support.h"

/* iq_op_is that is false for a null op (a value without a defining op). */
static inline bool llama_is(MlirOperation op, const char *short_name) {
  return !mlirOperationIsNull(op) && iq_op_is(op, short_name);
}

typedef struct llama_layer {
  MlirOperation attn_norm, q, k, v, rope_q, rope_k, attention, o, attn_residual;
  MlirOperation mlp_norm, gate, up, silu_mul, down, mlp_residual;
} llama_layer_t;

typedef struct llama_graph {
  MlirOperation module, function;
  MlirOperation embedding, final_norm, lm_head;
  llama_layer_t *layers;
  int64_t num_layers, hidden, heads, kv_heads, head_dim, ffn, vocab;
} llama_graph_t;

/* Finds the ops of every layer of @forward, reading the sizes from the
 * module's iq.config. On a graph that is not canonical it emits an error
 * on the offending op (prefixed with `pass`) and returns false. */
bool llama_graph_find(MlirOperation module, const char *pass, llama_graph_t *graph);
void llama_graph_free(llama_graph_t *graph);

/* The only user of `value`, or a null op when it has none or several. */
MlirOperation llama_single_user(MlirValue value);

/* Reads the weight of a linear or lm_head (operand 1, from iq.weight) as
 * doubles [out, in]. The caller frees *values. */
bool llama_read_linear(MlirOperation module, MlirOperation linear, int64_t *out, int64_t *in,
                       double **values, iq_error_t **error);

/* The name of the iq.weight op behind operand `index` of `op`, without a
 * trailing ".T", written into `buffer`; false when it is not a weight. */
bool llama_weight_base_name(MlirOperation op, intptr_t index, char *buffer, size_t size);

/* Adds `values` [rows, cols] (or a vector when cols is 0) to the weight
 * overlay as float32 under `name`, makes an iq.weight op for it before
 * `user`, sets it as operand `index` of `user` and erases the old weight
 * op when nothing else uses it. */
bool llama_replace_weight(MlirOperation user, intptr_t index, const char *name, int64_t rows,
                          int64_t cols, const double *values, iq_error_t **error);

/* Emits `error` as a diagnostic on `op`, prefixed with the pass name, and
 * destroys it. Returns false. */
bool llama_emit_error(MlirOperation op, const char *pass, iq_error_t *error);

#endif /* IQ_LLAMA_GRAPH_H */
