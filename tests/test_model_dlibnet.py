"""dlib's face-recognition network read from its .dat file: the same descriptors as dlib, as ONNX
and as a torch module; damaged files are refused with a reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image
from skimage import data as skd

from doohable.model.face.dlibnet import dlib_face_onnx, read_dat_params
from doohable.model.face.embed import FaceEmbedder, _model_dir
from doohable.model.runtime import prepare_image

DAT = _model_dir() / "dlib_face_recognition_resnet_model_v1.dat"


@pytest.fixture(scope="module")
def chips() -> np.ndarray:
    crop = prepare_image(Image.fromarray(skd.astronaut()), 224)
    found = FaceEmbedder((0.25, 0.5, 0.8)).chips(crop)
    assert found is not None
    mirror = FaceEmbedder((0.25, 0.5, 0.8)).chips(np.ascontiguousarray(crop[:, ::-1]))
    assert mirror is not None
    return np.concatenate([found, mirror])


def _dlib_descriptors(chips: np.ndarray) -> np.ndarray:
    import dlib

    net = dlib.face_recognition_model_v1(str(DAT))
    return np.array([np.asarray(d) for d in net.compute_face_descriptor(list(chips))], np.float32)


def test_the_file_holds_the_architecture_s_59_tensors() -> None:
    params = read_dat_params(DAT)
    assert len(params) == 59  # conv + affine, 14 blocks of 2 x (conv + affine), the projection
    assert params[0].size == 32 * 3 * 7 * 7 + 32 and params[-1].size == 256 * 128
    assert sum(p.size for p in params) == 5_614_592


@pytest.mark.slow
def test_onnx_network_gives_dlib_s_descriptors(chips: np.ndarray) -> None:
    sess = ort.InferenceSession(dlib_face_onnx(DAT).SerializeToString(), providers=["CPUExecutionProvider"])
    feats, desc = sess.run(None, {"chips": chips.transpose(0, 3, 1, 2).astype(np.float32)})
    ref = _dlib_descriptors(chips)
    np.testing.assert_allclose(desc, ref, atol=1e-5)
    assert feats.shape == (6, 256) and (feats >= 0).all()  # pooled after a ReLU
    # the embedder uses it: its descriptor of the crop is dlib's
    np.testing.assert_allclose(FaceEmbedder((0.25, 0.5, 0.8)).describe(chips), ref, atol=1e-5)
    # two views of the same face are near, by dlib's own threshold (0.6)
    assert np.linalg.norm(desc[0] - desc[3]) < 0.4


@pytest.mark.slow
def test_torch_module_gives_the_same_numbers(chips: np.ndarray) -> None:
    torch = pytest.importorskip("torch")
    from doohable.model.face.dlibnet_torch import DlibFaceNet

    net = DlibFaceNet.from_dat(DAT).eval()
    with torch.no_grad():
        desc = net(torch.from_numpy(chips).permute(0, 3, 1, 2).float()).numpy()
    np.testing.assert_allclose(desc, _dlib_descriptors(chips), atol=1e-5)


def test_damaged_files_are_refused_with_a_reason(tmp_path: Path) -> None:
    buf = DAT.read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(buf[: buf.find(b"\x01\x04fc_2")])  # the last layer is missing
    with pytest.raises(ValueError, match="parameter tensors"):
        dlib_face_onnx(cut)
    i = buf.find(b"\x01\x05con_4")
    bad = tmp_path / "bad.dat"
    bad.write_bytes(buf[: i + 7] + b"\x01\x07" + buf[i + 9 :])  # the first tensor's version: 7
    with pytest.raises(ValueError, match="tensor version 7"):
        read_dat_params(bad)
    empty = tmp_path / "empty.dat"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match="not a dlib network"):
        read_dat_params(empty)
    end = tmp_path / "end.dat"
    end.write_bytes(buf[: i + 1000])  # inside the first tensor
    with pytest.raises(ValueError, match="ends inside a tensor"):
        read_dat_params(end)
