"""The cheaper precision candidates of an fp32 graph: dynamic int8 and bf16 MatMuls.

Each candidate is written next to fp32, then judged by the accuracy guard through the
`Trial` (guard.py), which records the verdict; the pipeline later keeps only the chosen file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from aiaas.registry.export.guard import Trial
from aiaas.serving.machine import has_bf16, has_int8_dot_product, ort_bf16_matmul_error

logger = logging.getLogger(__name__)


def try_int8(trial: Trial, fp32_path: Path, features: dict) -> None:
    """Dynamic int8, per-channel weights. If the full graph fails the guard, retry with the
    down-projections (weights wider in than out, fed by GELU outputs with large outliers)
    left in fp32: measured on MiniLM-L6 this lifts mean cosine to fp32 from 0.989 to 0.994
    for ~20% of the int8 speed-up."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Without VNNI/AMX, u8*s8 products go through an instruction that can saturate;
    # 7-bit weights ("reduce_range") avoid that at a small accuracy cost.
    full_range = has_int8_dot_product(features)
    path = trial.out_dir / "model.int8.onnx"
    runtime = trial.meta["runtime"]
    for recipe, exclude in (("all_weights", []), ("keep_down_proj_fp32", _down_projections(fp32_path))):
        quantize_dynamic(
            fp32_path,
            path,
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=not full_range,
            op_types_to_quantize=["MatMul", "Gather"],
            nodes_to_exclude=exclude,
        )
        runtime["files"]["int8"] = path.name
        runtime["requires"]["int8"] = ["int8_dot_product"] if full_range else []
        decision = trial.judge("int8", path)
        attempts = trial.candidates.get("int8", {}).get("attempts", [])
        attempts.append({"recipe": recipe, **decision.to_dict()})
        trial.candidates["int8"] = {
            "recipe": recipe,
            "per_channel": True,
            "reduce_range": not full_range,
            "fp32_nodes": len(exclude),
            **decision.to_dict(),
            "attempts": attempts,
        }
        logger.info("int8 %s: %s", recipe, decision.reason)
        if decision.accepted:
            return


def try_bf16(trial: Trial, fp32_path: Path, features: dict) -> None:
    if not has_bf16(features):
        trial.candidates["bf16"] = {
            "accepted": False,
            "reason": "this CPU has neither AVX512-BF16 nor AMX-BF16",
        }
        return
    kernel_error = ort_bf16_matmul_error()
    if kernel_error:
        trial.candidates["bf16"] = {"accepted": False, "reason": kernel_error}
        return
    import onnx

    path = trial.out_dir / "model.bf16.onnx"
    onnx.save(convert_matmul_weights_to_bf16(onnx.load(str(fp32_path))), str(path))
    trial.meta["runtime"]["files"]["bf16"] = path.name
    trial.candidates["bf16"] = trial.judge("bf16", path).to_dict()


def convert_matmul_weights_to_bf16(model):  # -> onnx.ModelProto
    """Store MatMul weights as bf16 and run those MatMuls in bf16, casting activations in
    and results back to fp32, so every other op keeps its fp32 kernel."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    new_nodes = []
    for node in graph.node:
        weight = next((name for name in node.input if name in inits), None)
        if node.op_type != "MatMul" or weight is None or inits[weight].data_type != TensorProto.FLOAT:
            new_nodes.append(node)
            continue
        activation = next(name for name in node.input if name != weight)
        values = numpy_helper.to_array(inits[weight]).astype(np.float32)
        # bf16 = the top 16 bits of fp32, rounded to nearest even.
        bits = values.view(np.uint32)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        bf16 = helper.make_tensor(
            weight + "_bf16", TensorProto.BFLOAT16, values.shape, rounded.tobytes(), raw=True
        )
        graph.initializer.append(bf16)
        cast_in = helper.make_node(
            "Cast", [activation], [activation + "_bf16_" + node.name], to=TensorProto.BFLOAT16
        )
        inputs = [cast_in.output[0] if name == activation else bf16.name for name in node.input]
        matmul = helper.make_node("MatMul", inputs, [node.output[0] + "_bf16"], name=node.name)
        cast_out = helper.make_node("Cast", [matmul.output[0]], list(node.output), to=TensorProto.FLOAT)
        new_nodes.extend([cast_in, matmul, cast_out])
    del graph.node[:]
    graph.node.extend(new_nodes)
    used = {name for node in graph.node for name in node.input}
    keep = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    onnx.checker.check_model(model)
    return model


def _down_projections(fp32_path: Path) -> list[str]:
    """MatMul nodes whose weight maps a wider input to a narrower output (FFN output dense)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(fp32_path))
    shapes = {init.name: numpy_helper.to_array(init).shape for init in model.graph.initializer}
    found = []
    for node in model.graph.node:
        if node.op_type != "MatMul":
            continue
        for name in node.input:
            shape = shapes.get(name)
            if shape is not None and len(shape) == 2 and shape[0] > shape[1]:
                found.append(node.name)
    return found
