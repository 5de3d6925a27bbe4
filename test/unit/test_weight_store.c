/* Tests of the weight store: round trips through real files, the writer's
 * argument checks and atomic replacement, the reader's validation of
 * corrupted files, checksums, and name lookup on many tensors. */
#include "iq/weight_store.h"
#include "iq_test.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- Helpers --------------------------------------------------------- */

/* Fills `size` bytes with a pattern that differs between tensors. */
static void fill_pattern(uint8_t *bytes, size_t size, unsigned seed) {
  for (size_t i = 0; i < size; ++i) {
    bytes[i] = (uint8_t)(i * 7 + seed * 31 + 1);
  }
}

/* Returns the contents of `path` in a heap buffer the caller frees. */
static uint8_t *load_file(const char *path, size_t *size) {
  FILE *stream = fopen(path, "rb");
  if (stream == NULL) {
    return NULL;
  }
  uint8_t *bytes = NULL;
  if (fseek(stream, 0, SEEK_END) == 0) {
    long length = ftell(stream);
    if (length >= 0 && fseek(stream, 0, SEEK_SET) == 0) {
      bytes = malloc(length > 0 ? (size_t)length : 1);
      if (bytes != NULL && fread(bytes, 1, (size_t)length, stream) != (size_t)length) {
        free(bytes);
        bytes = NULL;
      }
      *size = (size_t)length;
    }
  }
  fclose(stream);
  return bytes;
}

static bool save_file(const char *path, const void *bytes, size_t size) {
  FILE *stream = fopen(path, "wb");
  if (stream == NULL) {
    return false;
  }
  bool written = fwrite(bytes, 1, size, stream) == size;
  return fclose(stream) == 0 && written;
}

static uint64_t get_u64(const uint8_t *bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) {
    value = value << 8 | bytes[i];
  }
  return value;
}

static void put_u32(uint8_t *bytes, uint32_t value) {
  for (int i = 0; i < 4; ++i) {
    bytes[i] = (uint8_t)(value >> (8 * i));
  }
}

static void put_u64(uint8_t *bytes, uint64_t value) {
  for (int i = 0; i < 8; ++i) {
    bytes[i] = (uint8_t)(value >> (8 * i));
  }
}

/* Writes the sample store used by the corruption tests:
 *   "w0": f32 [4], 16 bytes at data offset 0
 *   "w1": i8 [3], 3 bytes at data offset 64
 * Both entries have rank 1, so each takes 50 table bytes. */
static bool write_sample_store(const char *path) {
  uint8_t w0[16];
  uint8_t w1[3];
  fill_pattern(w0, sizeof(w0), 0);
  fill_pattern(w1, sizeof(w1), 1);
  int64_t dims0[] = {4};
  int64_t dims1[] = {3};
  iq_weight_store_writer_t *writer = iq_weight_store_writer_create(path, NULL);
  if (writer == NULL) {
    return false;
  }
  if (!iq_weight_store_writer_add(writer, "w0", IQ_DTYPE_F32, IQ_LAYOUT_ROW_MAJOR, 1, dims0, w0,
                                  sizeof(w0), NULL) ||
      !iq_weight_store_writer_add(writer, "w1", IQ_DTYPE_I8, IQ_LAYOUT_ROW_MAJOR, 1, dims1, w1,
                                  sizeof(w1), NULL)) {
    iq_weight_store_writer_abandon(writer);
    return false;
  }
  return iq_weight_store_writer_finish(writer, NULL);
}

/* Byte positions inside the sample store's table entries. */
#define ENTRY_SIZE 50
#define ENTRY_NAME 4
#define ENTRY_DTYPE 6
#define ENTRY_RANK 14
#define ENTRY_DIM0 18
#define ENTRY_OFFSET 26
#define ENTRY_BYTE_SIZE 34

/* A sample store loaded into memory, to be modified by a test and then
 * written back and opened. */
typedef struct corrupt_case {
  char *dir;
  char *path;
  uint8_t *bytes;
  size_t size;
  uint64_t table_offset;
} corrupt_case_t;

static bool corrupt_setup(corrupt_case_t *c) {
  memset(c, 0, sizeof(*c));
  c->dir = iq_test_make_temp_dir();
  if (c->dir == NULL) {
    return false;
  }
  c->path = iq_test_path_join(c->dir, "model.iqw");
  if (c->path == NULL || !write_sample_store(c->path)) {
    return false;
  }
  c->bytes = load_file(c->path, &c->size);
  if (c->bytes == NULL || c->size < 64) {
    return false;
  }
  c->table_offset = get_u64(c->bytes + 32);
  return c->table_offset + 2 * ENTRY_SIZE == c->size;
}

/* Returns a pointer to `field` of table entry `entry`. */
static uint8_t *entry_field(corrupt_case_t *c, int entry, int field) {
  return c->bytes + c->table_offset + (size_t)entry * ENTRY_SIZE + (size_t)field;
}

/* Recomputes the header's table checksum, so that the reader gets past it
 * to the check a test aims at. */
static void fix_table_checksum(corrupt_case_t *c) {
  uint64_t table_size = get_u64(c->bytes + 40);
  put_u64(c->bytes + 48, iq_weight_store_checksum(c->bytes + c->table_offset, table_size));
}

/* Writes the modified bytes back and opens them. Returns the error, or
 * NULL when the store opened (which a corruption test then reports). */
static iq_error_t *corrupt_open(corrupt_case_t *c) {
  if (!save_file(c->path, c->bytes, c->size)) {
    return iq_error_create(c->path, NULL, NULL, "test could not write the file");
  }
  iq_error_t *error = NULL;
  iq_weight_store_t *store = iq_weight_store_open(c->path, &error);
  iq_weight_store_close(store);
  return error;
}

static void corrupt_teardown(corrupt_case_t *c) {
  if (c->dir != NULL) {
    iq_test_remove_dir(c->dir);
  }
  free(c->bytes);
  free(c->path);
  free(c->dir);
}

/* ---- Element types --------------------------------------------------- */

IQ_TEST(dtype_names_and_bits) {
  IQ_ASSERT_EQ_STR(iq_dtype_name(IQ_DTYPE_F32), "f32");
  IQ_ASSERT_EQ_STR(iq_dtype_name(IQ_DTYPE_BF16), "bf16");
  IQ_ASSERT_EQ_STR(iq_dtype_name(IQ_DTYPE_I4), "i4");
  IQ_ASSERT_EQ_STR(iq_dtype_name(IQ_DTYPE_BOOL), "bool");
  IQ_ASSERT_NULL(iq_dtype_name((iq_dtype_t)99));
  IQ_ASSERT_EQ_UINT(iq_dtype_bits(IQ_DTYPE_F64), 64);
  IQ_ASSERT_EQ_UINT(iq_dtype_bits(IQ_DTYPE_F16), 16);
  IQ_ASSERT_EQ_UINT(iq_dtype_bits(IQ_DTYPE_U4), 4);
  IQ_ASSERT_EQ_UINT(iq_dtype_bits(IQ_DTYPE_BOOL), 8);
  IQ_ASSERT_EQ_UINT(iq_dtype_bits((iq_dtype_t)0), 0);
}

IQ_TEST(dtype_byte_size_rounds_and_overflows) {
  uint64_t bytes = 0;
  IQ_ASSERT(iq_dtype_byte_size(IQ_DTYPE_I4, 7, &bytes));
  IQ_ASSERT_EQ_UINT(bytes, 4);
  IQ_ASSERT(iq_dtype_byte_size(IQ_DTYPE_U4, 0, &bytes));
  IQ_ASSERT_EQ_UINT(bytes, 0);
  IQ_ASSERT(iq_dtype_byte_size(IQ_DTYPE_I4, UINT64_MAX, &bytes));
  IQ_ASSERT_EQ_UINT(bytes, UINT64_MAX / 2 + 1);
  IQ_ASSERT(iq_dtype_byte_size(IQ_DTYPE_F32, 5, &bytes));
  IQ_ASSERT_EQ_UINT(bytes, 20);
  IQ_ASSERT_FALSE(iq_dtype_byte_size(IQ_DTYPE_F32, UINT64_MAX / 2, &bytes));
  IQ_ASSERT_FALSE(iq_dtype_byte_size((iq_dtype_t)99, 1, &bytes));
}

IQ_TEST(weight_store_checksum_is_fnv1a64) {
  /* Published FNV-1a 64 test vectors. */
  IQ_ASSERT_EQ_UINT(iq_weight_store_checksum(NULL, 0), UINT64_C(0xcbf29ce484222325));
  IQ_ASSERT_EQ_UINT(iq_weight_store_checksum("a", 1), UINT64_C(0xaf63dc4c8601ec8c));
  IQ_ASSERT_EQ_UINT(iq_weight_store_checksum("foobar", 6), UINT64_C(0x85944171f73967e8));
}

/* ---- Round trips ----------------------------------------------------- */

typedef struct tensor_spec {
  const char *name;
  iq_dtype_t dtype;
  uint32_t rank;
  int64_t dims[IQ_WEIGHT_STORE_MAX_RANK];
  uint64_t byte_size;
} tensor_spec_t;

static const tensor_spec_t round_trip_specs[] = {
    {"embed.weight", IQ_DTYPE_F32, 2, {2, 3}, 24},
    {"norm.bias", IQ_DTYPE_F16, 1, {5}, 10},
    {"proj.bf16", IQ_DTYPE_BF16, 1, {3}, 6},
    {"q.i4.odd", IQ_DTYPE_I4, 1, {7}, 4},
    {"q.u4.odd", IQ_DTYPE_U4, 3, {1, 3, 1}, 2},
    {"q.i4.one", IQ_DTYPE_I4, 1, {1}, 1},
    {"empty.f32", IQ_DTYPE_F32, 2, {0, 5}, 0},
    {"mask", IQ_DTYPE_BOOL, 1, {3}, 3},
    {"scalar.i64", IQ_DTYPE_I64, 0, {0}, 8},
    {"empty.i4", IQ_DTYPE_I4, 1, {0}, 0},
    {"double", IQ_DTYPE_F64, 1, {2}, 16},
    {"ids", IQ_DTYPE_U16, 8, {1, 1, 1, 1, 1, 1, 2, 3}, 12},
};
#define ROUND_TRIP_COUNT (sizeof(round_trip_specs) / sizeof(round_trip_specs[0]))

IQ_TEST(weight_store_round_trip) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "model.iqw");

  iq_error_t *error = NULL;
  iq_weight_store_writer_t *writer = iq_weight_store_writer_create(path, &error);
  IQ_ASSERT_NULL(error);
  IQ_ASSERT_NOT_NULL(writer);
  uint8_t data[64];
  for (size_t i = 0; i < ROUND_TRIP_COUNT; ++i) {
    const tensor_spec_t *spec = &round_trip_specs[i];
    fill_pattern(data, sizeof(data), (unsigned)i);
    IQ_ASSERT(iq_weight_store_writer_add(writer, spec->name, spec->dtype, IQ_LAYOUT_ROW_MAJOR,
                                         spec->rank, spec->dims, data, spec->byte_size,
                                         &error));
    IQ_ASSERT_NULL(error);
  }
  IQ_ASSERT(iq_weight_store_writer_finish(writer, &error));
  IQ_ASSERT_NULL(error);
  /* Only the store remains; the temporary file was renamed. */
  IQ_ASSERT_EQ_INT(iq_test_count_entries(dir), 1);

  iq_weight_store_t *store = iq_weight_store_open(path, &error);
  IQ_ASSERT_NULL(error);
  IQ_ASSERT_NOT_NULL(store);
  IQ_ASSERT_EQ_UINT(iq_weight_store_count(store), ROUND_TRIP_COUNT);
  for (size_t i = 0; i < ROUND_TRIP_COUNT; ++i) {
    const tensor_spec_t *spec = &round_trip_specs[i];
    const iq_weight_tensor_t *tensor = iq_weight_store_get(store, i);
    IQ_ASSERT_NOT_NULL(tensor);
    IQ_ASSERT_EQ_STR(tensor->name, spec->name);
    IQ_ASSERT_EQ_INT(tensor->dtype, spec->dtype);
    IQ_ASSERT_EQ_INT(tensor->layout, IQ_LAYOUT_ROW_MAJOR);
    IQ_ASSERT_EQ_UINT(tensor->rank, spec->rank);
    uint64_t elements = 1;
    for (uint32_t d = 0; d < spec->rank; ++d) {
      IQ_ASSERT_EQ_INT(tensor->dims[d], spec->dims[d]);
      elements *= (uint64_t)spec->dims[d];
    }
    IQ_ASSERT_EQ_UINT(tensor->num_elements, elements);
    IQ_ASSERT_EQ_UINT(tensor->byte_size, spec->byte_size);
    fill_pattern(data, sizeof(data), (unsigned)i);
    if (spec->byte_size == 0) {
      IQ_ASSERT_NULL(tensor->data);
    } else {
      IQ_ASSERT_NOT_NULL(tensor->data);
      IQ_ASSERT_EQ_UINT((uintptr_t)tensor->data % IQ_WEIGHT_STORE_ALIGNMENT, 0);
      IQ_ASSERT_EQ_INT(memcmp(tensor->data, data, spec->byte_size), 0);
    }
    IQ_ASSERT_EQ_UINT(tensor->checksum, iq_weight_store_checksum(data, spec->byte_size));
    IQ_ASSERT(iq_weight_store_find(store, spec->name) == tensor);
  }
  IQ_ASSERT_NULL(iq_weight_store_get(store, ROUND_TRIP_COUNT));
  IQ_ASSERT(iq_weight_store_verify(store, &error));
  IQ_ASSERT_NULL(error);

  iq_weight_store_close(store);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(weight_store_data_is_aligned) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "aligned.iqw");
  iq_weight_store_writer_t *writer = iq_weight_store_writer_create(path, NULL);
  IQ_ASSERT_NOT_NULL(writer);
  /* Sizes around the alignment make every padding amount appear. */
  uint8_t data[130];
  char name[32];
  for (unsigned size = 1; size <= sizeof(data); ++size) {
    snprintf(name, sizeof(name), "t%u", size);
    int64_t dims[] = {(int64_t)size};
    fill_pattern(data, size, size);
    IQ_ASSERT(iq_weight_store_writer_add(writer, name, IQ_DTYPE_U8, IQ_LAYOUT_ROW_MAJOR, 1,
                                         dims, data, size, NULL));
  }
  IQ_ASSERT(iq_weight_store_writer_finish(writer, NULL));

  iq_error_t *error = NULL;
  iq_weight_store_t *store = iq_weight_store_open(path, &error);
  IQ_ASSERT_NULL(error);
  IQ_ASSERT_NOT_NULL(store);
  IQ_ASSERT_EQ_UINT(iq_weight_store_count(store), sizeof(data));
  for (size_t i = 0; i < iq_weight_store_count(store); ++i) {
    const iq_weight_tensor_t *tensor = iq_weight_store_get(store, i);
    IQ_ASSERT_EQ_UINT((uintptr_t)tensor->data % IQ_WEIGHT_STORE_ALIGNMENT, 0);
    fill_pattern(data, tensor->byte_size, (unsigned)(i + 1));
    IQ_ASSERT_EQ_INT(memcmp(tensor->data, data, tensor->byte_size), 0);
  }
  IQ_ASSERT(iq_weight_store_verify(store, NULL));

  iq_weight_store_close(store);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(weight_store_empty_store) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "empty.iqw");
  iq_weight_store_writer_t *writer = iq_weight_store_writer_create(path, NULL);
  IQ_ASSERT_NOT_NULL(writer);
  IQ_ASSERT(iq_weight_store_writer_finish(writer, NULL));

  struct stat info;
  IQ_ASSERT_EQ_INT(stat(path, &info), 0);
  IQ_ASSERT_EQ_INT(info.st_size, IQ_WEIGHT_STORE_HEADER_SIZE);
  iq_error_t *error = NULL;
  iq_weight_store_t *store = iq_weight_store_open(path, &error);
  IQ_ASSERT_NULL(error);
  IQ_ASSERT_NOT_NULL(store);
  IQ_ASSERT_EQ_UINT(iq_weight_store_count(store), 0);
  IQ_ASSERT_NULL(iq_weight_store_find(store, "anything"));
  IQ_ASSERT(iq_weight_store_verify(store, NULL));

  iq_weight_store_close(store);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(weight_store_find_many_tensors) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "many.iqw");
  iq_weight_store_writer_t *writer = iq_weight_store_writer_create(path, NULL);
  IQ_ASSERT_NOT_NULL(writer);
  enum { TENSOR_COUNT = 1000 };
  char name[64];
  for (int i = 0; i < TENSOR_COUNT; ++i) {
    snprintf(name, sizeof(name), "layers.%d.mlp.weight", i);
    int32_t value = i;
    int64_t dims[] = {1};
    IQ_ASSERT(iq_weight_store_writer_add(writer, name, IQ_DTYPE_I32, IQ_LAYOUT_ROW_MAJOR, 1,
                                         dims, &value, sizeof(value), NULL));
  }
  IQ_ASSERT(iq_weight_store_writer_finish(writer, NULL));

  iq_error_t *error = NULL;
  iq_weight_store_t *store = iq_weight_store_open(path, &error);
  IQ_ASSERT_NULL(error);
  IQ_ASSERT_NOT_NULL(store);
  IQ_ASSERT_EQ_UINT(iq_weight_store_count(store), TENSOR_COUNT);
  /* Look up in reverse order so the result cannot come from a cursor. */
  for (int i = TENSOR_COUNT - 1; i >= 0; --i) {
    snprintf(name, sizeof(name), "layers.%d.mlp.weight", i);
    const iq_weight_tensor_t *tensor = iq_weight_store_find(store, name);
    IQ_ASSERT_NOT_NULL(tensor);
    IQ_ASSERT(tensor == iq_weight_store_get(store, (size_t)i));
    int32_t value = 0;
    memcpy(&value, tensor->data, sizeof(value));
    IQ_ASSERT_EQ_INT(value, i);
  }
  IQ_ASSERT_NULL(iq_weight_store_find(store, "layers.1000.mlp.weight"));
  IQ_ASSERT_NULL(iq_weight_store_find(store, "layers.1.mlp"));
  IQ_ASSERT_NULL(iq_weight_store_find(store, ""));
  IQ_ASSERT_NULL(iq_weight_store_find(store, NULL));

  iq_weight_store_close(store);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

/* ---- Writer checks --------------------------------------------------- */

IQ_TEST(writer_rejects_invalid_tensors) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "model.iqw");
  iq_weight_store_writer_t *writer = iq_weight_store_writer_create(path, NULL);
  IQ_ASSERT_NOT_NULL(writer);
  uint8_t data[16] = {0};
  int64_t dims[] = {4};
  iq_error_t *error = NULL;
  IQ_ASSERT(iq_weight_store_writer_add(writer, "w", IQ_DTYPE_F32, IQ_LAYOUT_ROW_MAJOR, 1, dims,
                                       data, 16, &error));

  IQ_ASSERT_FALSE(iq_weight_store_writer_add(writer, "w", IQ_DTYPE_F32, IQ_LAYOUT_ROW_MAJOR, 1,
                                             dims, data, 16, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->file, path);
  IQ_ASSERT_EQ_STR(error->where, "w");
  IQ_ASSERT_CONTAINS(error->message, "already added");
  IQ_ASSERT_NOT_NULL(error->hint);
  iq_error_destroy(error);
  error = NULL;

  IQ_ASSERT_FALSE(iq_weight_store_writer_add(writer, "", IQ_DTYPE_F32, IQ_LAYOUT_ROW_MAJOR, 1,
                                             dims, data, 16, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "name is empty");
  iq_error_destroy(error);
  error = NULL;

  IQ_ASSERT_FALSE(iq_weight_store_writer_add(writer, NULL, IQ_DTYPE_F32, IQ_LAYOUT_ROW_MAJOR, 1,
                                             dims, data, 16, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "name is empty");
  iq_error_destroy(error);
  error = NULL;

  int64_t i4_dims[] = {5};
  IQ_ASSERT_FALSE(iq_weight_store_writer_add(writer, "q", IQ_DTYPE_I4, IQ_LAYOUT_ROW_MAJOR, 1,
                                             i4_dims, data, 2, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->where, "q");
  IQ_ASSERT_CONTAINS(error->message,
                     "byte size 2 does not match 5 elements of i4, which take 3 bytes");
  iq_error_destroy(error);
  error = NULL;

  int64_t negative_dims[] = {2, -1};
  IQ_ASSERT_FALSE(iq_weight_store_writer_add(writer, "n", IQ_DTYPE_U8, IQ_LAYOUT_ROW_MAJOR, 2,
                                             negative_dims, data, 0, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "dimension 1 is -1");
  iq_error_destroy(error);
  error = NULL;

  int64_t huge_dims[] = {INT64_C(1) << 40, INT64_C(1) << 40};
  IQ_ASSERT_FALSE(iq_weight_store_writer_add(writer, "h", IQ_DTYPE_U8, IQ_LAYOUT_ROW_MAJOR, 2,
                                             huge_dims, data, 16, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "overflows 64 bits");
  iq_error_destroy(error);
  error = NULL;

  int64_t many_dims[IQ_WEIGHT_STORE_MAX_RANK + 1] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
  IQ_ASSERT_FALSE(iq_weight_store_writer_add(writer, "r", IQ_DTYPE_U8, IQ_LAYOUT_ROW_MAJOR,
                                             IQ_WEIGHT_STORE_MAX_RANK + 1, many_dims, data, 1,
                                             &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "rank 9 is above the maximum of 8");
  iq_error_destroy(error);
  error = NULL;

  IQ_ASSERT_FALSE(iq_weight_store_writer_add(writer, "d", (iq_dtype_t)99, IQ_LAYOUT_ROW_MAJOR,
                                             1, dims, data, 16, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "unknown dtype 99");
  iq_error_destroy(error);
  error = NULL;

  IQ_ASSERT_FALSE(iq_weight_store_writer_add(writer, "l", IQ_DTYPE_F32, (iq_layout_t)7, 1, dims,
                                             data, 16, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "unknown layout 7");
  iq_error_destroy(error);
  error = NULL;

  IQ_ASSERT_FALSE(iq_weight_store_writer_add(writer, "z", IQ_DTYPE_F32, IQ_LAYOUT_ROW_MAJOR, 1,
                                             dims, NULL, 16, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "no data was given");
  iq_error_destroy(error);
  error = NULL;

  /* The rejected calls wrote nothing, so the store holds only "w". */
  IQ_ASSERT(iq_weight_store_writer_finish(writer, &error));
  iq_weight_store_t *store = iq_weight_store_open(path, &error);
  IQ_ASSERT_NULL(error);
  IQ_ASSERT_NOT_NULL(store);
  IQ_ASSERT_EQ_UINT(iq_weight_store_count(store), 1);
  IQ_ASSERT_NOT_NULL(iq_weight_store_find(store, "w"));

  iq_weight_store_close(store);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(writer_abandon_leaves_no_files) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "model.iqw");
  iq_weight_store_writer_t *writer = iq_weight_store_writer_create(path, NULL);
  IQ_ASSERT_NOT_NULL(writer);
  uint8_t data[100] = {0};
  int64_t dims[] = {100};
  IQ_ASSERT(iq_weight_store_writer_add(writer, "w", IQ_DTYPE_U8, IQ_LAYOUT_ROW_MAJOR, 1, dims,
                                       data, sizeof(data), NULL));
  /* The temporary file exists while the writer runs. */
  IQ_ASSERT_EQ_INT(iq_test_count_entries(dir), 1);

  iq_weight_store_writer_abandon(writer);
  IQ_ASSERT_EQ_INT(iq_test_count_entries(dir), 0);

  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(writer_create_rejects_directory) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  iq_error_t *error = NULL;
  IQ_ASSERT_NULL(iq_weight_store_writer_create(dir, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->file, dir);
  IQ_ASSERT_CONTAINS(error->message, "is a directory");
  iq_error_destroy(error);

  char *missing = iq_test_path_join(dir, "no/such/dir/model.iqw");
  error = NULL;
  IQ_ASSERT_NULL(iq_weight_store_writer_create(missing, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "failed to create a temporary file");
  IQ_ASSERT_CONTAINS(error->message, strerror(ENOENT));
  iq_error_destroy(error);

  iq_test_remove_dir(dir);
  free(missing);
  free(dir);
}

IQ_TEST(writer_replaces_old_file) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "model.iqw");
  IQ_ASSERT(iq_test_write_text(path, "old contents"));
  IQ_ASSERT_EQ_INT(chmod(path, 0640), 0);
  IQ_ASSERT(write_sample_store(path));

  struct stat info;
  IQ_ASSERT_EQ_INT(stat(path, &info), 0);
  IQ_ASSERT_EQ_UINT(info.st_mode & 0777, 0640);
  iq_weight_store_t *store = iq_weight_store_open(path, NULL);
  IQ_ASSERT_NOT_NULL(store);
  IQ_ASSERT_EQ_UINT(iq_weight_store_count(store), 2);
  IQ_ASSERT_EQ_INT(iq_test_count_entries(dir), 1);

  iq_weight_store_close(store);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

/* Runs in a child process: writes a store at `path` whose table write
 * fails because the file size limit stops the file at its data. Returns
 * the exit status: 0 when finish failed as expected. */
static int finish_under_size_limit(const char *path) {
  signal(SIGXFSZ, SIG_IGN);
  iq_weight_store_writer_t *writer = iq_weight_store_writer_create(path, NULL);
  if (writer == NULL) {
    return 2;
  }
  uint8_t data[64] = {1};
  int64_t dims[] = {64};
  if (!iq_weight_store_writer_add(writer, "w", IQ_DTYPE_U8, IQ_LAYOUT_ROW_MAJOR, 1, dims, data,
                                  sizeof(data), NULL)) {
    return 3;
  }
  /* Header and data are 128 bytes, so the table cannot be written. */
  struct rlimit limit = {128, 128};
  if (setrlimit(RLIMIT_FSIZE, &limit) != 0) {
    return 4;
  }
  iq_error_t *error = NULL;
  if (iq_weight_store_writer_finish(writer, &error)) {
    return 5;
  }
  bool named = error != NULL && strcmp(error->file, path) == 0 &&
               strstr(error->message, "failed to write the temporary file") != NULL;
  iq_error_destroy(error);
  return named ? 0 : 6;
}

IQ_TEST(writer_finish_failure_keeps_old_file) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "model.iqw");
  IQ_ASSERT(iq_test_write_text(path, "old contents"));

  fflush(NULL);
  pid_t child = fork();
  IQ_ASSERT(child >= 0);
  if (child == 0) {
    /* _exit skips atexit handlers, which belong to the parent. */
    _exit(finish_under_size_limit(path));
  }
  int status = 0;
  IQ_ASSERT_EQ_INT(waitpid(child, &status, 0), child);
  IQ_ASSERT(WIFEXITED(status));
  IQ_ASSERT_EQ_INT(WEXITSTATUS(status), 0);

  size_t size = 0;
  uint8_t *contents = load_file(path, &size);
  IQ_ASSERT_NOT_NULL(contents);
  IQ_ASSERT_EQ_UINT(size, strlen("old contents"));
  IQ_ASSERT_EQ_INT(memcmp(contents, "old contents", size), 0);
  /* The temporary file is gone. */
  IQ_ASSERT_EQ_INT(iq_test_count_entries(dir), 1);

  free(contents);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

/* ---- Reader validation ----------------------------------------------- */

IQ_TEST(store_open_missing_file) {
  char *dir = iq_test_make_temp_dir();
  IQ_ASSERT_NOT_NULL(dir);
  char *path = iq_test_path_join(dir, "missing.iqw");
  iq_error_t *error = NULL;
  IQ_ASSERT_NULL(iq_weight_store_open(path, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->file, path);
  IQ_ASSERT_CONTAINS(error->message, strerror(ENOENT));
  iq_error_destroy(error);
  iq_test_remove_dir(dir);
  free(path);
  free(dir);
}

IQ_TEST(store_sample_opens) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  /* The offsets the corruption tests modify, checked once here. */
  IQ_ASSERT_EQ_INT(memcmp(entry_field(&c, 0, ENTRY_NAME), "w0", 2), 0);
  IQ_ASSERT_EQ_INT(memcmp(entry_field(&c, 1, ENTRY_NAME), "w1", 2), 0);
  IQ_ASSERT_EQ_UINT(get_u64(entry_field(&c, 1, ENTRY_OFFSET)), 64);
  IQ_ASSERT_EQ_UINT(get_u64(entry_field(&c, 1, ENTRY_BYTE_SIZE)), 3);
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NULL(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_bad_magic) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  c.bytes[0] = 'X';
  c.bytes[7] = 0x01;
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->file, c.path);
  IQ_ASSERT_CONTAINS(error->message, "invalid magic \"XQWSTOR\\x01\"");
  IQ_ASSERT_CONTAINS(error->hint, "weight store");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_bad_version) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  put_u32(c.bytes + 8, 2);
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->file, c.path);
  IQ_ASSERT_CONTAINS(error->message, "unsupported format version 2");
  IQ_ASSERT_NOT_NULL(error->hint);
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_truncated_file) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  --c.size;
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "extends past the end of the file");
  iq_error_destroy(error);

  c.size = 20;
  error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "is 20 bytes, smaller than the 64-byte");
  iq_error_destroy(error);

  c.size = 0;
  error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "is 0 bytes");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_trailing_bytes) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  uint8_t *grown = realloc(c.bytes, c.size + 1);
  IQ_ASSERT_NOT_NULL(grown);
  c.bytes = grown;
  c.bytes[c.size++] = 0;
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "but the file is");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_table_past_end) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  put_u64(c.bytes + 32, c.size + 100);
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "table at offset");
  IQ_ASSERT_CONTAINS(error->message, "extends past the end of the file");
  iq_error_destroy(error);

  /* Offset plus size would wrap around to a small number. */
  put_u64(c.bytes + 32, UINT64_MAX - 10);
  error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "table at offset 18446744073709551605");
  iq_error_destroy(error);

  put_u64(c.bytes + 32, c.table_offset);
  put_u64(c.bytes + 40, UINT64_MAX);
  error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "extends past the end of the file");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_bad_data_region) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  put_u64(c.bytes + 16, 32);
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "data offset 32 is not a multiple of 64");
  iq_error_destroy(error);

  put_u64(c.bytes + 16, 64);
  put_u64(c.bytes + 24, 64);
  error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "does not follow the data region");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_table_checksum) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  *entry_field(&c, 1, ENTRY_NAME + 1) = '9';
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "table checksum mismatch");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_tensor_count) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  put_u32(c.bytes + 12, 1000000);
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "tensor count 1000000 cannot fit in a table of 100 bytes");
  iq_error_destroy(error);

  put_u32(c.bytes + 12, 1);
  error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "the table has 50 bytes left after its 1 entries");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_entry_past_table) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  put_u32(entry_field(&c, 1, 0), 1000);
  fix_table_checksum(&c);
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->where, "tensor #1");
  IQ_ASSERT_CONTAINS(error->message, "ends while reading its name");
  iq_error_destroy(error);

  put_u32(entry_field(&c, 1, 0), 2);
  put_u32(entry_field(&c, 1, ENTRY_RANK), 8);
  fix_table_checksum(&c);
  error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->where, "w1");
  IQ_ASSERT_CONTAINS(error->message, "ends while reading its");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_bad_name) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  *entry_field(&c, 1, ENTRY_NAME + 1) = '\0';
  fix_table_checksum(&c);
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->where, "tensor #1");
  IQ_ASSERT_CONTAINS(error->message, "contains a NUL byte");
  iq_error_destroy(error);

  put_u32(entry_field(&c, 0, 0), 0);
  fix_table_checksum(&c);
  error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->where, "tensor #0");
  IQ_ASSERT_CONTAINS(error->message, "name is empty");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_offset_past_data) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  put_u64(entry_field(&c, 1, ENTRY_OFFSET), 128);
  fix_table_checksum(&c);
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->file, c.path);
  IQ_ASSERT_EQ_STR(error->where, "w1");
  IQ_ASSERT_CONTAINS(error->message,
                     "data at offset 128 with 3 bytes extends past the data region (128 bytes)");
  IQ_ASSERT_NOT_NULL(error->hint);
  iq_error_destroy(error);

  put_u64(entry_field(&c, 1, ENTRY_OFFSET), UINT64_MAX - 63);
  fix_table_checksum(&c);
  error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "extends past the data region");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_misaligned_offset) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  put_u64(entry_field(&c, 1, ENTRY_OFFSET), 65);
  fix_table_checksum(&c);
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->where, "w1");
  IQ_ASSERT_CONTAINS(error->message, "data offset 65 is not a multiple of 64");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_overlapping_data) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  put_u64(entry_field(&c, 1, ENTRY_OFFSET), 0);
  fix_table_checksum(&c);
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->where, "w1");
  IQ_ASSERT_CONTAINS(error->message, "overlaps the previous tensor's data, which ends at 16");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_overflowing_dims) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  /* 2^62 f32 elements take 2^64 bytes. */
  put_u64(entry_field(&c, 0, ENTRY_DIM0), UINT64_C(1) << 62);
  fix_table_checksum(&c);
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->where, "w0");
  IQ_ASSERT_CONTAINS(error->message, "overflows 64 bits");
  iq_error_destroy(error);

  put_u64(entry_field(&c, 0, ENTRY_DIM0), UINT64_MAX);
  fix_table_checksum(&c);
  error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "dimension 0 is -1, which is negative");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_size_mismatch) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  put_u64(entry_field(&c, 1, ENTRY_BYTE_SIZE), 4);
  fix_table_checksum(&c);
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->where, "w1");
  IQ_ASSERT_CONTAINS(error->message,
                     "byte size 4 does not match 3 elements of i8, which take 3 bytes");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_unknown_dtype) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  put_u32(entry_field(&c, 0, ENTRY_DTYPE), 99);
  fix_table_checksum(&c);
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->where, "w0");
  IQ_ASSERT_CONTAINS(error->message, "unknown dtype 99");
  IQ_ASSERT_NOT_NULL(error->hint);
  iq_error_destroy(error);

  put_u32(entry_field(&c, 0, ENTRY_DTYPE), (uint32_t)IQ_DTYPE_F32);
  put_u32(entry_field(&c, 0, ENTRY_DTYPE + 4), 3);
  fix_table_checksum(&c);
  error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_CONTAINS(error->message, "unknown layout 3");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_rank_above_max) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  put_u32(entry_field(&c, 1, ENTRY_RANK), 9);
  fix_table_checksum(&c);
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->where, "w1");
  IQ_ASSERT_CONTAINS(error->message, "rank 9 is above the maximum of 8");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_rejects_duplicate_names) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  *entry_field(&c, 1, ENTRY_NAME + 1) = '0';
  fix_table_checksum(&c);
  iq_error_t *error = corrupt_open(&c);
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->where, "w0");
  IQ_ASSERT_CONTAINS(error->message, "the name is used by tensors #0 and #1");
  iq_error_destroy(error);
  corrupt_teardown(&c);
}

IQ_TEST(store_verify_detects_flipped_byte) {
  corrupt_case_t c;
  IQ_ASSERT(corrupt_setup(&c));
  /* The first data byte of "w1", at data offset 64. */
  c.bytes[IQ_WEIGHT_STORE_HEADER_SIZE + 64] ^= 0x10;
  IQ_ASSERT(save_file(c.path, c.bytes, c.size));

  iq_error_t *error = NULL;
  iq_weight_store_t *store = iq_weight_store_open(c.path, &error);
  IQ_ASSERT_NULL(error);
  IQ_ASSERT_NOT_NULL(store);
  IQ_ASSERT_FALSE(iq_weight_store_verify(store, &error));
  IQ_ASSERT_NOT_NULL(error);
  IQ_ASSERT_EQ_STR(error->file, c.path);
  IQ_ASSERT_EQ_STR(error->where, "w1");
  IQ_ASSERT_CONTAINS(error->message, "checksum mismatch");
  IQ_ASSERT_NOT_NULL(error->hint);
  iq_error_destroy(error);

  iq_weight_store_close(store);
  corrupt_teardown(&c);
}
