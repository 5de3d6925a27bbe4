"""Rewrite an ONNX LLaMA graph so that lm_head reads the embedding table
through Transpose, like the tied SmolLM2 graph of
bench/smollm2/build_onnx.py. The separate lm_head initializer is dropped.

Usage: tie_lm_head.py IN.onnx OUT.onnx
"""
import sys

import onnx
from onnx import helper


def main():
    model = onnx.load(sys.argv[1])
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    head = next(node for node in graph.node if node.output[0] == graph.output[0].name)
    embedding = next(node.input[0] for node in graph.node
                     if node.op_type == "Gather" and node.input[0] in initializers)
    if head.op_type != "MatMul" or head.input[1] not in initializers:
        raise SystemExit(f"tie_lm_head: {sys.argv[1]}: lm_head is not a MatMul on an initializer")

    untied = head.input[1]
    head.input[1] = "/lm_head/Transpose_output_0"
    transpose = helper.make_node("Transpose", [embedding], [head.input[1]], name="/lm_head/Transpose",
                                 perm=[1, 0])
    graph.node.insert(list(graph.node).index(head), transpose)
    graph.initializer.remove(initializers[untied])
    onnx.checker.check_model(model)
    onnx.save(model, sys.argv[2])


if __name__ == "__main__":
    main()
