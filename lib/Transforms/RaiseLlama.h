/* Internal declarations shared by the recognition (RaiseLlama.c) and the
 * rebuilding (RaiseLlamaBuild.c) of iq-raise-llama. */
#ifndef IQ_RAISE_LLAMA_H
#define IQ_RAISE_LLAMA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mlir-c/IR.h"

#include "iq/passes.h"

#define MAX_LAYERS 512

typedef struct norm_site {
  MlirOperation op;
  MlirValue output;
  MlirValue gain; /* null for a norm without gain */
  double epsilon;
  size_t position;
} norm_site_t;

typedef struct linear_site {
  MlirOperation op;
  MlirValue input, output;
  MlirOperation weight; /* iq.weight or arith.constant */
  bool stored_in_out;   /* the source tensor is [in, out] */
  int64_t in, out;
  size_t position;
  bool used;
} linear_site_t;

typedef struct attention_site {
  MlirOperation core; /* the fused op, or the Softmax of a decomposed one */
  MlirOperation qk, pv; /* decomposed: the two MatMuls around the Softmax */
  size_t position;
  int64_t num_heads, num_kv_heads; /* 0 when the op does not say */
  int64_t head_dim;                /* from a cache operand, or 0 */
  double scale;                    /* 0 when the op does not say */
} attention_site_t;

typedef struct layer_sites {
  norm_site_t *attention_norm, *ffn_norm;
  linear_site_t *q, *k, *v, *o, *gate, *up, *down;
  attention_site_t *attention;
} layer_sites_t;

typedef struct raise_state {
  MlirOperation function;
  MlirLocation location;
  const char *store_path;
  const iq_pass_options_t *options;

  MlirOperation *ops; /* the function body in program order */
  size_t num_ops;

  norm_site_t *norms;
  size_t num_norms;
  linear_site_t *linears;
  size_t num_linears;
  attention_site_t *attentions;
  size_t num_attentions;
  layer_sites_t layers[MAX_LAYERS];

  MlirOperation embedding_table;
  norm_site_t *final_norm;
  linear_site_t *lm_head;

  int64_t hidden, vocab, num_layers, num_heads, num_kv_heads, head_dim, ffn;
  double theta, epsilon, scale;
  const char *rope_style;
} raise_state_t;

/* Emits "iq-raise-llama: MESSAGE" on `at` (or on the function when `at`
 * is null) and returns false. */
bool raise_fail(raise_state_t *s, MlirOperation at, const char *format, ...)
    __attribute__((format(printf, 3, 4)));

/* Builds the canonical function from the recognised sites and inserts it
 * before the original function, which the caller then erases. Records the
 * configuration on the module as `iq.config`. */
bool build_canonical(raise_state_t *s, MlirOperation module);

#endif /* IQ_RAISE_LLAMA_H */
