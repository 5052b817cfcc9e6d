"""dlib's face-recognition ResNet in plain torch, its weights read from dlib's own ``.dat`` file.

dlib's Python API only returns the final 128-d descriptor of a face chip. Reading the network
itself gives what the descriptor throws away: the 256-d pooled features before the final
projection (identity training keeps 128 of those directions, beauty lives in the others too),
and a network that can be fine-tuned on beauty scores like any other backbone.

The network (dlib's ``dnn_face_recognition_ex.cpp``, "a ResNet-34 with a few layers removed and
the number of filters per layer halved"): input 150 x 150 RGB, ``(p - mean) / 256``; conv 7x7/2
(32) + affine + relu; max pool 3x3/2; residual stages of 3 x 32, 4 x 64, 3 x 128, 3 x 256 and
1 x 256 channels (the first block of each but the first halves the size: its shortcut is a 2x2
average pool, channels zero-padded, and dlib adds tensors of different sizes over their
overlap); global average pool; linear 256 -> 128 without bias. ``affine`` is dlib's frozen
batch norm (per-channel scale and shift).

The file format (dlib's ``serialize``): integers as one byte (bit 7: sign, low bits: how many
bytes follow) then little-endian bytes; strings as their length then their bytes; tensors as
version 2, four sizes, then raw little-endian float32. Layers are written from the input up,
each with its name (``con_4``, ``affine_``, ``fc_2``, ...) before its parameters, which is all
this reader relies on: it takes the parameter tensors in order and checks every size against
the architecture above.

Weights: ``dlib_face_recognition_resnet_model_v1`` (Davis King, public domain / CC0), from the
``face_recognition_models`` package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

MEAN_RGB = (122.782, 117.001, 104.298)  # dlib's input_rgb_image defaults; pixels are (p - mean) / 256
CHIP = 150
# (channels, blocks) per stage, from the input up; every stage but the first starts with a
# block that halves the size
STAGES = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))
# conv + affine, then conv + affine twice per block, then the projection
N_TENSORS = 2 + 4 * sum(n for _, n in STAGES) + 1
_LAYER_TAGS = (b"\x01\x05con_4", b"\x01\x07affine_", b"\x01\x04fc_2")


def _int(buf: bytes, pos: int) -> tuple[int, int]:
    head = buf[pos]
    n = head & 0x0F
    value = int.from_bytes(buf[pos + 1 : pos + 1 + n], "little")
    return (-value if head & 0x80 else value), pos + 1 + n


def read_dat_params(path: str | Path) -> list[np.ndarray]:
    """The parameter tensors of the ``con_4`` / ``affine_`` / ``fc_2`` layers of a dlib ``.dat``
    network, in file order (input first), each as a flat float32 array."""
    buf = Path(path).read_bytes()
    found = []
    for tag in _LAYER_TAGS:
        start = 0
        while (i := buf.find(tag, start)) >= 0:
            found.append((i, tag))
            start = i + len(tag)
    out = []
    for i, tag in sorted(found):
        pos = i + len(tag)
        if tag.endswith(b"fc_2"):  # fc_2 writes its numbers of outputs and inputs first
            for _ in range(2):
                _, pos = _int(buf, pos)
        version, pos = _int(buf, pos)
        if version != 2:
            raise ValueError(f"{path}: tensor version {version} at byte {pos} (expected 2)")
        dims = []
        for _ in range(4):
            d, pos = _int(buf, pos)
            dims.append(d)
        n = int(np.prod(dims))
        if pos + 4 * n > len(buf):
            raise ValueError(f"{path}: the file ends inside a tensor of {n} values (byte {pos})")
        out.append(np.frombuffer(buf, "<f4", n, pos).copy())
    if not out:
        raise ValueError(f"{path}: not a dlib network file (no con_4, affine_ or fc_2 layer)")
    return out


def _check(path: str | Path, flat: np.ndarray, n: int) -> None:
    if flat.size != n:
        raise ValueError(f"{path}: a parameter tensor of {flat.size} values where the architecture needs {n}")


class _Graph:
    """An ONNX graph being built from a dlib network's parameter tensors, taken in file order."""

    def __init__(self, path: str | Path, params: list[np.ndarray]) -> None:
        self.path = path
        self.params = iter(params)
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.names = iter(range(10**6))

    def const(self, a: np.ndarray) -> str:
        from onnx import numpy_helper

        name = f"c{next(self.names)}"
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(a, np.float32), name))
        return name

    def pads(self, ends: list[int]) -> str:  # ONNX Pad: the begins (none) then the ends of N, C, H, W
        from onnx import numpy_helper

        name = f"c{next(self.names)}"
        self.inits.append(numpy_helper.from_array(np.array([0, 0, 0, 0, *ends], np.int64), name))
        return name

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        out = f"t{next(self.names)}"
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def param(self, n: int) -> np.ndarray:
        """The next parameter tensor, checked to hold ``n`` values."""
        flat = next(self.params)
        _check(self.path, flat, n)
        return flat

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, pad: int) -> str:
        flat = self.param(cout * cin * k * k + cout)
        w, b = flat[: cout * cin * k * k].reshape(cout, cin, k, k), flat[cout * cin * k * k :]
        return self.node(
            "Conv",
            [x, self.const(w), self.const(b)],
            kernel_shape=[k, k],
            strides=[stride, stride],
            pads=[pad] * 4,
        )

    def affine(self, x: str, c: int) -> str:
        flat = self.param(2 * c)
        return self.node(
            "Add",
            [
                self.node("Mul", [x, self.const(flat[:c].reshape(1, c, 1, 1))]),
                self.const(flat[c:].reshape(1, c, 1, 1)),
            ],
        )


def _stem(g: _Graph, chip: int) -> tuple[str, int]:
    """(output, side): ``(p - mean) / 256``, conv 7x7/2 + affine + relu, max pool 3x3/2."""
    centred = g.node("Sub", ["chips", g.const(np.array(MEAN_RGB).reshape(1, 3, 1, 1))])
    x = g.node("Div", [centred, g.const(np.array(256.0))])
    x = g.node("Relu", [g.affine(g.conv(x, 3, 32, 7, 2, 0), 32)])
    x = g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2])
    return x, ((chip - 7) // 2 + 1 - 3) // 2 + 1


def _residual_block(g: _Graph, x: str, side: int, cin: int, c: int, stride: int) -> tuple[str, int]:
    """(output, side): two conv 3x3 + affine, added to the shortcut (a 2x2 average pool where
    ``stride`` halves the size) the way dlib's add_prev does, then relu."""
    y = g.node("Relu", [g.affine(g.conv(x, cin, c, 3, stride, 0 if stride > 1 else 1), c)])
    y = g.affine(g.conv(y, c, c, 3, 1, 1), c)
    short, ys, ss = x, side, side
    if stride > 1:
        short = g.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2])
        ys, ss = (side - 3) // 2 + 1, (side - 2) // 2 + 1
    out = max(ys, ss)
    # dlib's add_prev: the sum over the larger size, missing elements taken as 0
    if ys < out:
        y = g.node("Pad", [y, g.pads([0, 0, out - ys, out - ys])])
    if ss < out or cin < c:
        short = g.node("Pad", [short, g.pads([0, c - cin, out - ss, out - ss])])
    return g.node("Relu", [g.node("Add", [y, short])]), out


def _head(g: _Graph, x: str) -> None:
    """Global average pool to ``features``, and their projection to ``descriptor``."""
    from onnx import helper

    feats = g.node("Flatten", [g.node("GlobalAveragePool", [x])])
    flat = g.param(256 * 128)
    g.nodes.append(helper.make_node("MatMul", [feats, g.const(flat.reshape(256, 128))], ["descriptor"]))
    g.nodes.append(helper.make_node("Identity", [feats], ["features"]))


def dlib_face_onnx(path: str | Path, *, chip: int = CHIP) -> Any:
    """The network of a dlib ``.dat`` file as an ONNX model, built from its weights without torch:
    input ``chips`` (N, 3, chip, chip) float RGB in 0-255; outputs ``features`` (N, 256), the
    pooled features, and ``descriptor`` (N, 128), dlib's face descriptor."""
    import onnx
    from onnx import TensorProto, helper

    params = read_dat_params(path)
    if len(params) != N_TENSORS:
        raise ValueError(f"{path}: {len(params)} parameter tensors, the architecture has {N_TENSORS}")
    g = _Graph(path, params)
    x, side = _stem(g, chip)
    cin = 32
    for s, (c, n) in enumerate(STAGES):
        for b in range(n):
            x, side = _residual_block(g, x, side, cin, c, 2 if s > 0 and b == 0 else 1)
            cin = c
    _head(g, x)
    graph = helper.make_graph(
        g.nodes,
        "dlib_face_recognition_resnet",
        [helper.make_tensor_value_info("chips", TensorProto.FLOAT, ["N", 3, chip, chip])],
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 256]),
            helper.make_tensor_value_info("descriptor", TensorProto.FLOAT, ["N", 128]),
        ],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model
