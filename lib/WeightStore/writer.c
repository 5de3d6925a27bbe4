/* The weight store writer. Tensor bytes go straight to a temporary file
 * beside the target, and only the table entries stay in memory. Finish
 * writes the table and header, then renames the file into place. */
#include "weight_store_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char disk_hint[] = "check free disk space and the permissions of the directory";

struct iq_weight_store_writer {
  char *path;      /* the final path */
  char *temp_path; /* "<path>.tmp.XXXXXX", deleted unless finish renames it */
  int fd;
  mode_t mode; /* permissions the finished file gets */
  /* Bytes written into the data region so far, padding included. */
  uint64_t data_end;
  /* Entries in the order they were added. The names are heap copies owned
   * by the writer, and the data pointers stay NULL. */
  iq_weight_tensor_t *entries;
  uint64_t *offsets; /* offsets[i]: entries[i]'s data, relative to the data region */
  size_t count;
  size_t capacity;
  iq_ws_name_index_t index;
  /* Set after a failed write, which leaves the file contents unknown, so
   * later calls fail instead of writing a corrupt store. */
  bool broken;
};

static bool pwrite_all(int fd, const void *data, size_t size, off_t offset) {
  const uint8_t *bytes = data;
  while (size > 0) {
    ssize_t written = pwrite(fd, bytes, size, offset);
    if (written < 0) {
      if (errno == EINTR) {
        continue;
      }
      return false;
    }
    bytes += written;
    size -= (size_t)written;
    offset += written;
  }
  return true;
}

/* Returns the permissions for the finished file: those of the file it
 * replaces, or 0666 less the umask for a new one. */
static mode_t output_mode(const char *path) {
  struct stat target;
  if (stat(path, &target) == 0) {
    return target.st_mode & 0777;
  }
  /* NOTE: POSIX offers no way to read the umask without setting it, so a
   * thread creating a file between these two calls gets umask 0. */
  mode_t mask = umask(0);
  umask(mask);
  return 0666 & ~mask;
}

/* Flushes the rename to disk. Failures are ignored because some file
 * systems reject fsync on a directory, and the file itself is synced. */
static void sync_parent_directory(const char *path) {
  const char *slash = strrchr(path, '/');
  char *directory;
  if (slash == NULL) {
    directory = strdup(".");
  } else if (slash == path) {
    directory = strdup("/");
  } else {
    directory = strndup(path, (size_t)(slash - path));
  }
  if (directory == NULL) {
    return;
  }
  int fd = open(directory, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    fsync(fd);
    close(fd);
  }
  free(directory);
}

static void free_entries(iq_weight_store_writer_t *writer) {
  for (size_t i = 0; i < writer->count; ++i) {
    free((char *)writer->entries[i].name);
  }
  free(writer->entries);
  free(writer->offsets);
  iq_ws_name_index_free(&writer->index);
}

/* Closes and deletes the temporary file and frees the writer. */
static void destroy_writer(iq_weight_store_writer_t *writer) {
  if (writer->fd >= 0) {
    close(writer->fd);
  }
  if (writer->temp_path != NULL) {
    unlink(writer->temp_path);
  }
  free_entries(writer);
  free(writer->temp_path);
  free(writer->path);
  free(writer);
}

iq_weight_store_writer_t *iq_weight_store_writer_create(const char *path, iq_error_t **error) {
  if (path == NULL || path[0] == '\0') {
    iq_error_set(error, NULL, NULL, "pass the path of the weight store to write",
                 "no output path was given");
    return NULL;
  }
  struct stat target;
  if (stat(path, &target) == 0 && S_ISDIR(target.st_mode)) {
    iq_error_set(error, path, NULL,
                 "pass the path of a file, for example one inside this directory",
                 "is a directory, so it cannot be replaced by the weight store");
    return NULL;
  }

  iq_weight_store_writer_t *writer = calloc(1, sizeof(*writer));
  static const char suffix[] = ".tmp.XXXXXX";
  size_t path_length = strlen(path);
  if (writer == NULL) {
    iq_error_set(error, path, NULL, NULL, "out of memory while creating the writer");
    return NULL;
  }
  writer->fd = -1;
  writer->path = strdup(path);
  writer->temp_path = malloc(path_length + sizeof(suffix));
  if (writer->path == NULL || writer->temp_path == NULL) {
    free(writer->temp_path);
    writer->temp_path = NULL;
    destroy_writer(writer);
    iq_error_set(error, path, NULL, NULL, "out of memory while creating the writer");
    return NULL;
  }
  memcpy(writer->temp_path, path, path_length);
  memcpy(writer->temp_path + path_length, suffix, sizeof(suffix));
  writer->mode = output_mode(path);

  writer->fd = mkstemp(writer->temp_path);
  if (writer->fd < 0) {
    int saved = errno;
    free(writer->temp_path);
    writer->temp_path = NULL;
    destroy_writer(writer);
    iq_error_set(error, path, NULL, "check that the directory exists and is writable",
                 "failed to create a temporary file next to it: %s", strerror(saved));
    return NULL;
  }
  /* Keeps child processes from inheriting the descriptor. */
  fcntl(writer->fd, F_SETFD, FD_CLOEXEC);

  /* A zeroed placeholder, because the header can be written only once
   * finish knows where the table goes. */
  static const uint8_t zero_header[IQ_WEIGHT_STORE_HEADER_SIZE];
  if (!iq_write_all(writer->fd, zero_header, sizeof(zero_header))) {
    int saved = errno;
    iq_error_set(error, path, NULL, disk_hint, "failed to write the temporary file %s: %s",
                 writer->temp_path, strerror(saved));
    destroy_writer(writer);
    return NULL;
  }
  return writer;
}

/* Checks the arguments of iq_weight_store_writer_add other than the name
 * and computes the element count. */
static bool check_tensor(const iq_weight_store_writer_t *writer, const char *name,
                         iq_dtype_t dtype, iq_layout_t layout, uint32_t rank,
                         const int64_t *dims, const void *data, uint64_t byte_size,
                         uint64_t *num_elements, iq_error_t **error) {
  const char *path = writer->path;
  if (iq_dtype_name(dtype) == NULL) {
    return iq_error_set(error, path, name, "use one of the IQ_DTYPE_* values",
                        "unknown dtype %d", (int)dtype);
  }
  if (layout != IQ_LAYOUT_ROW_MAJOR) {
    return iq_error_set(error, path, name, "use one of the IQ_LAYOUT_* values",
                        "unknown layout %d", (int)layout);
  }
  if (rank > IQ_WEIGHT_STORE_MAX_RANK) {
    return iq_error_set(error, path, name, "reshape the tensor to fewer dimensions",
                        "rank %" PRIu32 " is above the maximum of %d", rank,
                        IQ_WEIGHT_STORE_MAX_RANK);
  }
  if (rank > 0 && dims == NULL) {
    return iq_error_set(error, path, name, "pass the dimensions of the tensor",
                        "no dims were given (NULL) for rank %" PRIu32, rank);
  }
  for (uint32_t i = 0; i < rank; ++i) {
    if (dims[i] < 0) {
      return iq_error_set(error, path, name, "stored tensors need static, non-negative shapes",
                          "dimension %" PRIu32 " is %" PRId64 ", which is negative", i, dims[i]);
    }
  }
  uint64_t expected_size = 0;
  if (!iq_ws_element_count(rank, dims, num_elements) ||
      !iq_dtype_byte_size(dtype, *num_elements, &expected_size)) {
    return iq_error_set(error, path, name, "check the dimensions of the tensor",
                        "the byte size of %s elements overflows 64 bits",
                        iq_dtype_name(dtype));
  }
  if (byte_size != expected_size) {
    return iq_error_set(error, path, name,
                        "pass the size of the tensor's data in bytes. 4-bit types take "
                        "half a byte per element, rounded up",
                        "byte size %" PRIu64 " does not match %" PRIu64
                        " elements of %s, which take %" PRIu64 " bytes",
                        byte_size, *num_elements, iq_dtype_name(dtype), expected_size);
  }
  if (byte_size > SIZE_MAX) {
    return iq_error_set(error, path, name, "use a 64-bit build of iq for this tensor",
                        "byte size %" PRIu64 " exceeds the address space", byte_size);
  }
  if (data == NULL && byte_size > 0) {
    return iq_error_set(error, path, name, "pass the tensor's bytes",
                        "no data was given (NULL) for %" PRIu64 " bytes", byte_size);
  }
  return true;
}

/* Writes zero bytes up to the next multiple of the alignment in the data
 * region. */
static bool pad_data(iq_weight_store_writer_t *writer) {
  static const uint8_t zeros[IQ_WEIGHT_STORE_ALIGNMENT];
  uint64_t padding = iq_ws_align_up(writer->data_end) - writer->data_end;
  if (!iq_write_all(writer->fd, zeros, padding)) {
    return false;
  }
  writer->data_end += padding;
  return true;
}

bool iq_weight_store_writer_add(iq_weight_store_writer_t *writer, const char *name,
                                iq_dtype_t dtype, iq_layout_t layout, uint32_t rank,
                                const int64_t *dims, const void *data, uint64_t byte_size,
                                iq_error_t **error) {
  if (writer == NULL) {
    return iq_error_set(error, NULL, name, "create the writer first",
                        "no writer was given (NULL)");
  }
  const char *path = writer->path;
  if (writer->broken) {
    return iq_error_set(error, path, name, "abandon the writer and write the store again",
                        "the writer stopped after an earlier write error");
  }
  if (name == NULL || name[0] == '\0') {
    return iq_error_set(error, path, NULL, "give every tensor a non-empty name",
                        "a tensor name is empty");
  }
  if (iq_ws_name_index_find(&writer->index, writer->entries, name) != SIZE_MAX) {
    return iq_error_set(error, path, name, "give every tensor a unique name",
                        "a tensor with this name was already added");
  }
  if (writer->count >= UINT32_MAX) {
    return iq_error_set(error, path, name, "split the weights over several stores",
                        "a store holds at most %" PRIu32 " tensors", UINT32_MAX);
  }
  uint64_t num_elements = 0;
  if (!check_tensor(writer, name, dtype, layout, rank, dims, data, byte_size, &num_elements,
                    error)) {
    return false;
  }
  uint64_t offset = iq_ws_align_up(writer->data_end);
  if (offset < writer->data_end || byte_size > UINT64_MAX - IQ_WEIGHT_STORE_HEADER_SIZE -
                                                   IQ_WEIGHT_STORE_ALIGNMENT - offset) {
    return iq_error_set(error, path, name, "split the weights over several stores",
                        "the store would exceed 2^64 bytes");
  }

  /* Reserve the entry before writing, so that running out of memory
   * leaves the file unchanged. */
  if (writer->count == writer->capacity) {
    size_t capacity = writer->capacity == 0 ? 64 : writer->capacity * 2;
    iq_weight_tensor_t *grown = realloc(writer->entries, capacity * sizeof(*grown));
    if (grown != NULL) {
      writer->entries = grown;
    }
    uint64_t *grown_offsets = realloc(writer->offsets, capacity * sizeof(*grown_offsets));
    if (grown_offsets != NULL) {
      writer->offsets = grown_offsets;
    }
    if (grown == NULL || grown_offsets == NULL) {
      return iq_error_set(error, path, name, NULL, "out of memory while adding the tensor");
    }
    writer->capacity = capacity;
  }
  char *name_copy = strdup(name);
  if (name_copy == NULL ||
      !iq_ws_name_index_reserve(&writer->index, writer->entries, writer->count + 1)) {
    free(name_copy);
    return iq_error_set(error, path, name, NULL, "out of memory while adding the tensor");
  }

  /* A tensor without bytes needs no padding before it, because its offset
   * only has to be aligned and inside the data region. */
  if (byte_size > 0 && (!pad_data(writer) || !iq_write_all(writer->fd, data, byte_size))) {
    int saved = errno;
    free(name_copy);
    writer->broken = true;
    return iq_error_set(error, path, name, disk_hint,
                        "failed to write %" PRIu64 " bytes to the temporary file %s: %s",
                        byte_size, writer->temp_path, strerror(saved));
  }
  if (byte_size > 0) {
    writer->data_end += byte_size;
  }

  iq_weight_tensor_t *entry = &writer->entries[writer->count];
  memset(entry, 0, sizeof(*entry));
  entry->name = name_copy;
  entry->dtype = dtype;
  entry->layout = layout;
  entry->rank = rank;
  for (uint32_t i = 0; i < rank; ++i) {
    entry->dims[i] = dims[i];
  }
  entry->num_elements = num_elements;
  entry->byte_size = byte_size;
  entry->checksum = iq_weight_store_checksum(data, (size_t)byte_size);
  writer->offsets[writer->count] = offset;
  iq_ws_name_index_insert(&writer->index, writer->entries, writer->count);
  ++writer->count;
  return true;
}

/* Encodes the table into a heap buffer the caller frees, storing its size
 * in `*size`. Returns NULL when memory is exhausted. */
static uint8_t *encode_table(const iq_weight_store_writer_t *writer, uint64_t *size) {
  uint64_t total = 0;
  for (size_t i = 0; i < writer->count; ++i) {
    total += iq_ws_entry_size(strlen(writer->entries[i].name), writer->entries[i].rank);
  }
  if (total > SIZE_MAX) {
    return NULL;
  }
  /* malloc(0) may return NULL, and an empty table still needs a buffer. */
  uint8_t *table = malloc(total > 0 ? (size_t)total : 1);
  if (table == NULL) {
    return NULL;
  }

  uint8_t *cursor = table;
  for (size_t i = 0; i < writer->count; ++i) {
    const iq_weight_tensor_t *entry = &writer->entries[i];
    size_t name_length = strlen(entry->name);
    iq_ws_store_u32(cursor, (uint32_t)name_length);
    memcpy(cursor + 4, entry->name, name_length);
    cursor += 4 + name_length;
    iq_ws_store_u32(cursor, (uint32_t)entry->dtype);
    iq_ws_store_u32(cursor + 4, (uint32_t)entry->layout);
    iq_ws_store_u32(cursor + 8, entry->rank);
    cursor += 12;
    for (uint32_t d = 0; d < entry->rank; ++d) {
      iq_ws_store_u64(cursor, (uint64_t)entry->dims[d]);
      cursor += 8;
    }
    iq_ws_store_u64(cursor, writer->offsets[i]);
    iq_ws_store_u64(cursor + 8, entry->byte_size);
    iq_ws_store_u64(cursor + 16, entry->checksum);
    cursor += 24;
  }
  *size = total;
  return table;
}

static void encode_header(const iq_weight_store_writer_t *writer, uint64_t table_size,
                          uint64_t table_checksum, uint8_t *header) {
  memset(header, 0, IQ_WEIGHT_STORE_HEADER_SIZE);
  memcpy(header, IQ_WS_MAGIC, IQ_WS_MAGIC_SIZE);
  iq_ws_store_u32(header + IQ_WS_HEADER_VERSION, IQ_WEIGHT_STORE_FORMAT_VERSION);
  iq_ws_store_u32(header + IQ_WS_HEADER_COUNT, (uint32_t)writer->count);
  iq_ws_store_u64(header + IQ_WS_HEADER_DATA_OFFSET, IQ_WEIGHT_STORE_HEADER_SIZE);
  iq_ws_store_u64(header + IQ_WS_HEADER_DATA_SIZE, writer->data_end);
  iq_ws_store_u64(header + IQ_WS_HEADER_TABLE_OFFSET,
                  IQ_WEIGHT_STORE_HEADER_SIZE + writer->data_end);
  iq_ws_store_u64(header + IQ_WS_HEADER_TABLE_SIZE, table_size);
  iq_ws_store_u64(header + IQ_WS_HEADER_TABLE_CHECKSUM, table_checksum);
}

bool iq_weight_store_writer_finish(iq_weight_store_writer_t *writer, iq_error_t **error) {
  if (writer == NULL) {
    return iq_error_set(error, NULL, NULL, "create the writer first",
                        "no writer was given (NULL)");
  }
  const char *path = writer->path;
  if (writer->broken) {
    iq_error_set(error, path, NULL, "write the store again",
                 "the writer stopped after an earlier write error");
    destroy_writer(writer);
    return false;
  }

  /* The data region ends aligned, so the table starts aligned too. */
  const char *step = NULL;
  int saved = 0;
  uint64_t table_size = 0;
  uint8_t *table = NULL;
  if (!pad_data(writer)) {
    step = "write";
    saved = errno;
  } else if ((table = encode_table(writer, &table_size)) == NULL) {
    step = "encode the table for";
    saved = ENOMEM;
  } else {
    uint8_t header[IQ_WEIGHT_STORE_HEADER_SIZE];
    encode_header(writer, table_size, iq_weight_store_checksum(table, (size_t)table_size),
                  header);
    if (!iq_write_all(writer->fd, table, table_size) ||
        !pwrite_all(writer->fd, header, sizeof(header), 0)) {
      step = "write";
    } else if (fchmod(writer->fd, writer->mode) != 0) {
      step = "set the permissions of";
    } else if (fsync(writer->fd) != 0) {
      step = "flush to disk";
    }
    saved = errno;
  }
  free(table);

  if (close(writer->fd) != 0 && step == NULL) {
    saved = errno;
    step = "close";
  }
  writer->fd = -1;
  if (step == NULL && rename(writer->temp_path, path) != 0) {
    saved = errno;
    step = "rename into place";
  }

  if (step != NULL) {
    iq_error_set(error, path, NULL, disk_hint, "failed to %s the temporary file %s: %s", step,
                 writer->temp_path, strerror(saved));
    destroy_writer(writer);
    return false;
  }

  /* The temporary path is now the final file, which must stay. */
  free(writer->temp_path);
  writer->temp_path = NULL;
  sync_parent_directory(path);
  destroy_writer(writer);
  return true;
}

void iq_weight_store_writer_abandon(iq_weight_store_writer_t *writer) {
  if (writer != NULL) {
    destroy_writer(writer);
  }
}
