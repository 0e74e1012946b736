"GPU tests of the Numba CUDA selective scan (marked cuda: skipped without a GPU)."
import os, json
import numpy as np, pytest, torch

pytestmark = pytest.mark.cuda

def test_gpu_check_random_shapes():
    from msmamba_nb.scan_cuda import gpu_check
    res = gpu_check()
    out = os.environ.get("SCAN_CUDA_TESTS_OUT")
    if out: json.dump(res, open(out, "w"), indent=1)
    bad = [c for c in res["cases"] if not c["pass"]]
    assert res["n_cases"] >= 20 and not bad, bad

def test_side_stream_and_entry_point():
    from msmamba_nb.scan import selective_scan
    from msmamba_nb.scan_cuda import _rand_inputs, selective_scan_cuda
    x = _rand_inputs(3, 16, 300, 16, 4)
    a = [x[k] for k in ("u", "delta", "A", "B", "C", "D")]
    ref = selective_scan(*a, delta_bias=x["delta_bias"], backend="torch")
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        out = selective_scan_cuda(*a, delta_bias=x["delta_bias"]) * 1.0      # torch op on the same side stream
    torch.cuda.synchronize()
    assert torch.linalg.norm(out - ref) / torch.linalg.norm(ref) < 1e-5
    out2 = selective_scan(*a, delta_bias=x["delta_bias"], backend="cuda")
    assert torch.linalg.norm(out2 - ref) / torch.linalg.norm(ref) < 1e-5
