"""Fold the spec's normalisation into the model, so the host sends uint8 pixels.

Why: between preprocessing and the engine, every image crosses the host->device copy, and
with a shared engine (``--model_copies``) a process boundary too. As float32 HWC that is
4 bytes a channel; as uint8 it is one. This prefixes the ONNX graph with what
``transforms.preprocess.to_tensor`` does after cropping: cast to float, channel order,
``x * scale``, ``(x - mean) / std``, layout and dtype. The model then takes uint8 NHWC RGB,
and the host's spec becomes ``wire_spec(spec)``: the same geometry and JPEG round-trip,
raw pixels out. Every op (Cast, Gather, Mul, Sub, Div, Transpose) is one TensorRT 8.6's
ONNX parser and ONNX Runtime both take.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from transforms.runtime.errors import ModelLoadError
from transforms.spec import ModelSpec

WIRE_INPUT = "pixels_uint8"


def wire_spec(spec: ModelSpec) -> ModelSpec:
    """What the host produces for a folded model: the spec's geometry, uint8 NHWC RGB."""
    return dataclasses.replace(spec, input_name=WIRE_INPUT, layout="NHWC",
                               channel_order="RGB", scale=1.0, mean=(0.0, 0.0, 0.0),
                               std=(1.0, 1.0, 1.0), input_dtype="uint8")


def fold_normalisation(model_bytes: bytes, spec: ModelSpec, source: str = "<model>") -> bytes:
    """The ONNX model with a uint8 NHWC input ``WIRE_INPUT`` feeding ``spec``'s input."""
    try:
        import onnx
        from onnx import TensorProto, helper, numpy_helper
    except ImportError as exc:
        raise ModelLoadError("folding the preprocessing needs the onnx package "
                             "(pip install onnx)") from exc
    model = onnx.load_from_string(model_bytes)
    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    target = ([i for i in inputs if i.name == spec.input_name] if spec.input_name
              else inputs if len(inputs) == 1 else [])
    if not target:
        raise ModelLoadError(f"{source}: expected one image input "
                             f"{spec.input_name or ''} to fold into, the model has "
                             f"{[i.name for i in inputs]}")
    original = target[0]
    dtype = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16,
             "uint8": TensorProto.UINT8}[spec.input_dtype]
    if original.type.tensor_type.elem_type != dtype:
        raise ModelLoadError(f"{source}: input '{original.name}' expected dtype "
                             f"{spec.input_dtype} as the spec says, the model declares "
                             f"{TensorProto.DataType.Name(original.type.tensor_type.elem_type)}")
    name = original.name
    p = f"fold_{WIRE_INPUT}"
    consts = {
        f"{p}_order": np.array([2, 1, 0], np.int64),
        f"{p}_scale": np.array(spec.scale, np.float32),
        f"{p}_mean": np.asarray(spec.mean, np.float32),
        f"{p}_std": np.asarray(spec.std, np.float32),
    }
    nodes = [helper.make_node("Cast", [WIRE_INPUT], [f"{p}_f"], to=TensorProto.FLOAT)]
    last = f"{p}_f"

    def add(op: str, inputs_: list, out: str, **attrs) -> None:
        nonlocal last
        nodes.append(helper.make_node(op, inputs_, [out], **attrs))
        last = out

    if spec.channel_order == "BGR":
        add("Gather", [last, f"{p}_order"], f"{p}_bgr", axis=3)
    if spec.scale != 1.0:
        add("Mul", [last, f"{p}_scale"], f"{p}_scaled")
    if any(m != 0.0 for m in spec.mean):
        add("Sub", [last, f"{p}_mean"], f"{p}_centred")
    if any(s != 1.0 for s in spec.std):
        add("Div", [last, f"{p}_std"], f"{p}_normed")
    if spec.layout == "NCHW":
        add("Transpose", [last], f"{p}_nchw", perm=[0, 3, 1, 2])
    nodes.append(helper.make_node("Cast", [last], [name], to=dtype))
    batch = original.type.tensor_type.shape.dim[0]
    wire = helper.make_tensor_value_info(
        WIRE_INPUT, TensorProto.UINT8,
        [batch.dim_param or (batch.dim_value or "N"), spec.height, spec.width, 3])
    graph.input.remove(original)
    graph.input.insert(0, wire)
    for cname, value in consts.items():
        graph.initializer.append(numpy_helper.from_array(value, cname))
    prefix = list(nodes)
    rest = list(graph.node)
    del graph.node[:]
    graph.node.extend(prefix + rest)
    onnx.checker.check_model(model)
    return model.SerializeToString()
