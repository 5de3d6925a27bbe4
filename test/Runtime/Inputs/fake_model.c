/* A stand-in for the code iq-compile emits, for testing the runtime: it
 * defines iq_model_metadata and iq_model_forward for a tiny model whose
 * logits are simple functions of the weights, the tokens and the KV cache.
 *
 * Per token with id t at position p, for every layer l it writes
 *   key[l][p][d]   = embed[t][d] + l + p / 8
 *   value[l][p][d] = embed[t][d] - l
 * and the logits are
 *   logits[v] = sum_d embed[t][d] * output[d][v] + sum_{j <= p} key[0][j][0]
 * where output is stored transposed, [hidden, vocab]. The last term reads
 * the cache entries of earlier positions, so results depend on the cache
 * the runtime keeps between calls. It aborts on slot values that break
 * the contract in iq_compiled.h. */
#include <stdio.h>
#include <stdlib.h>

#include "iq/iq_compiled.h"

#define LAYERS 2
#define HIDDEN 8
#define KV_HEADS 1
#define HEAD_DIM 8
#define VOCAB 512

#if defined(__aarch64__)
#define TARGET "aarch64-linux-gnu"
#else
#define TARGET "x86_64-linux-gnu"
#endif

const char iq_model_metadata[] =
    "iq-model 1\n"
    "target " TARGET "\n"
    "quantization none\n"
    "config 2 8 1 1 8 16 512 10000 1e-05\n"
    "cache f32\n"
    "weight 0 embed f32 0 2 512 8\n"
    "weight 1 output f32 1 2 512 8\n"
    "weight 2 norm f32 0 1 8\n"
    "end\n";

static void require(int condition, const char *what) {
  if (!condition) {
    fprintf(stderr, "fake model: slot contract broken: %s\n", what);
    abort();
  }
}

void iq_model_forward(uint64_t *slots) {
  uint64_t tokens = slots[IQ_SLOT_TOKENS];
  uint64_t capacity = slots[IQ_SLOT_CAPACITY];
  const int64_t *ids = (const int64_t *)(uintptr_t)slots[IQ_SLOT_IDS];
  const int64_t *positions = (const int64_t *)(uintptr_t)slots[IQ_SLOT_POSITIONS];
  float *logits = (float *)(uintptr_t)slots[IQ_SLOT_LOGITS];
  const float *embed = (const float *)(uintptr_t)slots[IQ_SLOT_CACHES + 2 * LAYERS];
  const float *output = (const float *)(uintptr_t)slots[IQ_SLOT_CACHES + 2 * LAYERS + 1];
  const float *norm = (const float *)(uintptr_t)slots[IQ_SLOT_CACHES + 2 * LAYERS + 2];
  require(slots[IQ_SLOT_BATCH] == 1, "batch is not 1");
  require(tokens >= 1 && tokens <= capacity, "token count outside [1, capacity]");
  require(ids && positions && logits && embed && output && norm, "null pointer");

  for (uint64_t i = 0; i < tokens; ++i) {
    int64_t id = ids[i];
    int64_t position = positions[i];
    require(id >= 0 && id < VOCAB, "token id outside the vocabulary");
    require(position >= 0 && (uint64_t)position < capacity, "position outside the cache");
    require(i == 0 || position == positions[i - 1] + 1, "positions not consecutive");
    const float *row = embed + id * HIDDEN;
    for (int layer = 0; layer < LAYERS; ++layer) {
      float *key = (float *)(uintptr_t)slots[IQ_SLOT_CACHES + 2 * layer];
      float *value = (float *)(uintptr_t)slots[IQ_SLOT_CACHES + 2 * layer + 1];
      require(key && value, "null cache");
      for (int d = 0; d < HEAD_DIM; ++d) {
        key[position * HEAD_DIM + d] = row[d] + (float)layer + (float)position / 8.0f;
        value[position * HEAD_DIM + d] = row[d] - (float)layer;
      }
    }
    const float *key0 = (const float *)(uintptr_t)slots[IQ_SLOT_CACHES];
    float history = 0.0f;
    for (int64_t j = 0; j <= position; ++j) {
      history += key0[j * HEAD_DIM];
    }
    for (int v = 0; v < VOCAB; ++v) {
      float sum = history;
      for (int d = 0; d < HIDDEN; ++d) {
        sum += row[d] * output[d * VOCAB + v] * norm[d];
      }
      logits[i * VOCAB + v] = sum;
    }
  }
}
