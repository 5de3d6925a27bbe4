/* iq-onnx-dump: loads an ONNX model with iq's reader, which runs every
 * check the compiler relies on, and prints what it found. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iq/onnx.h"
#include "iq/support.h"

static const char *const PROGRAM = "iq-onnx-dump";

static void print_usage(FILE *stream) {
  fprintf(stream,
          "usage: %s [--summary] [--bytes N] MODEL.onnx\n"
          "Loads an ONNX model, checks it as iq's importer does, and prints its opsets,\n"
          "graph inputs and outputs, initializers and nodes.\n"
          "\n"
          "  --summary   print counts instead of listing initializers and nodes\n"
          "  --bytes N   print the first N bytes of each initializer's data in hex\n"
          "  -h, --help  print this help\n",
          PROGRAM);
}

static const char *domain_name(const char *domain) {
  return domain[0] != '\0' ? domain : "ai.onnx";
}

static void print_tensor_dims(const int64_t *dims, size_t rank) {
  printf("[");
  for (size_t i = 0; i < rank; ++i) {
    printf("%s%" PRId64, i == 0 ? "" : ", ", dims[i]);
  }
  printf("]");
}

static void print_value_info(const char *kind, const iq_onnx_value_info_t *value) {
  printf("  %s '%s': %s ", kind, value->name, iq_onnx_type_name(value->data_type));
  if (value->rank < 0) {
    printf("(unknown shape)\n");
    return;
  }
  printf("[");
  for (long i = 0; i < value->rank; ++i) {
    const char *separator = i == 0 ? "" : ", ";
    if (value->dim_params[i] != NULL) {
      printf("%s%s", separator, value->dim_params[i]);
    } else if (value->dims[i] < 0) {
      printf("%s?", separator);
    } else {
      printf("%s%" PRId64, separator, value->dims[i]);
    }
  }
  printf("]\n");
}

static void print_tensor(const iq_onnx_tensor_t *tensor) {
  printf("%s ", iq_onnx_type_name(tensor->data_type));
  print_tensor_dims(tensor->dims, tensor->rank);
  printf(" %s %" PRIu64 " bytes", tensor->external ? "external" : "inline", tensor->byte_size);
}

/* Lists at most this many elements of an INTS or FLOATS attribute. */
enum { MAX_LISTED_ELEMENTS = 8 };

static void print_attribute(const iq_onnx_attribute_t *attribute) {
  printf("%s=", attribute->name);
  switch (attribute->kind) {
  case IQ_ONNX_ATTR_FLOAT:
    printf("%g", (double)attribute->f);
    break;
  case IQ_ONNX_ATTR_INT:
    printf("%" PRId64, attribute->i);
    break;
  case IQ_ONNX_ATTR_STRING:
    printf("\"%s\"", attribute->s);
    break;
  case IQ_ONNX_ATTR_FLOATS:
  case IQ_ONNX_ATTR_INTS:
  case IQ_ONNX_ATTR_STRINGS:
    printf("[");
    for (size_t i = 0; i < attribute->count && i < MAX_LISTED_ELEMENTS; ++i) {
      const char *separator = i == 0 ? "" : ", ";
      if (attribute->kind == IQ_ONNX_ATTR_FLOATS) {
        printf("%s%g", separator, (double)attribute->floats[i]);
      } else if (attribute->kind == IQ_ONNX_ATTR_INTS) {
        printf("%s%" PRId64, separator, attribute->ints[i]);
      } else {
        printf("%s\"%s\"", separator, attribute->strings[i]);
      }
    }
    if (attribute->count > MAX_LISTED_ELEMENTS) {
      printf(", ... %zu in all", attribute->count);
    }
    printf("]");
    break;
  case IQ_ONNX_ATTR_TENSOR:
    printf("<");
    print_tensor(attribute->tensor);
    printf(">");
    break;
  case IQ_ONNX_ATTR_GRAPH:
    printf("<graph>");
    break;
  default:
    printf("<attribute type %d>", attribute->kind);
    break;
  }
}

static void print_node(size_t index, const iq_onnx_node_t *node) {
  printf("  node %zu: ", index);
  if (node->domain[0] != '\0') {
    printf("%s.", node->domain);
  }
  printf("%s", node->op_type);
  if (node->name[0] != '\0') {
    printf(" '%s'", node->name);
  }
  printf(": ");
  for (size_t i = 0; i < node->num_inputs; ++i) {
    printf("%s%s", i == 0 ? "" : ", ", node->inputs[i][0] != '\0' ? node->inputs[i] : "<none>");
  }
  printf(node->num_inputs > 0 ? " -> " : "-> ");
  for (size_t i = 0; i < node->num_outputs; ++i) {
    printf("%s%s", i == 0 ? "" : ", ",
           node->outputs[i][0] != '\0' ? node->outputs[i] : "<none>");
  }
  if (node->num_attributes > 0) {
    printf(" {");
    for (size_t i = 0; i < node->num_attributes; ++i) {
      printf("%s", i == 0 ? "" : ", ");
      print_attribute(&node->attributes[i]);
    }
    printf("}");
  }
  printf("\n");
}

/* Prints up to `limit` bytes of a tensor's data as hex, in the raw
 * little-endian layout the reader produces. */
static void print_bytes(const iq_onnx_tensor_t *tensor, uint64_t limit) {
  uint64_t count = tensor->byte_size < limit ? tensor->byte_size : limit;
  printf(":");
  for (uint64_t i = 0; i < count; ++i) {
    printf(" %02x", tensor->data[i]);
  }
  if (count < tensor->byte_size) {
    printf(" ...");
  }
}

static void print_model(const iq_onnx_model_t *model, bool summary, uint64_t byte_limit) {
  printf("model: %s\n", model->path);
  printf("ir_version: %" PRId64 "\n", model->ir_version);
  printf("producer: %s\n", model->producer_name);
  for (size_t i = 0; i < model->num_opsets; ++i) {
    printf("opset: %s %" PRId64 "\n", domain_name(model->opsets[i].domain),
           model->opsets[i].version);
  }

  printf("inputs: %zu\n", model->num_inputs);
  for (size_t i = 0; i < model->num_inputs; ++i) {
    print_value_info("input", &model->inputs[i]);
  }
  printf("outputs: %zu\n", model->num_outputs);
  for (size_t i = 0; i < model->num_outputs; ++i) {
    print_value_info("output", &model->outputs[i]);
  }

  uint64_t total_bytes = 0;
  uint64_t external_bytes = 0;
  for (size_t i = 0; i < model->num_initializers; ++i) {
    total_bytes += model->initializers[i].byte_size;
    if (model->initializers[i].external) {
      external_bytes += model->initializers[i].byte_size;
    }
  }
  printf("initializers: %zu, %" PRIu64 " bytes (%" PRIu64 " external)\n", model->num_initializers,
         total_bytes, external_bytes);
  for (size_t i = 0; !summary && i < model->num_initializers; ++i) {
    printf("  initializer '%s': ", model->initializers[i].name);
    print_tensor(&model->initializers[i]);
    if (byte_limit > 0) {
      print_bytes(&model->initializers[i], byte_limit);
    }
    printf("\n");
  }

  printf("nodes: %zu\n", model->num_nodes);
  for (size_t i = 0; !summary && i < model->num_nodes; ++i) {
    print_node(i, &model->nodes[i]);
  }
}

int main(int argc, char **argv) {
  const char *path = NULL;
  bool summary = false;
  uint64_t byte_limit = 0;
  for (int i = 1; i < argc; ++i) {
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      print_usage(stdout);
      return 0;
    }
    if (strcmp(argv[i], "--summary") == 0) {
      summary = true;
    } else if (strcmp(argv[i], "--bytes") == 0) {
      char *end = NULL;
      if (i + 1 == argc || argv[i + 1][0] < '0' || argv[i + 1][0] > '9') {
        fprintf(stderr, "%s: error: --bytes expects a byte count\n", PROGRAM);
        return 2;
      }
      byte_limit = strtoull(argv[++i], &end, 10);
      if (*end != '\0') {
        fprintf(stderr, "%s: error: --bytes expects a byte count, got '%s'\n", PROGRAM, argv[i]);
        return 2;
      }
    } else if (argv[i][0] == '-' && argv[i][1] != '\0') {
      fprintf(stderr, "%s: error: unknown option '%s'\n", PROGRAM, argv[i]);
      print_usage(stderr);
      return 2;
    } else if (path != NULL) {
      fprintf(stderr, "%s: error: expected one model, got '%s' and '%s'\n", PROGRAM, path,
              argv[i]);
      return 2;
    } else {
      path = argv[i];
    }
  }
  if (path == NULL) {
    fprintf(stderr, "%s: error: no model given\n", PROGRAM);
    print_usage(stderr);
    return 2;
  }

  iq_error_t *error = NULL;
  iq_onnx_model_t *model = iq_onnx_model_load(path, &error);
  if (model == NULL) {
    iq_error_print(error, PROGRAM, stderr);
    iq_error_destroy(error);
    return 1;
  }
  print_model(model, summary, byte_limit);
  iq_onnx_model_destroy(model);
  return 0;
}
