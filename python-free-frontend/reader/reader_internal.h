/* Declarations shared by the files of the ONNX reader. Nothing here is
 * part of the public interface in iq/onnx.h. */
#ifndef IQ_ONNX_READER_INTERNAL_H
#define IQ_ONNX_READER_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iq/onnx.h"
#include "iq/support.h"
#include "onnx.pb-c.h"

/* ---- Arena ----------------------------------------------------------------
 * Every array and string the model exposes is allocated from one arena and
 * freed with it, so the model never frees parts of itself one by one. */
typedef struct arena_block arena_block_t;

typedef struct arena {
  arena_block_t *head;
} arena_t;

/* Returns `size` zeroed bytes aligned for any type, or NULL when memory is
 * exhausted. A size of 0 still returns a distinct valid pointer. The arena
 * owns the result. */
void *arena_alloc(arena_t *arena, size_t size);
/* Like arena_alloc for `count` elements of `size` bytes; NULL also when
 * count * size overflows. */
void *arena_alloc_array(arena_t *arena, size_t count, size_t size);
/* Copies `length` bytes of `text` and appends a NUL. The arena owns the
 * result. */
char *arena_strndup(arena_t *arena, const char *text, size_t length);
void arena_free(arena_t *arena);

/* ---- Name table -----------------------------------------------------------
 * A fixed-capacity hash table from NUL-terminated names to indices. The
 * table does not own the names, which must outlive it. */
typedef struct name_table_entry {
  const char *name;
  size_t value;
} name_table_entry_t;

typedef struct name_table {
  name_table_entry_t *entries;
  size_t capacity; /* a power of two, at least twice max_entries */
  size_t count;
  size_t max_entries;
} name_table_t;

/* Prepares a table for at most `max_entries` names. Returns false when
 * memory is exhausted. The table owns its entries until name_table_free. */
bool name_table_init(name_table_t *table, size_t max_entries);
void name_table_free(name_table_t *table);
/* Inserts `name` with `value`. Returns false, leaving the table unchanged,
 * when the name is already present; `*existing` then receives its value.
 * The caller must not insert more than max_entries names. */
bool name_table_insert(name_table_t *table, const char *name, size_t value, size_t *existing);
/* Looks `name` up; returns false when it is absent. */
bool name_table_find(const name_table_t *table, const char *name, size_t *value);

/* ---- Loading context ------------------------------------------------------ */
typedef struct mapped_entry {
  char *real_path; /* heap copy, owned by the entry */
  iq_mapped_file_t *file;
} mapped_entry_t;

/* Everything a model owns besides its public fields. */
typedef struct reader_state {
  Onnx__ModelProto *proto; /* names and inline raw_data point into it */
  arena_t arena;
  mapped_entry_t *mapped; /* each distinct external file, mapped once */
  size_t num_mapped, mapped_capacity;
  name_table_t initializer_index;
} reader_state_t;

/* State of one load call: the model being built and where errors go. */
typedef struct reader_context {
  iq_onnx_model_t *model;
  reader_state_t *state;
  const char *file;     /* model path or buffer name, for error messages */
  const char *base_dir; /* folder that external data must stay in, or NULL */
  char *real_base_dir;  /* realpath of base_dir, resolved on first use */
  iq_error_t **error;
} reader_context_t;

/* Reports that memory ran out while loading; always returns false. */
bool reader_out_of_memory(reader_context_t *context, const char *where);

/* Rejects buffers whose messages nest deeper than the reader allows, or
 * whose wire format cannot be walked, before protobuf-c unpacks them.
 * protobuf-c 1.4 recurses once per nesting level without a limit, so a
 * small crafted file could otherwise exhaust the stack. */
bool wire_check_depth(const uint8_t *data, size_t size, reader_context_t *context);

/* Converts `proto` into `tensor`, checking dims, type and data size, and
 * resolving external data. `where` names the tensor in errors ("initializer
 * 'w'"). Arrays and converted data are owned by the model's arena. */
bool tensor_convert(reader_context_t *context, const Onnx__TensorProto *proto, const char *where,
                    iq_onnx_tensor_t *tensor);

/* Points `tensor` at the external bytes that `proto` references, after
 * checking the location, offset and length. Maps each distinct file once;
 * the model owns the mapping. */
bool external_data_resolve(reader_context_t *context, const Onnx__TensorProto *proto,
                           const char *where, iq_onnx_tensor_t *tensor);

/* Checks that no value is defined twice and that every node input and
 * graph output is defined, then stores the nodes in model->nodes in a
 * topological order. `nodes` contains the converted nodes in file order. */
bool graph_check_and_sort(reader_context_t *context, iq_onnx_node_t *nodes, size_t num_nodes);

/* Formats "node 'NAME' (OP)" for errors, or "node #INDEX (OP) with output
 * 'OUT'" when the node has no name, into a heap string the caller frees.
 * Returns NULL when memory is exhausted. */
char *describe_node(const iq_onnx_node_t *node, size_t index);

/* Writes dims as "[2, 3]" into `buffer`, ending with "...]" when they do
 * not fit. */
void format_dims(const int64_t *dims, size_t rank, char *buffer, size_t size);

/* Formats text like printf into a heap string the caller frees, or NULL. */
char *format_string(const char *format, ...) __attribute__((format(printf, 1, 2)));

#endif /* IQ_ONNX_READER_INTERNAL_H */
