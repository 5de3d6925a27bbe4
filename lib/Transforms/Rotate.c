/* iq-rotate: folds orthogonal rotations into the weights of a norm-fused
 * canonical LLaMA graph and inserts the online transforms that cannot be
 * folded, so the float model computes the same function in rotated bases.
 *
 * Conventions: activations are row vectors, y = x * W^T with W [out, in].
 * If the input of a consumer becomes x * R, the consumer needs W * R; a
 * producer that must emit y * R needs R^T * W. For layer i, B1_i and B4_i
 * are block-diagonal D x D matrices of b blocks Q1_i[j], Q4_i[j] (d = D / b)
 * and R2_i the block-diagonal matrix of the per-KV-head blocks Q2_i[g]:
 *   E        <- E * B1_0
 *   Wq,Wk,Wv <- W * B1_i          Wv <- R2_i^T * Wv
 *   Wo       <- B4_i^T * Wo * blockdiag_h(Q2_i[h / group])
 *   Wgate,Wup <- W * B4_i
 *   Wdown    <- B1_{i+1}^T * Wdown * H_I^T   (B1_L is the final basis F)
 *   lm_head  <- lm_head * F
 * with online ops: an iq.hadamard of head_dim on q and k after RoPE, one of
 * ffn_size on the down_proj input, and the residual converters
 *   h_mid  = h * C1_i + attn_out,   C1_i = B1_i^T * B4_i
 *   h_next = h_mid * C2_i + mlp_out, C2_i = B4_i^T * B1_{i+1}
 * which are omitted when they are the identity. The norms must be
 * weightless (iq-fuse-norms), because RMSNorm commutes only with
 * orthogonal maps and not with a gain. This follows InfoQuant's rotation
 * folding (github.com/LLIKKE/InfoQuant); QuaRot (Ashkboos et al. 2024) is
 * the special case of one Hadamard basis for every layer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"

#include "LlamaGraph.h"
#include "iq/builder.h"
#include "iq/ir.h"
#include "iq/passes.h"
#include "iq/quant.h"
#include "iq/weight_overlay.h"

#define PASS "iq-rotate"

/* The bases of one layer: b blocks of d x d for Q1 and Q4 and kv_heads
 * blocks of head_dim x head_dim for Q2, each row-major. */
typedef struct layer_bases {
  double **q1, **q4, **q2;
} layer_bases_t;

typedef struct rotation_plan {
  int64_t blocks, block_size; /* b and d = D / b */
  layer_bases_t *layers;      /* num_layers + 1: the last holds only q1, the final basis */
} rotation_plan_t;

/* ---- Dense helpers -------------------------------------------------------- */

/* values [rows, cols] <- values * blockdiag(blocks), blocks of size n.
 * `scratch` holds rows * n doubles. */
static void multiply_right(double *values, int64_t rows, int64_t cols, double *const *blocks,
                           int64_t n, double *scratch) {
  for (int64_t j = 0; j < cols / n; ++j) {
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)n, (int)n, 1.0,
                values + j * n, (int)cols, blocks[j], (int)n, 0.0, scratch, (int)n);
    for (int64_t r = 0; r < rows; ++r)
      memcpy(values + r * cols + j * n, scratch + r * n, (size_t)n * sizeof *scratch);
  }
}

/* values [rows, cols] <- blockdiag(blocks)^T * values, blocks of size n.
 * `scratch` holds n * cols doubles. */
static void multiply_left_transposed(double *values, int64_t rows, int64_t cols,
                                     double *const *blocks, int64_t n, double *scratch) {
  for (int64_t j = 0; j < rows / n; ++j) {
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)cols, (int)n, 1.0,
                blocks[j], (int)n, values + j * n * cols, (int)cols, 0.0, scratch, (int)cols);
    memcpy(values + j * n * cols, scratch, (size_t)(n * cols) * sizeof *scratch);
  }
}

/* SplitMix64 (Steele, Lea and Flood 2014). */
static uint64_t splitmix64(uint64_t *state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* A random orthogonal n x n matrix: Gaussian entries (Box-Muller), then
 * modified Gram-Schmidt on the rows. */
static void random_orthogonal(int64_t n, uint64_t *state, double *q) {
  for (int64_t i = 0; i < n * n; ++i) {
    double u1 = ((double)(splitmix64(state) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)(splitmix64(state) >> 11) / 9007199254740992.0;
    q[i] = sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
  }
  for (int64_t i = 0; i < n; ++i) {
    double *row = q + i * n;
    for (int64_t p = 0; p < i; ++p) {
      const double *previous = q + p * n;
      double dot = 0.0;
      for (int64_t c = 0; c < n; ++c)
        dot += row[c] * previous[c];
      for (int64_t c = 0; c < n; ++c)
        row[c] -= dot * previous[c];
    }
    double norm = 0.0;
    for (int64_t c = 0; c < n; ++c)
      norm += row[c] * row[c];
    norm = sqrt(norm);
    for (int64_t c = 0; c < n; ++c)
      row[c] /= norm;
  }
}

static bool is_identity(double *const *blocks, int64_t count, int64_t n) {
  for (int64_t j = 0; j < count; ++j)
    for (int64_t r = 0; r < n; ++r)
      for (int64_t c = 0; c < n; ++c)
        if (fabs(blocks[j][r * n + c] - (r == c ? 1.0 : 0.0)) > 1e-12)
          return false;
  return true;
}

/* ---- Building the bases --------------------------------------------------- */

static double **allocate_blocks(int64_t count, int64_t n) {
  double **blocks = calloc((size_t)count, sizeof *blocks);
  if (!blocks)
    return NULL;
  for (int64_t j = 0; j < count; ++j) {
    if (!(blocks[j] = malloc((size_t)(n * n) * sizeof **blocks))) {
      for (int64_t k = 0; k < j; ++k)
        free(blocks[k]);
      free(blocks);
      return NULL;
    }
  }
  return blocks;
}

static void free_blocks(double **blocks, int64_t count) {
  if (!blocks)
    return;
  for (int64_t j = 0; j < count; ++j)
    free(blocks[j]);
  free(blocks);
}

static void free_plan(rotation_plan_t *plan, const llama_graph_t *graph) {
  if (!plan->layers)
    return;
  for (int64_t i = 0; i <= graph->num_layers; ++i) {
    free_blocks(plan->layers[i].q1, plan->blocks);
    free_blocks(plan->layers[i].q4, plan->blocks);
    free_blocks(plan->layers[i].q2, graph->kv_heads);
  }
  free(plan->layers);
  plan->layers = NULL;
}

/* Reads `layers.{i}.{kind}.{j}` [n, n] from the rotations store. */
static bool read_rotation(const iq_weight_store_t *store, const char *path, int64_t layer,
                          const char *kind, int64_t index, int64_t n, double *out,
                          iq_error_t **error) {
  char name[96];
  snprintf(name, sizeof name, "layers.%lld.%s.%lld", (long long)layer, kind, (long long)index);
  const iq_weight_tensor_t *tensor = iq_weight_store_find(store, name);
  if (!tensor)
    return iq_error_set(error, path, name, "write one tensor per layer, kind and block",
                        "the rotations file has no tensor '%s'", name);
  if (tensor->rank != 2 || tensor->dims[0] != n || tensor->dims[1] != n ||
      (tensor->dtype != IQ_DTYPE_F32 && tensor->dtype != IQ_DTYPE_F64))
    return iq_error_set(error, path, name, "check block-diag against the file",
                        "expected an f32 or f64 tensor of %lld x %lld", (long long)n,
                        (long long)n);
  for (int64_t i = 0; i < n * n; ++i) {
    if (tensor->dtype == IQ_DTYPE_F32) {
      float value;
      memcpy(&value, tensor->data + i * 4, 4);
      out[i] = value;
    } else {
      memcpy(&out[i], tensor->data + i * 8, 8);
    }
  }
  /* Check orthogonality, so a wrong file fails here and not as bad logits. */
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < n; ++c) {
      double dot = 0.0;
      for (int64_t k = 0; k < n; ++k)
        dot += out[r * n + k] * out[c * n + k];
      if (fabs(dot - (r == c ? 1.0 : 0.0)) > 1e-4)
        return iq_error_set(error, path, name, NULL,
                            "the matrix is not orthogonal: row %lld . row %lld = %g",
                            (long long)r, (long long)c, dot);
    }
  }
  return true;
}

/* Fills every basis of the plan for `method`. */
static bool build_plan(const llama_graph_t *graph, const char *method, int64_t blocks,
                       uint64_t seed, const char *rotations, rotation_plan_t *plan,
                       iq_error_t **error) {
  int64_t d = graph->hidden / blocks, hd = graph->head_dim;
  plan->blocks = blocks;
  plan->block_size = d;
  plan->layers = calloc((size_t)graph->num_layers + 1, sizeof *plan->layers);
  if (!plan->layers)
    return iq_error_set(error, NULL, NULL, NULL, "out of memory");
  for (int64_t i = 0; i <= graph->num_layers; ++i) {
    layer_bases_t *bases = &plan->layers[i];
    bases->q1 = allocate_blocks(blocks, d);
    bool last = i == graph->num_layers;
    bases->q4 = last ? NULL : allocate_blocks(blocks, d);
    bases->q2 = last ? NULL : allocate_blocks(graph->kv_heads, hd);
    if (!bases->q1 || (!last && (!bases->q4 || !bases->q2)))
      return iq_error_set(error, NULL, NULL, NULL, "out of memory");
  }

  bool quarot = strcmp(method, "quarot") == 0;
  if (quarot) {
    /* One random Hadamard basis for the whole residual stream (also the
     * final basis, so no converter is needed) and one for V/O of every
     * head. */
    for (int64_t i = 0; i <= graph->num_layers; ++i) {
      for (int64_t j = 0; j < blocks; ++j) {
        if (!iq_random_hadamard((size_t)d, seed + (uint64_t)j, plan->layers[i].q1[j], error))
          return false;
        if (i < graph->num_layers)
          memcpy(plan->layers[i].q4[j], plan->layers[i].q1[j], (size_t)(d * d) * sizeof(double));
      }
      for (int64_t g = 0; i < graph->num_layers && g < graph->kv_heads; ++g)
        if (!iq_random_hadamard((size_t)hd, seed + 0x51ed27ULL, plan->layers[i].q2[g], error))
          return false;
    }
    return true;
  }

  /* infoquant and random end in the fixed block Hadamard Hf. */
  for (int64_t j = 0; j < blocks; ++j)
    if (!iq_hadamard_matrix((size_t)d, plan->layers[graph->num_layers].q1[j], error))
      return false;

  if (strcmp(method, "random") == 0) {
    uint64_t state = seed;
    for (int64_t i = 0; i < graph->num_layers; ++i) {
      for (int64_t j = 0; j < blocks; ++j) {
        random_orthogonal(d, &state, plan->layers[i].q1[j]);
        random_orthogonal(d, &state, plan->layers[i].q4[j]);
      }
      for (int64_t g = 0; g < graph->kv_heads; ++g)
        random_orthogonal(hd, &state, plan->layers[i].q2[g]);
    }
    return true;
  }

  if (!rotations || !*rotations)
    return iq_error_set(error, NULL, "rotations", "give rotations=FILE.iqw (written by PSOT)",
                        "method=infoquant reads the learned bases from a rotations file");
  iq_weight_store_t *store = iq_weight_store_open(rotations, error);
  if (!store)
    return false;
  bool ok = true;
  for (int64_t i = 0; ok && i < graph->num_layers; ++i) {
    for (int64_t j = 0; ok && j < blocks; ++j)
      ok = read_rotation(store, rotations, i, "q1", j, d, plan->layers[i].q1[j], error) &&
           read_rotation(store, rotations, i, "q4", j, d, plan->layers[i].q4[j], error);
    for (int64_t g = 0; ok && g < graph->kv_heads; ++g)
      ok = read_rotation(store, rotations, i, "q2", g, hd, plan->layers[i].q2[g], error);
  }
  iq_weight_store_close(store);
  return ok;
}

/* ---- Rewriting the graph -------------------------------------------------- */

typedef struct rewrite {
  MlirOperation module;
  const llama_graph_t *graph;
  bool half_converters; /* converters=f16 */
  iq_error_t *error;
  MlirOperation where; /* the op an error is reported on */
} rewrite_t;

/* Rotates the weight of `user` (operand `index`, [out, in]): right by
 * `right` blocks of size right_n on the input side and on the output side
 * by the transpose of `left` blocks of size left_n. Either may be NULL.
 * With `hadamard_rows`, each row w then becomes H * w, the transform of
 * iq_hadamard_transform over the whole row. */
static bool rotate_weight(rewrite_t *r, MlirOperation user, intptr_t index, double *const *left,
                          int64_t left_n, double *const *right, int64_t right_n,
                          bool hadamard_rows) {
  r->where = user;
  MlirValue operand = mlirOperationGetOperand(user, index);
  MlirOperation weight = mlirValueIsAOpResult(operand) ? mlirOpResultGetOwner(operand)
                                                       : (MlirOperation){NULL};
  if (!llama_is(weight, "weight"))
    return iq_error_set(&r->error, NULL, NULL, NULL, "the weight is not an iq.weight");
  MlirType type = mlirValueGetType(operand);
  int64_t rows = mlirShapedTypeGetDimSize(type, 0), cols = mlirShapedTypeGetDimSize(type, 1);
  bool transposed = mlirBoolAttrGetValue(
      mlirOperationGetAttributeByName(weight, mlirStringRefCreateFromCString("transposed")));
  MlirStringRef stored = mlirStringAttrGetValue(
      mlirOperationGetAttributeByName(weight, mlirStringRefCreateFromCString("name")));
  char stored_name[512], base[512], name[600];
  snprintf(stored_name, sizeof stored_name, "%.*s", (int)stored.length, stored.data);
  llama_weight_base_name(user, index, base, sizeof base);
  snprintf(name, sizeof name, "%s.rotated", base);

  int64_t scratch_size = 0;
  if (right)
    scratch_size = rows * right_n;
  if (left && left_n * cols > scratch_size)
    scratch_size = left_n * cols;
  double *values = malloc((size_t)(rows * cols) * sizeof *values);
  double *scratch = malloc((size_t)(scratch_size + 1) * sizeof *scratch);
  bool ok = values && scratch;
  if (!ok)
    iq_error_set(&r->error, NULL, NULL, NULL, "out of memory");
  ok = ok && iq_overlay_read(r->module, stored_name, transposed, rows, cols, values, &r->error);
  if (ok && right)
    multiply_right(values, rows, cols, right, right_n, scratch);
  if (ok && left)
    multiply_left_transposed(values, rows, cols, left, left_n, scratch);
  /* The rows of W_down become H_I * w, which is W_down * H_I^T. */
  for (int64_t row = 0; ok && hadamard_rows && row < rows; ++row)
    ok = iq_hadamard_transform_f64(values + row * cols, (size_t)cols, &r->error);
  ok = ok && llama_replace_weight(user, index, name, rows, cols, values, &r->error);
  free(values);
  free(scratch);
  return ok;
}

/* Inserts an iq.hadamard of `size` on operand `index` of `user`. */
static bool insert_hadamard(rewrite_t *r, MlirOperation user, intptr_t index, int64_t size) {
  r->where = user;
  MlirContext context = mlirOperationGetContext(user);
  MlirValue input = mlirOperationGetOperand(user, index);
  MlirType type = mlirValueGetType(input);
  iq_builder_t builder = {.context = context, .block = mlirOperationGetBlock(user), .before = user};
  MlirNamedAttribute attributes[2] = {
      iq_named(context, "size", iq_i64_attr(context, size)),
      iq_named(context, "transposed", iq_bool_attr(context, false)),
  };
  MlirOperation hadamard = iq_build(&builder, "iq.hadamard", mlirOperationGetLocation(user), 1,
                                    &input, 1, &type, 2, attributes);
  if (mlirOperationIsNull(hadamard))
    return iq_error_set(&r->error, NULL, NULL, NULL, "cannot create iq.hadamard");
  mlirOperationSetOperand(user, index, mlirOperationGetResult(hadamard, 0));
  return true;
}

/* Makes the residual operand `index` of the add `add` pass through the
 * converter blockdiag(first^T * second) as an iq.linear, unless that is the
 * identity. The linear's weight is the converter's transpose, because
 * iq.linear computes x * W^T. */
static bool insert_converter(rewrite_t *r, MlirOperation add, intptr_t index, double *const *first,
                             double *const *second, int64_t blocks, int64_t d, const char *name) {
  r->where = add;
  int64_t hidden = blocks * d;
  double **converter = allocate_blocks(blocks, d);
  if (!converter)
    return iq_error_set(&r->error, NULL, NULL, NULL, "out of memory");
  /* Equal bases (QuaRot) give the identity without rounding error. */
  bool same = true;
  for (int64_t j = 0; j < blocks; ++j) {
    same = same && memcmp(first[j], second[j], (size_t)(d * d) * sizeof **first) == 0;
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)d, 1.0, first[j],
                (int)d, second[j], (int)d, 0.0, converter[j], (int)d);
  }
  if (same || is_identity(converter, blocks, d)) {
    free_blocks(converter, blocks);
    return true;
  }
  /* NOTE: the converter is emitted as one dense D x D linear with zero
   * blocks off the diagonal, which costs b times the block GEMMs. */
  double *weight = calloc((size_t)(hidden * hidden), sizeof *weight);
  if (!weight) {
    free_blocks(converter, blocks);
    return iq_error_set(&r->error, NULL, NULL, NULL, "out of memory");
  }
  for (int64_t j = 0; j < blocks; ++j)
    for (int64_t a = 0; a < d; ++a)
      for (int64_t c = 0; c < d; ++c)
        weight[(j * d + c) * hidden + j * d + a] = converter[j][a * d + c];
  free_blocks(converter, blocks);

  MlirContext context = mlirOperationGetContext(add);
  MlirValue input = mlirOperationGetOperand(add, index);
  iq_builder_t builder = {.context = context, .block = mlirOperationGetBlock(add), .before = add};
  MlirType weight_type =
      iq_tensor_type(context, 2, (int64_t[]){hidden, hidden},
                     r->half_converters ? mlirF16TypeGet(context) : mlirF32TypeGet(context));
  MlirNamedAttribute attributes[2] = {
      iq_named(context, "name", iq_string_attr(context, name)),
      iq_named(context, "transposed", iq_bool_attr(context, false)),
  };
  bool ok = r->half_converters
                ? iq_overlay_put_f16(name, 2, (int64_t[]){hidden, hidden}, weight, &r->error)
                : iq_overlay_put_f32(name, 2, (int64_t[]){hidden, hidden}, weight, &r->error);
  free(weight);
  if (!ok)
    return false;
  MlirLocation location = mlirOperationGetLocation(add);
  MlirOperation weight_op =
      iq_build(&builder, "iq.weight", location, 0, NULL, 1, &weight_type, 2, attributes);
  MlirValue operands[2] = {input, mlirOperationIsNull(weight_op)
                                      ? (MlirValue){NULL}
                                      : mlirOperationGetResult(weight_op, 0)};
  MlirType result_type = mlirValueGetType(input);
  MlirOperation linear = mlirOperationIsNull(weight_op)
                             ? weight_op
                             : iq_build(&builder, "iq.linear", location, 2, operands, 1,
                                        &result_type, 0, NULL);
  if (mlirOperationIsNull(linear))
    return iq_error_set(&r->error, NULL, name, NULL, "cannot create the converter iq.linear");
  mlirOperationSetOperand(add, index, mlirOperationGetResult(linear, 0));
  return true;
}

/* The operand of a residual add that is the residual stream (not the
 * projection output `projection`). */
static intptr_t residual_operand(MlirOperation add, MlirOperation projection) {
  MlirValue first = mlirOperationGetOperand(add, 0);
  return mlirValueIsAOpResult(first) && mlirOperationEqual(mlirOpResultGetOwner(first), projection)
             ? 1
             : 0;
}

static bool rewrite_layer(rewrite_t *r, const rotation_plan_t *plan, int64_t i) {
  const llama_graph_t *g = r->graph;
  const llama_layer_t *layer = &g->layers[i];
  const layer_bases_t *bases = &plan->layers[i];
  double *const *next_q1 = plan->layers[i + 1].q1;
  int64_t d = plan->block_size, hd = g->head_dim, group = g->heads / g->kv_heads;

  /* blockdiag over query heads of their KV head's Q2. */
  double **o_blocks = calloc((size_t)g->heads, sizeof *o_blocks);
  if (!o_blocks)
    return iq_error_set(&r->error, NULL, NULL, NULL, "out of memory");
  for (int64_t h = 0; h < g->heads; ++h)
    o_blocks[h] = bases->q2[h / group];

  bool ok = rotate_weight(r, layer->q, 1, NULL, 0, bases->q1, d, false) &&
            rotate_weight(r, layer->k, 1, NULL, 0, bases->q1, d, false) &&
            rotate_weight(r, layer->v, 1, bases->q2, hd, bases->q1, d, false) &&
            rotate_weight(r, layer->o, 1, bases->q4, d, o_blocks, hd, false) &&
            rotate_weight(r, layer->gate, 1, NULL, 0, bases->q4, d, false) &&
            rotate_weight(r, layer->up, 1, NULL, 0, bases->q4, d, false);
  free(o_blocks);

  /* down_proj: output into the next basis, input through H_I. */
  ok = ok && rotate_weight(r, layer->down, 1, next_q1, d, NULL, 0, true);
  ok = ok && insert_hadamard(r, layer->down, 0, g->ffn);
  ok = ok && insert_hadamard(r, layer->attention, 0, hd) &&
       insert_hadamard(r, layer->attention, 1, hd);

  char name[96];
  snprintf(name, sizeof name, "iq.rotate.layers.%lld.c1", (long long)i);
  ok = ok && insert_converter(r, layer->attn_residual,
                              residual_operand(layer->attn_residual, layer->o), bases->q1,
                              bases->q4, plan->blocks, d, name);
  snprintf(name, sizeof name, "iq.rotate.layers.%lld.c2", (long long)i);
  ok = ok && insert_converter(r, layer->mlp_residual,
                              residual_operand(layer->mlp_residual, layer->down), bases->q4,
                              next_q1, plan->blocks, d, name);
  return ok;
}

static const char *const method_choices[] = {"quarot", "infoquant", "random", NULL};
static const char *const converter_choices[] = {"f32", "f16", NULL};

static const iq_pass_option_info_t rotate_options[] = {
    {"method", IQ_OPTION_ENUM, "quarot",
     "quarot (one random Hadamard basis), infoquant (bases from rotations=FILE) or random (random "
     "orthogonal bases per layer, for testing)",
     method_choices, 1, 0},
    {"block-diag", IQ_OPTION_INT, "1",
     "number of diagonal blocks b of the residual bases; must divide the hidden size", NULL, 1,
     4096},
    {"rotations", IQ_OPTION_STRING, "",
     "weight store with layers.{i}.q1.{j}, layers.{i}.q4.{j} [D/b, D/b] and layers.{i}.q2.{g} "
     "[head_dim, head_dim] (method=infoquant)",
     NULL, 1, 0},
    {"seed", IQ_OPTION_INT, "0", "seed of the random signs and matrices", NULL, 0, 9.0e15},
    {"converters", IQ_OPTION_ENUM, "f32",
     "element type of the residual converters: f32, or f16 (half the bytes, relative error "
     "about 2^-12 per entry; InfoQuant keeps them in 16 bits)",
     converter_choices, 1, 0},
};

static bool run_rotate(MlirOperation op, const iq_pass_options_t *options) {
  llama_graph_t graph;
  if (!llama_graph_find(op, PASS, &graph)) {
    llama_graph_free(&graph);
    return false;
  }
  rewrite_t r = {.module = op,
                 .graph = &graph,
                 .where = graph.function,
                 .half_converters = strcmp(iq_pass_option_string(options, "converters"), "f16") == 0};
  rotation_plan_t plan = {0};
  int64_t blocks = iq_pass_option_int(options, "block-diag");
  const char *method = iq_pass_option_string(options, "method");
  bool ok = true;

  /* Every norm must be weightless: a gain does not commute with a
   * rotation. */
  for (int64_t i = 0; ok && i <= graph.num_layers; ++i) {
    bool last = i == graph.num_layers;
    MlirOperation norms[2] = {last ? graph.final_norm : graph.layers[i].attn_norm,
                              last ? graph.final_norm : graph.layers[i].mlp_norm};
    for (int n = 0; ok && n < 2; ++n) {
      if (mlirOperationGetNumOperands(norms[n]) > 1) {
        r.where = norms[n];
        ok = iq_error_set(&r.error, NULL, NULL, "run --iq-fuse-norms before --iq-rotate",
                          "the norm still has a gain, which does not commute with a rotation");
      }
    }
  }
  if (ok && graph.hidden % blocks != 0)
    ok = iq_error_set(&r.error, NULL, "block-diag", NULL,
                      "block-diag=%lld does not divide the hidden size %lld", (long long)blocks,
                      (long long)graph.hidden);
  for (int64_t size = graph.hidden / blocks, k = 0; ok && k < 3; ++k) {
    int64_t sizes[3] = {size, graph.head_dim, graph.ffn};
    size_t factor;
    if (!iq_hadamard_factor((size_t)sizes[k], &factor, &r.error))
      ok = false;
  }
  if (ok)
    ok = build_plan(&graph, method, blocks, (uint64_t)iq_pass_option_int(options, "seed"),
                    iq_pass_option_string(options, "rotations"), &plan, &r.error);

  /* The embedding's rows are residual vectors of layer 0; lm_head reads
   * the final basis. */
  ok = ok && rotate_weight(&r, graph.embedding, 0, NULL, 0, plan.layers[0].q1, plan.block_size,
                           false);
  for (int64_t i = 0; ok && i < graph.num_layers; ++i)
    ok = rewrite_layer(&r, &plan, i);
  ok = ok && rotate_weight(&r, graph.lm_head, 1, NULL, 0, plan.layers[graph.num_layers].q1,
                           plan.block_size, false);

  if (!ok)
    llama_emit_error(r.where, PASS, r.error);
  free_plan(&plan, &graph);
  llama_graph_free(&graph);
  return ok;
}

const iq_pass_info_t iq_rotate_pass = {
    .name = "iq-rotate",
    .description = "Fold orthogonal bases (QuaRot or InfoQuant) into the weights of a norm-fused "
                   "LLaMA graph and insert the online Hadamards and residual converters",
    .options = rotate_options,
    .num_options = sizeof rotate_options / sizeof rotate_options[0],
    .run = run_rotate,
};
