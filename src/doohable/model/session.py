"""ONNX Runtime sessions for every network doohable serves (scorers, the face branch's networks)."""

from __future__ import annotations

from typing import Any


def onnx_session(model: bytes, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session of ``model`` with ``threads`` intra-op threads (0: its default,
    the number of cores), all graph optimisations on, one inter-op thread (the graphs are
    sequential)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(0, int(threads))
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
