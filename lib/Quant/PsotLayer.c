/* The per-layer PSOT driver; see iq/quant.h. */
#include "iq/quant.h"
#include "quant_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

void iq_psot_options_init(iq_psot_options_t *options) {
  options->block_diag = 2;
  options->temperature = 2.0;
  options->lr[0] = 2.0;
  options->lr[1] = 2.0;
  options->lr[2] = 2.0;
  options->lr_end_factor = 0.01;
  options->epochs = 4;
  options->batch_windows = 4;
  options->rotation_mean = true;
  options->aug_token = 30.0;
  options->aug_start = 2;
  options->eta_m = 10;
  options->aug_attention = true;
  options->cayley_iterations = 5;
  options->retraction_probability = 1.0 / 101.0;
  options->final_retraction = true;
  options->keep_best = true;
  options->seed = 0;
}

static bool check_layer(const iq_psot_layer_input_t *in,
                        const iq_psot_options_t *options, iq_error_t **error) {
  if (in->x == NULL || in->p == NULL || in->v == NULL || in->m == NULL) {
    return iq_error_set(error, NULL, "psot", "pass the X, P, V and M activations",
                        "layer %zu: an activation array is missing", in->layer);
  }
  if (in->windows == 0 || in->tokens == 0) {
    return iq_error_set(error, NULL, "psot", NULL,
                        "layer %zu: %zu windows of %zu tokens is empty", in->layer,
                        in->windows, in->tokens);
  }
  if (options->block_diag == 0 || in->hidden % options->block_diag != 0) {
    return iq_error_set(error, NULL, "psot", "use a block_diag that divides the hidden size",
                        "block_diag %zu does not divide hidden size %zu",
                        options->block_diag, in->hidden);
  }
  if (in->kv_heads == 0 || in->head_dim == 0 || in->heads % in->kv_heads != 0) {
    return iq_error_set(error, NULL, "psot", NULL,
                        "invalid heads: %zu query heads, %zu KV heads, head size %zu",
                        in->heads, in->kv_heads, in->head_dim);
  }
  if (options->epochs < 1 || options->batch_windows == 0 ||
      !(options->temperature > 0.0) || options->cayley_iterations < 1 ||
      !(options->lr[0] > 0.0 && options->lr[1] > 0.0 && options->lr[2] > 0.0) ||
      !(options->lr_end_factor > 0.0) ||
      !(options->retraction_probability >= 0.0 && options->retraction_probability <= 1.0)) {
    return iq_error_set(error, NULL, "psot",
                        "use epochs >= 1, batch_windows >= 1, T > 0, positive learning rates and "
                        "a retraction probability in [0, 1]",
                        "PSOT options are invalid: %d epochs, %zu windows per batch, T = %g",
                        options->epochs, options->batch_windows, options->temperature);
  }
  size_t rows = in->windows * in->tokens;
  if (!iq_quant_check_finite(in->x, rows, in->hidden, "PSOT input X", error) ||
      !iq_quant_check_finite(in->p, rows, in->hidden, "PSOT input P", error) ||
      !iq_quant_check_finite(in->v, rows, in->kv_heads * in->head_dim, "PSOT input V", error) ||
      !iq_quant_check_finite(in->m, rows, in->heads * in->head_dim, "PSOT input M", error)) {
    return false;
  }
  size_t k;
  if (!iq_hadamard_factor(in->hidden / options->block_diag, &k, error) ||
      !iq_hadamard_factor(in->head_dim, &k, error)) {
    return false;
  }
  return true;
}

/* Token weights of one tensor, from the given or computed deviations. */
static bool tensor_weights(const float *z, size_t width, const float *deviation,
                           const iq_psot_layer_input_t *in,
                           const iq_psot_options_t *options, float *weights,
                           iq_error_t **error) {
  size_t rows = in->windows * in->tokens;
  float *computed = NULL;
  if (deviation == NULL) {
    computed = malloc(rows * sizeof(float));
    if (computed == NULL) {
      return iq_error_set(error, NULL, "psot", NULL,
                          "out of memory for %zu token deviations", rows);
    }
    for (size_t w = 0; w < in->windows; ++w) {
      iq_psot_window_deviation(z + w * in->tokens * width, in->tokens, width,
                               computed + w * in->tokens);
    }
    deviation = computed;
  }
  iq_psot_token_weights(deviation, in->windows, in->tokens, in->layer, options,
                        weights);
  free(computed);
  return true;
}

/* Copies the rows of the windows order[first .. first + count) into
 * `batch` ([count * tokens x width]). */
static void gather(const float *z, size_t width, size_t tokens,
                   const size_t *order, size_t count, float *batch) {
  size_t window_values = tokens * width;
  for (size_t i = 0; i < count; ++i) {
    memcpy(batch + i * window_values, z + order[i] * window_values,
           window_values * sizeof(float));
  }
}

/* One parameter set: `count` matrices of n x n, with the best ones seen. */
typedef struct rotation_set {
  double *q;
  double *grad;
  double *best;
  double best_loss;
  size_t count;
  size_t n;
} rotation_set_t;

static bool step_set(rotation_set_t *set, double lr, int iterations,
                     double retraction_probability, uint64_t *random,
                     iq_error_t **error) {
  size_t size = set->n * set->n;
  for (size_t i = 0; i < set->count; ++i) {
    bool retract = iq_splitmix64_uniform(random) < retraction_probability;
    if (!iq_quant_cayley_step(set->q + i * size, set->grad + i * size, set->n,
                              lr, retract, iterations, error)) {
      return false;
    }
  }
  return true;
}

static bool init_set(rotation_set_t *set, size_t count, size_t n,
                     uint64_t seed, iq_error_t **error) {
  set->count = count;
  set->n = n;
  set->q = malloc(count * n * n * sizeof(double));
  set->grad = malloc(count * n * n * sizeof(double));
  set->best = malloc(count * n * n * sizeof(double));
  set->best_loss = INFINITY;
  if (set->q == NULL || set->grad == NULL || set->best == NULL) {
    return iq_error_set(error, NULL, "psot", NULL,
                        "out of memory for %zu rotations of size %zu", count, n);
  }
  /* Every matrix starts from the same random Hadamard, as in the
   * reference, where the seed is reset on every call. */
  if (!iq_random_hadamard(n, seed, set->q, error)) {
    return false;
  }
  for (size_t i = 1; i < count; ++i) {
    memcpy(set->q + i * n * n, set->q, n * n * sizeof(double));
  }
  return true;
}

/* Remembers the current matrices when `loss` is the lowest so far. */
static void record_best(rotation_set_t *set, double loss) {
  if (loss < set->best_loss) {
    set->best_loss = loss;
    memcpy(set->best, set->q, set->count * set->n * set->n * sizeof(double));
  }
}

static bool finish_set(rotation_set_t *set, bool keep_best, bool retract,
                       float *out, iq_error_t **error) {
  size_t size = set->n * set->n;
  if (keep_best) {
    memcpy(set->q, set->best, set->count * size * sizeof(double));
  }
  for (size_t i = 0; retract && i < set->count; ++i) {
    if (!iq_qr_retraction(set->q + i * size, set->n, error)) {
      return false;
    }
  }
  for (size_t i = 0; i < set->count * size; ++i) {
    out[i] = (float)set->q[i];
  }
  return true;
}

static void free_set(rotation_set_t *set) {
  free(set->q);
  free(set->grad);
  free(set->best);
}

/* Evaluates the three losses on all windows and records the best
 * matrices. `balance` is the stage 2 ratio Mcost / Vcost of the start,
 * set on the first call (when it is 0). */
static bool evaluate_all(const iq_psot_layer_input_t *in,
                         const iq_psot_options_t *options, const float *weights,
                         rotation_set_t *stage1, rotation_set_t *stage2,
                         rotation_set_t *stage3, double *balance,
                         iq_error_t **error) {
  size_t rows = in->windows * in->tokens;
  const float *v_weights = options->aug_attention ? weights + 2 * rows : NULL;
  const float *m_weights = options->aug_attention ? weights + 3 * rows : NULL;
  double loss1, loss2, loss3, m_cost, v_cost;
  bool ok = iq_psot_block_cost(in->x, rows, in->hidden, options->block_diag,
                               stage1->q, weights, options->temperature,
                               options->rotation_mean, &loss1, NULL, error) &&
            iq_psot_head_cost(in->v, in->m, rows, in->heads, in->kv_heads,
                              in->head_dim, stage2->q, v_weights, m_weights,
                              options->temperature, options->rotation_mean,
                              &loss2, &m_cost, &v_cost, NULL, error) &&
            iq_psot_block_cost(in->p, rows, in->hidden, options->block_diag,
                               stage3->q, weights + rows, options->temperature,
                               options->rotation_mean, &loss3, NULL, error);
  if (!ok) {
    return false;
  }
  if (*balance == 0.0) {
    *balance = v_cost > 0.0 ? m_cost / v_cost : 1.0;
  }
  record_best(stage1, loss1);
  record_best(stage2, m_cost + *balance * v_cost);
  record_best(stage3, loss3);
  return true;
}

bool iq_psot_layer(const iq_psot_layer_input_t *in,
                   const iq_psot_options_t *options,
                   iq_psot_progress_t progress, void *user, float *q1,
                   float *q2, float *q4, double *loss_history,
                   iq_error_t **error) {
  if (!check_layer(in, options, error)) {
    return false;
  }
  size_t rows = in->windows * in->tokens;
  size_t hidden = in->hidden;
  size_t v_width = in->kv_heads * in->head_dim;
  size_t m_width = in->heads * in->head_dim;
  size_t d = hidden / options->block_diag;
  size_t batch_rows = options->batch_windows * in->tokens;

  float *weights = malloc(4 * rows * sizeof(float));
  size_t *order = malloc(in->windows * sizeof(size_t));
  float *batch_x = malloc(batch_rows * hidden * sizeof(float));
  float *batch_p = malloc(batch_rows * hidden * sizeof(float));
  float *batch_v = malloc(batch_rows * v_width * sizeof(float));
  float *batch_m = malloc(batch_rows * m_width * sizeof(float));
  float *batch_weights = malloc(4 * batch_rows * sizeof(float));
  rotation_set_t stage1 = {0}, stage2 = {0}, stage3 = {0};
  bool ok = weights != NULL && order != NULL && batch_x != NULL &&
            batch_p != NULL && batch_v != NULL && batch_m != NULL &&
            batch_weights != NULL;
  if (!ok) {
    iq_error_set(error, NULL, "psot", NULL,
                 "out of memory for PSOT on layer %zu", in->layer);
  }

  float *x_weights = weights;
  float *p_weights = weights + rows;
  float *v_weights = weights + 2 * rows;
  float *m_weights = weights + 3 * rows;
  ok = ok && tensor_weights(in->x, hidden, in->x_deviation, in, options, x_weights, error) &&
       tensor_weights(in->p, hidden, in->p_deviation, in, options, p_weights, error) &&
       tensor_weights(in->v, v_width, in->v_deviation, in, options, v_weights, error) &&
       tensor_weights(in->m, m_width, in->m_deviation, in, options, m_weights, error);
  ok = ok && init_set(&stage1, options->block_diag, d, options->seed, error) &&
       init_set(&stage2, in->kv_heads, in->head_dim, options->seed, error) &&
       init_set(&stage3, options->block_diag, d, options->seed, error);

  double balance = 0.0;
  if (ok && options->keep_best) {
    ok = evaluate_all(in, options, weights, &stage1, &stage2, &stage3, &balance, error);
  }
  uint64_t random = options->seed ^ 0x5053u; /* shuffles and retractions */
  for (size_t w = 0; ok && w < in->windows; ++w) {
    order[w] = w;
  }
  for (int epoch = 0; ok && epoch < options->epochs; ++epoch) {
    double factor = 1.0 + (options->lr_end_factor - 1.0) * (double)epoch / (double)options->epochs;
    for (size_t i = in->windows; i > 1; --i) {
      size_t j = (size_t)(iq_splitmix64_next(&random) % i);
      size_t t = order[i - 1];
      order[i - 1] = order[j];
      order[j] = t;
    }
    double sums[3] = {0.0, 0.0, 0.0};
    size_t batches = 0;
    for (size_t first = 0; ok && first < in->windows; first += options->batch_windows) {
      size_t count = in->windows - first < options->batch_windows
                         ? in->windows - first
                         : options->batch_windows;
      size_t n = count * in->tokens;
      const size_t *windows = order + first;
      gather(in->x, hidden, in->tokens, windows, count, batch_x);
      gather(in->p, hidden, in->tokens, windows, count, batch_p);
      gather(in->v, v_width, in->tokens, windows, count, batch_v);
      gather(in->m, m_width, in->tokens, windows, count, batch_m);
      for (size_t s = 0; s < 4; ++s) {
        gather(weights + s * rows, 1, in->tokens, windows, count,
               batch_weights + s * batch_rows);
      }
      const float *bv_weights = options->aug_attention ? batch_weights + 2 * batch_rows : NULL;
      const float *bm_weights = options->aug_attention ? batch_weights + 3 * batch_rows : NULL;

      double loss1, loss2, loss3, m_cost, v_cost;
      ok = iq_psot_block_cost(batch_x, n, hidden, options->block_diag, stage1.q,
                              batch_weights, options->temperature,
                              options->rotation_mean, &loss1, stage1.grad, error) &&
           iq_psot_head_cost(batch_v, batch_m, n, in->heads, in->kv_heads,
                             in->head_dim, stage2.q, bv_weights, bm_weights,
                             options->temperature, options->rotation_mean, &loss2,
                             &m_cost, &v_cost, stage2.grad, error) &&
           iq_psot_block_cost(batch_p, n, hidden, options->block_diag, stage3.q,
                              batch_weights + batch_rows, options->temperature,
                              options->rotation_mean, &loss3, stage3.grad, error);
      ok = ok &&
           step_set(&stage1, options->lr[0] * factor, options->cayley_iterations,
                    options->retraction_probability, &random, error) &&
           step_set(&stage2, options->lr[1] * factor, options->cayley_iterations,
                    options->retraction_probability, &random, error) &&
           step_set(&stage3, options->lr[2] * factor, options->cayley_iterations,
                    options->retraction_probability, &random, error);
      if (ok) {
        sums[0] += loss1;
        sums[1] += loss2;
        sums[2] += loss3;
        ++batches;
      }
    }
    if (ok) {
      double losses[3] = {sums[0] / (double)batches, sums[1] / (double)batches,
                          sums[2] / (double)batches};
      if (loss_history != NULL) {
        memcpy(loss_history + 3 * (size_t)epoch, losses, sizeof losses);
      }
      if (progress != NULL) {
        progress(user, epoch, options->epochs, losses);
      }
    }
    if (ok && options->keep_best) {
      ok = evaluate_all(in, options, weights, &stage1, &stage2, &stage3, &balance, error);
    }
  }

  bool keep = options->keep_best;
  bool retract = options->final_retraction;
  ok = ok && finish_set(&stage1, keep, retract, q1, error) &&
       finish_set(&stage2, keep, retract, q2, error) &&
       finish_set(&stage3, keep, retract, q4, error);
  free_set(&stage1);
  free_set(&stage2);
  free_set(&stage3);
  free(weights);
  free(order);
  free(batch_x);
  free(batch_p);
  free(batch_v);
  free(batch_m);
  free(batch_weights);
  return ok;
}
