"""Where a parity error comes from: every op of the exported graph compared with PyTorch's layer outputs.

The converters rename everything (TFLite tensors are called ``model_24/tf.math.add_4/Add``), so ops are matched
to PyTorch modules by value: each exported op output is compared with every recorded PyTorch activation of the
same shape, and the closest one names the op. The first op whose closest PyTorch activation is far off is where
the error starts: op 0 means the graph input (channel order, layout, normalisation); a DEPTH_TO_SPACE after
matching convolutions means the pixel-shuffle order.
"""

from __future__ import annotations

import os

import numpy as np
import torch

# Relative error (max |diff| / max |PyTorch|) above which an op output no longer matches any PyTorch activation.
TOLERANCE = 1e-2


def torch_activations(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[str, np.ndarray]]:
    """(module name, NCHW output) of every leaf module, the model's input and its output, in call order."""
    acts: list[tuple[str, np.ndarray]] = [("(input)", x.numpy())]
    handles = []
    for name, mod in model.named_modules():
        if name and not list(mod.children()):
            handles.append(mod.register_forward_hook(
                lambda m, i, o, name=name: acts.append((name, o.detach().float().numpy()))
                if isinstance(o, torch.Tensor) else None))
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        for h in handles:
            h.remove()
    acts.append(("(output)", y.numpy()))
    return acts


def tflite_activations(path: str | os.PathLike, x_nchw: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(op name, output as NCHW) of every op of a .tflite graph, in execution order."""
    # deferred: LiteRT loads only where a .tflite file is run
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    inp = it.get_input_details()[0]
    it.set_tensor(inp["index"], np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1), dtype=inp["dtype"]))
    it.invoke()
    out = []
    for d in it._get_ops_details():
        t = it.get_tensor(int(d["outputs"][0])).astype(np.float32)
        out.append((d["op_name"], t.transpose(0, 3, 1, 2) if t.ndim == 4 else t))
    return out


def onnx_activations(path: str | os.PathLike, x_nchw: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """(node name, output) of every node of an ONNX graph, in graph order."""
    # deferred: onnx (1-2 s at import) loads only in a process that exports
    import onnx

    # deferred: ONNX Runtime loads only where an ONNX file is run
    import onnxruntime as ort

    proto = onnx.load(str(path))
    nodes = [n for n in proto.graph.node if n.op_type != "Constant"]
    known = {o.name for o in proto.graph.output}
    for n in nodes:
        if n.output[0] not in known:
            proto.graph.output.append(onnx.ValueInfoProto(name=n.output[0]))
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    values = dict(zip(names, sess.run(None, {sess.get_inputs()[0].name: x_nchw})))
    return [(f"{n.op_type} {n.name}", np.asarray(values[n.output[0]], np.float32)) for n in nodes]


def _closest(a: np.ndarray, refs: list[tuple[str, np.ndarray]]) -> tuple[str | None, float]:
    best: tuple[str | None, float] = (None, float("inf"))
    for name, r in refs:
        if r.shape == a.shape:
            err = float(np.max(np.abs(r - a)) / (np.max(np.abs(r)) + 1e-6))
            if err < best[1]:
                best = (name, err)
    return best


def locate(reference: list[tuple[str, np.ndarray]], exported: list[tuple[str, np.ndarray]],
           max_ops: int = 80) -> dict:
    """Per-op comparison and the first op whose output matches no PyTorch activation within TOLERANCE."""
    table, first = [], None
    for i, (op, a) in enumerate(exported):
        name, err = _closest(a, reference)
        if len(table) < max_ops:
            table.append({"op": i, "type": op, "shape": list(a.shape), "closest_pytorch": name,
                          "rel_error": None if name is None else round(err, 6)})
        if first is None and name is not None and err > TOLERANCE:
            first = {"op": i, "type": op, "shape": list(a.shape), "closest_pytorch": name, "rel_error": err}
    return {"first_bad_op": first, "ops": table, "tolerance": TOLERANCE}


def describe(found: dict) -> str:
    """One clause for the refusal message: which op the error starts at and what that usually means."""
    first = found.get("first_bad_op")
    if not found.get("ops"):
        return "no exported op could be matched to a PyTorch layer"
    if first is None:
        return "every op output matches a PyTorch activation within 1%: the difference is accumulated rounding"
    where = f"error starts at {found.get('graph', 'graph')} op {first['op']} ({first['type']}, nearest PyTorch layer {first['closest_pytorch']}, " \
            f"{100 * first['rel_error']:.0f}% off)"
    if found.get("ops") and first["op"] == found["ops"][0]["op"]:
        return where + ": the first layer already differs, so the graph reads its input differently " \
            "(channel order or layout)"
    if "DEPTH_TO_SPACE" in first["type"] or "DepthToSpace" in first["type"]:
        return where + ": the pixel-shuffle channel order differs (CRD vs DCR)"
    return where


def module_of(onnx_node_name: str) -> str:
    """PyTorch module path of an ONNX node named by torch.onnx.export (``/blocks/blocks.0/conv/Conv`` -> ``blocks.0.conv``)."""
    path: list[str] = []
    for comp in onnx_node_name.split(" ", 1)[-1].strip("/").split("/")[:-1]:
        if path and comp.startswith(path[-1] + "."):  # a container's child is scoped "blocks/blocks.0"
            path[-1] = comp
        else:
            path.append(comp)
    return ".".join(path)


def locate_export(model: torch.nn.Module, x: torch.Tensor, onnx_path: str | os.PathLike,
                  tflite_path: str | os.PathLike | None = None) -> dict:
    """Locate a parity error: ONNX nodes against the PyTorch layers they were traced from, then (when ONNX
    agrees with PyTorch) every TFLite op against the ONNX and PyTorch activations."""
    ref = torch_activations(model, x)
    onnx_acts = onnx_activations(onnx_path, x.numpy())
    by_module: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, a in ref:
        by_module.setdefault(name, []).append((name, a))
    table, first = [], None
    for i, (node, a) in enumerate(onnx_acts):
        cands = by_module.get(module_of(node))
        if not cands:
            continue
        name, err = _closest(a, cands)
        if name is None:
            continue
        table.append({"op": i, "type": node, "shape": list(a.shape), "closest_pytorch": name, "rel_error": round(err, 6)})
        if first is None and err > TOLERANCE:
            first = {"op": i, "type": node, "shape": list(a.shape), "closest_pytorch": name, "rel_error": err}
    found = {"graph": "onnx", "first_bad_op": first, "ops": table[:80], "tolerance": TOLERANCE}
    if first is None and tflite_path is not None:
        found = {"graph": "tflite", **locate(ref + onnx_acts, tflite_activations(tflite_path, x.numpy()))}
    return found
