/* iq-run: runs a model library emitted by iq-compile through its public
 * ABI (iq_runtime.h, loaded with dlopen), to generate text, measure
 * perplexity or throughput, or show how a tokenizer encodes text. */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_api.h"
#include "tokenizer.h"

static const char usage_text[] =
    "usage: iq-run LIBRARY.so --tokenizer FILE MODE [OPTIONS]\n"
    "       iq-run --tokenizer FILE --tokenize TEXT\n"
    "\n"
    "Modes (exactly one):\n"
    "  --prompt TEXT          generate text after TEXT\n"
    "    --max-tokens N       tokens to generate (default 256)\n"
    "    --temperature T      softmax temperature; 0 picks the most likely token (default 0.8)\n"
    "    --seed S             sampling seed, 0 for one from the clock (default 0)\n"
    "  --perplexity FILE      perplexity of a UTF-8 text file\n"
    "    --context N          tokens per window, BOS included (default 512)\n"
    "    --windows N          windows to score, 0 for all (default 0)\n"
    "  --bench                prefill and decode throughput after one untimed pass of the\n"
    "                         same shapes (the tokenizer is optional)\n"
    "    --prefill N          prompt tokens (default 128)\n"
    "    --decode N           tokens decoded one at a time (default 64)\n"
    "  --tokenize TEXT        print TEXT's token ids and pieces; needs no LIBRARY\n"
    "\n"
    "Options:\n"
    "  --tokenizer FILE       llama2.c tokenizer.bin, GGUF file or tokenizer.json\n"
    "  --weights FILE.iqw     weight file (default: LIBRARY with .so replaced by .iqw)\n"
    "  --threads N            worker threads (default: IQ_NUM_THREADS or all CPUs)\n"
    "  --help                 print this text\n";

typedef enum mode { MODE_NONE, MODE_PROMPT, MODE_PERPLEXITY, MODE_BENCH, MODE_TOKENIZE } mode_t_;

typedef struct arguments {
  const char *library;
  const char *tokenizer;
  const char *weights;
  mode_t_ mode;
  const char *text; /* prompt, perplexity file or text to tokenize */
  int32_t max_tokens;
  double temperature;
  uint64_t seed;
  int32_t context;
  int32_t windows;
  int32_t prefill;
  int32_t decode;
  int32_t threads;
} arguments_t;

static int usage_error(const char *format, const char *value) {
  fprintf(stderr, "iq-run: error: ");
  fprintf(stderr, format, value);
  fprintf(stderr, "\nRun 'iq-run --help' for usage.\n");
  return 1;
}

/* Parses an integer option value in [min, max]. */
static bool parse_int(const char *option, const char *text, long long min, long long max,
                      long long *value) {
  char *end = NULL;
  errno = 0;
  long long parsed = strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || parsed < min || parsed > max) {
    fprintf(stderr, "iq-run: error: invalid %s value \"%s\", expected an integer from %lld to %lld\n",
            option, text, min, max);
    return false;
  }
  *value = parsed;
  return true;
}

static bool set_mode(arguments_t *arguments, mode_t_ mode, const char *option) {
  if (arguments->mode != MODE_NONE) {
    fprintf(stderr, "iq-run: error: %s given with another mode; choose one of --prompt, "
                    "--perplexity, --bench and --tokenize\n", option);
    return false;
  }
  arguments->mode = mode;
  return true;
}

/* Returns 0 to continue, or the exit status. */
static int parse_arguments(int argc, char **argv, arguments_t *arguments) {
  for (int i = 1; i < argc; ++i) {
    const char *arg = argv[i];
    if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
      fputs(usage_text, stdout);
      return -1;
    }
    if (strcmp(arg, "--bench") == 0) {
      if (!set_mode(arguments, MODE_BENCH, arg)) {
        return 1;
      }
      continue;
    }
    if (strncmp(arg, "--", 2) != 0) {
      if (arguments->library) {
        return usage_error("unexpected argument \"%s\" (only one LIBRARY)", arg);
      }
      arguments->library = arg;
      continue;
    }
    static const char *const valued[] = {"--tokenizer", "--weights", "--prompt", "--perplexity",
                                         "--tokenize", "--max-tokens", "--temperature", "--seed",
                                         "--context", "--windows", "--prefill", "--decode",
                                         "--threads"};
    bool known = false;
    for (size_t v = 0; v < sizeof valued / sizeof valued[0]; ++v) {
      known = known || strcmp(arg, valued[v]) == 0;
    }
    if (!known) {
      return usage_error("unknown option \"%s\"", arg);
    }
    if (i + 1 >= argc) {
      return usage_error("%s needs a value", arg);
    }
    const char *value = argv[++i];
    long long number = 0;
    bool ok = true;
    if (strcmp(arg, "--tokenizer") == 0) {
      arguments->tokenizer = value;
    } else if (strcmp(arg, "--weights") == 0) {
      arguments->weights = value;
    } else if (strcmp(arg, "--prompt") == 0) {
      ok = set_mode(arguments, MODE_PROMPT, arg);
      arguments->text = value;
    } else if (strcmp(arg, "--perplexity") == 0) {
      ok = set_mode(arguments, MODE_PERPLEXITY, arg);
      arguments->text = value;
    } else if (strcmp(arg, "--tokenize") == 0) {
      ok = set_mode(arguments, MODE_TOKENIZE, arg);
      arguments->text = value;
    } else if (strcmp(arg, "--temperature") == 0) {
      char *end = NULL;
      arguments->temperature = strtod(value, &end);
      if (end == value || *end != '\0' || !(arguments->temperature >= 0.0) ||
          arguments->temperature > 100.0) {
        fprintf(stderr, "iq-run: error: invalid --temperature value \"%s\", expected a number "
                        "from 0 to 100\n", value);
        ok = false;
      }
    } else if (strcmp(arg, "--seed") == 0) {
      ok = parse_int(arg, value, 0, LLONG_MAX, &number);
      arguments->seed = (uint64_t)number;
    } else {
      static const struct {
        const char *name;
        long long min;
        size_t offset;
      } int_options[] = {
          {"--max-tokens", 1, offsetof(arguments_t, max_tokens)},
          {"--context", 2, offsetof(arguments_t, context)},
          {"--windows", 0, offsetof(arguments_t, windows)},
          {"--prefill", 1, offsetof(arguments_t, prefill)},
          {"--decode", 0, offsetof(arguments_t, decode)},
          {"--threads", 1, offsetof(arguments_t, threads)},
      };
      size_t k = 0;
      while (k < sizeof int_options / sizeof int_options[0] && strcmp(arg, int_options[k].name)) {
        ++k;
      }
      if (k == sizeof int_options / sizeof int_options[0]) {
        return usage_error("unknown option \"%s\"", arg);
      }
      /* Half of INT32_MAX keeps sums such as prefill + decode in range. */
      ok = parse_int(arg, value, int_options[k].min, INT32_MAX / 2, &number);
      *(int32_t *)((char *)arguments + int_options[k].offset) = (int32_t)number;
    }
    if (!ok) {
      return 1;
    }
  }

  if (arguments->mode == MODE_NONE) {
    return usage_error("%s", "no mode given; pass --prompt, --perplexity, --bench or --tokenize");
  }
  if (!arguments->tokenizer && arguments->mode != MODE_BENCH) {
    return usage_error("%s", "--tokenizer FILE is required");
  }
  if (!arguments->library && arguments->mode != MODE_TOKENIZE) {
    return usage_error("%s", "no model library given");
  }
  return 0;
}

/* Prints `text` in double quotes with C escapes for quotes, backslashes
 * and control bytes. */
static void print_quoted(const char *text, size_t length) {
  putchar('"');
  for (size_t i = 0; i < length; ++i) {
    unsigned char c = (unsigned char)text[i];
    if (c == '"' || c == '\\') {
      printf("\\%c", c);
    } else if (c == '\n') {
      fputs("\\n", stdout);
    } else if (c < 0x20 || c == 0x7f) {
      printf("\\x%02x", c);
    } else {
      putchar(c);
    }
  }
  putchar('"');
}

/* Prints the ids, each token's piece, and the decoded text of TEXT. */
static int run_tokenize(const tokenizer_t *tokenizer, const char *text) {
  int32_t *ids = NULL;
  size_t count = 0;
  iq_error_t *error = NULL;
  if (!tokenizer_encode(tokenizer, text, tokenizer->add_bos, &ids, &count, &error)) {
    iq_error_print(error, "iq-run", stderr);
    iq_error_destroy(error);
    return 1;
  }
  printf("tokenizer: %s, %d tokens, BOS %d, EOS %d\n", tokenizer->format, tokenizer->vocab_size,
         tokenizer->bos_id, tokenizer->eos_id);
  printf("ids:");
  for (size_t i = 0; i < count; ++i) {
    printf(" %d", ids[i]);
  }
  printf("\n");

  size_t capacity = tokenizer_decode_capacity(tokenizer);
  char *piece = malloc(capacity);
  size_t decoded_capacity = count * capacity + 1;
  char *decoded = malloc(decoded_capacity);
  if (!piece || !decoded) {
    fprintf(stderr, "iq-run: error: out of memory decoding %zu tokens\n", count);
    free(piece);
    free(decoded);
    free(ids);
    return 1;
  }
  size_t used = 0;
  for (size_t i = 0; i < count; ++i) {
    printf("%d ", ids[i]);
    print_quoted(tokenizer->pieces[ids[i]], tokenizer->piece_lengths[ids[i]]);
    printf("\n");
    size_t length = tokenizer_decode(tokenizer, i ? ids[i - 1] : -1, ids[i], piece, capacity);
    memcpy(decoded + used, piece, length);
    used += length;
  }
  decoded[used] = '\0';
  printf("decoded: ");
  print_quoted(decoded, used);
  printf("\nround trip: %s\n", strcmp(decoded, text) == 0 ? "equal" : "different");
  free(piece);
  free(decoded);
  free(ids);
  return 0;
}

/* Returns the ELF machine of a file, or -1 when it cannot be read. */
static int elf_machine(const char *path) {
  unsigned char header[20];
  FILE *file = fopen(path, "rb");
  if (!file) {
    return -1;
  }
  size_t got = fread(header, 1, sizeof header, file);
  fclose(file);
  if (got != sizeof header || memcmp(header, "\x7f" "ELF", 4) != 0) {
    return -1;
  }
  return header[18] | header[19] << 8; /* e_machine, little-endian */
}

/* Resolves every function of iq_runtime.h in `handle`. */
static bool load_api(const char *path, model_api_t *api) {
  /* dlopen reports a library of another architecture as "cannot open
   * shared object file", so the machine is checked first. */
  enum { ELF_X86_64 = 62, ELF_AARCH64 = 183 };
#if defined(__x86_64__)
  const int host = ELF_X86_64;
#elif defined(__aarch64__)
  const int host = ELF_AARCH64;
#else
  const int host = -1;
#endif
  int machine = elf_machine(path);
  if (machine >= 0 && host >= 0 && machine != host) {
    const char *library_machine = "another machine";
    if (machine == ELF_AARCH64) {
      library_machine = "aarch64";
    } else if (machine == ELF_X86_64) {
      library_machine = "x86-64";
    }
    fprintf(stderr,
            "iq-run: error: %s is a library for %s, but iq-run runs on %s; run it on that "
            "machine, or with an iq-run built for it (under qemu-aarch64 for AArch64)\n",
            path, library_machine, host == ELF_X86_64 ? "x86-64" : "aarch64");
    return false;
  }
  /* dlopen searches the library path for a name without a slash. */
  char *local = NULL;
  if (!strchr(path, '/')) {
    local = malloc(strlen(path) + 3);
    if (local) {
      sprintf(local, "./%s", path);
    }
  }
  api->handle = dlopen(local ? local : path, RTLD_NOW | RTLD_LOCAL);
  free(local);
  if (!api->handle) {
    fprintf(stderr, "iq-run: error: cannot load model library %s: %s\n", path, dlerror());
    return false;
  }
  static const struct {
    const char *name;
    size_t offset;
  } symbols[] = {
      {"iq_runtime_abi_version", offsetof(model_api_t, abi_version)},
      {"iq_model_open", offsetof(model_api_t, model_open)},
      {"iq_model_close", offsetof(model_api_t, model_close)},
      {"iq_model_get_config", offsetof(model_api_t, model_get_config)},
      {"iq_session_create", offsetof(model_api_t, session_create)},
      {"iq_session_destroy", offsetof(model_api_t, session_destroy)},
      {"iq_session_forward", offsetof(model_api_t, session_forward)},
      {"iq_session_reset", offsetof(model_api_t, session_reset)},
      {"iq_session_truncate", offsetof(model_api_t, session_truncate)},
      {"iq_session_length", offsetof(model_api_t, session_length)},
      {"iq_last_error", offsetof(model_api_t, last_error)},
      {"iq_status_name", offsetof(model_api_t, status_name)},
  };
  for (size_t i = 0; i < sizeof symbols / sizeof symbols[0]; ++i) {
    void *address = dlsym(api->handle, symbols[i].name);
    if (!address) {
      fprintf(stderr, "iq-run: error: %s does not define %s; is it a library from iq-compile?\n",
              path, symbols[i].name);
      return false;
    }
    /* POSIX guarantees that a dlsym result converts to a function pointer. */
    memcpy((char *)api + symbols[i].offset, &address, sizeof address);
  }
  uint32_t version = api->abi_version();
  if (version != IQ_RUNTIME_ABI_VERSION) {
    fprintf(stderr, "iq-run: error: %s has runtime ABI version %u, but iq-run uses version %d; "
                    "rebuild iq-run or recompile the model\n",
            path, version, IQ_RUNTIME_ABI_VERSION);
    return false;
  }
  return true;
}

/* Returns the library path with ".so" replaced by ".iqw" (or ".iqw"
 * appended). The caller frees the result. */
static char *default_weights(const char *library) {
  size_t length = strlen(library);
  if (length > 3 && strcmp(library + length - 3, ".so") == 0) {
    length -= 3;
  }
  char *path = malloc(length + 5);
  if (path) {
    memcpy(path, library, length);
    strcpy(path + length, ".iqw");
  }
  return path;
}

static bool open_model(const arguments_t *arguments, loaded_model_t *loaded) {
  if (!load_api(arguments->library, &loaded->api)) {
    return false;
  }
  char *weights = arguments->weights ? NULL : default_weights(arguments->library);
  const char *path = arguments->weights ? arguments->weights : weights;
  if (!path) {
    fprintf(stderr, "iq-run: error: out of memory\n");
    return false;
  }
  iq_model_options_t options = {.struct_size = sizeof options, .num_threads = arguments->threads};
  iq_status_t status = loaded->api.model_open(path, &options, &loaded->model);
  free(weights);
  if (status != IQ_OK) {
    return report_status(&loaded->api, "iq_model_open", status);
  }
  status = loaded->api.model_get_config(loaded->model, &loaded->config);
  return status == IQ_OK || report_status(&loaded->api, "iq_model_get_config", status);
}

int main(int argc, char **argv) {
  arguments_t arguments = {
      .max_tokens = 256, .temperature = 0.8, .context = 512, .prefill = 128, .decode = 64};
  int exit_status = parse_arguments(argc, argv, &arguments);
  if (exit_status != 0) {
    return exit_status < 0 ? 0 : exit_status;
  }

  tokenizer_t *tokenizer = NULL;
  if (arguments.tokenizer) {
    iq_error_t *error = NULL;
    tokenizer = tokenizer_load(arguments.tokenizer, &error);
    if (!tokenizer) {
      iq_error_print(error, "iq-run", stderr);
      iq_error_destroy(error);
      return 1;
    }
  }
  if (arguments.mode == MODE_TOKENIZE) {
    exit_status = run_tokenize(tokenizer, arguments.text);
    tokenizer_free(tokenizer);
    return exit_status;
  }

  loaded_model_t loaded = {0};
  bool ok = open_model(&arguments, &loaded);
  if (ok && arguments.mode == MODE_PROMPT) {
    ok = run_generate(&loaded, tokenizer, arguments.text, arguments.max_tokens,
                      arguments.temperature, arguments.seed);
  } else if (ok && arguments.mode == MODE_PERPLEXITY) {
    ok = run_perplexity(&loaded, tokenizer, arguments.text, arguments.context, arguments.windows);
  } else if (ok) {
    ok = run_bench(&loaded, arguments.prefill, arguments.decode);
  }
  if (loaded.model) {
    loaded.api.model_close(loaded.model);
  }
  /* The library is not dlclose()d: a sanitizer reports leaks with the
   * symbols of libraries still loaded at exit. */
  tokenizer_free(tokenizer);
  return ok ? 0 : 1;
}
