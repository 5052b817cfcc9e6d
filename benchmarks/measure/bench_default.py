"""Where the default scorer's time goes, and the accuracy-speed curve of its face part.

1. ``parts``: one thread, in-process, milliseconds per image of each step on SCUT-FBP5500 faces
   and on 1080x1350 photos: the default's input preparation (with ``--photo``: the JPEG draft
   decode, then the photo and face crops, each resampled alone and, for reference, as the
   whole resize then its crop), JPEG draft decode + resize, the face gate, the selfie's CNN
   ensemble, the face branch's detection (dlib HOG, upsampled once, on the crop and its
   mirror), landmarks + chips, dlib's descriptor network, the fine-tuned face network, and the
   photo part (``--photo``: the ``photo`` model, or a stand-in named as such).
2. ``candidates``: the face part's candidates on ``--faces`` SCUT faces (fold 1; the models
   were trained on every fold, so the Pearson values are optimistic and only their differences
   count): score and CPU ms per image, one thread.
3. ``startup``: ``doohable --help`` and ``doohable score one.jpg`` (whole process, median of
   ``--repeat``), for this tree and for ``--baseline-src`` (another checkout's ``src``) in the
   same run.
4. ``cli``: the whole ``doohable score DIR --json`` process on ``--images`` 1080x1350 photos
   and on the SCUT faces, for ``--model`` (a name or a combination JSON), with the naive
   PIL + torch-eager baseline (``bench_scoring.bench_naive``) in the same run.
5. ``api``: p50/p99 of ``POST /api/v1/score`` (one 1080x1350 JPEG), 8 concurrent clients
   (``bench_scoring.bench_api``), for ``--model`` and for ``--baseline-src``'s default.

Run: ``.venv/bin/python benchmarks/measure/bench_default.py --baseline-src /tmp/base/src
--model default`` (``--help`` for sizes and skips).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from bench_scoring import bench_api, bench_naive, make_photos
from PIL import Image

from doohable import datasets
from doohable.batch import prepare_bytes
from doohable.images import decode
from doohable.model.default import FaceGate
from doohable.model.preprocess import (
    center_crop,
    prepare_image,
    prepare_short_side,
)
from doohable.model.runtime import Scorer, load_scorer

SCUT = datasets.scut_fbp5500()
EXE = str(Path(sys.executable).with_name("doohable"))


def cpu_ms(fn: Callable[[], Any], n: int) -> tuple[float, Any]:
    """(CPU ms per item, result) of ``fn()`` over ``n`` items (this thread's CPU time)."""
    t = time.thread_time()
    r = fn()
    return 1000 * (time.thread_time() - t) / max(1, n), r


def scut_rows(n: int) -> list[dict[str, str]]:
    with (SCUT / "labels.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["fold"] == "1"]
    return rows[:n]


def face_steps(selfie: Scorer, crops: np.ndarray) -> dict[str, float]:
    """CPU ms per image of each step of the selfie's face branch on ``crops``."""
    import dlib

    face = selfie.face
    assert face is not None
    det, landmarks, desc_net = face.embedder._models()
    n = len(crops)
    views = [np.ascontiguousarray(c) for c in crops] + [np.ascontiguousarray(c[:, ::-1]) for c in crops]
    out: dict[str, float] = {}
    out["detect_hog_upsample1_x2"], found = cpu_ms(lambda: [det(v, 1) for v in views], n)
    largest = [max(f, key=lambda r: r.width() * r.height()) if f else None for f in found]
    pairs = [(v, b) for v, b in zip(views, largest, strict=True) if b is not None]

    def chips_of(v: np.ndarray, box: Any) -> np.ndarray:
        shape = landmarks(v, box)
        return np.stack([dlib.get_face_chip(v, shape, 150, p) for p in face.paddings])

    out["landmarks_chips_x2"], chips = cpu_ms(lambda: [chips_of(v, b) for v, b in pairs], n)
    x = [np.ascontiguousarray(c.transpose(0, 3, 1, 2), np.float32) for c in chips]
    out["descriptor_net"], _ = cpu_ms(lambda: [desc_net.run(None, {"chips": c}) for c in x], n)
    out["finetuned_net"], _ = cpu_ms(lambda: [face._net().run(None, {"chips": c}) for c in x], n)
    out["faces_found_share"] = len(pairs) / max(1, len(views))
    return out


def prepare_steps(blobs: list[bytes], photo: Scorer) -> dict[str, float]:
    """CPU ms per image of the default's input preparation: the JPEG draft decode, then the
    photo part's crop (short side 500, centre 224) and the face part's (squash 256, centre 224),
    each by resizing the crop's pixels only (``preprocess.resized_crop``) and, for reference,
    by resizing the whole image and cropping it."""
    side = photo.decode_side
    n = len(blobs)
    out: dict[str, float] = {}
    out["decode_draft"], imgs = cpu_ms(lambda: [decode(d, draft=(side, side)).image for d in blobs], n)

    def whole(im: Image.Image, size: tuple[int, int]) -> np.ndarray:
        return np.ascontiguousarray(center_crop(np.asarray(im.resize(size, Image.Resampling.BILINEAR)), 224))

    def short_size(im: Image.Image) -> tuple[int, int]:
        k = 500 / min(im.size)
        return max(224, round(im.width * k)), max(224, round(im.height * k))

    out["photo_crop_resized_alone"], _ = cpu_ms(lambda: [prepare_short_side(i, 500, 224) for i in imgs], n)
    out["photo_crop_whole_resize_then_crop"], _ = cpu_ms(lambda: [whole(i, short_size(i)) for i in imgs], n)
    out["face_crop_resized_alone"], _ = cpu_ms(lambda: [prepare_image(i, 224) for i in imgs], n)
    out["face_crop_whole_resize_then_crop"], _ = cpu_ms(lambda: [whole(i, (256, 256)) for i in imgs], n)
    return out


def bench_parts(datas: dict[str, list[bytes]], photo: Scorer | None) -> dict[str, Any]:
    selfie = load_scorer("selfie", threads=1)
    gate = FaceGate()
    out: dict[str, Any] = {}
    for kind, blobs in datas.items():
        n = len(blobs)
        r: dict[str, Any] = {"images": n}
        if photo is not None:
            r.update(prepare_steps(blobs, photo))
        r["decode_draft_resize"], crops = cpu_ms(
            lambda b=blobs: np.stack([prepare_bytes(d, selfie) for d in b]), n
        )
        size = selfie.input_size  # the gate draws the face crop's region at 112 px from the decoded image
        scorer = photo if photo is not None else selfie
        imgs = [decode(d, draft=(scorer.decode_side,) * 2).image for d in blobs]
        gate.box(imgs[0], size)  # the detector is built on first use: not counted
        r["gate"], boxes = cpu_ms(lambda i=imgs, k=size: [gate.box(x, k) for x in i], n)
        r["gate_open_share"] = float(np.mean([b is not None for b in boxes]))
        regions = [gate.region(x, size) for x in imgs]
        gate.haar_faces(regions[0])  # the cascade is loaded on first use: not counted
        r["gate_haar_second_opinion"], _ = cpu_ms(lambda g=regions: [gate.haar_faces(x) for x in g], n)
        batches = [crops[i : i + 8] for i in range(0, n, 8)]
        r["selfie_cnn_ensemble"], _ = cpu_ms(
            lambda b=batches: [selfie._session.run(["score"], {"image": x}) for x in b], n
        )
        r.update(face_steps(selfie, crops))
        if photo is not None:
            r[f"photo_part ({photo.name})"], _ = cpu_ms(
                lambda b=batches: [photo.score(x) for x in b], n
            )
        out[kind] = r
        print("parts", kind, json.dumps(r), flush=True)
    return out


def bench_candidates(rows: list[dict[str, str]]) -> dict[str, Any]:
    """The face part's candidates on SCUT faces: Pearson with the labels, CPU ms per image."""
    y = np.array([float(r["score"]) for r in rows])
    selfie = load_scorer("selfie", threads=1)
    crops = np.stack([prepare_bytes((SCUT / "images" / r["image"]).read_bytes(), selfie) for r in rows])
    n = len(rows)

    def cnn(s: Scorer) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            out = [s._session.run(["score"], {"image": crops[i : i + 8]})[0] for i in range(0, n, 8)]
            return np.concatenate([np.asarray(o).reshape(-1) for o in out])

        return run

    fast = load_scorer("selfie-fast", threads=1)
    runs = {
        "selfie (5 CNNs x mirror + face branch stack)": lambda: np.concatenate(
            [selfie.score(crops[i : i + 8]) for i in range(0, n, 8)]
        ),
        "selfie CNN ensemble only (5 CNNs x mirror)": cnn(selfie),
        "selfie-fast (1 MobileNetV2, int8, no mirror)": cnn(fast),
    }
    out = {}
    for name, fn in runs.items():
        ms, pred = cpu_ms(fn, n)
        out[name] = {"cpu_ms_per_image": ms, "pearson_optimistic": float(np.corrcoef(pred, y)[0, 1])}
        print("candidate", name, out[name], flush=True)
    return {"faces": n, "results": out}


def run_cli(args: list[str], env: dict[str, str], cpu: list[float] | None = None) -> float:
    """Wall seconds of ``doohable ARGS``; its CPU seconds (user + system) appended to ``cpu``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run([EXE, *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-2000:])
    if cpu is not None:
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall


def bench_startup(one: Path, srcs: dict[str, str], model: str | None, repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, src in srcs.items():
        home = tempfile.mkdtemp(prefix="bench-home-")
        env = {**os.environ, "PYTHONPATH": src, "DOOHABLE_HOME": home, "PYTHONDONTWRITEBYTECODE": "1"}
        if model and label == "this tree":
            env["DOOHABLE_MODEL"] = model
        run_cli(["--help"], env)  # warm the file cache
        help_cpu: list[float] = []
        one_cpu: list[float] = []
        helps = [run_cli(["--help"], env, help_cpu) for _ in range(repeat)]
        ones = [run_cli(["score", str(one), "--json", "--no-store"], env, one_cpu) for _ in range(repeat)]
        med = statistics.median
        out[label] = {"help_s": med(helps), "score_one_s": med(ones), "help_cpu_s": med(help_cpu),
                      "score_one_cpu_s": med(one_cpu), "help_all": helps, "score_one_all": ones}
        print("startup", label, out[label], flush=True)
    return out


def bench_cli(folder: Path, n: int, model: str | None, src: str | None = None) -> dict[str, float]:
    """The whole ``doohable score DIR --json`` process (``src``: another checkout's code)."""
    env = {**os.environ, "DOOHABLE_HOME": tempfile.mkdtemp(prefix="bench-home-")}
    if src:
        env |= {"PYTHONPATH": src, "PYTHONDONTWRITEBYTECODE": "1"}
    if model:
        env["DOOHABLE_MODEL"] = model
    cpu: list[float] = []
    wall = run_cli(["score", str(folder), "--json", "--no-store"], env, cpu)
    return {"images": n, "seconds": wall, "images_per_s": n / wall, "cpu_ms_per_image": 1000 * cpu[0] / n,
            "load_after": os.getloadavg()[0]}


def bench_api_runs(photo: bytes, args: Any) -> dict[str, Any]:
    """The API benchmark for this tree's ``--model`` and the baseline checkout's default."""
    out: dict[str, Any] = {}
    runs = {"this tree": (str(Path(__file__).resolve().parents[2] / "src"), args.model)}
    if args.baseline_src:
        runs["baseline"] = (args.baseline_src, None)
    saved = os.environ.get("PYTHONPATH")
    try:
        for label, (src, model) in runs.items():
            os.environ["PYTHONPATH"] = src
            out[label] = bench_api(model, photo, 8, args.api_seconds, 1)
            print("api", label, out[label], flush=True)
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="the scorer of the CLI runs (name or combination JSON)")
    ap.add_argument("--photo", default=None, help="the photo part to time in 'parts' (name or .onnx)")
    ap.add_argument("--baseline-src", default=None, help="another checkout's src for the start-up baseline")
    ap.add_argument("--images", type=int, default=600)
    ap.add_argument("--faces", type=int, default=200)
    ap.add_argument("--parts-images", type=int, default=40)
    ap.add_argument("--naive-images", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--api-seconds", type=float, default=15.0)
    ap.add_argument("--skip", nargs="*", default=[], choices=["parts", "candidates", "startup", "cli", "api"])
    args = ap.parse_args()
    report: dict[str, Any] = {"cores": os.cpu_count(), "load_before": os.getloadavg()}
    rows = scut_rows(args.faces)
    with tempfile.TemporaryDirectory(prefix="bench-default-") as tmp:
        photos = make_photos(Path(tmp) / "photos", args.images)
        faces = Path(tmp) / "faces"
        faces.mkdir()
        for r in rows:  # links, not copies
            (faces / r["image"]).symlink_to(SCUT / "images" / r["image"])
        if "parts" not in args.skip:
            k = args.parts_images
            datas = {"scut_faces": [(faces / r["image"]).read_bytes() for r in rows[:k]],
                     "photos_1080x1350": [p.read_bytes() for p in photos[:k]]}
            report["parts"] = bench_parts(datas, load_scorer(args.photo, threads=1) if args.photo else None)
        if "candidates" not in args.skip:
            report["candidates"] = bench_candidates(rows)
        if "startup" not in args.skip:
            srcs = {"this tree": str(Path(__file__).resolve().parents[2] / "src")}
            if args.baseline_src:
                srcs["baseline"] = args.baseline_src
            report["startup"] = bench_startup(photos[0], srcs, args.model, args.repeat)
        if "cli" not in args.skip:
            report["naive"] = bench_naive(photos, args.naive_images, 224)
            print("naive", report["naive"], flush=True)
            report["cli_photos"] = bench_cli(photos[0].parent, len(photos), args.model)
            report["cli_photos"]["speedup_vs_naive"] = (
                report["cli_photos"]["images_per_s"] / report["naive"]["images_per_s"]
            )
            print("cli photos", report["cli_photos"], flush=True)
            report["cli_faces"] = bench_cli(faces, len(rows), args.model)
            print("cli faces", report["cli_faces"], flush=True)
            if args.baseline_src:  # the baseline checkout's own default model
                runs = (("photos", photos[0].parent, len(photos)), ("faces", faces, len(rows)))
                for key, folder, n in runs:
                    report[f"cli_{key}_baseline"] = bench_cli(folder, n, None, args.baseline_src)
                    print(f"cli {key} baseline", report[f"cli_{key}_baseline"], flush=True)
        if "api" not in args.skip:
            report["api"] = bench_api_runs(photos[0].read_bytes(), args)
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
