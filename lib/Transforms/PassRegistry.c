/* The table of iq passes, their typed options, and the glue that turns an
 * iq pass into an MLIR external pass. */
#include "iq/passes.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "mlir-c/Support.h"

/* Sorted by name, so --help lists them in order. */
static const iq_pass_info_t *const registered_passes[] = {
    &iq_calibrate_pass,
    &iq_canonicalize_pass,
    &iq_fuse_norms_pass,
    &iq_insert_observers_pass,
    &iq_pack_int4_pass,
    &iq_psot_pass,
    &iq_quantize_pass,
    &iq_raise_llama_pass,
    &iq_rotate_pass,
    &iq_verify_pass,
};
#define NUM_PASSES (sizeof registered_passes / sizeof registered_passes[0])

const iq_pass_info_t *const *iq_passes_list(size_t *count) {
  *count = NUM_PASSES;
  return registered_passes;
}

const iq_pass_info_t *iq_pass_lookup(const char *name, size_t length) {
  for (size_t i = 0; i < NUM_PASSES; ++i) {
    const char *candidate = registered_passes[i]->name;
    if (strlen(candidate) == length && memcmp(candidate, name, length) == 0)
      return registered_passes[i];
  }
  return NULL;
}

static const char *option_type_name(const iq_pass_option_info_t *option) {
  switch (option->type) {
  case IQ_OPTION_BOOL:
    return "bool";
  case IQ_OPTION_INT:
    return "int";
  case IQ_OPTION_FLOAT:
    return "float";
  case IQ_OPTION_STRING:
    return "string";
  case IQ_OPTION_ENUM:
    return "enum";
  }
  return "?";
}

void iq_passes_print_help(FILE *stream) {
  for (size_t i = 0; i < NUM_PASSES; ++i) {
    const iq_pass_info_t *pass = registered_passes[i];
    fprintf(stream, "  --%-28s %s\n", pass->name, pass->description);
    for (size_t j = 0; j < pass->num_options; ++j) {
      const iq_pass_option_info_t *option = &pass->options[j];
      char spelling[96];
      snprintf(spelling, sizeof spelling, "%s=<%s>", option->name, option_type_name(option));
      fprintf(stream, "      %-26s %s (default: %s", spelling, option->description,
              option->default_value);
      if (option->type == IQ_OPTION_ENUM) {
        fputs("; one of", stream);
        for (const char *const *choice = option->choices; *choice; ++choice)
          fprintf(stream, " %s", *choice);
      }
      fputs(")\n", stream);
    }
  }
}

/* ---- Option values ------------------------------------------------------ */

static const char *pass_name(const iq_pass_info_t *pass) { return pass->name; }

/* Sets `value` from the text of one option value, checking its type and
 * range. */
static bool set_option_value(const iq_pass_info_t *pass, const iq_pass_option_info_t *option,
                             const char *text, iq_option_value_t *value, iq_error_t **error) {
  char *end = NULL;
  switch (option->type) {
  case IQ_OPTION_BOOL:
    if (strcmp(text, "true") == 0 || strcmp(text, "1") == 0) {
      value->b = true;
      return true;
    }
    if (strcmp(text, "false") == 0 || strcmp(text, "0") == 0) {
      value->b = false;
      return true;
    }
    return iq_error_set(error, NULL, pass_name(pass), "use true or false (or 1 or 0)",
                        "invalid value '%s' for option '%s': expected a boolean", text,
                        option->name);
  case IQ_OPTION_INT: {
    errno = 0;
    long long parsed = strtoll(text, &end, 10);
    if (errno == ERANGE)
      return iq_error_set(error, NULL, pass_name(pass), NULL,
                          "value %s for option '%s' is out of range [%.17g, %.17g]", text,
                          option->name, option->min, option->max);
    if (errno != 0 || end == text || *end != '\0')
      return iq_error_set(error, NULL, pass_name(pass), NULL,
                          "invalid value '%s' for option '%s': expected an integer", text,
                          option->name);
    if (option->min <= option->max && (parsed < option->min || parsed > option->max))
      return iq_error_set(error, NULL, pass_name(pass), NULL,
                          "value %lld for option '%s' is out of range [%.17g, %.17g]", parsed,
                          option->name, option->min, option->max);
    value->i = parsed;
    return true;
  }
  case IQ_OPTION_FLOAT: {
    errno = 0;
    double parsed = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !isfinite(parsed))
      return iq_error_set(error, NULL, pass_name(pass), NULL,
                          "invalid value '%s' for option '%s': expected a finite number", text,
                          option->name);
    if (option->min <= option->max && (parsed < option->min || parsed > option->max))
      return iq_error_set(error, NULL, pass_name(pass), NULL,
                          "value %g for option '%s' is out of range [%g, %g]", parsed,
                          option->name, option->min, option->max);
    value->f = parsed;
    return true;
  }
  case IQ_OPTION_ENUM: {
    bool known = false;
    for (const char *const *choice = option->choices; *choice; ++choice)
      known = known || strcmp(*choice, text) == 0;
    if (!known) {
      char choices[256] = "";
      for (const char *const *choice = option->choices; *choice; ++choice) {
        strncat(choices, *choice, sizeof choices - strlen(choices) - 1);
        if (choice[1])
          strncat(choices, ", ", sizeof choices - strlen(choices) - 1);
      }
      return iq_error_set(error, NULL, pass_name(pass), NULL,
                          "invalid value '%s' for option '%s': expected one of %s", text,
                          option->name, choices);
    }
  }
    /* An enum value is stored as its string. */
    __attribute__((fallthrough));
  case IQ_OPTION_STRING: {
    char *copy = strdup(text);
    if (!copy)
      return iq_error_set(error, NULL, pass_name(pass), NULL, "out of memory");
    free(value->s);
    value->s = copy;
    return true;
  }
  }
  return false;
}

void iq_pass_options_destroy(iq_pass_options_t *options) {
  if (!options)
    return;
  for (size_t i = 0; i < IQ_MAX_PASS_OPTIONS; ++i)
    free(options->values[i].s);
  free(options);
}

/* Returns the next "name" or "name=value" item of an option list, which
 * items separate by spaces or commas. A value may be quoted with "..." or
 * wrapped in {...} to contain separators. Returns false at the end. */
static bool next_option_item(const char **cursor, const char *end, const char **item,
                             size_t *item_length, iq_error_t **error, const iq_pass_info_t *pass) {
  const char *p = *cursor;
  while (p < end && (isspace((unsigned char)*p) || *p == ','))
    ++p;
  if (p == end)
    return false;
  const char *start = p;
  int depth = 0;
  bool quoted = false;
  while (p < end) {
    char c = *p;
    if (quoted) {
      quoted = c != '"';
    } else if (c == '"') {
      quoted = true;
    } else if (c == '{') {
      ++depth;
    } else if (c == '}') {
      --depth;
    } else if (depth == 0 && (isspace((unsigned char)c) || c == ',')) {
      break;
    }
    ++p;
  }
  if (quoted || depth != 0) {
    iq_error_set(error, NULL, pass->name, "close every quote and brace in the option list",
                 "unbalanced quote or brace in options '%.*s'", (int)(end - start), start);
    *item = NULL;
    return false;
  }
  *item = start;
  *item_length = (size_t)(p - start);
  *cursor = p;
  return true;
}

static char *strip_value_quotes(const char *value, size_t length) {
  if (length >= 2 && ((value[0] == '"' && value[length - 1] == '"') ||
                      (value[0] == '{' && value[length - 1] == '}'))) {
    ++value;
    length -= 2;
  }
  char *copy = malloc(length + 1);
  if (copy) {
    memcpy(copy, value, length);
    copy[length] = '\0';
  }
  return copy;
}

iq_pass_options_t *iq_pass_options_parse(const iq_pass_info_t *pass, const char *text,
                                         size_t length, iq_error_t **error) {
  iq_pass_options_t *options = calloc(1, sizeof *options);
  if (!options) {
    iq_error_set(error, NULL, pass->name, NULL, "out of memory");
    return NULL;
  }
  options->pass = pass;
  for (size_t i = 0; i < pass->num_options; ++i) {
    if (!set_option_value(pass, &pass->options[i], pass->options[i].default_value,
                          &options->values[i], error)) {
      iq_pass_options_destroy(options);
      return NULL;
    }
  }

  const char *cursor = text ? text : "";
  const char *end = text ? text + length : cursor;
  const char *item;
  size_t item_length;
  while (next_option_item(&cursor, end, &item, &item_length, error, pass)) {
    const char *equals = memchr(item, '=', item_length);
    size_t name_length = equals ? (size_t)(equals - item) : item_length;

    const iq_pass_option_info_t *option = NULL;
    size_t index = 0;
    for (; index < pass->num_options; ++index) {
      if (strlen(pass->options[index].name) == name_length &&
          memcmp(pass->options[index].name, item, name_length) == 0) {
        option = &pass->options[index];
        break;
      }
    }
    if (!option) {
      char valid[512] = "";
      for (size_t j = 0; j < pass->num_options; ++j) {
        strncat(valid, pass->options[j].name, sizeof valid - strlen(valid) - 1);
        if (j + 1 < pass->num_options)
          strncat(valid, ", ", sizeof valid - strlen(valid) - 1);
      }
      iq_error_set(error, NULL, pass->name,
                   pass->num_options ? NULL : "this pass takes no options",
                   "unknown option '%.*s'%s%s", (int)name_length, item,
                   pass->num_options ? "; valid options: " : "", valid);
      iq_pass_options_destroy(options);
      return NULL;
    }

    char *value;
    if (equals) {
      value = strip_value_quotes(equals + 1, item_length - name_length - 1);
    } else if (option->type == IQ_OPTION_BOOL) {
      value = strdup("true");
    } else {
      iq_error_set(error, NULL, pass->name, NULL, "option '%s' needs a value: %s=<%s>",
                   option->name, option->name, option_type_name(option));
      iq_pass_options_destroy(options);
      return NULL;
    }
    bool ok = value && set_option_value(pass, option, value, &options->values[index], error);
    if (!value)
      iq_error_set(error, NULL, pass->name, NULL, "out of memory");
    free(value);
    if (!ok) {
      iq_pass_options_destroy(options);
      return NULL;
    }
  }
  if (error && *error) {
    iq_pass_options_destroy(options);
    return NULL;
  }
  return options;
}

iq_pass_options_t *iq_pass_options_clone(const iq_pass_options_t *options) {
  iq_pass_options_t *copy = malloc(sizeof *copy);
  if (!copy)
    return NULL;
  *copy = *options;
  for (size_t i = 0; i < IQ_MAX_PASS_OPTIONS; ++i) {
    copy->values[i].s = NULL;
    if (options->values[i].s && !(copy->values[i].s = strdup(options->values[i].s))) {
      iq_pass_options_destroy(copy);
      return NULL;
    }
  }
  return copy;
}

static const iq_option_value_t *find_value(const iq_pass_options_t *options, const char *name,
                                           iq_option_type_t type) {
  const iq_pass_info_t *pass = options->pass;
  for (size_t i = 0; i < pass->num_options; ++i) {
    const iq_pass_option_info_t *option = &pass->options[i];
    bool type_matches = option->type == type ||
                        (type == IQ_OPTION_STRING && option->type == IQ_OPTION_ENUM);
    if (strcmp(option->name, name) == 0 && type_matches)
      return &options->values[i];
  }
  fprintf(stderr, "iq: internal error: pass '%s' has no %s option '%s'\n", pass->name,
          type == IQ_OPTION_BOOL ? "bool" : "typed", name);
  abort();
}

bool iq_pass_option_bool(const iq_pass_options_t *options, const char *name) {
  return find_value(options, name, IQ_OPTION_BOOL)->b;
}

long long iq_pass_option_int(const iq_pass_options_t *options, const char *name) {
  return find_value(options, name, IQ_OPTION_INT)->i;
}

double iq_pass_option_float(const iq_pass_options_t *options, const char *name) {
  return find_value(options, name, IQ_OPTION_FLOAT)->f;
}

const char *iq_pass_option_string(const iq_pass_options_t *options, const char *name) {
  return find_value(options, name, IQ_OPTION_STRING)->s;
}

/* ---- External pass glue ------------------------------------------------- */

/* One TypeID per registered pass, allocated on first use. The allocator
 * lives until the process exits because passes refer to its IDs. */
static MlirTypeIDAllocator type_id_allocator;
static MlirTypeID pass_type_ids[NUM_PASSES];

static MlirTypeID pass_type_id(const iq_pass_info_t *pass) {
  if (!type_id_allocator.ptr)
    type_id_allocator = mlirTypeIDAllocatorCreate();
  for (size_t i = 0; i < NUM_PASSES; ++i) {
    if (registered_passes[i] == pass) {
      if (mlirTypeIDIsNull(pass_type_ids[i]))
        pass_type_ids[i] = mlirTypeIDAllocatorAllocateTypeID(type_id_allocator);
      return pass_type_ids[i];
    }
  }
  fprintf(stderr, "iq: internal error: pass '%s' is not registered\n", pass->name);
  abort();
}

static void external_construct(void *user_data) { (void)user_data; }

static void external_destruct(void *user_data) { iq_pass_options_destroy(user_data); }

static MlirLogicalResult external_initialize(MlirContext context, void *user_data) {
  (void)context;
  (void)user_data;
  return mlirLogicalResultSuccess();
}

/* The pass manager clones a pass for each thread it runs on; each clone
 * gets its own copy of the options, so instances share no state. */
static void *external_clone(void *user_data) { return iq_pass_options_clone(user_data); }

static void external_run(MlirOperation op, MlirExternalPass pass, void *user_data) {
  const iq_pass_options_t *options = user_data;
  if (!options->pass->run(op, options))
    mlirExternalPassSignalFailure(pass);
}

MlirPass iq_pass_create(const iq_pass_info_t *pass, iq_pass_options_t *options) {
  MlirExternalPassCallbacks callbacks = {
      .construct = external_construct,
      .destruct = external_destruct,
      .initialize = external_initialize,
      .clone = external_clone,
      .run = external_run,
  };
  MlirStringRef name = mlirStringRefCreateFromCString(pass->name);
  return mlirCreateExternalPass(pass_type_id(pass), name, name,
                                mlirStringRefCreateFromCString(pass->description),
                                mlirStringRefCreate(NULL, 0), 0, NULL, callbacks, options);
}

/* ---- Weight store location ---------------------------------------------- */

static char weight_store_dir[4096] = ".";

void iq_weight_store_set_base_dir(const char *dir) {
  snprintf(weight_store_dir, sizeof weight_store_dir, "%s", dir && *dir ? dir : ".");
}

const char *iq_weight_store_base_dir(void) { return weight_store_dir; }
