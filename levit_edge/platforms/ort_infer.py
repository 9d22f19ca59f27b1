"""Run one ONNX / ORT-format model on preprocessed inputs and save its logits: the script the emulated
aarch64 Python runs. Standalone on purpose: numpy and onnxruntime only (no levit_edge, no torch, which
the emulated Python does not have).

    python ort_infer.py SITE MODEL INPUTS.npy LOGITS.npy INFO.json THREADS OPTIMIZATION

A fixed-batch model gets exactly its batch per call: a short last chunk is padded by repeating its last
image and the padding's rows are dropped (as levit_edge.backends.base.run_in_batches does on the host).
"""

from __future__ import annotations

import json
import platform
import sys


def main(argv: list[str]) -> int:
    site, model, inputs, logits, info, threads, optimization = argv[1:8]
    sys.path.insert(0, site)
    import numpy as np
    import onnxruntime as ort

    ort.disable_telemetry_events()
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    opts = ort.SessionOptions()
    opts.graph_optimization_level = levels[optimization]
    opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    session = ort.InferenceSession(model, sess_options=opts, providers=["CPUExecutionProvider"])
    first = session.get_inputs()[0]
    output = session.get_outputs()[0].name
    images = np.ascontiguousarray(np.load(inputs), dtype=np.float32)
    dim = first.shape[0] if first.shape else None
    step = dim if isinstance(dim, int) and dim > 0 else len(images)
    rows = []
    for start in range(0, len(images), step):
        chunk = images[start : start + step]
        n = len(chunk)
        if n < step:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], step - n, axis=0)])
        (out,) = session.run([output], {first.name: np.ascontiguousarray(chunk)})
        rows.append(np.asarray(out, dtype=np.float32)[:n])
    np.save(logits, np.concatenate(rows))
    with open(info, "w") as handle:
        json.dump(
            {
                "machine": platform.machine(),
                "python": platform.python_version(),
                "onnxruntime": ort.__version__,
                "numpy": np.__version__,
                "threads": int(session.get_session_options().intra_op_num_threads),
            },
            handle,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
