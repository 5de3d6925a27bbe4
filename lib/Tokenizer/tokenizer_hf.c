/* Hugging Face tokenizer.json with a BPE model, parsed with cJSON. Two
 * configurations are recognized, from the normalizer and pre-tokenizer:
 *
 * - SentencePiece-style (LLaMA-1/2, Mistral): a normalizer that prepends
 *   "▁" and replaces spaces with "▁" (or a Metaspace pre-tokenizer), no
 *   word splitting, byte fallback.
 * - Byte-level (GPT-2, LLaMA-3): a ByteLevel pre-tokenizer, alone (GPT-2's
 *   split pattern) or after a Split with LLaMA-3's pattern.
 *
 * NOTE: added tokens are not matched inside the text, so "<s>" in a
 * prompt is encoded as plain characters; other normalizers (NFC,
 * lowercase) are ignored. */
#include "tokenizer.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define MAX_VOCAB (1 << 24)

static const char *type_of(const cJSON *node) {
  const cJSON *type = cJSON_GetObjectItemCaseSensitive(node, "type");
  return cJSON_IsString(type) ? type->valuestring : "";
}

/* Calls `visit` on `node` and, for a "Sequence", on each member of
 * `list_key` ("normalizers" or "pretokenizers"). */
static void visit_sequence(const cJSON *node, const char *list_key,
                           void (*visit)(const cJSON *, tokenizer_t *), tokenizer_t *tokenizer) {
  if (!cJSON_IsObject(node)) {
    return;
  }
  if (strcmp(type_of(node), "Sequence") == 0) {
    const cJSON *member;
    cJSON_ArrayForEach(member, cJSON_GetObjectItemCaseSensitive(node, list_key)) {
      visit(member, tokenizer);
    }
    return;
  }
  visit(node, tokenizer);
}

static void visit_normalizer(const cJSON *node, tokenizer_t *tokenizer) {
  const char *type = type_of(node);
  if (strcmp(type, "Prepend") == 0) {
    tokenizer->add_space_prefix = true;
  } else if (strcmp(type, "Replace") == 0) {
    const cJSON *pattern = cJSON_GetObjectItemCaseSensitive(node, "pattern");
    const cJSON *from = cJSON_GetObjectItemCaseSensitive(pattern, "String");
    const cJSON *to = cJSON_GetObjectItemCaseSensitive(node, "content");
    if (cJSON_IsString(from) && strcmp(from->valuestring, " ") == 0 && cJSON_IsString(to) &&
        strcmp(to->valuestring, "\xE2\x96\x81") == 0) {
      tokenizer->space_symbol = "\xE2\x96\x81";
    }
  }
}

static void visit_pretokenizer(const cJSON *node, tokenizer_t *tokenizer) {
  const char *type = type_of(node);
  if (strcmp(type, "Metaspace") == 0) {
    tokenizer->space_symbol = "\xE2\x96\x81";
    const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(node, "prepend_scheme");
    const cJSON *add_prefix = cJSON_GetObjectItemCaseSensitive(node, "add_prefix_space");
    tokenizer->add_space_prefix = cJSON_IsString(scheme)
                                      ? strcmp(scheme->valuestring, "never") != 0
                                      : !cJSON_IsFalse(add_prefix);
  } else if (strcmp(type, "Split") == 0) {
    const cJSON *pattern = cJSON_GetObjectItemCaseSensitive(node, "pattern");
    const cJSON *regex = cJSON_GetObjectItemCaseSensitive(pattern, "Regex");
    /* LLaMA-3's pattern is the one that groups digits in threes. */
    if (cJSON_IsString(regex) && strstr(regex->valuestring, "\\p{N}{1,3}")) {
      tokenizer->pretokenizer = PRETOKENIZER_LLAMA3;
    }
  } else if (strcmp(type, "ByteLevel") == 0 && tokenizer->pretokenizer == PRETOKENIZER_NONE) {
    tokenizer->pretokenizer = PRETOKENIZER_GPT2;
  }
}

/* Counts the ids in the vocabulary and added tokens to size the table. */
static bool vocabulary_size(const char *path, const cJSON *vocab, const cJSON *added,
                            int32_t *size, iq_error_t **error) {
  int64_t max_id = -1;
  const cJSON *entry;
  cJSON_ArrayForEach(entry, vocab) {
    if (!cJSON_IsNumber(entry) || entry->valuedouble < 0 || entry->valuedouble >= MAX_VOCAB) {
      return iq_error_set(error, path, "model.vocab", NULL,
                          "token \"%s\" has an invalid id, expected an integer in [0, %d)",
                          entry->string, MAX_VOCAB);
    }
    max_id = entry->valueint > max_id ? entry->valueint : max_id;
  }
  cJSON_ArrayForEach(entry, added) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(entry, "id");
    if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble >= MAX_VOCAB) {
      return iq_error_set(error, path, "added_tokens", NULL,
                          "an added token has an invalid id, expected an integer in [0, %d)",
                          MAX_VOCAB);
    }
    max_id = id->valueint > max_id ? id->valueint : max_id;
  }
  if (max_id < 0) {
    return iq_error_set(error, path, "model.vocab", NULL, "the vocabulary is empty");
  }
  *size = (int32_t)max_id + 1;
  return true;
}

static bool set_piece(tokenizer_t *tokenizer, int32_t id, const char *text, uint8_t type) {
  size_t length = strlen(text);
  char *copy = malloc(length + 1);
  if (!copy) {
    return false;
  }
  memcpy(copy, text, length + 1);
  free(tokenizer->pieces[id]);
  tokenizer->pieces[id] = copy;
  tokenizer->piece_lengths[id] = (uint32_t)length;
  tokenizer->types[id] = type;
  return true;
}

static bool fill_pieces(const char *path, const cJSON *vocab, const cJSON *added,
                        tokenizer_t *tokenizer, iq_error_t **error) {
  const cJSON *entry;
  cJSON_ArrayForEach(entry, vocab) {
    if (!set_piece(tokenizer, entry->valueint, entry->string, TOKEN_NORMAL)) {
      return iq_error_set(error, path, NULL, NULL, "out of memory");
    }
  }
  cJSON_ArrayForEach(entry, added) {
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(entry, "id");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(entry, "content");
    const cJSON *special = cJSON_GetObjectItemCaseSensitive(entry, "special");
    if (!cJSON_IsString(content)) {
      return iq_error_set(error, path, "added_tokens", NULL, "token %d has no content",
                          id->valueint);
    }
    uint8_t type = cJSON_IsTrue(special) ? TOKEN_CONTROL : TOKEN_USER_DEFINED;
    if (strcmp(content->valuestring, "<unk>") == 0) {
      type = TOKEN_UNKNOWN;
    }
    if (!set_piece(tokenizer, id->valueint, content->valuestring, type)) {
      return iq_error_set(error, path, NULL, NULL, "out of memory");
    }
  }
  /* Ids no entry names stay empty and unused. */
  for (int32_t id = 0; id < tokenizer->vocab_size; ++id) {
    if (!tokenizer->pieces[id] && !set_piece(tokenizer, id, "", TOKEN_UNUSED)) {
      return iq_error_set(error, path, NULL, NULL, "out of memory");
    }
  }
  return true;
}

/* Reads the merge list, given as "LEFT RIGHT" strings (older files) or
 * ["LEFT", "RIGHT"] pairs (newer files), into
 * "LEFT\x1fRIGHT" keys ranked by position. */
static bool fill_merges(const char *path, const cJSON *merges, tokenizer_t *tokenizer,
                        iq_error_t **error) {
  size_t total = 0;
  const cJSON *merge;
  cJSON_ArrayForEach(merge, merges) {
    if (cJSON_IsString(merge)) {
      total += strlen(merge->valuestring) + 1;
    } else if (cJSON_IsArray(merge) && cJSON_GetArraySize(merge) == 2 &&
               cJSON_IsString(cJSON_GetArrayItem(merge, 0)) &&
               cJSON_IsString(cJSON_GetArrayItem(merge, 1))) {
      total += strlen(cJSON_GetArrayItem(merge, 0)->valuestring) +
               strlen(cJSON_GetArrayItem(merge, 1)->valuestring) + 2;
    } else {
      return iq_error_set(error, path, "model.merges", NULL,
                          "a merge is neither a \"LEFT RIGHT\" string nor a pair of strings");
    }
  }
  tokenizer->merge_keys = malloc(total + 1);
  if (!tokenizer->merge_keys) {
    return iq_error_set(error, path, NULL, NULL, "out of memory for merges");
  }
  char *out = tokenizer->merge_keys;
  int32_t rank = 0;
  cJSON_ArrayForEach(merge, merges) {
    size_t length;
    if (cJSON_IsString(merge)) {
      const char *text = merge->valuestring;
      const char *space = strchr(text, ' ');
      if (!space) {
        return iq_error_set(error, path, "model.merges", NULL,
                            "merge %d \"%s\" has no space between its two pieces", rank, text);
      }
      length = strlen(text);
      memcpy(out, text, length);
      out[space - text] = '\x1f';
    } else {
      const char *left = cJSON_GetArrayItem(merge, 0)->valuestring;
      const char *right = cJSON_GetArrayItem(merge, 1)->valuestring;
      size_t left_length = strlen(left);
      size_t right_length = strlen(right);
      memcpy(out, left, left_length);
      out[left_length] = '\x1f';
      memcpy(out + left_length + 1, right, right_length);
      length = left_length + 1 + right_length;
    }
    if (!string_map_put(&tokenizer->merge_ranks, out, length, rank++)) {
      return iq_error_set(error, path, NULL, NULL, "out of memory for merges");
    }
    out += length + 1;
  }
  return true;
}

static void find_special_ids(tokenizer_t *tokenizer) {
  static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<|startoftext|>"};
  static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>"};
  for (size_t i = 0; i < 3 && tokenizer->bos_id < 0; ++i) {
    tokenizer->bos_id = tokenizer_find_any(tokenizer, bos_names[i]);
  }
  for (size_t i = 0; i < 3 && tokenizer->eos_id < 0; ++i) {
    tokenizer->eos_id = tokenizer_find_any(tokenizer, eos_names[i]);
  }
  tokenizer->unk_id = tokenizer_find_any(tokenizer, "<unk>");
}

static tokenizer_t *load_model(const char *path, const cJSON *root, iq_error_t **error) {
  const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
  const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
  const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
  const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
  if (!cJSON_IsObject(model) || strcmp(type_of(model), "BPE") != 0) {
    iq_error_set(error, path, "model.type", "iq-run reads BPE tokenizers only",
                 "tokenizer model \"%s\" is not supported", type_of(model));
    return NULL;
  }
  if (!cJSON_IsObject(vocab) || !cJSON_IsArray(merges)) {
    iq_error_set(error, path, "model", NULL, "the BPE model has no vocab object or merges list");
    return NULL;
  }
  int32_t vocab_size = 0;
  if (!vocabulary_size(path, vocab, added, &vocab_size, error)) {
    return NULL;
  }
  tokenizer_t *tokenizer = tokenizer_create("tokenizer.json", vocab_size, false, error);
  if (!tokenizer) {
    return NULL;
  }
  tokenizer->algorithm = TOKENIZER_BPE_MERGES;
  tokenizer->ignore_merges = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "ignore_merges"));
  visit_sequence(cJSON_GetObjectItemCaseSensitive(root, "normalizer"), "normalizers",
                 visit_normalizer, tokenizer);
  visit_sequence(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), "pretokenizers",
                 visit_pretokenizer, tokenizer);
  bool ok = fill_pieces(path, vocab, added, tokenizer, error) &&
            fill_merges(path, merges, tokenizer, error) &&
            tokenizer_index(tokenizer, path, error);
  if (ok && !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(model, "byte_fallback"))) {
    /* "<0xNN>" pieces are ordinary pieces unless the model falls back to
     * them for unknown characters. */
    for (int i = 0; i < 256; ++i) {
      tokenizer->byte_ids[i] = -1;
    }
  }
  if (!ok) {
    tokenizer_free(tokenizer);
    return NULL;
  }
  find_special_ids(tokenizer);
  return tokenizer;
}

tokenizer_t *tokenizer_load_hf(const char *path, const char *text, iq_error_t **error) {
  cJSON *root = cJSON_Parse(text);
  if (!root) {
    const char *where = cJSON_GetErrorPtr();
    iq_error_set(error, path, NULL, "check that the file is a complete tokenizer.json",
                 "invalid JSON near byte %td", where ? where - text : (ptrdiff_t)0);
    return NULL;
  }
  tokenizer_t *tokenizer = load_model(path, root, error);
  cJSON_Delete(root);
  return tokenizer;
}
