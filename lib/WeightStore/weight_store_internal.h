/* Pieces shared by the weight store reader and writer: the byte layout of
 * the header and table (docs/weight-store.md describes it), little-endian
 * encoding, and a name index for O(1) lookups. */
#ifndef IQ_WEIGHT_STORE_INTERNAL_H
#define IQ_WEIGHT_STORE_INTERNAL_H

#include "iq/weight_store.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define IQ_WS_MAGIC "IQWSTORE"
#define IQ_WS_MAGIC_SIZE 8

/* Byte offsets of the header fields. */
#define IQ_WS_HEADER_VERSION 8
#define IQ_WS_HEADER_COUNT 12
#define IQ_WS_HEADER_DATA_OFFSET 16
#define IQ_WS_HEADER_DATA_SIZE 24
#define IQ_WS_HEADER_TABLE_OFFSET 32
#define IQ_WS_HEADER_TABLE_SIZE 40
#define IQ_WS_HEADER_TABLE_CHECKSUM 48
#define IQ_WS_HEADER_RESERVED 56

/* Size of a table entry with a 1-byte name and rank 0: name length (4),
 * name (1), dtype, layout and rank (4 each), offset, byte size and
 * checksum (8 each). Bounds the tensor count a table of a given size can
 * hold before the reader allocates anything. */
#define IQ_WS_MIN_ENTRY_SIZE 41

/* Returns the bytes of a table entry for a name of `name_length` bytes and
 * `rank` dimensions. */
static inline uint64_t iq_ws_entry_size(uint64_t name_length, uint32_t rank) {
  return 4 + name_length + 12 + 8 * (uint64_t)rank + 24;
}

static inline uint64_t iq_ws_align_up(uint64_t value) {
  return (value + (IQ_WEIGHT_STORE_ALIGNMENT - 1)) &
         ~(uint64_t)(IQ_WEIGHT_STORE_ALIGNMENT - 1);
}

/* Byte-wise loads and stores, so the code is independent of the host's
 * byte order and of the alignment of the table. */
static inline uint32_t iq_ws_load_u32(const uint8_t *bytes) {
  return (uint32_t)bytes[0] | (uint32_t)bytes[1] << 8 |
         (uint32_t)bytes[2] << 16 | (uint32_t)bytes[3] << 24;
}

static inline uint64_t iq_ws_load_u64(const uint8_t *bytes) {
  return (uint64_t)iq_ws_load_u32(bytes) |
         (uint64_t)iq_ws_load_u32(bytes + 4) << 32;
}

static inline void iq_ws_store_u32(uint8_t *bytes, uint32_t value) {
  for (int i = 0; i < 4; ++i) {
    bytes[i] = (uint8_t)(value >> (8 * i));
  }
}

static inline void iq_ws_store_u64(uint8_t *bytes, uint64_t value) {
  for (int i = 0; i < 8; ++i) {
    bytes[i] = (uint8_t)(value >> (8 * i));
  }
}

/* Continues an FNV-1a 64 hash from `hash` over `size` more bytes. */
uint64_t iq_ws_fnv1a64_update(uint64_t hash, const void *data, size_t size);
#define IQ_WS_FNV_OFFSET_BASIS UINT64_C(0xcbf29ce484222325)
#define IQ_WS_FNV_PRIME UINT64_C(0x100000001b3)

/* Computes the element count of `dims` into `*count`. Returns false when a
 * dimension is negative or the product overflows 64 bits. A zero
 * dimension makes the count 0 whatever the others are. Rank 0 is a
 * scalar of one element. */
bool iq_ws_element_count(uint32_t rank, const int64_t *dims, uint64_t *count);

/* An open-addressing hash table from tensor names to indices into an
 * array of tensors that the caller owns and passes to every call. */
typedef struct iq_ws_name_index {
  size_t *slots; /* tensor index + 1, or 0 for an empty slot */
  size_t capacity; /* a power of two, at least twice the entry count */
  size_t count;
} iq_ws_name_index_t;

/* Makes room for `needed` names, rehashing the first `index->count`
 * tensors. Returns false when memory is exhausted. */
bool iq_ws_name_index_reserve(iq_ws_name_index_t *index,
                              const iq_weight_tensor_t *tensors, size_t needed);
/* Returns the index of the tensor called `name`, or SIZE_MAX. */
size_t iq_ws_name_index_find(const iq_ws_name_index_t *index,
                             const iq_weight_tensor_t *tensors, const char *name);
/* Adds tensors[position] to the index. The caller has reserved room for it
 * and checked that its name is not present yet. */
void iq_ws_name_index_insert(iq_ws_name_index_t *index,
                             const iq_weight_tensor_t *tensors, size_t position);
void iq_ws_name_index_free(iq_ws_name_index_t *index);

#endif /* IQ_WEIGHT_STORE_INTERNAL_H */
