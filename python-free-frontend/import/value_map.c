/* An open-addressing hash map from value names to MLIR values. */
#include "import_internal.h"

#include <stdlib.h>
#include <string.h>

/* FNV-1a; names are short, and the map only needs a good spread. */
static uint64_t hash_name(const char *name) {
  uint64_t hash = 1469598103934665603ull;
  for (const unsigned char *p = (const unsigned char *)name; *p; ++p) {
    hash ^= *p;
    hash *= 1099511628211ull;
  }
  return hash;
}

bool value_map_init(value_map_t *map, size_t expected) {
  size_t capacity = 64;
  while (capacity < expected * 2 + 1)
    capacity *= 2;
  map->keys = calloc(capacity, sizeof *map->keys);
  map->values = calloc(capacity, sizeof *map->values);
  map->capacity = capacity;
  map->count = 0;
  return map->keys && map->values;
}

void value_map_free(value_map_t *map) {
  free(map->keys);
  free(map->values);
  memset(map, 0, sizeof *map);
}

static bool grow(value_map_t *map) {
  value_map_t bigger;
  if (!value_map_init(&bigger, map->capacity))
    return false;
  for (size_t i = 0; i < map->capacity; ++i)
    if (map->keys[i])
      value_map_put(&bigger, map->keys[i], map->values[i]);
  value_map_free(map);
  *map = bigger;
  return true;
}

bool value_map_put(value_map_t *map, const char *key, MlirValue value) {
  if ((map->count + 1) * 2 > map->capacity && !grow(map))
    return false;
  size_t mask = map->capacity - 1;
  for (size_t i = hash_name(key) & mask;; i = (i + 1) & mask) {
    if (!map->keys[i]) {
      map->keys[i] = key;
      map->values[i] = value;
      ++map->count;
      return true;
    }
    if (strcmp(map->keys[i], key) == 0) {
      map->values[i] = value;
      return true;
    }
  }
}

bool value_map_get(const value_map_t *map, const char *key, MlirValue *value) {
  size_t mask = map->capacity - 1;
  for (size_t i = hash_name(key) & mask; map->keys[i]; i = (i + 1) & mask) {
    if (strcmp(map->keys[i], key) == 0) {
      *value = map->values[i];
      return true;
    }
  }
  return false;
}
