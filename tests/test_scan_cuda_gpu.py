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

def _rel(ga, gb):
    "Global relative error of gradient dict ga against gb (all tensors concatenated)."
    num = torch.cat([(ga[n].double() - gb[n].double()).flatten() for n in gb]).norm()
    return float(num / torch.cat([g.double().flatten() for g in gb.values()]).norm())

@pytest.mark.parametrize("mode", [None, "reduce-overhead"])
def test_compiled_model_matches_eager(mode):
    "torch.compile traces the model as one graph through the scan's custom ops (CUDA graphs with reduce-overhead): its loss and gradients are as close to a float64 reference as eager's."
    import copy
    from msmamba_nb.model import MicroscopicMamba
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        torch.manual_seed(0)
        m = MicroscopicMamba("t", num_classes=2, depths=(1, 1, 2, 1), drop_path_rate=0.0).cuda()   # no drop path: no shared RNG needed
        x, y = torch.randn(8, 3, 64, 64, device="cuda"), torch.randint(0, 2, (8,), device="cuda")
        m64 = copy.deepcopy(m).double()
        for mod in m64.modules():
            if hasattr(mod, "scan_backend"): mod.scan_backend = "torch"                      # float64 PyTorch scan
        l64, g64 = _loss_and_grads(m64, m64, x.double(), y)
        l0, g0 = _loss_and_grads(m, m, x, y)
        torch._dynamo.reset()
        cm = torch.compile(m, mode=mode, fullgraph=True, dynamic=False)
        for _ in range(3): l1, g1 = _loss_and_grads(m, cm, x, y)      # warm-up, record, replay (reduce-overhead)
    finally: torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert g1.keys() == g0.keys() == g64.keys()
    e_eager, e_comp, e_pair = _rel(g0, g64), _rel(g1, g64), _rel(g1, g0)
    rec = dict(mode=mode, loss_fp64=l64, loss_eager=l0, loss_compiled=l1, grad_rel_err_eager_vs_fp64=e_eager,
               grad_rel_err_compiled_vs_fp64=e_comp, grad_rel_diff_compiled_vs_eager=e_pair, gpu=torch.cuda.get_device_name())
    print(rec)
    out = os.environ.get("COMPILE_TESTS_OUT")
    if out: open(out, "a").write(json.dumps(rec) + "\n")
    assert abs(l1 - l64) <= 1e-4 * max(1.0, abs(l64)) and abs(l0 - l64) <= 1e-4 * max(1.0, abs(l64)), rec
    assert e_eager < 1e-2 and e_comp <= 2 * e_eager + 1e-6, rec       # compiled as accurate as eager (float32 rounding only)
