/* Shared state of the generic graph lowering (GraphLowering.c drives it,
 * GraphLoweringOps.c lowers the ops). Every tensor is a flat, row-major
 * memref<N x T> with a static N, and every op becomes scf.for loop nests
 * with explicit index arithmetic, so no bufferization is needed. SSA
 * values of the generated function are all named %v<id>, and helpers pass
 * ids around; %v0 and %v1 are the index constants 0 and 1. */
#ifndef IQ_GRAPH_LOWERING_H
#define IQ_GRAPH_LOWERING_H

#include <stdbool.h>
#include <stdint.h>

#include "mlir-c/IR.h"

#include "TextBuffer.h"
#include "iq/support.h"

#define GRAPH_MAX_RANK 8
#define GRAPH_C0 0 /* id of `arith.constant 0 : index` */
#define GRAPH_C1 1 /* id of `arith.constant 1 : index` */

/* An element type. Integers are signless in the generated code, so the
 * signedness of ONNX uint types is kept here; int4 and uint4 are stored
 * one value per i8 inside the function and packed only in the slots. */
typedef struct graph_elem {
  char type[8]; /* MLIR storage type: f32, i8, i1 ... */
  int bits;
  bool is_float, is_unsigned, packed4;
  char onnx[12]; /* ONNX name for the metadata: float32, uint4 ... */
} graph_elem_t;

typedef struct graph_value {
  MlirValue value;
  int buffer; /* id of the memref; -1 for an omitted optional input */
  int rank;
  int64_t dims[GRAPH_MAX_RANK];
  int64_t count;
  graph_elem_t elem;
  bool owned;             /* allocated here, deallocated at the end */
  MlirAttribute constant; /* the DenseElementsAttr when known at compile time */
} graph_value_t;

typedef struct graph_lowering {
  iq_text_t body, globals;
  int next_id;
  graph_value_t *values;
  size_t num_values, capacity;
  int64_t opset;
  MlirOperation module;
  iq_error_t **error;
} graph_lowering_t;

/* ---- Helpers of GraphLowering.c --------------------------------------- */

bool graph_fail(graph_lowering_t *g, MlirOperation op, const char *format, ...)
    __attribute__((format(printf, 3, 4)));
int graph_emit(graph_lowering_t *g, const char *format, ...) __attribute__((format(printf, 2, 3)));
void graph_stmt(graph_lowering_t *g, const char *format, ...) __attribute__((format(printf, 2, 3)));
const char *graph_memref_type(const graph_value_t *v);
int graph_index_const(graph_lowering_t *g, int64_t value);
int graph_int_const(graph_lowering_t *g, int64_t value, const char *type);
int graph_float_const(graph_lowering_t *g, double value, const graph_elem_t *elem);
int graph_load(graph_lowering_t *g, const graph_value_t *v, int index);
void graph_store(graph_lowering_t *g, int value, const graph_value_t *v, int index);
void graph_alloc(graph_lowering_t *g, graph_value_t *v);
void graph_open_loops(graph_lowering_t *g, int rank, const int64_t *dims, int *ivs);
void graph_close_loops(graph_lowering_t *g, int rank);
int graph_linear_index(graph_lowering_t *g, int rank, const int64_t *dims, const int *ivs);
int graph_broadcast_index(graph_lowering_t *g, const graph_value_t *in, int out_rank,
                          const int *ivs);
int graph_convert(graph_lowering_t *g, int value, const graph_elem_t *from,
                  const graph_elem_t *to);
bool graph_elem_from_type(MlirType type, graph_elem_t *elem);
extern const graph_elem_t graph_f32, graph_f64, graph_i64, graph_i32, graph_i1;

int64_t graph_attr_int(MlirOperation op, const char *name, int64_t fallback);
double graph_attr_float(MlirOperation op, const char *name, double fallback);
/* Reads an ints attribute into `out`; returns its length, or -1 when absent. */
int graph_attr_ints(MlirOperation op, const char *name, int64_t *out, int capacity);

/* Lowers one `onnx` op whose results have their shapes and element types
 * filled in (`outs`), allocating or aliasing their buffers. */
bool graph_lower_op(graph_lowering_t *g, MlirOperation op, const char *op_type,
                    graph_value_t **ins, int num_ins, graph_value_t *outs, int num_outs);

#endif /* IQ_GRAPH_LOWERING_H */
