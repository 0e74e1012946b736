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

def _loss_and_grads(model, f, x, y):
    model.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(f(x), y)
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_compiled_model_matches_eager(mode):
    "torch.compile traces the model as one graph through the scan's custom ops (CUDA graphs with reduce-overhead); same loss and gradients."
    from msmamba_nb.model import MicroscopicMamba
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False   # fp32 both ways: differences are reorderings
    try:
        torch.manual_seed(0)
        m = MicroscopicMamba("t", num_classes=2, depths=(1, 1, 2, 1), drop_path_rate=0.0).cuda()   # no drop path: no shared RNG needed
        x, y = torch.randn(8, 3, 128, 128, device="cuda"), torch.randint(0, 2, (8,), device="cuda")
        l0, g0 = _loss_and_grads(m, m, x, y)
        torch._dynamo.reset()
        cm = torch.compile(m, mode=mode, fullgraph=True, dynamic=False)
        for _ in range(3): l1, g1 = _loss_and_grads(m, cm, x, y)      # warm-up, record, replay (reduce-overhead)
    finally: torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert g1.keys() == g0.keys()
    assert abs(l1 - l0) <= 1e-5 * max(1.0, abs(l0)), (l0, l1)
    total = torch.cat([g.flatten() for g in g0.values()]).norm()
    diff = torch.cat([(g1[n] - g0[n]).flatten() for n in g0]).norm()
    assert diff / total < 1e-4, float(diff / total)
    # per tensor: relative to its own size, plus a floor for analytically-zero gradients (biases before a norm: ~1e-9 noise)
    for n in g0: torch.testing.assert_close(g1[n], g0[n], rtol=1e-3, atol=1e-6 * float(total), msg=n)
