"""Scoring throughput, latency and memory, with the naive baseline in the same run.

Measures, on 1080×1350 JPEG photos (q90, made from scikit-image samples in a temp folder):

1. naive: full PIL decode, resize, PyTorch eager MobileNetV2, batch 1 (the baseline);
2. model only: ONNX Runtime on prepared 224×224 arrays (CPU-seconds per image);
3. decode only: ``batch.prepare_bytes`` (JPEG draft decode + the scorer's resize), one thread;
4. the pipeline in-process (``batch.score_paths``) and the whole ``doohable score DIR --json``
   process, against the ceiling ``cores / (CPU-s per image for model + decode)``;
5. int8 (``doohable.model.export.quantize_int8``, static QDQ): model-only speed and the
   Pearson change on SCUT-FBP5500 (../shared/data; the loss must stay ≤ 0.005);
6. peak RSS while scoring 10,000 images (checkpoints: flat or not);
7. single-image API latency, p50/p99, 8 concurrent clients against ``uvicorn``.

Run: ``.venv/bin/python benchmarks/measure/bench_scoring.py`` (``--help`` for sizes and skips)."""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from doohable.batch import cached_scorer, prepare_bytes, score_paths
from doohable.datasets import scut_fbp5500
from doohable.model.runtime import Scorer, load_scorer, prepare_image

SAMPLES = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
CORES = os.cpu_count() or 1


def make_photos(folder: Path, n: int) -> list[Path]:
    """``n`` distinct 1080×1350 JPEGs (q90): samples resized, shifted and mirrored."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    bases = [
        Image.fromarray(np.asarray(getattr(data, s)())).convert("RGB").resize((1080, 1350)) for s in SAMPLES
    ]
    out = []
    for k in range(n):
        im = bases[k % len(bases)]
        shift = (k // len(bases)) % 97
        im = Image.fromarray(np.roll(np.asarray(im), shift * 7, axis=1))
        if k % 2:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        path = folder / f"p{k:05d}.jpg"
        im.save(path, quality=90)
        out.append(path)
    return out


def timed(fn: Any) -> tuple[float, float, Any]:
    """(wall seconds, process CPU seconds, result) of ``fn()``."""
    t, c = time.perf_counter(), time.process_time()
    r = fn()
    return time.perf_counter() - t, time.process_time() - c, r


def bench_naive(files: list[Path], n: int, input_size: int) -> dict[str, float]:
    """Full decode, resize, PyTorch eager MobileNetV2, batch 1."""
    import torch

    from doohable.model.backbones import create_backbone

    # one thread: on a busy 2-core machine torch's 2-thread OpenMP barriers spin for seconds per
    # image (measured 2.2 s vs 57 ms), which would flatter the speed-up; 1 thread is the fair baseline
    torch.set_num_threads(1)
    try:
        net = create_backbone("mobilenet_v2", pretrained=True, input_size=input_size).eval()
    except (FileNotFoundError, ValueError):
        net = create_backbone("mobilenet_v2", pretrained=False, input_size=input_size).eval()
    head = torch.nn.Linear(net.num_features, 1)

    def one(path: Path) -> float:
        img = Image.open(path).convert("RGB")
        arr = prepare_image(img, input_size)
        x = torch.from_numpy(arr).permute(2, 0, 1)[None].float()
        with torch.inference_mode():
            return float(head(net.forward_features(net.normalize(x)))[0, 0])

    one(files[0])
    wall, cpu, _ = timed(lambda: [one(f) for f in files[:n]])
    return {"images_per_s": n / wall, "cpu_ms_per_image": 1000 * cpu / n}


def bench_model(
    scorer: Scorer, arrays: np.ndarray, batch: int = 32, seconds: float = 6.0
) -> dict[str, float]:
    """ONNX Runtime alone on prepared uint8 arrays, ``cores`` batches at once (as the pipeline)."""
    from concurrent.futures import ThreadPoolExecutor

    x = arrays[:batch]
    scorer.score(x)
    n, wall, cpu = 0, 0.0, 0.0
    with ThreadPoolExecutor(CORES) as pool:
        while wall < seconds:
            w, c, _ = timed(lambda: list(pool.map(lambda _: scorer.score(x), range(CORES))))
            n, wall, cpu = n + batch * CORES, wall + w, cpu + c
    return {"images_per_s": n / wall, "cpu_ms_per_image": 1000 * cpu / n}


def bench_decode(files: list[Path], scorer: Scorer, n: int) -> dict[str, float]:
    """Read + draft-decode + the scorer's resize, one thread."""
    datas = [f.read_bytes() for f in files[:n]]
    wall, cpu, _ = timed(lambda: [prepare_bytes(d, scorer) for d in datas])
    size = scorer.input_size
    full = datas[: max(20, n // 4)]
    full_wall, _, _ = timed(
        lambda: [prepare_image(Image.open(io.BytesIO(d)).convert("RGB"), size) for d in full]
    )
    return {
        "images_per_s": n / wall,
        "cpu_ms_per_image": 1000 * cpu / n,
        "full_decode_images_per_s": len(full) / full_wall,
    }


def bench_pipeline(files: list[Path], scorer: Scorer, batch: int, workers: int) -> dict[str, float]:
    list(score_paths(files[:64], scorer, batch_size=batch, workers=workers))
    wall, cpu, res = timed(lambda: list(score_paths(files, scorer, batch_size=batch, workers=workers)))
    assert all(r.score is not None for r in res)
    return {"images_per_s": len(files) / wall, "cpu_ms_per_image": 1000 * cpu / len(files)}


def bench_cli(folder: Path, n: int, model: str | None) -> dict[str, float]:
    """The whole ``doohable score DIR --json --no-store`` process, start-up included."""
    exe = str(Path(sys.executable).with_name("doohable"))
    env = {**os.environ, "DOOHABLE_HOME": tempfile.mkdtemp(prefix="bench-home-")}
    if model:
        env["DOOHABLE_MODEL"] = model
    t = time.perf_counter()
    p = subprocess.run(
        [exe, "score", str(folder), "--json", "--no-store"], capture_output=True, text=True, env=env
    )
    wall = time.perf_counter() - t
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    lines = p.stdout.splitlines()
    assert len(lines) == n, (len(lines), n)
    return {"images_per_s": n / wall, "seconds": wall}


def bench_rss(files: list[Path], scorer: Any, total: int) -> dict[str, Any]:
    """Peak RSS (ru_maxrss) at checkpoints while scoring ``total`` images (files repeated)."""
    import psutil

    proc = psutil.Process()
    paths = [files[k % len(files)] for k in range(total)]
    marks: dict[int, float] = {}
    done = 0
    checkpoints = {1000, 2500, 5000, 7500, total}

    def tick(n: int) -> None:
        nonlocal done
        before = done
        done += n
        for c in checkpoints:
            if before < c <= done:
                marks[c] = proc.memory_info().rss / 2**20

    t = time.perf_counter()
    results = list(score_paths(paths, scorer, on_progress=tick))
    wall = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"images": len(results), "rss_mib_at": marks, "peak_rss_mib": peak, "images_per_s": total / wall}


def rss_subprocess(folder: Path, model: str | None, total: int) -> dict[str, Any]:
    code = (
        "import json,sys; from pathlib import Path; from benchmarks.measure.bench_scoring import bench_rss;"
        "from doohable.batch import cached_scorer;"
        "files=sorted(Path(sys.argv[1]).glob('*.jpg')); s=cached_scorer(sys.argv[2] or None);"
        "print(json.dumps(bench_rss(files, s, int(sys.argv[3]))))"
    )
    root = Path(__file__).resolve().parents[2]
    p = subprocess.run(
        [sys.executable, "-c", code, str(folder), model or "", str(total)],
        capture_output=True, text=True, cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
    )  # fmt: skip
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    return dict(json.loads(p.stdout.splitlines()[-1]))


def calibration_arrays(files: list[Path], scorer: Scorer, n: int = 64) -> list[np.ndarray]:
    """Calibration inputs in the model's domain: SCUT-FBP5500 faces of folds 2–4 (the int8 check
    uses fold 1), else the benchmark photos."""
    import csv

    root = scut_fbp5500()
    if root.is_dir():
        rows = [r for r in csv.DictReader((root / "labels.csv").open()) if r["fold"] != "1"]
        paths = [root / "images" / r["image"] for r in rows[:: max(1, len(rows) // n)][:n]]
    else:
        paths = files[:n]
    return [prepare_bytes(p.read_bytes(), scorer)[None] for p in paths]


def scut_pearson(scorers: dict[str, Scorer], limit: int) -> dict[str, float]:
    """Pearson r of each scorer against SCUT-FBP5500 labels (fold 1, first ``limit`` images;
    the bundled model saw these in training: the figure is optimistic, the fp32/int8 gap is not)."""
    import csv

    from scipy.stats import pearsonr

    root = scut_fbp5500()
    rows = [r for r in csv.DictReader((root / "labels.csv").open()) if r["fold"] == "1"][:limit]
    labels = np.array([float(r["score"]) for r in rows])
    first = next(iter(scorers.values()))
    arrays = np.stack([prepare_bytes((root / "images" / r["image"]).read_bytes(), first) for r in rows])
    out = {}
    for name, sc in scorers.items():
        preds = np.concatenate([sc.score(arrays[i : i + 64]) for i in range(0, len(arrays), 64)])
        out[name] = float(pearsonr(preds, labels)[0])
    return out


def bench_api(
    model: str | None, photo: bytes, clients: int, seconds: float, threads: int
) -> dict[str, float]:
    """p50/p99 of ``POST /api/v1/score`` (one 1080×1350 JPEG) with ``clients`` concurrent clients."""
    import httpx

    home = Path(tempfile.mkdtemp(prefix="bench-api-"))
    env = {**os.environ, "DOOHABLE_HOME": str(home), "DOOHABLE_THREADS": str(threads)}
    env.pop("DOOHABLE_DATABASE_URL", None)
    env.pop("DOOHABLE_BLOB_URL", None)
    if model:
        env["DOOHABLE_MODEL"] = model
    exe = str(Path(sys.executable).with_name("doohable"))
    subprocess.run([exe, "init"], env=env, check=True, capture_output=True)
    out = subprocess.run(
        [exe, "users", "add", "bench", "--json"], env=env, check=True, capture_output=True, text=True
    )
    token = json.loads(out.stdout)["token"]
    port = 8765
    server = subprocess.Popen(
        [exe, "serve", "--port", str(port), "--no-access-log"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {token}"}
        files = {"file": ("p.jpg", photo, "image/jpeg")}
        with httpx.Client(base_url=url, headers=headers) as c:
            for _ in range(10):
                assert c.post("/api/v1/score", files=files).status_code == 200
        lat: list[float] = []
        lock = threading.Lock()
        stop = time.perf_counter() + seconds

        def client() -> None:
            with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
                while time.perf_counter() < stop:
                    t = time.perf_counter()
                    r = c.post("/api/v1/score", files=files)
                    dt = time.perf_counter() - t
                    assert r.status_code == 200, r.text
                    with lock:
                        lat.append(dt)

        import psutil

        server_proc = psutil.Process(server.pid)
        cpu0 = sum(server_proc.cpu_times()[:2])
        ts = [threading.Thread(target=client) for _ in range(clients)]
        t0, own0 = time.perf_counter(), time.process_time()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        wall, clients_cpu = time.perf_counter() - t0, time.process_time() - own0
        server_cpu = sum(server_proc.cpu_times()[:2]) - cpu0
    finally:
        server.terminate()
        server.wait(10)
    q = np.percentile(np.array(lat) * 1000, [50, 99])
    return {
        "requests": len(lat),
        "p50_ms": float(q[0]),
        "p99_ms": float(q[1]),
        "requests_per_s": len(lat) / wall,
        "server_cpu_ms_per_request": 1000 * server_cpu / len(lat),
        "clients_cpu_ms_per_request": 1000 * clients_cpu / len(lat),  # the clients share the machine
    }


def bench_one(scorer: Any, name: str | None, files: list[Path], folder: Path, tmp: Path, args: Any) -> dict:
    """Model-only, decode-only, pipeline (and whole CLI process), int8 variant, for one model."""
    out: dict[str, Any] = {
        "model": {"name": scorer.name, "version": scorer.version, "path": str(scorer.path)}
    }
    arrays = np.stack([prepare_bytes(f.read_bytes(), scorer) for f in files[:64]])
    out["model_only"] = bench_model(scorer, arrays, args.batch_size)
    out["decode_only"] = bench_decode(files, scorer, min(200, len(files)))
    cpu = out["model_only"]["cpu_ms_per_image"] + out["decode_only"]["cpu_ms_per_image"]
    out["ceiling_images_per_s"] = CORES * 1000 / cpu
    out["pipeline"] = bench_pipeline(files, scorer, args.batch_size, args.workers)
    out["pipeline"]["vs_ceiling"] = out["pipeline"]["images_per_s"] / out["ceiling_images_per_s"]
    # robust to other processes on the machine: CPU the parts need / CPU the pipeline used
    out["pipeline"]["cpu_efficiency"] = cpu / out["pipeline"]["cpu_ms_per_image"]
    if "cli" not in args.skip:
        out["cli_whole_process"] = bench_cli(folder, len(files), name)
    if "int8" not in args.skip:
        from doohable.model.export import quantize_int8  # imports torch: not at module level (RSS run)

        q = quantize_int8(scorer.path, calibration_arrays(files, scorer), tmp / f"int8-{scorer.version}.onnx")
        if args.keep_int8:
            Path(args.keep_int8).mkdir(parents=True, exist_ok=True)
            q = Path(shutil.copy(q, Path(args.keep_int8) / q.name))
        out["int8_path"] = str(q)
        q_scorer = load_scorer(str(q), threads=1)
        out["int8_model_only"] = bench_model(q_scorer, arrays, args.batch_size)
        q_cpu = out["int8_model_only"]["cpu_ms_per_image"] + out["decode_only"]["cpu_ms_per_image"]
        out["int8_ceiling_images_per_s"] = CORES * 1000 / q_cpu
        out["int8_pipeline"] = bench_pipeline(files, q_scorer, args.batch_size, args.workers)
        out["int8_pipeline"]["vs_ceiling"] = (
            out["int8_pipeline"]["images_per_s"] / out["int8_ceiling_images_per_s"]
        )
        out["int8_pipeline"]["cpu_efficiency"] = q_cpu / out["int8_pipeline"]["cpu_ms_per_image"]
        if (scut_fbp5500()).is_dir():
            r = scut_pearson({"fp32": scorer, "int8": q_scorer}, args.scut_images)
            out["scut_pearson"] = {**r, "loss": r["fp32"] - r["int8"], "images": args.scut_images}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="scorer name or .onnx (default: the bundled one)")
    ap.add_argument("--also-model", default=None, help="a second model to measure the same way")
    ap.add_argument("--keep-int8", default=None, help="folder to keep the int8 models in (for --model later)")
    ap.add_argument("--images", type=int, default=600, help="photos for the pipeline runs")
    ap.add_argument("--naive-images", type=int, default=60)
    ap.add_argument("--rss-images", type=int, default=10_000)
    ap.add_argument("--scut-images", type=int, default=1100, help="SCUT-FBP5500 images for the int8 check")
    ap.add_argument("--api-seconds", type=float, default=20.0)
    ap.add_argument("--api-threads", type=int, default=1, help="ONNX Runtime threads in the server")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--skip", nargs="*", default=[], choices=["naive", "cli", "int8", "rss", "api"])
    args = ap.parse_args()

    report: dict[str, Any] = {"cores": CORES, "load_before": os.getloadavg()}
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        folder = Path(tmp) / "photos"
        files = make_photos(folder, args.images)
        scorer = cached_scorer(args.model)  # one ONNX Runtime thread per call, as doohable score
        if "naive" not in args.skip:
            report["naive"] = bench_naive(files, args.naive_images, scorer.input_size)
            print("naive", report["naive"], flush=True)
        models = [args.model] + ([args.also_model] if args.also_model else [])
        for name in models:
            key = name or "bundled"
            report[key] = bench_one(cached_scorer(name), name, files, folder, Path(tmp), args)
            if "naive" in report:
                for part in ("pipeline", "int8_pipeline"):
                    if part in report[key]:
                        report[key][part]["speedup_vs_naive"] = (
                            report[key][part]["images_per_s"] / report["naive"]["images_per_s"]
                        )
            print(key, json.dumps(report[key], default=float), flush=True)
        if "rss" not in args.skip:  # in a fresh process: torch and the int8 runs would inflate RSS
            report["rss"] = rss_subprocess(folder, args.model, args.rss_images)
            print("rss", report["rss"], flush=True)
        if "api" not in args.skip:
            report["api"] = bench_api(
                args.model, files[0].read_bytes(), 8, args.api_seconds, args.api_threads
            )
            print("api", report["api"], flush=True)
    report["load_after"] = os.getloadavg()
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()
