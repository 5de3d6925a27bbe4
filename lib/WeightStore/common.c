/* Element types, checksums, element counts and the name index, shared by
 * the weight store reader and writer. */
#include "weight_store_internal.h"

#include <stdlib.h>
#include <string.h>

const char *iq_dtype_name(iq_dtype_t dtype) {
  switch (dtype) {
  case IQ_DTYPE_F32:
    return "f32";
  case IQ_DTYPE_F16:
    return "f16";
  case IQ_DTYPE_BF16:
    return "bf16";
  case IQ_DTYPE_F64:
    return "f64";
  case IQ_DTYPE_I8:
    return "i8";
  case IQ_DTYPE_U8:
    return "u8";
  case IQ_DTYPE_I16:
    return "i16";
  case IQ_DTYPE_U16:
    return "u16";
  case IQ_DTYPE_I32:
    return "i32";
  case IQ_DTYPE_U32:
    return "u32";
  case IQ_DTYPE_I64:
    return "i64";
  case IQ_DTYPE_U64:
    return "u64";
  case IQ_DTYPE_BOOL:
    return "bool";
  case IQ_DTYPE_I4:
    return "i4";
  case IQ_DTYPE_U4:
    return "u4";
  }
  return NULL;
}

unsigned iq_dtype_bits(iq_dtype_t dtype) {
  switch (dtype) {
  case IQ_DTYPE_I4:
  case IQ_DTYPE_U4:
    return 4;
  case IQ_DTYPE_I8:
  case IQ_DTYPE_U8:
  case IQ_DTYPE_BOOL:
    return 8;
  case IQ_DTYPE_F16:
  case IQ_DTYPE_BF16:
  case IQ_DTYPE_I16:
  case IQ_DTYPE_U16:
    return 16;
  case IQ_DTYPE_F32:
  case IQ_DTYPE_I32:
  case IQ_DTYPE_U32:
    return 32;
  case IQ_DTYPE_F64:
  case IQ_DTYPE_I64:
  case IQ_DTYPE_U64:
    return 64;
  }
  return 0;
}

bool iq_dtype_byte_size(iq_dtype_t dtype, uint64_t num_elements, uint64_t *bytes) {
  unsigned bits = iq_dtype_bits(dtype);
  if (bits == 0) {
    return false;
  }
  if (bits == 4) {
    /* Written without num_elements + 1, which wraps for UINT64_MAX. */
    *bytes = num_elements / 2 + num_elements % 2;
    return true;
  }
  return iq_mul_u64(num_elements, bits / 8, bytes);
}

uint64_t iq_ws_fnv1a64_update(uint64_t hash, const void *data, size_t size) {
  const uint8_t *bytes = data;
  for (size_t i = 0; i < size; ++i) {
    hash ^= bytes[i];
    hash *= IQ_WS_FNV_PRIME;
  }
  return hash;
}

uint64_t iq_weight_store_checksum(const void *data, size_t size) {
  return iq_ws_fnv1a64_update(IQ_WS_FNV_OFFSET_BASIS, data, size);
}

bool iq_ws_element_count(uint32_t rank, const int64_t *dims, uint64_t *count) {
  bool has_zero = false;
  for (uint32_t i = 0; i < rank; ++i) {
    if (dims[i] < 0) {
      return false;
    }
    has_zero = has_zero || dims[i] == 0;
  }
  /* The count of a tensor with a zero dimension is 0 even when the other
   * dimensions multiply past 64 bits, so that case skips the product. */
  if (has_zero) {
    *count = 0;
    return true;
  }
  uint64_t product = 1;
  for (uint32_t i = 0; i < rank; ++i) {
    if (!iq_mul_u64(product, (uint64_t)dims[i], &product)) {
      return false;
    }
  }
  *count = product;
  return true;
}

static size_t hash_name(const char *name) {
  return (size_t)iq_weight_store_checksum(name, strlen(name));
}

bool iq_ws_name_index_reserve(iq_ws_name_index_t *index,
                              const iq_weight_tensor_t *tensors, size_t needed) {
  /* Keeping the load at or below one half bounds the probe lengths. */
  if (needed <= index->capacity / 2) {
    return true;
  }
  size_t capacity = index->capacity == 0 ? 16 : index->capacity;
  while (capacity / 2 < needed) {
    if (capacity > SIZE_MAX / 2 / sizeof(size_t)) {
      return false;
    }
    capacity *= 2;
  }
  size_t *slots = calloc(capacity, sizeof(size_t));
  if (slots == NULL) {
    return false;
  }

  iq_ws_name_index_t grown = {slots, capacity, 0};
  for (size_t i = 0; i < index->count; ++i) {
    iq_ws_name_index_insert(&grown, tensors, i);
  }
  free(index->slots);
  *index = grown;
  return true;
}

size_t iq_ws_name_index_find(const iq_ws_name_index_t *index,
                             const iq_weight_tensor_t *tensors, const char *name) {
  if (index->capacity == 0) {
    return SIZE_MAX;
  }
  size_t mask = index->capacity - 1;
  for (size_t slot = hash_name(name) & mask;; slot = (slot + 1) & mask) {
    size_t entry = index->slots[slot];
    if (entry == 0) {
      return SIZE_MAX;
    }
    if (strcmp(tensors[entry - 1].name, name) == 0) {
      return entry - 1;
    }
  }
}

void iq_ws_name_index_insert(iq_ws_name_index_t *index,
                             const iq_weight_tensor_t *tensors, size_t position) {
  size_t mask = index->capacity - 1;
  size_t slot = hash_name(tensors[position].name) & mask;
  while (index->slots[slot] != 0) {
    slot = (slot + 1) & mask;
  }
  index->slots[slot] = position + 1;
  ++index->count;
}

void iq_ws_name_index_free(iq_ws_name_index_t *index) {
  free(index->slots);
  index->slots = NULL;
  index->capacity = 0;
  index->count = 0;
}
