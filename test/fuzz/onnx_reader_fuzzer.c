/* libFuzzer target for the ONNX reader: any byte string must load or be
 * rejected with an error, without crashing, leaking or undefined behavior.
 * Built by scripts/fuzz-onnx.sh, not by CMake. */
#include <stddef.h>
#include <stdint.h>

#include "iq/onnx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  iq_error_t *error = NULL;
  /* No base folder: external data is rejected, so the fuzzer never reads
   * files named by its inputs. */
  iq_onnx_model_t *model = iq_onnx_model_load_buffer(data, size, "fuzz.onnx", NULL, &error);
  if (model != NULL) {
    /* Touch what importers read, so sanitizers see bad pointers. */
    volatile uint64_t sink = 0;
    for (size_t i = 0; i < model->num_initializers; ++i) {
      const iq_onnx_tensor_t *tensor = &model->initializers[i];
      if (tensor->byte_size > 0) {
        sink += tensor->data[0] + tensor->data[tensor->byte_size - 1];
      }
      sink += iq_onnx_model_find_initializer(model, tensor->name) != NULL;
    }
    for (size_t i = 0; i < model->num_nodes; ++i) {
      const iq_onnx_node_t *node = &model->nodes[i];
      for (size_t j = 0; j < node->num_inputs; ++j) {
        sink += (uint8_t)node->inputs[j][0];
      }
      for (size_t j = 0; j < node->num_attributes; ++j) {
        const iq_onnx_attribute_t *attribute = &node->attributes[j];
        sink += iq_onnx_node_attribute(node, attribute->name) != NULL;
        if (attribute->kind == IQ_ONNX_ATTR_STRING) {
          sink += (uint8_t)attribute->s[attribute->s_length];
        }
      }
    }
    for (size_t i = 0; i < model->num_outputs; ++i) {
      const iq_onnx_value_info_t *value = &model->outputs[i];
      for (long d = 0; d < value->rank; ++d) {
        sink += (uint64_t)value->dims[d];
      }
    }
    sink += (uint64_t)iq_onnx_model_opset(model, "ai.onnx");
    (void)sink;
    iq_onnx_model_destroy(model);
  }
  iq_error_destroy(error);
  return 0;
}
