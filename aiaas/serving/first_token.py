"""A logits-only graph that computes the last layer for the first token alone.

A BERT-style classifier reads one token: its head takes the final hidden state of the
first token ([CLS]) through `Gather(axis=1, index 0)`. The exported graph still computes
every token's row in the last layer, and only the keys and values of that layer need all
of them. This rewrite walks up from the head's Gather through ops that work row by row
(elementwise maths, LayerNormalization and Softmax over other axes, the rows of a
MatMul, Transpose, a Reshape that keeps the leading axes, DynamicQuantizeLinear), clones
each with its input narrowed to the first row, and narrows with a `Gather` wherever a
full tensor is still needed by something else (the layer's keys and values, its residual
input). For MiniLM-L6 that removes ~83% of the last layer's work: 12-14% of a forward.

The result differs from the full graph only where dynamic int8 quantisation computes its
scale over fewer rows, so export judges it with the same accuracy guard as any lower
precision (registry/export/guard.py) and the runtime uses it only where that passed. A graph
without a first-token head (a headless encoder, mean pooling) is left alone: `None`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ROW_WISE_BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Pow", "Where", "Max", "Min"})
ROW_WISE_UNARY = frozenset(
    {
        "Cast",
        "Erf",
        "Sqrt",
        "Relu",
        "Tanh",
        "Sigmoid",
        "Neg",
        "Exp",
        "Log",
        "Abs",
        "Identity",
        "Gelu",
        "FastGelu",
    }
)
# Ops on small shape/scalar tensors that may be cloned unchanged when only the narrowed path uses them.
SHAPE_OPS = frozenset(
    {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Constant", "Slice", "ConstantOfShape", "Equal"}
    | ROW_WISE_BINARY
    | ROW_WISE_UNARY
)
_AS_IS = "as-is"  # an input the clone reads unchanged (weights, scales, broadcast masks)
_RESHAPE_TARGET = "reshape-target"
Axis = int | str  # an axis number, or _AS_IS / _RESHAPE_TARGET
_SUFFIX = "__first_token"


def first_token_graph(model: Any, *, output: str = "logits") -> tuple[Any, int] | None:
    """(a copy of `model` that only produces `output`, computing the layers after the last
    token-mixing step for the first token alone; number of nodes narrowed), or None when the
    graph has no first-token head to narrow. `model` is an onnx.ModelProto; it is not changed."""
    if output not in {o.name for o in model.graph.output}:
        return None
    model = _copy(model)
    graph = model.graph
    kept = [o for o in graph.output if o.name == output]
    del graph.output[:]
    graph.output.extend(kept)
    _drop_dead_nodes(graph)
    head = _first_token_gather(graph)
    if head is None:
        return None
    target = head.input[0]
    ranks = _ranks(model)
    region = _narrowable_region(graph, target, ranks)
    if not any(axis != _AS_IS for _, axis, _ in region.values()):
        return None
    narrowed = _rewrite(graph, region, target)
    _drop_dead_nodes(graph)
    return model, narrowed


def _copy(model: Any) -> Any:
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _constant_value(graph: Any, name: str) -> np.ndarray | None:
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] == name:
            for attr in node.attribute:
                if attr.name == "value":
                    return numpy_helper.to_array(attr.t)
    return None


def _first_token_gather(graph: Any) -> Any | None:
    """The head's read of the first token: Gather(axis=1) with the scalar index 0. With
    several (unusual), the one nearest the outputs (last in topological order) wins."""
    found = None
    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) != 2:
            continue
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        index = _constant_value(graph, node.input[1])
        if axis == 1 and index is not None and index.shape == () and int(index) == 0:
            found = node
    return found


def _ranks(model: Any) -> dict[str, int]:
    """Every tensor's rank, from ONNX shape inference on a copy without the weights' data
    (their dims are enough, and copying 20+ MB of weights through it took most of the time)."""
    import onnx
    from onnx import helper

    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    graph = light.graph
    graph.node.extend(model.graph.node)
    graph.input.extend(model.graph.input)
    graph.output.extend(model.graph.output)
    graph.input.extend(
        helper.make_tensor_value_info(init.name, init.data_type, list(init.dims))
        for init in model.graph.initializer
    )
    inferred = onnx.shape_inference.infer_shapes(light).graph
    ranks: dict[str, int] = {}
    for info in [*inferred.value_info, *inferred.input, *inferred.output]:
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            ranks[info.name] = len(tensor.shape.dim)
    return ranks


def _attr(node: Any, name: str, default: Any) -> Any:
    for attr in node.attribute:
        if attr.name == name:
            return list(attr.ints) if attr.ints else attr.i
    return default


def _input_axes(node: Any, axis: int | str, ranks: dict[str, int]) -> list[Axis] | None:
    """How each input must be narrowed so that output 0 comes out narrowed on `axis` (or
    unchanged, for _AS_IS); None when the op cannot be narrowed that way."""
    op = node.op_type
    if axis == _AS_IS:
        return [_AS_IS] * len(node.input) if op in SHAPE_OPS else None
    if not isinstance(axis, int):  # _RESHAPE_TARGET never reaches here (the region records it as _AS_IS)
        return None
    rank = ranks.get(node.output[0])
    if rank is None:
        return None
    if op in ROW_WISE_BINARY:
        axes: list[Axis] = []
        for name in node.input:
            if name not in ranks:
                return None
            shifted = axis - (rank - ranks[name])  # numpy broadcasting aligns the last axes
            axes.append(shifted if shifted >= 0 else _AS_IS)  # a size-1 axis narrows to itself
        return axes
    if op in ROW_WISE_UNARY or op == "DynamicQuantizeLinear":
        return [axis] + [_AS_IS] * (len(node.input) - 1)
    if op in ("Softmax", "LogSoftmax"):
        return [axis] if _attr(node, "axis", -1) % rank != axis else None
    if op == "LayerNormalization":
        if any(node.output[1:]) or axis >= _attr(node, "axis", -1) % rank:
            return None
        return [axis] + [_AS_IS] * (len(node.input) - 1)
    if op in ("MatMul", "MatMulInteger"):
        a_rank, b_rank = ranks.get(node.input[0]), ranks.get(node.input[1])
        if a_rank is None or b_rank is None or axis >= rank - 1:
            return None
        rest = [_AS_IS] * (len(node.input) - 2)
        if axis == rank - 2:  # rows of A
            return [axis - (rank - a_rank), _AS_IS, *rest]
        a_axis, b_axis = axis - (rank - a_rank), axis - (rank - b_rank)
        return [a_axis if a_axis >= 0 else _AS_IS, b_axis if b_axis >= 0 else _AS_IS, *rest]
    if op == "Transpose":
        perm = _attr(node, "perm", None)
        return [perm[axis]] if perm else None
    if op == "Reshape":  # assumed to keep axes 0..axis; the accuracy guard would catch otherwise
        return [axis, _RESHAPE_TARGET]
    return None


def _narrowable_region(graph: Any, target: str, ranks: dict[str, int]) -> dict[int, tuple[Any, Any, list[Axis]]]:
    """Walk up from `target` (narrowed on axis 1): a node joins when every consumer of its
    outputs has joined and they all want the same narrowing of it."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    wanted: dict[str, set[Axis]] = {target: {1}}
    region: dict[int, tuple[Any, Any, list[Axis]]] = {}
    for node in reversed(list(graph.node)):
        names = [name for name in node.output if name]
        if not any(name in wanted for name in names) or any(name in outputs for name in names):
            continue
        outside = any(
            id(c) not in region and name != target for name in names for c in consumers.get(name, [])
        )
        if outside:  # something else reads the full tensor: narrow it with a Gather instead
            continue
        rows = {axis for name in names for axis in wanted.get(name, set()) if axis != _AS_IS}
        if len(rows) > 1:
            continue
        if any(_AS_IS in wanted.get(name, ()) and len(wanted[name]) > 1 for name in names):
            continue  # one reader wants this tensor narrowed, another whole: keep it whole, gather a copy
        axis = rows.pop() if rows else _AS_IS
        axes = _input_axes(node, axis, ranks)
        if axes is None:
            continue
        region[id(node)] = (node, axis, axes)
        for name, input_axis in zip(node.input, axes, strict=True):
            if name:
                wanted.setdefault(name, set()).add(_AS_IS if input_axis == _RESHAPE_TARGET else input_axis)
    return region


def _rewrite(graph: Any, region: dict[int, tuple[Any, Any, list[Axis]]], target: str) -> int:
    from onnx import helper, numpy_helper

    index = "first_token_index" + _SUFFIX
    graph.initializer.append(numpy_helper.from_array(np.array([0], dtype=np.int64), index))
    renamed: dict[str, str] = {}
    narrowed_inputs: dict[tuple[str, int], str] = {}
    nodes: list[Any] = []

    def constant(name: str, value: list[int]) -> str:
        nodes.append(
            helper.make_node(
                "Constant",
                [],
                [name],
                name=name,
                value=numpy_helper.from_array(np.array(value, np.int64), name),
            )
        )
        return name

    def source(name: str, axis: Any) -> str:
        if not name or name in renamed:
            return renamed.get(name, name)
        if axis in (_AS_IS, _RESHAPE_TARGET):
            return name
        key = (name, axis)
        if key not in narrowed_inputs:  # a full tensor something else still needs: narrow a copy
            out = f"{name}{_SUFFIX}_axis{axis}"
            nodes.append(helper.make_node("Gather", [name, index], [out], name=out, axis=axis))
            narrowed_inputs[key] = out
        return narrowed_inputs[key]

    count = 0
    for node in list(graph.node):
        nodes.append(node)
        if id(node) not in region:
            continue
        _, axis, axes = region[id(node)]
        count += axis != _AS_IS
        inputs = [source(name, a) for name, a in zip(node.input, axes, strict=True)]
        if node.op_type == "Reshape":
            # Keep the narrowed input's own leading axes; take the rest of the target as it was.
            base = (node.name or node.output[0]) + _SUFFIX
            nodes.append(helper.make_node("Shape", [inputs[0]], [base + "_shape"], name=base + "_shape"))
            head = base + "_head"
            nodes.append(
                helper.make_node(
                    "Slice",
                    [base + "_shape", constant(base + "_zero", [0]), constant(base + "_keep", [axis + 1])],
                    [head],
                    name=head,
                )
            )
            tail = base + "_tail"
            nodes.append(
                helper.make_node(
                    "Slice",
                    [inputs[1], base + "_keep", constant(base + "_end", [np.iinfo(np.int64).max])],
                    [tail],
                    name=tail,
                )
            )
            nodes.append(
                helper.make_node("Concat", [head, tail], [base + "_target"], name=base + "_target", axis=0)
            )
            inputs = [inputs[0], base + "_target"]
        outputs = []
        for name in node.output:
            if name:
                renamed[name] = name + _SUFFIX
            outputs.append(renamed.get(name, ""))
        clone = helper.make_node(
            node.op_type, inputs, outputs, name=(node.name or node.output[0]) + _SUFFIX, domain=node.domain
        )
        clone.attribute.extend(node.attribute)
        nodes.append(clone)
    for node in nodes:  # the head now reads the narrowed state
        if not node.name.endswith(_SUFFIX) and target in renamed:
            for i, name in enumerate(node.input):
                if name == target:
                    node.input[i] = renamed[target]
    del graph.node[:]
    graph.node.extend(nodes)
    return count


def _drop_dead_nodes(graph: Any) -> None:
    needed = {o.name for o in graph.output}
    live = []
    for node in reversed(list(graph.node)):
        if any(name in needed for name in node.output):
            live.append(node)
            needed.update(name for name in node.input if name)
    live.reverse()
    del graph.node[:]
    graph.node.extend(live)
    initializers = [init for init in graph.initializer if init.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
