"""Static-shape ONNX export; the pixel shuffle becomes a DCR DepthToSpace by permuting the conv that feeds it.

PyTorch exports ``pixel_shuffle`` as ``DepthToSpace(mode=CRD)``; TFLite only has DCR, so converters insert GATHER
or 6-D RESHAPE/TRANSPOSE chains that mobile GPUs handle badly. Reordering the producing conv's output channels
from ``c*r*r + by*r + bx`` to ``(by*r + bx)*C + c`` and switching the node to DCR gives the same image.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from isp_search.models.registry import BackboneSpec

if TYPE_CHECKING:
    import onnx

OPSET = 17


def example_input(spec: BackboneSpec, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A random normalised input for a full RAW/RGB size of ``height`` x ``width`` (NCHW)."""
    g = torch.Generator().manual_seed(seed)
    if spec.input_layout == "packed":
        return torch.rand(1, 4, height // 2, width // 2, generator=g)
    return torch.rand(1, 3, height, width, generator=g)


def dcr_permutation(channels: int, r: int = 2) -> np.ndarray:
    """Index array ``perm`` such that ``new[k] = old[perm[k]]`` turns a CRD-ordered conv output into DCR order."""
    c_out = channels // (r * r)
    return np.array([c * r * r + by * r + bx for by in range(r) for bx in range(r) for c in range(c_out)])


def _producer(graph: onnx.GraphProto, tensor: str) -> onnx.NodeProto | None:
    return next((n for n in graph.node if tensor in n.output), None)


def fold_crd_to_dcr(model: onnx.ModelProto) -> int:
    """Rewrite every CRD DepthToSpace fed (through element-wise activations) by a Conv. Returns how many."""
    # deferred: onnx (1-2 s at import) loads only in a process that exports; a trial imports this module always
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    folded = 0
    for node in graph.node:
        if node.op_type != "DepthToSpace":
            continue
        mode = next((a for a in node.attribute if a.name == "mode"), None)
        if mode is None or mode.s.decode() != "CRD":
            continue
        block = next(a.i for a in node.attribute if a.name == "blocksize")
        prod = _producer(graph, node.input[0])
        while prod is not None and prod.op_type in ("Relu", "Tanh", "Sigmoid", "Clip", "LeakyRelu"):
            prod = _producer(graph, prod.input[0])
        if prod is None or prod.op_type != "Conv":
            raise RuntimeError("DepthToSpace is not fed by a Conv: cannot fold CRD into DCR")
        w = numpy_helper.to_array(inits[prod.input[1]])
        perm = dcr_permutation(w.shape[0], block)
        inits[prod.input[1]].CopyFrom(numpy_helper.from_array(w[perm], prod.input[1]))
        if len(prod.input) > 2:
            b = numpy_helper.to_array(inits[prod.input[2]])
            inits[prod.input[2]].CopyFrom(numpy_helper.from_array(b[perm], prod.input[2]))
        mode.s = b"DCR"
        folded += 1
    return folded


def export_onnx(model: nn.Module, spec: BackboneSpec, path: str | os.PathLike, height: int, width: int,
                fold_dcr: bool = True) -> dict:
    """Export ``model`` at a static shape; returns facts for export.json (op types, folds)."""
    # deferred: onnx (1-2 s at import) loads only in a process that exports; a trial imports this module always
    import onnx

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    x = example_input(spec, height, width)
    model = model.eval().cpu()
    with torch.no_grad():
        torch.onnx.export(model, (x,), str(p), input_names=["raw"], output_names=["rgb"], opset_version=OPSET,
                          dynamo=False, do_constant_folding=True)
    proto = onnx.load(str(p))
    folded = fold_crd_to_dcr(proto) if fold_dcr else 0
    onnx.checker.check_model(proto)
    onnx.save(proto, str(p))
    return {"opset": OPSET, "dcr_folds": folded, "ops": sorted({n.op_type for n in proto.graph.node}),
            "input_shape": list(x.shape)}
