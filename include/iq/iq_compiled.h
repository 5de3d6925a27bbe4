/* The private interface between the code iq-compile emits and the C
 * runtime linked beside it in the same library. Users never see it; they
 * use iq_runtime.h.
 *
 * The emitted object defines two symbols:
 *
 *   const char iq_model_metadata[];   NUL-terminated text, described below
 *   void iq_model_forward(uint64_t *slots);
 *
 * Metadata, one record per line, fields separated by single spaces:
 *
 *   iq-model 1
 *   target x86_64-linux-gnu
 *   quantization none
 *   config LAYERS HIDDEN HEADS KV_HEADS HEAD_DIM FFN VOCAB THETA EPSILON
 *   cache f32
 *   weight INDEX NAME DTYPE TRANSPOSED RANK DIM...
 *   end
 *
 * The cache record is "cache f32" or "cache int4". With int4, slots
 * 6 + 2l hold an iqk_kv_cache_t * of iq_kernels.h for layer l (capacity C
 * positions) and slots 7 + 2l are 0; the library links the int4 kernels.
 * DTYPE is an iq_dtype_t name of weight_store.h ("f32", "f16", ...);
 * TRANSPOSED is 0 or 1; weight INDEX counts from 0 in slot order.
 *
 * iq_model_forward reads its arguments from `slots`, an array of 64-bit
 * values (pointers stored as integers):
 *
 *   slots[0]  batch size (1)
 *   slots[1]  tokens in this call, T
 *   slots[2]  cache capacity in positions, C
 *   slots[3]  int64_t token ids [batch, T]
 *   slots[4]  int64_t positions [batch, T]
 *   slots[5]  float logits [batch, T, vocab]
 *   slots[6 + 2l], slots[7 + 2l]  float key and value cache of layer l,
 *             [batch, kv_heads, C, head_dim], updated in place
 *   slots[6 + 2L + i]  weight i, as laid out in the weight store
 *
 * Attention at position p reads cache entries 0 .. p, so the runtime keeps
 * entries below the first position of a call valid.
 */
#ifndef IQ_COMPILED_H
#define IQ_COMPILED_H

#include <stdint.h>

#define IQ_COMPILED_METADATA_VERSION 1
#define IQ_SLOT_BATCH 0
#define IQ_SLOT_TOKENS 1
#define IQ_SLOT_CAPACITY 2
#define IQ_SLOT_IDS 3
#define IQ_SLOT_POSITIONS 4
#define IQ_SLOT_LOGITS 5
#define IQ_SLOT_CACHES 6
#define IQ_SLOT_FIRST_WEIGHT(layers) (IQ_SLOT_CACHES + 2 * (layers))

extern const char iq_model_metadata[];
void iq_model_forward(uint64_t *slots);

/* ---- Calibration observers ----------------------------------------------
 * A module with iq.observe ops (inserted by iq-insert-observers) compiles
 * to code that calls iq_runtime_observe(id, data, rows, cols) with each
 * observed float32 tensor, `rows` tokens of `cols` channels, row-major.
 * The runtime forwards the call to the observer that a host program
 * installed with iq_runtime_set_observer, or ignores it when there is
 * none. That entry point is not part of iq_runtime.h, so hosts find it
 * with dlsym. Libraries compiled without observers never call it. The
 * data is valid only during the call. */

/* The observed tensors of a layer, in the order of their ids. */
typedef enum iq_observe_point {
  IQ_OBSERVE_X = 0, /* attention-input norm output: q/k/v input */
  IQ_OBSERVE_P = 1, /* MLP-input norm output: gate/up input */
  IQ_OBSERVE_V = 2, /* v_proj output */
  IQ_OBSERVE_M = 3, /* o_proj input */
  IQ_OBSERVE_Z = 4, /* down_proj input */
  IQ_OBSERVE_H = 5, /* lm_head input; its layer is the layer count */
  IQ_OBSERVE_POINT_COUNT = 6,
} iq_observe_point_t;

#define IQ_OBSERVE_MAX_LAYER 65535
#define IQ_OBSERVE_ID(layer, point) ((uint64_t)(layer) * IQ_OBSERVE_POINT_COUNT + (uint64_t)(point))

typedef void (*iq_observer_t)(void *user_data, uint64_t id, const float *data, int64_t rows,
                              int64_t cols);

void iq_runtime_observe(uint64_t id, const float *data, int64_t rows, int64_t cols);

/* Installs `observer` (NULL removes it) for every model of the process.
 * Not thread-safe: install it before running forward passes. */
void iq_runtime_set_observer(iq_observer_t observer, void *user_data);

#endif /* IQ_COMPILED_H */
