"""Export a :class:`ScoringModel` to ONNX: the whole scorer, preprocessing included."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from doohable.model.runtime import RESIZE_POLICY, load_scorer
from doohable.model.scorer import ScoringModel

OPSET = 17


class _Exported(nn.Module):
    def __init__(self, model: ScoringModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.forward_uint8_nhwc(image)


def export_onnx(
    model: ScoringModel, path: str | Path, *, name: str, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to ``path`` as ONNX (opset 17, dynamic batch).

    Input ``image``: uint8 (N, S, S, 3) RGB; output ``score``: float32 (N,) on ``model.scale``.
    metadata_props: name, input_size, scale (JSON), resize_policy, backbone, head, tta_flip,
    plus ``extra`` (each value JSON-encoded unless it is a string).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wrapper = _Exported(model.cpu().eval()).eval()
    s = model.input_size
    dummy = torch.zeros(1, s, s, 3, dtype=torch.uint8)
    with torch.no_grad():
        torch.onnx.export(
            wrapper,
            (dummy,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["image"],
            output_names=["score"],
            dynamic_axes={"image": {0: "N"}, "score": {0: "N"}},
        )
    proto = onnx.load(str(path))
    meta = {
        "name": name,
        "input_size": str(s),
        "scale": json.dumps(list(model.scale)),
        "resize_policy": RESIZE_POLICY,
        "backbone": model.backbone.name,
        "head": model.head.kind,
        "tta_flip": json.dumps(model.tta_flip),
    }
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(path))
    return path


def max_abs_diff(model: ScoringModel, path: str | Path, batch: np.ndarray) -> float:
    """Largest |ONNX - PyTorch| score over a uint8 (N, S, S, 3) batch."""
    with torch.no_grad():
        ref = model.cpu().eval().forward_uint8_nhwc(torch.from_numpy(batch)).numpy()
    got = load_scorer(path).score(batch)
    return float(np.max(np.abs(ref - got)))


def ensemble_onnx(
    paths: list[str | Path], out: str | Path, *, name: str, extra: dict[str, Any] | None = None
) -> Path:
    """Merge exported scorers (same input size and scale) into one graph whose score is their mean.

    The members run side by side on the shared ``image`` input; metadata comes from the first
    member, with ``members`` listing the originals and ``extra`` added.
    """
    from onnx import compose, helper

    protos = [onnx.load(str(p)) for p in paths]
    metas = [{m.key: m.value for m in p.metadata_props} for p in protos]
    if len({(m["input_size"], m["scale"]) for m in metas}) != 1:
        raise ValueError("ensemble members must share input_size and scale")
    nodes, inits, outs = [], [], []
    for i, proto in enumerate(protos):
        g = compose.add_prefix(proto, prefix=f"m{i}_").graph
        for node in g.node:  # feed every member from the one shared input
            node.input[:] = ["image" if x == f"m{i}_image" else x for x in node.input]
        nodes += list(g.node)
        inits += list(g.initializer)
        outs.append(f"m{i}_score")
    nodes.append(helper.make_node("Sum", outs, ["score_sum"]))
    inits.append(helper.make_tensor("inv_n", onnx.TensorProto.FLOAT, [], [1.0 / len(protos)]))
    nodes.append(helper.make_node("Mul", ["score_sum", "inv_n"], ["score"]))
    first = protos[0].graph
    graph = helper.make_graph(nodes, f"{name}_ensemble", [first.input[0]], [first.output[0]], inits)
    model = helper.make_model(graph, opset_imports=protos[0].opset_import, ir_version=protos[0].ir_version)
    meta = {
        **metas[0],
        "name": name,
        "members": json.dumps([Path(p).name for p in paths]),
        "backbone": "+".join(m["backbone"] for m in metas),
    }
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out
