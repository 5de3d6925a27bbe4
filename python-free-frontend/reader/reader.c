/* Loading an ONNX model: the file is mapped, checked for nesting depth,
 * unpacked with protobuf-c, and converted into the structures of
 * iq/onnx.h. Names and inline raw_data point into the unpacked message,
 * which the model keeps until iq_onnx_model_destroy. */
#include "reader_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *format_string(const char *format, ...) {
  va_list args;
  va_start(args, format);
  int length = vsnprintf(NULL, 0, format, args);
  va_end(args);
  if (length < 0) {
    return NULL;
  }
  char *text = malloc((size_t)length + 1);
  if (text == NULL) {
    return NULL;
  }
  va_start(args, format);
  vsnprintf(text, (size_t)length + 1, format, args);
  va_end(args);
  return text;
}

bool reader_out_of_memory(reader_context_t *context, const char *where) {
  return iq_error_set(context->error, context->file, where,
                      "free memory or load a smaller model", "out of memory while loading");
}

char *describe_node(const iq_onnx_node_t *node, size_t index) {
  if (node->name[0] != '\0') {
    return format_string("node '%s' (%s)", node->name, node->op_type);
  }
  if (node->num_outputs > 0 && node->outputs[0][0] != '\0') {
    return format_string("node #%zu (%s) with output '%s'", index, node->op_type,
                         node->outputs[0]);
  }
  return format_string("node #%zu (%s)", index, node->op_type);
}

static const char *string_or_empty(const char *text) {
  return text != NULL ? text : "";
}

/* "ai.onnx" and "" both name the default domain. */
static const char *normalize_domain(const char *domain) {
  if (domain == NULL || strcmp(domain, "ai.onnx") == 0) {
    return "";
  }
  return domain;
}

/* Copies a repeated string field into an arena array, so that the model
 * never exposes a NULL element. */
static const char *const *copy_names(reader_context_t *context, char **names, size_t count) {
  const char **copy = arena_alloc_array(&context->state->arena, count, sizeof(*copy));
  if (copy == NULL) {
    return NULL;
  }
  for (size_t i = 0; i < count; ++i) {
    copy[i] = string_or_empty(names[i]);
  }
  return copy;
}

/* ---- Opsets ---------------------------------------------------------------- */

static bool convert_opsets(reader_context_t *context, const Onnx__ModelProto *proto) {
  iq_onnx_model_t *model = context->model;
  iq_onnx_opset_t *opsets =
      arena_alloc_array(&context->state->arena, proto->n_opset_import, sizeof(*opsets));
  if (opsets == NULL) {
    return reader_out_of_memory(context, "opset_import");
  }

  name_table_t seen;
  if (!name_table_init(&seen, proto->n_opset_import)) {
    return reader_out_of_memory(context, "opset_import");
  }
  bool ok = true;
  for (size_t i = 0; ok && i < proto->n_opset_import; ++i) {
    const Onnx__OperatorSetIdProto *opset = proto->opset_import[i];
    opsets[i].domain = normalize_domain(opset->domain);
    opsets[i].version = opset->has_version ? opset->version : 0;
    size_t first = 0;
    if (!name_table_insert(&seen, opsets[i].domain, i, &first)) {
      ok = iq_error_set(context->error, context->file, "opset_import",
                        "import each operator set domain once",
                        "imports domain '%s' twice (versions %" PRId64 " and %" PRId64 ")",
                        opsets[i].domain[0] != '\0' ? opsets[i].domain : "ai.onnx",
                        opsets[first].version, opsets[i].version);
    }
  }
  name_table_free(&seen);
  if (!ok) {
    return false;
  }

  model->opsets = opsets;
  model->num_opsets = proto->n_opset_import;
  return true;
}

/* ---- Graph inputs and outputs ----------------------------------------------- */

static bool convert_value_info(reader_context_t *context, const Onnx__ValueInfoProto *proto,
                               const char *kind, size_t index, iq_onnx_value_info_t *value) {
  value->name = string_or_empty(proto->name);
  value->rank = -1;
  if (value->name[0] == '\0') {
    char where[64];
    snprintf(where, sizeof(where), "%s #%zu", kind, index);
    return iq_error_set(context->error, context->file, where,
                        "give every graph input and output a name", "has no name");
  }

  const Onnx__TypeProto *type = proto->type;
  if (type == NULL || type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE ||
      type->tensor_type == NULL) {
    return true; /* not a tensor, or no type given: no element type or shape */
  }
  const Onnx__TypeProto__Tensor *tensor_type = type->tensor_type;
  value->data_type = tensor_type->has_elem_type ? tensor_type->elem_type : IQ_ONNX_UNDEFINED;
  const Onnx__TensorShapeProto *shape = tensor_type->shape;
  if (shape == NULL) {
    return true;
  }

  arena_t *arena = &context->state->arena;
  int64_t *dims = arena_alloc_array(arena, shape->n_dim, sizeof(*dims));
  const char **params = arena_alloc_array(arena, shape->n_dim, sizeof(*params));
  if (dims == NULL || params == NULL) {
    return reader_out_of_memory(context, value->name);
  }
  for (size_t i = 0; i < shape->n_dim; ++i) {
    const Onnx__TensorShapeProto__Dimension *dim = shape->dim[i];
    dims[i] = -1;
    params[i] = NULL;
    if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) {
      /* A negative size is meaningless; it is exposed as unknown. */
      dims[i] = dim->dim_value >= 0 ? dim->dim_value : -1;
    } else if (dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM &&
               dim->dim_param != NULL && dim->dim_param[0] != '\0') {
      params[i] = dim->dim_param;
    }
  }
  value->rank = (long)shape->n_dim;
  value->dims = dims;
  value->dim_params = params;
  return true;
}

static bool convert_graph_values(reader_context_t *context, const Onnx__GraphProto *graph) {
  iq_onnx_model_t *model = context->model;
  arena_t *arena = &context->state->arena;

  iq_onnx_value_info_t *inputs = arena_alloc_array(arena, graph->n_input, sizeof(*inputs));
  iq_onnx_value_info_t *outputs = arena_alloc_array(arena, graph->n_output, sizeof(*outputs));
  if (inputs == NULL || outputs == NULL) {
    return reader_out_of_memory(context, NULL);
  }
  size_t num_inputs = 0;
  for (size_t i = 0; i < graph->n_input; ++i) {
    if (!convert_value_info(context, graph->input[i], "graph input", i, &inputs[num_inputs])) {
      return false;
    }
    /* An input with an initializer of the same name is a constant with a
     * default value, not something the caller provides. */
    if (!name_table_find(&context->state->initializer_index, inputs[num_inputs].name, NULL)) {
      num_inputs++;
    }
  }
  for (size_t i = 0; i < graph->n_output; ++i) {
    if (!convert_value_info(context, graph->output[i], "graph output", i, &outputs[i])) {
      return false;
    }
  }
  model->inputs = inputs;
  model->num_inputs = num_inputs;
  model->outputs = outputs;
  model->num_outputs = graph->n_output;
  return true;
}

/* ---- Initializers ------------------------------------------------------------ */

static bool convert_initializers(reader_context_t *context, const Onnx__GraphProto *graph) {
  iq_onnx_model_t *model = context->model;
  reader_state_t *state = context->state;

  if (graph->n_sparse_initializer != 0) {
    return iq_error_set(context->error, context->file, "graph",
                        "store the initializers as dense tensors before export",
                        "has %zu sparse initializers, which iq does not support",
                        graph->n_sparse_initializer);
  }
  iq_onnx_tensor_t *tensors =
      arena_alloc_array(&state->arena, graph->n_initializer, sizeof(*tensors));
  if (tensors == NULL || !name_table_init(&state->initializer_index, graph->n_initializer)) {
    return reader_out_of_memory(context, NULL);
  }
  model->initializers = tensors;

  for (size_t i = 0; i < graph->n_initializer; ++i) {
    const Onnx__TensorProto *proto = graph->initializer[i];
    const char *name = string_or_empty(proto->name);
    char *where = name[0] != '\0' ? format_string("initializer '%s'", name)
                                  : format_string("initializer #%zu", i);
    if (where == NULL) {
      return reader_out_of_memory(context, NULL);
    }
    if (name[0] == '\0') {
      iq_error_set(context->error, context->file, where,
                   "give every initializer the name its users refer to it by", "has no name");
      free(where);
      return false;
    }
    bool ok = tensor_convert(context, proto, where, &tensors[i]);
    free(where);
    if (!ok) {
      return false;
    }
    model->num_initializers = i + 1;
    /* A duplicate name keeps the first index here; graph_check reports it
     * as a value defined twice. */
    name_table_insert(&state->initializer_index, name, i, NULL);
  }
  return true;
}

/* ---- Nodes and attributes ------------------------------------------------------ */

/* Returns the attribute's kind, inferred from the field that is set when
 * the file predates AttributeProto.type (IR version 1). */
static int attribute_kind(const Onnx__AttributeProto *proto) {
  if (proto->has_type && proto->type != ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__UNDEFINED) {
    return (int)proto->type;
  }
  if (proto->has_f) {
    return IQ_ONNX_ATTR_FLOAT;
  }
  if (proto->has_i) {
    return IQ_ONNX_ATTR_INT;
  }
  if (proto->has_s) {
    return IQ_ONNX_ATTR_STRING;
  }
  if (proto->t != NULL) {
    return IQ_ONNX_ATTR_TENSOR;
  }
  if (proto->g != NULL) {
    return IQ_ONNX_ATTR_GRAPH;
  }
  if (proto->n_floats != 0) {
    return IQ_ONNX_ATTR_FLOATS;
  }
  if (proto->n_ints != 0) {
    return IQ_ONNX_ATTR_INTS;
  }
  if (proto->n_strings != 0) {
    return IQ_ONNX_ATTR_STRINGS;
  }
  return 0;
}

static bool convert_attribute(reader_context_t *context, const Onnx__AttributeProto *proto,
                              const char *node_where, iq_onnx_attribute_t *attribute) {
  arena_t *arena = &context->state->arena;
  attribute->name = string_or_empty(proto->name);
  attribute->kind = attribute_kind(proto);

  char *where = format_string("%s, attribute '%s'", node_where, attribute->name);
  if (where == NULL) {
    return reader_out_of_memory(context, node_where);
  }
  bool ok = true;
  switch (attribute->kind) {
  case IQ_ONNX_ATTR_FLOAT:
    attribute->f = proto->f;
    break;
  case IQ_ONNX_ATTR_INT:
    attribute->i = proto->i;
    break;
  case IQ_ONNX_ATTR_STRING:
    /* `bytes` in protobuf-c are not NUL-terminated. */
    attribute->s = arena_strndup(arena, (const char *)proto->s.data, proto->s.len);
    attribute->s_length = proto->s.len;
    ok = attribute->s != NULL || reader_out_of_memory(context, where);
    break;
  case IQ_ONNX_ATTR_FLOATS:
    attribute->floats = proto->floats;
    attribute->count = proto->n_floats;
    break;
  case IQ_ONNX_ATTR_INTS:
    attribute->ints = proto->ints;
    attribute->count = proto->n_ints;
    break;
  case IQ_ONNX_ATTR_STRINGS: {
    const char **strings = arena_alloc_array(arena, proto->n_strings, sizeof(*strings));
    ok = strings != NULL;
    for (size_t i = 0; ok && i < proto->n_strings; ++i) {
      strings[i] = arena_strndup(arena, (const char *)proto->strings[i].data,
                                 proto->strings[i].len);
      ok = strings[i] != NULL;
    }
    if (!ok) {
      reader_out_of_memory(context, where);
    }
    attribute->strings = strings;
    attribute->count = proto->n_strings;
    break;
  }
  case IQ_ONNX_ATTR_TENSOR: {
    iq_onnx_tensor_t *tensor = arena_alloc(arena, sizeof(*tensor));
    if (tensor == NULL) {
      ok = reader_out_of_memory(context, where);
    } else if (proto->t == NULL) {
      ok = iq_error_set(context->error, context->file, where,
                        "re-export the model; the attribute is incomplete",
                        "has type TENSOR but no tensor value");
    } else {
      ok = tensor_convert(context, proto->t, where, tensor);
      attribute->tensor = tensor;
    }
    break;
  }
  case IQ_ONNX_ATTR_GRAPH:
  case IQ_ONNX_ATTR_TENSORS:
  case IQ_ONNX_ATTR_GRAPHS:
  case IQ_ONNX_ATTR_SPARSE_TENSOR:
  case IQ_ONNX_ATTR_SPARSE_TENSORS:
  case IQ_ONNX_ATTR_TYPE_PROTO:
  case IQ_ONNX_ATTR_TYPE_PROTOS:
    break; /* exposed without a payload; importers reject these ops */
  default:
    if (attribute->kind == 0) {
      ok = iq_error_set(context->error, context->file, where,
                        "re-export the model; the attribute is incomplete",
                        "has no type and no value");
    } else {
      ok = iq_error_set(context->error, context->file, where,
                        "re-export the model with a released version of onnx",
                        "has unknown attribute type %d", attribute->kind);
    }
    break;
  }
  free(where);
  return ok;
}

static bool convert_node(reader_context_t *context, const Onnx__NodeProto *proto, size_t index,
                         iq_onnx_node_t *node) {
  arena_t *arena = &context->state->arena;
  node->name = string_or_empty(proto->name);
  node->op_type = string_or_empty(proto->op_type);
  node->domain = normalize_domain(proto->domain);
  node->num_inputs = proto->n_input;
  node->num_outputs = proto->n_output;
  node->inputs = copy_names(context, proto->input, proto->n_input);
  node->outputs = copy_names(context, proto->output, proto->n_output);
  if (node->inputs == NULL || node->outputs == NULL) {
    return reader_out_of_memory(context, NULL);
  }

  char *where = describe_node(node, index);
  if (where == NULL) {
    return reader_out_of_memory(context, NULL);
  }
  bool ok = true;
  if (node->op_type[0] == '\0') {
    ok = iq_error_set(context->error, context->file, where,
                      "re-export the model; every node needs an op_type", "has no op_type");
  }

  iq_onnx_attribute_t *attributes =
      arena_alloc_array(arena, proto->n_attribute, sizeof(*attributes));
  if (ok && attributes == NULL) {
    ok = reader_out_of_memory(context, where);
  }
  for (size_t i = 0; ok && i < proto->n_attribute; ++i) {
    ok = convert_attribute(context, proto->attribute[i], where, &attributes[i]);
  }

  /* A hash table keeps the check linear for crafted nodes with many
   * attributes. */
  name_table_t seen = {0};
  if (ok && proto->n_attribute > 1 && !name_table_init(&seen, proto->n_attribute)) {
    ok = reader_out_of_memory(context, where);
  }
  for (size_t i = 0; ok && i < proto->n_attribute && proto->n_attribute > 1; ++i) {
    if (!name_table_insert(&seen, attributes[i].name, i, NULL)) {
      ok = iq_error_set(context->error, context->file, where,
                        "re-export the model; attribute names must be unique within a node",
                        "has the attribute '%s' twice", attributes[i].name);
    }
  }
  name_table_free(&seen);
  node->attributes = attributes;
  node->num_attributes = proto->n_attribute;
  free(where);
  return ok;
}

static bool convert_nodes(reader_context_t *context, const Onnx__GraphProto *graph) {
  iq_onnx_node_t *nodes =
      arena_alloc_array(&context->state->arena, graph->n_node, sizeof(*nodes));
  if (nodes == NULL) {
    return reader_out_of_memory(context, NULL);
  }
  for (size_t i = 0; i < graph->n_node; ++i) {
    if (!convert_node(context, graph->node[i], i, &nodes[i])) {
      return false;
    }
  }
  return graph_check_and_sort(context, nodes, graph->n_node);
}

/* ---- Loading --------------------------------------------------------------------- */

static bool convert_model(reader_context_t *context, const uint8_t *data, size_t size) {
  iq_onnx_model_t *model = context->model;
  reader_state_t *state = context->state;

  if (size == 0) {
    return iq_error_set(context->error, context->file, NULL,
                        "check that the file is a complete .onnx model",
                        "is not a valid ONNX model: the file is empty");
  }
  if (!wire_check_depth(data, size, context)) {
    return false;
  }
  state->proto = onnx__model_proto__unpack(NULL, size, data);
  if (state->proto == NULL) {
    return iq_error_set(context->error, context->file, NULL,
                        "check that the file is a complete .onnx model, not a truncated copy or "
                        "an external data file, and re-export it if needed",
                        "is not a valid ONNX model: protobuf-c failed to parse it as ModelProto");
  }
  const Onnx__ModelProto *proto = state->proto;
  if (proto->graph == NULL) {
    return iq_error_set(context->error, context->file, NULL,
                        "check that the file is an ONNX model, not another protobuf file",
                        "is not a valid ONNX model: it contains no graph");
  }

  model->ir_version = proto->has_ir_version ? proto->ir_version : 0;
  model->producer_name = string_or_empty(proto->producer_name);
  /* Initializers come first: graph inputs are filtered by their names. */
  return convert_opsets(context, proto) && convert_initializers(context, proto->graph) &&
         convert_graph_values(context, proto->graph) && convert_nodes(context, proto->graph);
}

iq_onnx_model_t *iq_onnx_model_load_buffer(const uint8_t *data, size_t size, const char *name,
                                           const char *base_dir, iq_error_t **error) {
  if (name == NULL) {
    name = "<buffer>";
  }
  if (data == NULL && size != 0) {
    iq_error_set(error, name, NULL, "pass the model's bytes", "no model data was given (NULL)");
    return NULL;
  }
  iq_onnx_model_t *model = calloc(1, sizeof(*model));
  reader_state_t *state = calloc(1, sizeof(*state));
  if (model == NULL || state == NULL) {
    free(model);
    free(state);
    iq_error_set(error, name, NULL, "free memory or load a smaller model",
                 "out of memory while loading");
    return NULL;
  }
  model->internal = state;

  reader_context_t context = {
      .model = model, .state = state, .file = name, .base_dir = base_dir, .error = error};
  model->path = arena_strndup(&state->arena, name, strlen(name));
  bool ok = model->path != NULL ? convert_model(&context, data, size)
                                : reader_out_of_memory(&context, NULL);
  free(context.real_base_dir);
  if (!ok) {
    iq_onnx_model_destroy(model);
    return NULL;
  }
  return model;
}

iq_onnx_model_t *iq_onnx_model_load(const char *path, iq_error_t **error) {
  if (path == NULL) {
    iq_error_set(error, NULL, NULL, "pass the path of an .onnx file",
                 "no model path was given (NULL)");
    return NULL;
  }
  iq_mapped_file_t *file = iq_mapped_file_open(path, error);
  if (file == NULL) {
    return NULL;
  }

  /* ONNX resolves external data locations against the model's folder. */
  const char *slash = strrchr(path, '/');
  char *base_dir = NULL;
  if (slash == NULL) {
    base_dir = strdup(".");
  } else if (slash == path) {
    base_dir = strdup("/");
  } else {
    base_dir = malloc((size_t)(slash - path) + 1);
    if (base_dir != NULL) {
      memcpy(base_dir, path, (size_t)(slash - path));
      base_dir[slash - path] = '\0';
    }
  }
  iq_onnx_model_t *model = NULL;
  if (base_dir == NULL) {
    iq_error_set(error, path, NULL, "free memory or load a smaller model",
                 "out of memory while loading");
  } else {
    model = iq_onnx_model_load_buffer(file->data, file->size, path, base_dir, error);
  }
  free(base_dir);
  /* The unpacked message contains copies of everything it needs. */
  iq_mapped_file_close(file);
  return model;
}

void iq_onnx_model_destroy(iq_onnx_model_t *model) {
  if (model == NULL) {
    return;
  }
  reader_state_t *state = model->internal;
  if (state != NULL) {
    if (state->proto != NULL) {
      onnx__model_proto__free_unpacked(state->proto, NULL);
    }
    for (size_t i = 0; i < state->num_mapped; ++i) {
      iq_mapped_file_close(state->mapped[i].file);
      free(state->mapped[i].real_path);
    }
    free(state->mapped);
    name_table_free(&state->initializer_index);
    arena_free(&state->arena);
    free(state);
  }
  free(model);
}

const iq_onnx_tensor_t *iq_onnx_model_find_initializer(const iq_onnx_model_t *model,
                                                       const char *name) {
  if (model == NULL || name == NULL) {
    return NULL;
  }
  const reader_state_t *state = model->internal;
  size_t index = 0;
  if (!name_table_find(&state->initializer_index, name, &index)) {
    return NULL;
  }
  return &model->initializers[index];
}

int64_t iq_onnx_model_opset(const iq_onnx_model_t *model, const char *domain) {
  if (model == NULL) {
    return 0;
  }
  domain = normalize_domain(domain);
  for (size_t i = 0; i < model->num_opsets; ++i) {
    if (strcmp(model->opsets[i].domain, domain) == 0) {
      return model->opsets[i].version;
    }
  }
  return 0;
}

const iq_onnx_attribute_t *iq_onnx_node_attribute(const iq_onnx_node_t *node, const char *name) {
  if (node == NULL || name == NULL) {
    return NULL;
  }
  for (size_t i = 0; i < node->num_attributes; ++i) {
    if (strcmp(node->attributes[i].name, name) == 0) {
      return &node->attributes[i];
    }
  }
  return NULL;
}
