"""Export a :class:`ScoringModel` to ONNX: the whole scorer, preprocessing included."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from doohable.model.photo import SCALE, PhotoScorer
from doohable.model.runtime import RESIZE_POLICY, load_scorer
from doohable.model.scorer import ScoringModel

OPSET = 17


class _Exported(nn.Module):
    def __init__(self, model: ScoringModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model.forward_uint8_nhwc(image)


def _export_graph(module: nn.Module, size: int, path: str | Path) -> Path:
    """``module`` (uint8 (N, S, S, 3) ``image`` -> (N,) ``score``) to ONNX at ``path``, dynamic batch."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        torch.onnx.export(
            module,
            (torch.zeros(1, size, size, 3, dtype=torch.uint8),),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["image"],
            output_names=["score"],
            dynamic_axes={"image": {0: "N"}, "score": {0: "N"}},
        )
    return path


def export_onnx(
    model: ScoringModel, path: str | Path, *, name: str, extra: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to ``path`` as ONNX (opset 17, dynamic batch).

    Input ``image``: uint8 (N, S, S, 3) RGB; output ``score``: float32 (N,) on ``model.scale``.
    metadata_props: name, input_size, scale (JSON), resize_policy, backbone, head, tta_flip,
    plus ``extra`` (each value JSON-encoded unless it is a string).
    """
    s = model.input_size
    path = _export_graph(_Exported(model.cpu().eval()).eval(), s, path)
    meta = {
        "name": name,
        "input_size": str(s),
        "scale": json.dumps(list(model.scale)),
        "resize_policy": RESIZE_POLICY,
        "backbone": model.backbone.name,
        "head": model.head.kind,
        "tta_flip": json.dumps(model.tta_flip),
    }
    return _set_metadata(path, meta, extra)


def _set_metadata(path: Path, meta: dict[str, str], extra: dict[str, Any] | None) -> Path:
    """Replace the metadata_props of the ONNX file at ``path`` by ``meta`` + ``extra`` (JSON-encoded
    unless a string)."""
    proto = onnx.load(str(path))
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    del proto.metadata_props[:]
    for k, v in meta.items():
        proto.metadata_props.add(key=k, value=v)
    onnx.save(proto, str(path))
    return path


def export_photo(
    model: PhotoScorer, path: str | Path, *, name: str, policy: str, extra: dict[str, Any] | None = None
) -> Path:
    """Write a :class:`~doohable.model.photo.PhotoScorer` to ``path`` as ONNX (dynamic batch):
    input ``image`` uint8 (N, S, S, 3), output ``score`` (N,) on 1..5; metadata as
    :func:`export_onnx` with ``resize_policy`` = ``policy`` (a ``short-side-R-center-crop-S``)."""
    s = model.input_size
    path = _export_graph(model.cpu().eval(), s, path)
    meta = {
        "name": name,
        "input_size": str(s),
        "scale": json.dumps(list(SCALE)),
        "resize_policy": policy,
        "backbone": model.features.name,
        "features": model.features.describe(),
        "head": model.head.kind,
        "tta_flip": "false",
    }
    return _set_metadata(path, meta, extra)


def max_abs_diff(model: ScoringModel, path: str | Path, batch: np.ndarray) -> float:
    """Largest |ONNX - PyTorch| score over a uint8 (N, S, S, 3) batch."""
    with torch.no_grad():
        ref = model.cpu().eval().forward_uint8_nhwc(torch.from_numpy(batch)).numpy()
    got = load_scorer(path).score(batch)
    return float(np.max(np.abs(ref - got)))


def fp16_weights(model: onnx.ModelProto, *, min_size: int = 1024) -> onnx.ModelProto:
    """Store the large float32 initializers as float16, each followed by a Cast back to float32.

    Halves the file; the graph still computes in float32 (ONNX Runtime folds the Casts once, when
    the session is created), so only the weights' rounding (relative 2^-11) changes the scores.
    """
    from onnx import helper, numpy_helper

    g = model.graph
    casts, keep = [], []
    for init in g.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or int(np.prod(init.dims)) < min_size:
            keep.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), f"{init.name}__fp16")
        keep.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT))
    del g.initializer[:]
    g.initializer.extend(keep)
    nodes = casts + list(g.node)
    del g.node[:]
    g.node.extend(nodes)
    return model


def ensemble_onnx(
    paths: list[str | Path],
    out: str | Path,
    *,
    name: str,
    extra: dict[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Merge exported scorers (same input size and scale) into one graph whose score is their mean.

    The members run side by side on the shared ``image`` input; metadata comes from the first
    member, with ``members`` listing the originals and ``extra`` added. ``half``: weights stored
    as float16 (:func:`fp16_weights`); members already stored so are kept as they are.
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
    if half:
        model = fp16_weights(model)
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


def quantize_int8(
    src: str | Path,
    calibration: list[np.ndarray],
    out: str | Path,
    *,
    name: str | None = None,
    fp32_stem: bool = False,
) -> Path:
    """Static int8 copy of an exported scorer: QDQ, per-channel int8 weights, uint8 activations.

    Parameters
    ----------
    src : fp32 scorer exported by :func:`export_onnx` (or :func:`ensemble_onnx`).
    calibration : uint8 (n, S, S, 3) batches prepared with the scorer's resize policy (MinMax).
    out : where to write the int8 model.
    name : metadata ``name`` of the result; default: the source's name with ``-int8``.
    fp32_stem : keep the in-graph normalisation and the first convolution in float (the layer
        most sensitive to int8; on the selfie member it halves the Pearson loss).

    metadata_props are kept, ``name`` set and ``quantization`` added.
    """
    import tempfile

    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ValueError("quantize_int8 needs at least one calibration batch")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self.it, None)
            return None if x is None else {"image": np.ascontiguousarray(x, dtype=np.uint8)}

    src, out = Path(src), Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    source = onnx.load(str(src))
    meta = {p.key: p.value for p in source.metadata_props}
    exclude = _float_tail(source.graph.node) + (_stem(source.graph.node) if fp32_stem else [])
    with tempfile.TemporaryDirectory(prefix="doohable-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(out), _Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=exclude,
        )  # fmt: skip
    meta["name"] = name or f"{meta.get('name', src.stem)}-int8"
    meta["quantization"] = "int8 static QDQ, per-channel weights, uint8 activations, MinMax" + (
        ", fp32 stem" if fp32_stem else ""
    )
    return _set_metadata(out, meta, None)


def _stem(nodes: Sequence[onnx.NodeProto]) -> list[str]:
    """Names of the nodes up to and including the first convolution (the in-graph normalisation
    and the first Conv)."""
    stem = []
    for node in nodes:
        stem.append(node.name)
        if node.op_type == "Conv":
            break
    return stem


def _float_tail(nodes: Sequence[onnx.NodeProto]) -> list[str]:
    """Names of the nodes downstream of a Gemm: the head's mapping to the score scale and its clip
    stay in float (quantised, the clip's output range is lost and scores leave the scale)."""
    tail: set[str] = set()
    names: list[str] = []
    for n in nodes:  # ONNX graphs are topologically sorted
        if n.op_type in ("Gemm", "MatMul") or tail.intersection(n.input):
            if n.op_type not in ("Gemm", "MatMul"):
                names.append(n.name)
            tail.update(n.output)
    return names


def _ancestors(nodes: list[onnx.NodeProto], tensor: str) -> set[int]:
    """Indices of the nodes that ``tensor`` depends on."""
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    seen: set[int] = set()
    stack = [tensor]
    while stack:
        i = producer.get(stack.pop())
        if i is not None and i not in seen:
            seen.add(i)
            stack.extend(nodes[i].input)
    return seen


def drop_flip_tta(src: str | Path, out: str | Path, *, name: str | None = None) -> Path:
    """Remove the mirror pass of a scorer exported with ``tta_flip``: score = the unflipped branch.

    The exported graph computes ``0.5 * (s(x) + s(flip(x)))`` where ``flip`` is a ``Slice`` with a
    negative step; this rewires the output to ``s(x)`` and prunes the mirrored backbone, halving
    the work. Raises ``ValueError`` when the graph does not have that shape.
    """
    from onnx import helper

    src, out = Path(src), Path(out)
    model = onnx.load(str(src))
    meta = {p.key: p.value for p in model.metadata_props}
    if json.loads(meta.get("tta_flip", "false")) is not True:
        raise ValueError(f"{src}: not exported with tta_flip (metadata tta_flip={meta.get('tta_flip')})")
    graph = model.graph
    nodes = list(graph.node)
    flips = {i for i, n in enumerate(nodes) if n.op_type == "Slice"}
    if len(flips) != 1:
        raise ValueError(f"{src}: expected one flip Slice, found {len(flips)}")
    consumers = {t: [n for n in nodes if t in n.input] for n in nodes for t in n.output}
    for add in nodes:
        if add.op_type != "Add" or len(add.input) != 2:
            continue
        mirrored = [bool(_ancestors(nodes, t) & flips) for t in add.input]
        if sorted(mirrored) != [False, True]:
            continue
        plain = add.input[mirrored.index(False)]
        muls = consumers.get(add.output[0], [])
        if len(muls) != 1 or muls[0].op_type != "Mul":
            continue
        half = muls[0].output[0]
        for n in nodes:  # s(x) replaces 0.5 * (s(x) + s(flip x)) everywhere
            n.input[:] = [plain if x == half else x for x in n.input]
        break
    else:
        raise ValueError(f"{src}: no 0.5 * (plain + mirrored) average found")
    keep: set[int] = set()
    for o in graph.output:
        keep |= _ancestors(nodes, o.name)
    kept = [n for i, n in enumerate(nodes) if i in keep]
    used = {x for n in kept for x in n.input}
    inits = [t for t in graph.initializer if t.name in used]
    new_graph = helper.make_graph(kept, graph.name, list(graph.input), list(graph.output), inits)
    new = helper.make_model(new_graph, opset_imports=model.opset_import, ir_version=model.ir_version)
    meta["tta_flip"] = "false"
    meta["name"] = name or meta.get("name", src.stem)
    for k, v in meta.items():
        new.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(new)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(new, str(out))
    return out
