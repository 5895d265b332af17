"""onnxruntime on the same ONNX file and the same windows as benches/scoring.rs.

Usage: python benches/onnxruntime_scoring.py MODEL.onnx WINDOWS.f32 [SECONDS]
(benches/scoring.sh runs it). Prints one JSON object per measurement.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort

BATCHES = [1, 8, 32, 128, 512]


def main():
    model, inputs = sys.argv[1], sys.argv[2]
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 2.0
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    shape = session.get_inputs()[0].shape  # ['batch', channels, window_len]
    channels, window_len = shape[1], shape[2]
    windows = np.fromfile(inputs, dtype="<f4").reshape(-1, channels, window_len)
    max_batch = BATCHES[-1]
    assert len(windows) == 4 * max_batch, len(windows)
    for batch in BATCHES:
        for threads in (1, 2):
            options = ort.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
            name = session.get_inputs()[0].name
            slices = [np.ascontiguousarray(windows[i * max_batch : i * max_batch + batch]) for i in range(4)]
            session.run(None, {name: slices[0]})  # warm up
            done = 0
            started = time.perf_counter()
            while time.perf_counter() - started < seconds:
                session.run(None, {name: slices[done % 4]})
                done += 1
            elapsed = time.perf_counter() - started
            print(json.dumps({
                "engine": "onnxruntime " + ort.__version__,
                "batch": batch,
                "threads": threads,
                "network_windows_per_s": round(done * batch / elapsed, 1),
            }), flush=True)


if __name__ == "__main__":
    main()
