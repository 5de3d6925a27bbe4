/* The weight store: one file per model holding named tensors, mapped with
 * mmap when read and written by streaming, so neither side holds a whole
 * model in the heap. IR refers to tensors by name (iq.weight). The byte
 * layout is documented in docs/weight-store.md. */
#ifndef IQ_WEIGHT_STORE_H
#define IQ_WEIGHT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iq/support.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types of stored tensors. The values are part of the file format. */
typedef enum iq_dtype {
  IQ_DTYPE_F32 = 1,
  IQ_DTYPE_F16 = 2,
  IQ_DTYPE_BF16 = 3,
  IQ_DTYPE_F64 = 4,
  IQ_DTYPE_I8 = 10,
  IQ_DTYPE_U8 = 11,
  IQ_DTYPE_I16 = 12,
  IQ_DTYPE_U16 = 13,
  IQ_DTYPE_I32 = 14,
  IQ_DTYPE_U32 = 15,
  IQ_DTYPE_I64 = 16,
  IQ_DTYPE_U64 = 17,
  IQ_DTYPE_BOOL = 18, /* one byte per element, 0 or 1 */
  IQ_DTYPE_I4 = 20,   /* two per byte, low nibble first */
  IQ_DTYPE_U4 = 21,
} iq_dtype_t;

/* Returns "f32", "i4", ... or NULL for a value that is not an iq_dtype_t. */
const char *iq_dtype_name(iq_dtype_t dtype);
/* Returns the element size in bits, or 0 for an unknown value. */
unsigned iq_dtype_bits(iq_dtype_t dtype);
/* Returns the bytes `num_elements` elements take (4-bit types round up),
 * or false on overflow or an unknown type. */
bool iq_dtype_byte_size(iq_dtype_t dtype, uint64_t num_elements, uint64_t *bytes);

/* Layouts of a tensor's bytes. Row-major is the only one so far; kernels
 * add packed layouts with their scales and zero points. */
typedef enum iq_layout {
  IQ_LAYOUT_ROW_MAJOR = 0,
} iq_layout_t;

#define IQ_WEIGHT_STORE_MAX_RANK 8
#define IQ_WEIGHT_STORE_ALIGNMENT 64
/* The format version this build writes and the only one it reads. */
#define IQ_WEIGHT_STORE_FORMAT_VERSION 1
#define IQ_WEIGHT_STORE_HEADER_SIZE 64

/* Computes FNV-1a 64 (offset basis 0xcbf29ce484222325, prime
 * 0x100000001b3) of `size` bytes, the checksum of tensor data and of the
 * table. `data` may be NULL when `size` is 0. */
uint64_t iq_weight_store_checksum(const void *data, size_t size);

typedef struct iq_weight_tensor {
  const char *name;
  iq_dtype_t dtype;
  iq_layout_t layout;
  uint32_t rank;
  int64_t dims[IQ_WEIGHT_STORE_MAX_RANK];
  uint64_t num_elements;
  const uint8_t *data; /* 64-byte aligned inside the mapping; NULL if byte_size is 0 */
  uint64_t byte_size;
  uint64_t checksum; /* FNV-1a 64 of the bytes */
} iq_weight_tensor_t;

/* ---- Writing ------------------------------------------------------------ */

typedef struct iq_weight_store_writer iq_weight_store_writer_t;

/* Starts a store at `path`. Data goes to a temporary file beside it and
 * the file appears under `path` only when iq_weight_store_writer_finish
 * succeeds. The caller owns the writer and ends it with finish or
 * abandon. */
iq_weight_store_writer_t *iq_weight_store_writer_create(const char *path, iq_error_t **error);

/* Appends a tensor. Its bytes are written at once, so `data` may be a
 * mapping that is released right after the call. Rejects a duplicate or
 * empty name, a rank above IQ_WEIGHT_STORE_MAX_RANK, negative dimensions,
 * and a `byte_size` that disagrees with the dims and dtype. */
bool iq_weight_store_writer_add(iq_weight_store_writer_t *writer, const char *name,
                                iq_dtype_t dtype, iq_layout_t layout, uint32_t rank,
                                const int64_t *dims, const void *data, uint64_t byte_size,
                                iq_error_t **error);

/* Writes the table and header, flushes, and renames the file into place.
 * Frees the writer whether or not it succeeds; on failure nothing is left
 * at `path` (an older file there is kept). */
bool iq_weight_store_writer_finish(iq_weight_store_writer_t *writer, iq_error_t **error);

/* Deletes the temporary file and frees the writer. */
void iq_weight_store_writer_abandon(iq_weight_store_writer_t *writer);

/* ---- Reading ------------------------------------------------------------ */

typedef struct iq_weight_store iq_weight_store_t;

/* Maps a store and checks its header and table: magic and version, the
 * table checksum, every offset and size inside the file, alignment, sizes
 * matching dims and dtype, unique names. Tensor checksums are checked by
 * iq_weight_store_verify, which reads every byte. The caller owns the
 * store and closes it with iq_weight_store_close. */
iq_weight_store_t *iq_weight_store_open(const char *path, iq_error_t **error);
void iq_weight_store_close(iq_weight_store_t *store);

size_t iq_weight_store_count(const iq_weight_store_t *store);
/* Tensors in the order they were added. */
const iq_weight_tensor_t *iq_weight_store_get(const iq_weight_store_t *store, size_t index);
/* Returns the tensor called `name`, or NULL. */
const iq_weight_tensor_t *iq_weight_store_find(const iq_weight_store_t *store, const char *name);

/* Recomputes every checksum; returns false naming the first tensor whose
 * bytes do not match. */
bool iq_weight_store_verify(const iq_weight_store_t *store, iq_error_t **error);

#ifdef __cplusplus
}
#endif

#endif /* IQ_WEIGHT_STORE_H */
