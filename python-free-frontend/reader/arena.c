/* The arena that owns a model's arrays and strings, and the fixed-capacity
 * name table used to index values by name. */
#include "reader_internal.h"

#include <stdlib.h>
#include <string.h>

/* Allocations up to this size share blocks; larger ones get their own. */
enum { ARENA_BLOCK_SIZE = 64 * 1024 };

struct arena_block {
  arena_block_t *next;
  size_t used, capacity; /* in bytes of `data` */
  max_align_t data[];
};

static size_t round_up_to_alignment(size_t size) {
  const size_t alignment = _Alignof(max_align_t);
  return (size + alignment - 1) / alignment * alignment;
}

static arena_block_t *arena_new_block(size_t capacity) {
  if (capacity > SIZE_MAX - sizeof(arena_block_t)) {
    return NULL;
  }
  arena_block_t *block = calloc(1, sizeof(arena_block_t) + capacity);
  if (block != NULL) {
    block->capacity = capacity;
  }
  return block;
}

void *arena_alloc(arena_t *arena, size_t size) {
  if (size > SIZE_MAX - _Alignof(max_align_t)) {
    return NULL;
  }
  size_t rounded = round_up_to_alignment(size == 0 ? 1 : size);

  if (rounded > ARENA_BLOCK_SIZE / 4) {
    /* A large allocation gets a block of its own, linked behind the head
     * so the head's free space stays in use. */
    arena_block_t *block = arena_new_block(rounded);
    if (block == NULL) {
      return NULL;
    }
    block->used = rounded;
    if (arena->head == NULL) {
      arena->head = block;
    } else {
      block->next = arena->head->next;
      arena->head->next = block;
    }
    return block->data;
  }

  arena_block_t *head = arena->head;
  if (head == NULL || head->capacity - head->used < rounded) {
    head = arena_new_block(ARENA_BLOCK_SIZE);
    if (head == NULL) {
      return NULL;
    }
    head->next = arena->head;
    arena->head = head;
  }
  /* Blocks come from calloc, so the bytes are already zero. */
  void *result = (unsigned char *)head->data + head->used;
  head->used += rounded;
  return result;
}

void *arena_alloc_array(arena_t *arena, size_t count, size_t size) {
  if (size != 0 && count > SIZE_MAX / size) {
    return NULL;
  }
  return arena_alloc(arena, count * size);
}

char *arena_strndup(arena_t *arena, const char *text, size_t length) {
  if (length == SIZE_MAX) {
    return NULL;
  }
  char *copy = arena_alloc(arena, length + 1);
  if (copy != NULL && length > 0) {
    memcpy(copy, text, length);
  }
  return copy;
}

void arena_free(arena_t *arena) {
  arena_block_t *block = arena->head;
  while (block != NULL) {
    arena_block_t *next = block->next;
    free(block);
    block = next;
  }
  arena->head = NULL;
}

/* FNV-1a: fast, and good enough for tensor names, which the table only
 * needs to spread, not to protect against crafted collisions. */
static uint64_t hash_name(const char *name) {
  uint64_t hash = 1469598103934665603ull;
  for (const unsigned char *p = (const unsigned char *)name; *p != '\0'; ++p) {
    hash ^= *p;
    hash *= 1099511628211ull;
  }
  return hash;
}

bool name_table_init(name_table_t *table, size_t max_entries) {
  memset(table, 0, sizeof(*table));
  size_t capacity = 16;
  while (capacity / 2 < max_entries) {
    if (capacity > SIZE_MAX / 2 / sizeof(name_table_entry_t)) {
      return false;
    }
    capacity *= 2;
  }
  table->entries = calloc(capacity, sizeof(name_table_entry_t));
  if (table->entries == NULL) {
    return false;
  }
  table->capacity = capacity;
  table->max_entries = max_entries;
  return true;
}

void name_table_free(name_table_t *table) {
  free(table->entries);
  memset(table, 0, sizeof(*table));
}

/* Returns the slot holding `name`, or the empty slot where it belongs. The
 * load factor stays at or below one half, so an empty slot always exists. */
static name_table_entry_t *find_slot(const name_table_t *table, const char *name) {
  size_t mask = table->capacity - 1;
  size_t slot = (size_t)hash_name(name) & mask;
  while (table->entries[slot].name != NULL && strcmp(table->entries[slot].name, name) != 0) {
    slot = (slot + 1) & mask;
  }
  return &table->entries[slot];
}

bool name_table_insert(name_table_t *table, const char *name, size_t value, size_t *existing) {
  name_table_entry_t *entry = find_slot(table, name);
  if (entry->name != NULL) {
    if (existing != NULL) {
      *existing = entry->value;
    }
    return false;
  }
  if (table->count >= table->max_entries) {
    /* A caller bug; refusing keeps the load factor bound that find_slot
     * relies on. */
    abort();
  }
  entry->name = name;
  entry->value = value;
  table->count++;
  return true;
}

bool name_table_find(const name_table_t *table, const char *name, size_t *value) {
  if (table->entries == NULL) {
    return false;
  }
  const name_table_entry_t *entry = find_slot(table, name);
  if (entry->name == NULL) {
    return false;
  }
  if (value != NULL) {
    *value = entry->value;
  }
  return true;
}
