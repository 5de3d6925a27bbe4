/* The format-independent part of the tokenizers: loading by content, the
 * piece index, BPE merging and decoding.
 *
 * Merging follows the description of SentencePiece's BPE encoder, which
 * llama2.c's encode() also implements. It starts from one symbol per
 * UTF-8 character. Then it repeatedly merges the adjacent pair whose
 * concatenation is the vocabulary piece with the highest score, taking the
 * leftmost pair among equal scores. Hugging Face's BPE model is the same
 * loop with the merge list's rank in place of the score. This file keeps
 * candidate pairs in a heap, so a text of n characters takes O(n log n)
 * instead of the O(n^2) of rescanning after every merge. */
#include "tokenizer.h"

#include <stdlib.h>
#include <string.h>

/* ---- String map ---------------------------------------------------------- */

struct string_map_entry {
  const char *key; /* NULL for an empty slot */
  size_t length;
  int32_t value;
};

/* FNV-1a 64, the same function the weight store uses for checksums. */
static uint64_t hash_bytes(const char *key, size_t length) {
  uint64_t hash = 0xcbf29ce484222325u;
  for (size_t i = 0; i < length; ++i) {
    hash = (hash ^ (uint8_t)key[i]) * 0x100000001b3u;
  }
  return hash;
}

static struct string_map_entry *find_slot(const string_map_t *map, const char *key,
                                          size_t length) {
  size_t mask = map->capacity - 1;
  size_t index = (size_t)hash_bytes(key, length) & mask;
  for (;;) {
    struct string_map_entry *entry = &map->entries[index];
    if (!entry->key || (entry->length == length && memcmp(entry->key, key, length) == 0)) {
      return entry;
    }
    index = (index + 1) & mask;
  }
}

static bool string_map_grow(string_map_t *map) {
  size_t capacity = map->capacity ? map->capacity * 2 : 64;
  struct string_map_entry *old = map->entries;
  size_t old_capacity = map->capacity;
  map->entries = calloc(capacity, sizeof *map->entries);
  if (!map->entries) {
    map->entries = old;
    return false;
  }
  map->capacity = capacity;
  for (size_t i = 0; i < old_capacity; ++i) {
    if (old[i].key) {
      *find_slot(map, old[i].key, old[i].length) = old[i];
    }
  }
  free(old);
  return true;
}

/* Adds `key` unless it is already present: the first value wins, as the
 * lowest id does in the formats' own lookups. */
bool string_map_put(string_map_t *map, const char *key, size_t length, int32_t value) {
  /* Keep the load factor at or below one half so probes stay short. */
  if ((map->count + 1) * 2 > map->capacity && !string_map_grow(map)) {
    return false;
  }
  struct string_map_entry *entry = find_slot(map, key, length);
  if (!entry->key) {
    entry->key = key;
    entry->length = length;
    entry->value = value;
    ++map->count;
  }
  return true;
}

int32_t string_map_get(const string_map_t *map, const char *key, size_t length) {
  if (map->capacity == 0) {
    return -1;
  }
  const struct string_map_entry *entry = find_slot(map, key, length);
  return entry->key ? entry->value : -1;
}

void string_map_free(string_map_t *map) {
  free(map->entries);
  memset(map, 0, sizeof *map);
}

/* ---- Construction ------------------------------------------------------- */

tokenizer_t *tokenizer_create(const char *format, int32_t vocab_size, bool with_scores,
                              iq_error_t **error) {
  tokenizer_t *tokenizer = calloc(1, sizeof *tokenizer);
  if (tokenizer) {
    tokenizer->format = format;
    tokenizer->vocab_size = vocab_size;
    tokenizer->pieces = calloc((size_t)vocab_size, sizeof *tokenizer->pieces);
    tokenizer->piece_lengths = calloc((size_t)vocab_size, sizeof *tokenizer->piece_lengths);
    tokenizer->types = malloc((size_t)vocab_size);
    tokenizer->scores = with_scores ? calloc((size_t)vocab_size, sizeof(float)) : NULL;
  }
  if (!tokenizer || !tokenizer->pieces || !tokenizer->piece_lengths || !tokenizer->types ||
      (with_scores && !tokenizer->scores)) {
    tokenizer_free(tokenizer);
    iq_error_set(error, NULL, NULL, NULL, "out of memory for a vocabulary of %d tokens",
                 vocab_size);
    return NULL;
  }
  memset(tokenizer->types, TOKEN_NORMAL, (size_t)vocab_size);
  tokenizer->bos_id = -1;
  tokenizer->add_bos = true;
  tokenizer->eos_id = -1;
  tokenizer->unk_id = -1;
  for (int i = 0; i < 256; ++i) {
    tokenizer->byte_ids[i] = -1;
  }
  tokenizer->space_symbol = " ";
  return tokenizer;
}

void tokenizer_free(tokenizer_t *tokenizer) {
  if (!tokenizer) {
    return;
  }
  if (tokenizer->pieces) {
    for (int32_t i = 0; i < tokenizer->vocab_size; ++i) {
      free(tokenizer->pieces[i]);
    }
  }
  free(tokenizer->pieces);
  free(tokenizer->piece_lengths);
  free(tokenizer->scores);
  free(tokenizer->types);
  string_map_free(&tokenizer->piece_ids);
  string_map_free(&tokenizer->merge_ranks);
  free(tokenizer->merge_keys);
  free(tokenizer);
}

/* Parses "<0xNN>" (uppercase or lowercase hex) into its byte value. */
static int parse_byte_piece(const char *piece, uint32_t length) {
  if (length != 6 || memcmp(piece, "<0x", 3) != 0 || piece[5] != '>') {
    return -1;
  }
  int value = 0;
  for (int i = 3; i < 5; ++i) {
    char c = piece[i];
    int digit = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                       : -1;
    if (digit < 0) {
      return -1;
    }
    value = value * 16 + digit;
  }
  return value;
}

bool tokenizer_index(tokenizer_t *tokenizer, const char *path, iq_error_t **error) {
  for (int32_t id = 0; id < tokenizer->vocab_size; ++id) {
    const char *piece = tokenizer->pieces[id];
    if (!piece) {
      return iq_error_set(error, path, NULL, NULL, "token %d has no piece", id);
    }
    uint32_t length = tokenizer->piece_lengths[id];
    int byte = parse_byte_piece(piece, length);
    if (byte >= 0 && (tokenizer->types[id] == TOKEN_NORMAL || tokenizer->types[id] == TOKEN_BYTE)) {
      tokenizer->types[id] = TOKEN_BYTE;
      if (tokenizer->byte_ids[byte] < 0) {
        tokenizer->byte_ids[byte] = id;
      }
      continue;
    }
    /* Control, unknown and unused tokens never come out of plain text. */
    if (tokenizer->types[id] != TOKEN_NORMAL && tokenizer->types[id] != TOKEN_USER_DEFINED) {
      continue;
    }
    if (length > 0 && !string_map_put(&tokenizer->piece_ids, piece, length, id)) {
      return iq_error_set(error, path, NULL, NULL, "out of memory indexing the vocabulary");
    }
  }
  return true;
}

int32_t tokenizer_find_any(const tokenizer_t *tokenizer, const char *text) {
  size_t length = strlen(text);
  for (int32_t id = 0; id < tokenizer->vocab_size; ++id) {
    if (tokenizer->piece_lengths[id] == length && memcmp(tokenizer->pieces[id], text, length) == 0) {
      return id;
    }
  }
  return -1;
}

tokenizer_t *tokenizer_load(const char *path, iq_error_t **error) {
  iq_mapped_file_t *file = iq_mapped_file_open(path, error);
  if (!file) {
    return NULL;
  }
  tokenizer_t *tokenizer = NULL;
  const uint8_t *data = file->data;
  size_t size = file->size;
  size_t first = 0;
  while (first < size && (data[first] == ' ' || data[first] == '\n' || data[first] == '\r' ||
                          data[first] == '\t')) {
    ++first;
  }
  if (size >= 4 && memcmp(data, "GGUF", 4) == 0) {
    tokenizer = tokenizer_load_gguf(path, data, size, error);
  } else if (first < size && data[first] == '{') {
    /* cJSON needs a NUL-terminated string, which a mapping is not. */
    char *text = malloc(size + 1);
    if (!text) {
      iq_error_set(error, path, NULL, NULL, "out of memory reading %zu bytes", size);
    } else {
      memcpy(text, data, size);
      text[size] = '\0';
      tokenizer = tokenizer_load_hf(path, text, error);
      free(text);
    }
  } else {
    tokenizer = tokenizer_load_llama2c(path, data, size, error);
  }
  iq_mapped_file_close(file);
  return tokenizer;
}

/* ---- Encoding ----------------------------------------------------------- */

/* A growable array of token ids. */
typedef struct id_list {
  int32_t *ids;
  size_t count;
  size_t capacity;
} id_list_t;

static bool id_list_push(id_list_t *list, int32_t id) {
  if (list->count == list->capacity) {
    size_t capacity = list->capacity ? list->capacity * 2 : 64;
    int32_t *grown = realloc(list->ids, capacity * sizeof *grown);
    if (!grown) {
      return false;
    }
    list->ids = grown;
    list->capacity = capacity;
  }
  list->ids[list->count++] = id;
  return true;
}

/* One symbol of a word being merged: a byte range of the word, linked to
 * its living neighbours. */
typedef struct symbol {
  size_t start;
  size_t length;
  int32_t prev; /* -1 at the start */
  int32_t next; /* -1 at the end */
  int32_t fixed_id; /* a byte-fallback or unknown token that never merges, or -1 */
  bool alive;
} symbol_t;

/* A candidate merge of symbols `left` and `left`'s next. */
typedef struct candidate {
  float score; /* higher merges first */
  int32_t left;
  int32_t right;
  size_t length; /* both symbols' lengths together, to detect stale entries */
} candidate_t;

typedef struct merge_state {
  const tokenizer_t *tokenizer;
  const char *word;
  symbol_t *symbols;
  candidate_t *heap;
  size_t heap_count;
  size_t heap_capacity;
  char *key_buffer; /* for "LEFT\x1fRIGHT" merge keys */
} merge_state_t;

/* Orders the heap: best score first, then leftmost. */
static bool candidate_before(const candidate_t *a, const candidate_t *b, const symbol_t *symbols) {
  if (a->score != b->score) {
    return a->score > b->score;
  }
  return symbols[a->left].start < symbols[b->left].start;
}

static bool heap_push(merge_state_t *state, candidate_t candidate) {
  if (state->heap_count == state->heap_capacity) {
    size_t capacity = state->heap_capacity ? state->heap_capacity * 2 : 64;
    candidate_t *grown = realloc(state->heap, capacity * sizeof *grown);
    if (!grown) {
      return false;
    }
    state->heap = grown;
    state->heap_capacity = capacity;
  }
  size_t index = state->heap_count++;
  while (index > 0) {
    size_t parent = (index - 1) / 2;
    if (!candidate_before(&candidate, &state->heap[parent], state->symbols)) {
      break;
    }
    state->heap[index] = state->heap[parent];
    index = parent;
  }
  state->heap[index] = candidate;
  return true;
}

static candidate_t heap_pop(merge_state_t *state) {
  candidate_t top = state->heap[0];
  candidate_t last = state->heap[--state->heap_count];
  size_t index = 0;
  for (;;) {
    size_t child = 2 * index + 1;
    if (child >= state->heap_count) {
      break;
    }
    if (child + 1 < state->heap_count &&
        candidate_before(&state->heap[child + 1], &state->heap[child], state->symbols)) {
      ++child;
    }
    if (!candidate_before(&state->heap[child], &last, state->symbols)) {
      break;
    }
    state->heap[index] = state->heap[child];
    index = child;
  }
  if (state->heap_count > 0) {
    state->heap[index] = last;
  }
  return top;
}

/* Queues the merge of `left` with its next symbol if the vocabulary (or
 * the merge list) allows it. */
static bool consider_pair(merge_state_t *state, int32_t left) {
  if (left < 0) {
    return true;
  }
  const symbol_t *a = &state->symbols[left];
  int32_t right = a->next;
  if (right < 0) {
    return true;
  }
  const symbol_t *b = &state->symbols[right];
  if (a->fixed_id >= 0 || b->fixed_id >= 0) {
    return true;
  }
  const tokenizer_t *tokenizer = state->tokenizer;
  float score;
  if (tokenizer->algorithm == TOKENIZER_SENTENCEPIECE_SCORES) {
    int32_t id = string_map_get(&tokenizer->piece_ids, state->word + a->start, a->length + b->length);
    if (id < 0) {
      return true;
    }
    score = tokenizer->scores[id];
  } else {
    memcpy(state->key_buffer, state->word + a->start, a->length);
    state->key_buffer[a->length] = '\x1f';
    memcpy(state->key_buffer + a->length + 1, state->word + b->start, b->length);
    int32_t rank =
        string_map_get(&tokenizer->merge_ranks, state->key_buffer, a->length + 1 + b->length);
    if (rank < 0) {
      return true;
    }
    score = -(float)rank;
  }
  return heap_push(state, (candidate_t){score, left, right, a->length + b->length});
}

/* Creates the initial symbols: one per UTF-8 character found in the
 * vocabulary, else one byte-fallback token per byte, else <unk>. */
static int32_t split_characters(const tokenizer_t *tokenizer, const char *word, size_t length,
                                symbol_t *symbols) {
  int32_t count = 0;
  size_t position = 0;
  while (position < length) {
    uint8_t lead = (uint8_t)word[position];
    size_t size = lead < 0x80 ? 1 : (lead >> 5) == 6 ? 2 : (lead >> 4) == 14 ? 3 : (lead >> 3) == 30 ? 4 : 1;
    if (position + size > length) {
      size = 1;
    }
    for (size_t i = 1; i < size; ++i) {
      if (((uint8_t)word[position + i] & 0xC0) != 0x80) {
        size = 1; /* invalid UTF-8: take the lead byte alone */
        break;
      }
    }
    bool known = string_map_get(&tokenizer->piece_ids, word + position, size) >= 0;
    bool bytes_known = true;
    for (size_t i = 0; i < size; ++i) {
      bytes_known = bytes_known && tokenizer->byte_ids[(uint8_t)word[position + i]] >= 0;
    }
    if (known || !bytes_known) {
      symbols[count] = (symbol_t){position, size, count - 1, count + 1,
                                  known ? -1 : tokenizer->unk_id, true};
      ++count;
    } else {
      for (size_t i = 0; i < size; ++i) {
        int32_t id = tokenizer->byte_ids[(uint8_t)word[position + i]];
        symbols[count] = (symbol_t){position + i, 1, count - 1, count + 1, id, true};
        ++count;
      }
    }
    position += size;
  }
  if (count > 0) {
    symbols[count - 1].next = -1;
  }
  return count;
}

/* Encodes one pre-tokenized, normalized word and appends its ids. */
static bool encode_word(const tokenizer_t *tokenizer, const char *word, size_t length,
                        id_list_t *out) {
  if (length == 0) {
    return true;
  }
  if (tokenizer->ignore_merges) {
    int32_t id = string_map_get(&tokenizer->piece_ids, word, length);
    if (id >= 0) {
      return id_list_push(out, id);
    }
  }
  merge_state_t state = {.tokenizer = tokenizer, .word = word};
  state.symbols = malloc(length * sizeof *state.symbols);
  state.key_buffer = malloc(length + 2);
  bool ok = state.symbols && state.key_buffer;
  int32_t count = ok ? split_characters(tokenizer, word, length, state.symbols) : 0;
  for (int32_t i = 0; ok && i + 1 < count; ++i) {
    ok = consider_pair(&state, i);
  }

  while (ok && state.heap_count > 0) {
    candidate_t best = heap_pop(&state);
    symbol_t *left = &state.symbols[best.left];
    symbol_t *right = &state.symbols[best.right];
    /* Entries queued before an earlier merge changed either symbol are
     * stale; the changed symbols were queued again. */
    if (!left->alive || !right->alive || left->next != best.right ||
        left->length + right->length != best.length) {
      continue;
    }
    left->length += right->length;
    left->next = right->next;
    if (right->next >= 0) {
      state.symbols[right->next].prev = best.left;
    }
    right->alive = false;
    ok = consider_pair(&state, left->prev) && consider_pair(&state, best.left);
  }

  for (int32_t i = 0; ok && count > 0 && i >= 0; i = state.symbols[i].next) {
    const symbol_t *symbol = &state.symbols[i];
    int32_t id = symbol->fixed_id;
    if (id < 0) {
      id = string_map_get(&tokenizer->piece_ids, word + symbol->start, symbol->length);
    }
    if (id >= 0) {
      ok = id_list_push(out, id);
      continue;
    }
    /* A merge result missing from the vocabulary: a merge list that does
     * not match its vocabulary. Fall back to bytes, then <unk>. */
    for (size_t j = 0; ok && j < symbol->length; ++j) {
      int32_t byte_id = tokenizer->byte_ids[(uint8_t)word[symbol->start + j]];
      ok = id_list_push(out, byte_id >= 0 ? byte_id : tokenizer->unk_id);
    }
  }
  free(state.symbols);
  free(state.key_buffer);
  free(state.heap);
  return ok;
}

/* Replaces spaces with the space symbol and adds the prefix, for the
 * SentencePiece-style tokenizers. Returns a new string the caller frees. */
static char *normalize_spaces(const tokenizer_t *tokenizer, const char *text, size_t *length) {
  const char *symbol = tokenizer->space_symbol;
  size_t symbol_length = strlen(symbol);
  size_t spaces = 0;
  for (const char *c = text; *c; ++c) {
    spaces += *c == ' ';
  }
  size_t text_length = strlen(text);
  bool prefix = tokenizer->add_space_prefix && text_length > 0;
  char *result = malloc(text_length + (spaces + 1) * symbol_length + 1);
  if (!result) {
    return NULL;
  }
  char *out = result;
  if (prefix) {
    memcpy(out, symbol, symbol_length);
    out += symbol_length;
  }
  for (const char *c = text; *c; ++c) {
    if (*c == ' ') {
      memcpy(out, symbol, symbol_length);
      out += symbol_length;
    } else {
      *out++ = *c;
    }
  }
  *out = '\0';
  *length = (size_t)(out - result);
  return result;
}

/* GPT-2's table from bytes to printable characters: printable Latin-1
 * bytes map to themselves and the other 68 to U+0100 onwards, in byte
 * order. Writes the UTF-8 of byte `byte`'s character to `out` (2 bytes
 * at most) and returns its length. */
static size_t byte_level_char(uint8_t byte, char *out) {
  unsigned codepoint;
  if ((byte >= 0x21 && byte <= 0x7E) || (byte >= 0xA1 && byte <= 0xAC) || byte >= 0xAE) {
    codepoint = byte;
  } else {
    unsigned shifted = 0;
    for (unsigned b = 0; b < byte; ++b) {
      bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      shifted += !printable;
    }
    codepoint = 0x100 + shifted;
  }
  if (codepoint < 0x80) {
    out[0] = (char)codepoint;
    return 1;
  }
  out[0] = (char)(0xC0 | (codepoint >> 6));
  out[1] = (char)(0x80 | (codepoint & 0x3F));
  return 2;
}

static bool encode_byte_level(const tokenizer_t *tokenizer, const char *text, id_list_t *out) {
  size_t length = strlen(text);
  size_t *starts = NULL;
  size_t *lengths = NULL;
  size_t count = 0;
  if (!pretokenize_byte_level(tokenizer->pretokenizer, text, length, &starts, &lengths, &count)) {
    return false;
  }
  char *mapped = malloc(2 * length + 1);
  bool ok = mapped != NULL;
  for (size_t w = 0; ok && w < count; ++w) {
    size_t mapped_length = 0;
    for (size_t i = 0; i < lengths[w]; ++i) {
      mapped_length += byte_level_char((uint8_t)text[starts[w] + i], mapped + mapped_length);
    }
    ok = encode_word(tokenizer, mapped, mapped_length, out);
  }
  free(mapped);
  free(starts);
  free(lengths);
  return ok;
}

bool tokenizer_encode(const tokenizer_t *tokenizer, const char *text, bool add_bos,
                      int32_t **ids, size_t *count, iq_error_t **error) {
  id_list_t list = {0};
  bool ok = true;
  if (add_bos && tokenizer->bos_id >= 0) {
    ok = id_list_push(&list, tokenizer->bos_id);
  }
  if (ok && tokenizer->pretokenizer != PRETOKENIZER_NONE) {
    ok = encode_byte_level(tokenizer, text, &list);
  } else if (ok) {
    size_t length = 0;
    char *normalized = normalize_spaces(tokenizer, text, &length);
    ok = normalized && encode_word(tokenizer, normalized, length, &list);
    free(normalized);
  }
  if (!ok) {
    free(list.ids);
    return iq_error_set(error, NULL, NULL, NULL, "out of memory encoding %zu bytes of text",
                        strlen(text));
  }
  *ids = list.ids;
  *count = list.count;
  return true;
}

/* ---- Decoding ----------------------------------------------------------- */

size_t tokenizer_decode_capacity(const tokenizer_t *tokenizer) {
  uint32_t longest = 0;
  for (int32_t i = 0; i < tokenizer->vocab_size; ++i) {
    longest = tokenizer->piece_lengths[i] > longest ? tokenizer->piece_lengths[i] : longest;
  }
  return (size_t)longest + 8;
}

/* Maps the byte-level characters of `piece` back to bytes. */
static size_t decode_byte_level(const char *piece, uint32_t length, char *buffer) {
  size_t used = 0;
  for (uint32_t i = 0; i < length;) {
    uint8_t lead = (uint8_t)piece[i];
    unsigned codepoint = lead;
    uint32_t size = 1;
    if ((lead >> 5) == 6 && i + 1 < length) {
      codepoint = ((lead & 0x1Fu) << 6) | ((uint8_t)piece[i + 1] & 0x3Fu);
      size = 2;
    }
    int byte = -1;
    for (int b = 0; b < 256 && byte < 0; ++b) {
      char encoded[2];
      size_t encoded_length = byte_level_char((uint8_t)b, encoded);
      unsigned value = encoded_length == 1
                           ? (uint8_t)encoded[0]
                           : (((uint8_t)encoded[0] & 0x1Fu) << 6) | ((uint8_t)encoded[1] & 0x3Fu);
      byte = value == codepoint ? b : -1;
    }
    if (byte >= 0) {
      buffer[used++] = (char)byte;
    } else {
      /* Not a byte-level character (an added token): copy it unchanged. */
      memcpy(buffer + used, piece + i, size);
      used += size;
    }
    i += size;
  }
  return used;
}

size_t tokenizer_decode(const tokenizer_t *tokenizer, int32_t previous, int32_t id, char *buffer,
                        size_t size) {
  buffer[0] = '\0';
  if (id < 0 || id >= tokenizer->vocab_size || tokenizer->types[id] == TOKEN_CONTROL) {
    return 0;
  }
  const char *piece = tokenizer->pieces[id];
  uint32_t length = tokenizer->piece_lengths[id];
  size_t used = 0;
  if (tokenizer->types[id] == TOKEN_BYTE) {
    buffer[used++] = (char)parse_byte_piece(piece, length);
  } else if (tokenizer->pretokenizer != PRETOKENIZER_NONE) {
    used = decode_byte_level(piece, length, buffer);
  } else {
    const char *symbol = tokenizer->space_symbol;
    size_t symbol_length = strlen(symbol);
    for (uint32_t i = 0; i < length && used + 1 < size;) {
      if (length - i >= symbol_length && memcmp(piece + i, symbol, symbol_length) == 0) {
        buffer[used++] = ' ';
        i += (uint32_t)symbol_length;
      } else {
        buffer[used++] = piece[i++];
      }
    }
    /* The encoder added a space before the text; drop it again. */
    bool at_start = previous < 0 || previous == tokenizer->bos_id;
    if (tokenizer->add_space_prefix && at_start && used > 0 && buffer[0] == ' ') {
      memmove(buffer, buffer + 1, --used);
    }
  }
  buffer[used] = '\0';
  return used;
}
