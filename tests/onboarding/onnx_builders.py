"""Small ONNX graphs built with ``onnx.helper`` for the onboarding tests: a valid one and one per
way a model can be unfit for the pools."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

BATCH = "batch"


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def linear(*, in_type: int = TensorProto.FLOAT, out_type: int = TensorProto.FLOAT,
           in_shape: list | None = None, out_shape: list | None = None, opset: int = 17,
           out_name: str = "y") -> onnx.ModelProto:
    """y = relu(x @ W + b), W 4x3, plus ``label`` = argmax(y) as int64 [batch, 1]."""
    w = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0, "W")
    b = numpy_helper.from_array(np.array([0.1, -0.2, 0.3], dtype=np.float32), "B")
    nodes = []
    x_name = "x"
    if in_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["x"], ["x_f"], to=TensorProto.FLOAT))
        x_name = "x_f"
    nodes += [helper.make_node("MatMul", [x_name, "W"], ["xw"]), helper.make_node("Add", ["xw", "B"], ["pre"]),
              helper.make_node("Relu", ["pre"], ["act"])]
    if out_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["act"], [out_name], to=out_type))
    else:
        nodes.append(helper.make_node("Identity", ["act"], [out_name]))
    nodes.append(helper.make_node("ArgMax", ["act"], ["label"], axis=1, keepdims=1))
    graph = helper.make_graph(
        nodes, "linear",
        [helper.make_tensor_value_info("x", in_type, in_shape if in_shape is not None else [BATCH, 4])],
        [helper.make_tensor_value_info(out_name, out_type, out_shape if out_shape is not None else [BATCH, 3]),
         helper.make_tensor_value_info("label", TensorProto.INT64, [BATCH, 1])],
        [w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def batch_dependent() -> onnx.ModelProto:
    """y = x - mean over the batch: each row's answer depends on the others in its batch."""
    axes = numpy_helper.from_array(np.array([0], dtype=np.int64), "axes")
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x", "axes"], ["m"], keepdims=1), helper.make_node("Sub", ["x", "m"], ["y"])],
        "batchdep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [BATCH, 4])], [axes])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def sequence_output() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("SequenceConstruct", ["x"], ["seq"])], "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, 4])],
        [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, [BATCH, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def custom_domain() -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MagicOp", ["x"], ["y"], domain="com.example")], "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [BATCH, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)],
                             ir_version=8)


def dangling_input() -> onnx.ModelProto:
    """A node reads a tensor nothing produces: onnx.checker rejects it."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "nowhere"], ["y"])], "dangling",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [BATCH, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [BATCH, 4])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def tree_ensemble() -> onnx.ModelProto:
    """A real scikit-learn decision tree on load_digits via skl2onnx (ai.onnx.ml), outputs as tensors."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_digits
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_digits(return_X_y=True)
    clf = DecisionTreeClassifier(max_depth=8, random_state=0).fit(x.astype(np.float32), y)
    return to_onnx(clf, x[:1].astype(np.float32), options={id(clf): {"zipmap": False}},
                   target_opset={"": 17, "ai.onnx.ml": 3})


def tiny_image_classifier(classes: int = 4, side: int = 16) -> onnx.ModelProto:
    """image float [batch, 3, side, side] -> 1x1 conv to ``classes`` channels, global average pool,
    softmax, top-2: ``scores`` float [batch, 2] and ``class_ids`` int64 [batch, 2]."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((classes, 3, 1, 1)).astype(np.float32), "W")
    k = numpy_helper.from_array(np.array([2], dtype=np.int64), "K")
    shape = numpy_helper.from_array(np.array([0, classes], dtype=np.int64), "S")
    nodes = [helper.make_node("Conv", ["image", "W"], ["conv"]),
             helper.make_node("GlobalAveragePool", ["conv"], ["pooled"]),
             helper.make_node("Reshape", ["pooled", "S"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
             helper.make_node("TopK", ["probs", "K"], ["scores", "class_ids"], axis=1)]
    graph = helper.make_graph(
        nodes, "tiny_image",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [BATCH, 3, side, side])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [BATCH, 2]),
         helper.make_tensor_value_info("class_ids", TensorProto.INT64, [BATCH, 2])],
        [w, k, shape])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
