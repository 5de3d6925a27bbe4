/* Import of an ONNX graph into iq's graph form: one func.func, one op per
 * node, weights in a weight store. */
#include "import_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlir-c/BuiltinAttributes.h"
#include "mlir-c/BuiltinTypes.h"

#include "iq/ir.h"

typedef struct importer {
  MlirContext context;
  const iq_onnx_model_t *model;
  const iq_onnx_import_options_t *options;
  iq_weight_store_writer_t *store;
  iq_builder_t builder;
  value_map_t values;
  MlirValue no_value; /* lazily created onnx.NoValue result */
  MlirLocation model_location;
  iq_error_t **error;
} importer_t;

static const char *node_label(const iq_onnx_node_t *node, char *buffer, size_t size) {
  snprintf(buffer, size, "node '%s' (%s%s%s)", node->name, node->domain, *node->domain ? "." : "",
           node->op_type);
  return buffer;
}

static MlirLocation node_location(importer_t *im, const iq_onnx_node_t *node, size_t index) {
  char name[256];
  if (*node->name)
    snprintf(name, sizeof name, "%s", node->name);
  else
    snprintf(name, sizeof name, "%s#%zu", node->op_type, index);
  return mlirLocationNameGet(im->context, mlirStringRefCreateFromCString(name), im->model_location);
}

/* ---- Types of graph inputs and outputs ---------------------------------- */

static MlirType value_info_type(importer_t *im, const iq_onnx_value_info_t *info) {
  MlirType element = import_element_type(im->context, info->data_type);
  if (mlirTypeIsNull(element))
    return element;
  if (info->rank < 0)
    return mlirUnrankedTensorTypeGet(element);
  return iq_tensor_type(im->context, info->rank, info->dims, element);
}

/* The names of a value's symbolic dimensions, "" for the others, so the
 * IR keeps "batch_size" and "sequence_length" from the export. */
static MlirAttribute dim_names_attr(importer_t *im, const iq_onnx_value_info_t *info) {
  MlirAttribute names[16];
  long rank = info->rank < 0 ? 0 : info->rank;
  if (rank > 16)
    rank = 16;
  for (long i = 0; i < rank; ++i)
    names[i] = iq_string_attr(im->context, info->dim_params[i] ? info->dim_params[i] : "");
  return mlirArrayAttrGet(im->context, rank, names);
}

static MlirAttribute value_attributes(importer_t *im, const iq_onnx_value_info_t *info) {
  MlirNamedAttribute entries[2] = {
      iq_named(im->context, "iq.name", iq_string_attr(im->context, info->name)),
      iq_named(im->context, "iq.dim_names", dim_names_attr(im, info)),
  };
  return mlirDictionaryAttrGet(im->context, 2, entries);
}

/* ---- Result types of nodes ----------------------------------------------- */

static MlirType element_of(MlirValue value) {
  MlirType type = mlirValueGetType(value);
  return mlirTypeIsAShaped(type) ? mlirShapedTypeGetElementType(type) : (MlirType){NULL};
}

static bool op_is(const iq_onnx_node_t *node, const char *op_type) {
  return strcmp(node->op_type, op_type) == 0;
}

/* Infers the element type of each result from the ONNX op's definition,
 * and the shape where the op keeps its input's shape. Other shapes are left
 * unranked: the raise pass rebuilds LLaMA structure with full types. */
static bool infer_result_types(importer_t *im, const iq_onnx_node_t *node,
                               const MlirValue *operands, size_t num_operands, MlirType *types,
                               size_t num_results) {
  MlirContext c = im->context;
  MlirType first = num_operands > 0 ? element_of(operands[0]) : mlirF32TypeGet(c);
  MlirType f32 = mlirF32TypeGet(c);
  MlirType u8 = mlirIntegerTypeUnsignedGet(c, 8);

  for (size_t i = 0; i < num_results; ++i) {
    MlirType element = first;
    if (op_is(node, "Cast")) {
      const iq_onnx_attribute_t *to = iq_onnx_node_attribute(node, "to");
      element = to ? import_element_type(c, (int32_t)to->i) : (MlirType){NULL};
    } else if (op_is(node, "Shape")) {
      element = mlirIntegerTypeGet(c, 64);
    } else if (op_is(node, "Equal") || op_is(node, "Less") || op_is(node, "Greater") ||
               op_is(node, "LessOrEqual") || op_is(node, "GreaterOrEqual")) {
      element = mlirIntegerTypeGet(c, 1);
    } else if (op_is(node, "ConstantOfShape")) {
      const iq_onnx_attribute_t *value = iq_onnx_node_attribute(node, "value");
      element = value && value->tensor ? import_element_type(c, value->tensor->data_type) : f32;
    } else if (op_is(node, "QuantizeLinear")) {
      const iq_onnx_attribute_t *output_dtype = iq_onnx_node_attribute(node, "output_dtype");
      if (num_operands > 2 && !mlirTypeIsANone(mlirValueGetType(operands[2])))
        element = element_of(operands[2]);
      else if (output_dtype && output_dtype->i != 0)
        element = import_element_type(c, (int32_t)output_dtype->i);
      else
        element = u8;
    } else if (op_is(node, "DequantizeLinear")) {
      element = element_of(operands[1]);
    } else if (op_is(node, "DynamicQuantizeLinear")) {
      element = i == 1 ? f32 : u8;
    } else if (op_is(node, "MatMulInteger")) {
      element = mlirIntegerTypeGet(c, 32);
    } else if (op_is(node, "Where")) {
      element = element_of(operands[1]);
    } else if ((op_is(node, "SimplifiedLayerNormalization") && i == 1) ||
               (op_is(node, "SkipSimplifiedLayerNormalization") && (i == 1 || i == 2))) {
      element = f32; /* mean and inverse standard deviation */
    }
    if (mlirTypeIsNull(element)) {
      char label[320];
      return iq_error_set(im->error, im->model->path, node_label(node, label, sizeof label),
                          "check the node's 'to' or 'value' attribute",
                          "cannot determine the element type of output %zu", i);
    }

    bool keeps_shape = op_is(node, "Sqrt") || op_is(node, "Reciprocal") || op_is(node, "Neg") ||
                       op_is(node, "Sin") || op_is(node, "Cos") || op_is(node, "Sigmoid") ||
                       op_is(node, "Softmax") || op_is(node, "Identity") || op_is(node, "Cast") ||
                       op_is(node, "Exp") || op_is(node, "Not") ||
                       op_is(node, "RMSNormalization") ||
                       op_is(node, "SimplifiedLayerNormalization");
    MlirType input = num_operands > 0 ? mlirValueGetType(operands[0]) : (MlirType){NULL};
    if (i == 0 && keeps_shape && mlirTypeIsARankedTensor(input)) {
      intptr_t rank = mlirShapedTypeGetRank(input);
      int64_t dims[16];
      for (intptr_t d = 0; d < rank && d < 16; ++d)
        dims[d] = mlirShapedTypeIsDynamicDim(input, d) ? -1 : mlirShapedTypeGetDimSize(input, d);
      types[i] = iq_tensor_type(c, rank, dims, element);
    } else {
      types[i] = mlirUnrankedTensorTypeGet(element);
    }
  }
  return true;
}

/* ---- Constants and weights ---------------------------------------------- */

/* Materializes a tensor from the file: small ones as arith.constant, the
 * rest written to the weight store and referenced by iq.weight. */
static bool import_tensor(importer_t *im, const iq_onnx_tensor_t *tensor, const char *store_name,
                          MlirLocation location, MlirValue *result) {
  MlirType type = import_tensor_type(im->context, tensor);
  if (mlirTypeIsNull(type))
    return iq_error_set(im->error, im->model->path, tensor->name,
                        "convert the tensor to float, float16, bfloat16 or an integer type",
                        "tensor of type %s and rank %zu has no MLIR form in iq",
                        iq_onnx_type_name(tensor->data_type), tensor->rank);

  if (tensor->byte_size <= im->options->inline_limit_bytes) {
    MlirAttribute dense = import_dense_attr(im->context, tensor);
    if (!mlirAttributeIsNull(dense)) {
      MlirNamedAttribute value = iq_named(im->context, "value", dense);
      MlirOperation op =
          iq_build(&im->builder, "arith.constant", location, 0, NULL, 1, &type, 1, &value);
      if (mlirOperationIsNull(op))
        return iq_error_set(im->error, im->model->path, tensor->name, NULL,
                            "cannot build a constant for this tensor");
      *result = iq_result(op, 0);
      return true;
    }
  }

  iq_dtype_t dtype;
  if (!import_store_dtype(tensor->data_type, &dtype))
    return iq_error_set(im->error, im->model->path, tensor->name, NULL,
                        "tensor of type %s cannot be stored in a weight store",
                        iq_onnx_type_name(tensor->data_type));
  if (!iq_weight_store_writer_add(im->store, store_name, dtype, IQ_LAYOUT_ROW_MAJOR,
                                  (uint32_t)tensor->rank, tensor->dims, tensor->data,
                                  tensor->byte_size, im->error))
    return false;
  iq_onnx_tensor_release_pages(tensor);
  MlirNamedAttribute attributes[] = {
      iq_named(im->context, "name", iq_string_attr(im->context, store_name)),
      iq_named(im->context, "transposed", iq_bool_attr(im->context, false)),
  };
  MlirOperation op = iq_build(&im->builder, "iq.weight", location, 0, NULL, 1, &type, 2, attributes);
  if (mlirOperationIsNull(op))
    return iq_error_set(im->error, im->model->path, tensor->name, NULL,
                        "cannot build the weight reference");
  *result = iq_result(op, 0);
  return true;
}

/* Returns true when some node or graph output reads `name`. */
static bool is_used(const iq_onnx_model_t *model, const char *name) {
  for (size_t n = 0; n < model->num_nodes; ++n)
    for (size_t i = 0; i < model->nodes[n].num_inputs; ++i)
      if (strcmp(model->nodes[n].inputs[i], name) == 0)
        return true;
  for (size_t i = 0; i < model->num_outputs; ++i)
    if (strcmp(model->outputs[i].name, name) == 0)
      return true;
  return false;
}

/* Returns the attribute `name` of `node` when it has the kind `kind`, or
 * NULL. The reader fills only the payload of an attribute's declared kind,
 * so reading another kind's payload would read a NULL list. */
static const iq_onnx_attribute_t *attribute_of_kind(const iq_onnx_node_t *node, const char *name,
                                                    int kind) {
  const iq_onnx_attribute_t *attribute = iq_onnx_node_attribute(node, name);
  return attribute && attribute->kind == kind ? attribute : NULL;
}

/* A Constant node's value: `value` contains a tensor; the value_float,
 * value_int, value_floats and value_ints forms are small scalars and lists. */
static bool import_constant_node(importer_t *im, const iq_onnx_node_t *node, size_t index) {
  char label[320];
  node_label(node, label, sizeof label);
  MlirLocation location = node_location(im, node, index);
  MlirValue result;

  const iq_onnx_attribute_t *value = iq_onnx_node_attribute(node, "value");
  if (value && value->kind == IQ_ONNX_ATTR_TENSOR && value->tensor) {
    char store_name[512];
    snprintf(store_name, sizeof store_name, "%s", node->outputs[0]);
    if (!import_tensor(im, value->tensor, store_name, location, &result))
      return false;
    return value_map_put(&im->values, node->outputs[0], result) ||
           iq_error_set(im->error, im->model->path, label, NULL, "out of memory");
  }

  MlirAttribute dense = mlirAttributeGetNull();
  MlirType type = {NULL};
  const iq_onnx_attribute_t *attribute;
  if ((attribute = attribute_of_kind(node, "value_float", IQ_ONNX_ATTR_FLOAT))) {
    type = mlirRankedTensorTypeGet(0, NULL, mlirF32TypeGet(im->context), mlirAttributeGetNull());
    dense = mlirDenseElementsAttrFloatGet(type, 1, &attribute->f);
  } else if ((attribute = attribute_of_kind(node, "value_int", IQ_ONNX_ATTR_INT))) {
    type = mlirRankedTensorTypeGet(0, NULL, mlirIntegerTypeGet(im->context, 64),
                                   mlirAttributeGetNull());
    dense = mlirDenseElementsAttrInt64Get(type, 1, &attribute->i);
  } else if ((attribute = attribute_of_kind(node, "value_floats", IQ_ONNX_ATTR_FLOATS))) {
    int64_t size = (int64_t)attribute->count;
    type = mlirRankedTensorTypeGet(1, &size, mlirF32TypeGet(im->context), mlirAttributeGetNull());
    dense = mlirDenseElementsAttrFloatGet(type, (intptr_t)attribute->count, attribute->floats);
  } else if ((attribute = attribute_of_kind(node, "value_ints", IQ_ONNX_ATTR_INTS))) {
    int64_t size = (int64_t)attribute->count;
    type = mlirRankedTensorTypeGet(1, &size, mlirIntegerTypeGet(im->context, 64),
                                   mlirAttributeGetNull());
    dense = mlirDenseElementsAttrInt64Get(type, (intptr_t)attribute->count, attribute->ints);
  }
  if (mlirAttributeIsNull(dense))
    return iq_error_set(im->error, im->model->path, label,
                        "give the Constant a value, value_float, value_int, value_floats or "
                        "value_ints attribute",
                        "Constant without a value iq can import");
  MlirNamedAttribute named = iq_named(im->context, "value", dense);
  MlirOperation op = iq_build(&im->builder, "arith.constant", location, 0, NULL, 1, &type, 1, &named);
  if (mlirOperationIsNull(op))
    return iq_error_set(im->error, im->model->path, label, NULL, "cannot build the constant");
  return value_map_put(&im->values, node->outputs[0], iq_result(op, 0)) ||
         iq_error_set(im->error, im->model->path, label, NULL, "out of memory");
}

/* ---- Nodes --------------------------------------------------------------- */

static MlirValue no_value(importer_t *im) {
  if (mlirValueIsNull(im->no_value)) {
    MlirType none = mlirNoneTypeGet(im->context);
    MlirOperation op = iq_build(&im->builder, "onnx.NoValue", im->model_location, 0, NULL, 1,
                                &none, 0, NULL);
    im->no_value = iq_result(op, 0);
  }
  return im->no_value;
}

static bool import_node(importer_t *im, const iq_onnx_node_t *node, size_t index) {
  char label[320];
  node_label(node, label, sizeof label);
  const iq_onnx_op_info_t *info = iq_onnx_op_find(node->domain, node->op_type);
  if (!info)
    return iq_error_set(im->error, im->model->path, label,
                        "docs/onnx-import.md lists the ops iq imports; export the model with "
                        "those ops or file an issue for this one",
                        "iq cannot import op '%s' of domain '%s'", node->op_type,
                        *node->domain ? node->domain : "ai.onnx");
  /* Trailing omitted inputs are the same as absent ones. */
  size_t num_inputs = node->num_inputs;
  while (num_inputs > 0 && !*node->inputs[num_inputs - 1])
    --num_inputs;
  size_t num_outputs = node->num_outputs;
  if ((int)num_inputs < info->min_inputs ||
      (info->max_inputs >= 0 && (int)num_inputs > info->max_inputs))
    return iq_error_set(im->error, im->model->path, label, "check the model against the ONNX spec",
                        "has %zu inputs; %s takes %d to %d", num_inputs, node->op_type,
                        info->min_inputs, info->max_inputs);
  if ((int)num_outputs < info->min_outputs || (int)num_outputs > info->max_outputs)
    return iq_error_set(im->error, im->model->path, label, "check the model against the ONNX spec",
                        "has %zu outputs; %s has %d to %d", num_outputs, node->op_type,
                        info->min_outputs, info->max_outputs);
  /* Constants are dispatched only here, because the count checks above
   * guarantee the one output that import_constant_node reads. */
  if (op_is(node, "Constant") && !*node->domain)
    return import_constant_node(im, node, index);

  MlirValue operands[64];
  MlirType result_types[8];
  if (num_inputs > 64 || num_outputs > 8)
    return iq_error_set(im->error, im->model->path, label, NULL,
                        "has %zu inputs and %zu outputs; iq supports up to 64 and 8", num_inputs,
                        num_outputs);
  for (size_t i = 0; i < num_inputs; ++i) {
    if (!*node->inputs[i]) {
      operands[i] = no_value(im);
    } else if (!value_map_get(&im->values, node->inputs[i], &operands[i])) {
      return iq_error_set(im->error, im->model->path, label, NULL, "input '%s' is not defined",
                          node->inputs[i]);
    }
  }
  if (!infer_result_types(im, node, operands, num_inputs, result_types, num_outputs))
    return false;

  MlirNamedAttribute attributes[64];
  size_t num_attributes = 0;
  for (size_t i = 0; i < node->num_attributes && num_attributes < 64; ++i) {
    const iq_onnx_attribute_t *attribute = &node->attributes[i];
    MlirAttribute value = import_attribute(im->context, attribute);
    if (mlirAttributeIsNull(value))
      return iq_error_set(im->error, im->model->path, label,
                          "iq imports float, int, string, tensor, floats and ints attributes",
                          "attribute '%s' has a kind iq cannot import (%d)", attribute->name,
                          attribute->kind);
    attributes[num_attributes++] = iq_named(im->context, attribute->name, value);
  }

  char op_name[256];
  iq_onnx_op_name(node->domain, node->op_type, op_name, sizeof op_name);
  MlirOperation op = iq_build(&im->builder, op_name, node_location(im, node, index),
                              (intptr_t)num_inputs, operands, (intptr_t)num_outputs, result_types,
                              (intptr_t)num_attributes, attributes);
  if (mlirOperationIsNull(op))
    return iq_error_set(im->error, im->model->path, label, NULL, "cannot build the op");
  for (size_t i = 0; i < num_outputs; ++i)
    if (*node->outputs[i] && !value_map_put(&im->values, node->outputs[i], iq_result(op, (intptr_t)i)))
      return iq_error_set(im->error, im->model->path, label, NULL, "out of memory");
  return true;
}

/* ---- The function ------------------------------------------------------- */

/* Returns true when tensor.cast accepts a cast between the shapes of two
 * tensor types: either is unranked, or both have the same rank and every
 * pair of static dimensions is equal. */
static bool shapes_are_cast_compatible(MlirType a, MlirType b) {
  if (!mlirTypeIsARankedTensor(a) || !mlirTypeIsARankedTensor(b))
    return true;
  intptr_t rank = mlirShapedTypeGetRank(a);
  if (rank != mlirShapedTypeGetRank(b))
    return false;
  for (intptr_t d = 0; d < rank; ++d)
    if (!mlirShapedTypeIsDynamicDim(a, d) && !mlirShapedTypeIsDynamicDim(b, d) &&
        mlirShapedTypeGetDimSize(a, d) != mlirShapedTypeGetDimSize(b, d))
      return false;
  return true;
}

/* Returns `value` with the declared output type, through tensor.cast when
 * the import inferred a less precise one. */
static bool output_value(importer_t *im, const iq_onnx_value_info_t *info, MlirType declared,
                         MlirValue *value) {
  MlirType actual = mlirValueGetType(*value);
  if (mlirTypeEqual(actual, declared))
    return true;
  if (!mlirTypeIsATensor(actual) || !mlirTypeIsATensor(declared) ||
      !mlirTypeEqual(mlirShapedTypeGetElementType(actual), mlirShapedTypeGetElementType(declared)))
    return iq_error_set(im->error, im->model->path, info->name,
                        "fix the output's declared type in the graph",
                        "graph output is declared with an element type its producer does not have");
  /* mlirOperationCreate does not verify, so an incompatible cast would be
   * built and only fail verification later. */
  if (!shapes_are_cast_compatible(actual, declared))
    return iq_error_set(im->error, im->model->path, info->name,
                        "fix the output's declared shape in the graph",
                        "graph output's declared shape does not match its producer");
  MlirOperation cast = iq_build(&im->builder, "tensor.cast", im->model_location, 1, value, 1,
                                &declared, 0, NULL);
  if (mlirOperationIsNull(cast))
    return iq_error_set(im->error, im->model->path, info->name, NULL,
                        "cannot build the cast to the output's declared type");
  *value = iq_result(cast, 0);
  return true;
}

static bool build_function(importer_t *im, MlirModule module) {
  const iq_onnx_model_t *model = im->model;
  MlirContext c = im->context;
  size_t num_inputs = model->num_inputs, num_outputs = model->num_outputs;

  MlirType *input_types = calloc(num_inputs + 1, sizeof *input_types);
  MlirType *output_types = calloc(num_outputs + 1, sizeof *output_types);
  MlirAttribute *arg_attrs = calloc(num_inputs + 1, sizeof *arg_attrs);
  MlirAttribute *res_attrs = calloc(num_outputs + 1, sizeof *res_attrs);
  MlirLocation *arg_locations = calloc(num_inputs + 1, sizeof *arg_locations);
  MlirValue *results = calloc(num_outputs + 1, sizeof *results);
  bool ok = input_types && output_types && arg_attrs && res_attrs && arg_locations && results;
  if (!ok)
    iq_error_set(im->error, model->path, NULL, NULL, "out of memory");

  for (size_t i = 0; ok && i < num_inputs; ++i) {
    input_types[i] = value_info_type(im, &model->inputs[i]);
    arg_attrs[i] = value_attributes(im, &model->inputs[i]);
    arg_locations[i] = im->model_location;
    if (mlirTypeIsNull(input_types[i]))
      ok = iq_error_set(im->error, model->path, model->inputs[i].name, NULL,
                        "graph input has type %s, which iq cannot import",
                        iq_onnx_type_name(model->inputs[i].data_type));
  }
  for (size_t i = 0; ok && i < num_outputs; ++i) {
    output_types[i] = value_info_type(im, &model->outputs[i]);
    res_attrs[i] = value_attributes(im, &model->outputs[i]);
    if (mlirTypeIsNull(output_types[i]))
      ok = iq_error_set(im->error, model->path, model->outputs[i].name, NULL,
                        "graph output has type %s, which iq cannot import",
                        iq_onnx_type_name(model->outputs[i].data_type));
  }

  MlirOperation function = {NULL};
  if (ok) {
    MlirRegion body = mlirRegionCreate();
    MlirBlock block = mlirBlockCreate((intptr_t)num_inputs, input_types, arg_locations);
    mlirRegionAppendOwnedBlock(body, block);
    MlirType function_type = mlirFunctionTypeGet(c, (intptr_t)num_inputs, input_types,
                                                 (intptr_t)num_outputs, output_types);
    MlirNamedAttribute attributes[] = {
        iq_named(c, "sym_name", iq_string_attr(c, "forward")),
        iq_named(c, "function_type", mlirTypeAttrGet(function_type)),
        iq_named(c, "arg_attrs", mlirArrayAttrGet(c, (intptr_t)num_inputs, arg_attrs)),
        iq_named(c, "res_attrs", mlirArrayAttrGet(c, (intptr_t)num_outputs, res_attrs)),
    };
    MlirOperationState state =
        mlirOperationStateGet(mlirStringRefCreateFromCString("func.func"), im->model_location);
    mlirOperationStateAddAttributes(&state, 4, attributes);
    mlirOperationStateAddOwnedRegions(&state, 1, &body);
    function = mlirOperationCreate(&state);
    mlirBlockAppendOwnedOperation(mlirModuleGetBody(module), function);
    im->builder = (iq_builder_t){c, block, {NULL}};

    for (size_t i = 0; ok && i < num_inputs; ++i)
      ok = value_map_put(&im->values, model->inputs[i].name, mlirBlockGetArgument(block, (intptr_t)i)) ||
           iq_error_set(im->error, model->path, NULL, NULL, "out of memory");
  }

  for (size_t i = 0; ok && i < model->num_initializers; ++i) {
    const iq_onnx_tensor_t *tensor = &model->initializers[i];
    MlirValue value;
    if (!is_used(model, tensor->name))
      continue;
    ok = import_tensor(im, tensor, tensor->name, im->model_location, &value) &&
         (value_map_put(&im->values, tensor->name, value) ||
          iq_error_set(im->error, model->path, NULL, NULL, "out of memory"));
  }
  for (size_t n = 0; ok && n < model->num_nodes; ++n)
    ok = import_node(im, &model->nodes[n], n);

  for (size_t i = 0; ok && i < num_outputs; ++i) {
    if (!value_map_get(&im->values, model->outputs[i].name, &results[i]))
      ok = iq_error_set(im->error, model->path, model->outputs[i].name, NULL,
                        "graph output is not produced by any node, input or initializer");
    else
      ok = output_value(im, &model->outputs[i], output_types[i], &results[i]);
  }
  if (ok)
    iq_build(&im->builder, "func.return", im->model_location, (intptr_t)num_outputs, results, 0,
             NULL, 0, NULL);

  free(input_types);
  free(output_types);
  free(arg_attrs);
  free(res_attrs);
  free(arg_locations);
  free(results);
  return ok;
}

static MlirAttribute opsets_attr(importer_t *im) {
  MlirNamedAttribute entries[32];
  size_t count = 0;
  for (size_t i = 0; i < im->model->num_opsets && count < 32; ++i) {
    const char *domain = *im->model->opsets[i].domain ? im->model->opsets[i].domain : "ai.onnx";
    entries[count++] = iq_named(im->context, domain, iq_i64_attr(im->context, im->model->opsets[i].version));
  }
  return mlirDictionaryAttrGet(im->context, (intptr_t)count, entries);
}

MlirModule iq_onnx_import(MlirContext context, const iq_onnx_model_t *model,
                          const iq_onnx_import_options_t *options, iq_error_t **error) {
  importer_t im = {.context = context, .model = model, .options = options, .error = error};
  im.model_location = mlirLocationFileLineColGet(
      context, mlirStringRefCreateFromCString(model->path ? model->path : "<memory>"), 0, 0);
  if (!value_map_init(&im.values, model->num_nodes * 2 + model->num_initializers + 16)) {
    iq_error_set(error, model->path, NULL, NULL, "out of memory");
    value_map_free(&im.values);
    return (MlirModule){NULL};
  }
  im.store = iq_weight_store_writer_create(options->weight_store_path, error);
  if (!im.store) {
    value_map_free(&im.values);
    return (MlirModule){NULL};
  }

  MlirModule module = mlirModuleCreateEmpty(im.model_location);
  MlirOperation module_op = mlirModuleGetOperation(module);
  const char *source = model->path ? strrchr(model->path, '/') : NULL;
  source = source ? source + 1 : (model->path ? model->path : "<memory>");
  mlirOperationSetAttributeByName(module_op, mlirStringRefCreateFromCString("iq.weight_store"),
                                  iq_string_attr(context, options->weight_store_reference));
  mlirOperationSetAttributeByName(module_op, mlirStringRefCreateFromCString("iq.source"),
                                  iq_string_attr(context, source));
  mlirOperationSetAttributeByName(module_op, mlirStringRefCreateFromCString("iq.onnx_opsets"),
                                  opsets_attr(&im));

  bool ok = build_function(&im, module);
  value_map_free(&im.values);
  if (ok)
    ok = iq_weight_store_writer_finish(im.store, error);
  else
    iq_weight_store_writer_abandon(im.store);
  if (!ok) {
    mlirModuleDestroy(module);
    return (MlirModule){NULL};
  }
  return module;
}
