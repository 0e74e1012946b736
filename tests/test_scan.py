"""Tests of msmamba_nb.scan: NumPy reference vs finite differences, backend agreement, input validation."""
import json
import numpy as np
import pytest
import torch

from msmamba_nb.scan import (SCAN_ARGS, random_scan_inputs, selective_scan, selective_scan_numba,
                             selective_scan_ref_np, selective_scan_ref_np_bwd, selective_scan_torch,
                             selective_scan_torch_naive, softplus_np, linear_scan_np, linear_scan_assoc_np,
                             benchmark_scan_cpu, main_bench_scan, check_scan_inputs)

# mamba_ssm tests/ops/test_selective_scan.py tolerances (fp32)
RTOL_OUT, ATOL_OUT, TOL_GRAD = 6e-4, 2e-3, 1e-3


def _fd_grads(case, w, delta_softplus, eps=1e-6):
    "Central finite differences of sum(w * out) w.r.t. every present input (float64)."
    loss = lambda c: float((selective_scan_ref_np(**c, delta_softplus=delta_softplus) * w).sum())
    num = {}
    for k, x in case.items():
        if x is None: continue
        g = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            c = {kk: (vv.copy() if kk == k else vv) for kk, vv in case.items()}
            c[k][i] = x[i] + eps; lp = loss(c)
            c[k][i] = x[i] - eps; lm = loss(c)
            g[i] = (lp - lm) / (2 * eps)
        num[k] = g
    return num


FD_CASES = [  # Bt, Dc, L, N, G, D, z, bias, softplus
    (2, 4, 6, 3, 1, True, True, True, True),
    (1, 4, 5, 2, 2, True, True, True, True),
    (2, 8, 4, 2, 4, True, True, True, True),
    (2, 4, 1, 3, 2, True, True, True, True),     # L = 1
    (2, 4, 5, 1, 4, True, False, True, True),    # N = 1
    (1, 2, 5, 2, 1, False, False, False, False), # minimal, no softplus
    (2, 4, 5, 2, 2, False, True, True, False),
]


@pytest.mark.parametrize("Bt,Dc,L,N,G,D,z,bias,sp", FD_CASES)
def test_reference_backward_matches_finite_differences(Bt, Dc, L, N, G, D, z, bias, sp):
    case = random_scan_inputs(Bt=Bt, Dc=Dc, L=L, N=N, G=G, D=D, z=z, delta_bias=bias, seed=Bt * 100 + L * 10 + G)
    w = np.random.default_rng(7).normal(size=case["u"].shape)
    ana = dict(zip(SCAN_ARGS, selective_scan_ref_np_bwd(w, **case, delta_softplus=sp)))
    num = _fd_grads(case, w, sp)
    assert set(num) == {k for k, v in case.items() if v is not None}
    for k in SCAN_ARGS:
        if case[k] is None: assert ana[k] is None, k; continue
        assert ana[k].shape == case[k].shape, k
        np.testing.assert_allclose(ana[k], num[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_reference_backward_softplus_threshold_and_3d_BC():
    "delta + bias > 20 takes the identity branch of softplus; 3-D B/C give 3-D grads."
    case = random_scan_inputs(Bt=2, Dc=3, L=4, N=2, G=1, z=True, seed=5)
    case["delta_bias"] = np.array([0.1, 25.0, -3.0])            # channel 1 is above the threshold
    case["A"] = case["A"] * 0.01                                 # keep exp(ΔA) away from 0 with Δ ≈ 25
    case["B"], case["C"] = case["B"][:, 0], case["C"][:, 0]
    w = np.random.default_rng(3).normal(size=case["u"].shape)
    ana = dict(zip(SCAN_ARGS, selective_scan_ref_np_bwd(w, **case)))
    num = _fd_grads(case, w, True)
    for k in num: np.testing.assert_allclose(ana[k], num[k], rtol=1e-6, atol=1e-6, err_msg=k)
    assert ana["B"].shape == (2, 2, 4)


def test_softplus_and_linear_scan():
    x = np.array([-50., -1., 0., 3., 20., 20.5, 100.])
    np.testing.assert_allclose(softplus_np(x), np.where(x <= 20, np.log1p(np.exp(np.minimum(x, 20))), x))
    assert softplus_np(np.array([100.]))[0] == 100.
    r = np.random.default_rng(0)
    a, b = r.uniform(0.2, 1, (2, 3, 17)), r.normal(size=(2, 3, 17))
    h = linear_scan_np(a, b)
    np.testing.assert_allclose(h[..., 0], b[..., 0])
    np.testing.assert_allclose(h[..., 5], a[..., 5] * h[..., 4] + b[..., 5])
    np.testing.assert_allclose(linear_scan_assoc_np(a, b), h, rtol=1e-12)


def test_reference_matches_closed_form():
    "One channel, N=1, constant Δ: impulse response Δ·B·exp(ΔA)^t·C."
    L, dt, A = 6, 0.3, -0.7
    u = np.zeros((1, 1, L)); u[0, 0, 0] = 1.
    out = selective_scan_ref_np(u, np.full((1, 1, L), dt), np.array([[A]]), np.full((1, 1, 1, L), 2.),
                                np.full((1, 1, 1, L), 0.5), D=np.array([3.]), delta_softplus=False)
    expect = dt * 2. * 0.5 * np.exp(dt * A) ** np.arange(L)
    expect[0] += 3.
    np.testing.assert_allclose(out[0, 0], expect, rtol=1e-12)


AGREE_CASES = [  # Bt, Dc, L, N, G, D, z, bias, softplus, tc
    (2, 4, 1, 4, 1, True, True, True, True, 64),    # L = 1
    (2, 4, 9, 1, 2, True, False, True, True, 4),    # N = 1
    (2, 8, 13, 4, 4, True, True, True, True, 5),    # G = 4, chunks incl. a partial one
    (1, 6, 70, 8, 2, False, False, False, True, 64),  # L not a multiple of TC
    (2, 4, 33, 16, 1, False, True, False, False, 8),  # softplus off
    (3, 8, 20, 3, 2, True, False, False, True, 20),
    (1, 4, 9, 20, 2, True, True, True, True, 4),     # N = 20: two tiles of 16 states in the kernels, one partial
]


def _torch_case(case, dtype=torch.float32):
    return {k: None if v is None else torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in case.items()}


@pytest.mark.parametrize("Bt,Dc,L,N,G,D,z,bias,sp,tc", AGREE_CASES)
@pytest.mark.parametrize("backend", ["torch", "numba", "torch_naive"])
def test_backends_agree_with_reference(Bt, Dc, L, N, G, D, z, bias, sp, tc, backend):
    case = random_scan_inputs(Bt=Bt, Dc=Dc, L=L, N=N, G=G, D=D, z=z, delta_bias=bias, seed=L + N)
    c = _torch_case(case)
    if backend == "numba": out = selective_scan_numba(**c, delta_softplus=sp, tc=tc)
    elif backend == "torch_naive": out = selective_scan_torch_naive(**c, delta_softplus=sp)
    else: out = selective_scan(**c, delta_softplus=sp, backend=backend)
    ref = selective_scan_ref_np(**case, delta_softplus=sp)
    assert out.dtype == torch.float32 and out.shape == (Bt, Dc, L)
    np.testing.assert_allclose(out.detach().numpy(), ref, rtol=RTOL_OUT, atol=ATOL_OUT)
    w = np.random.default_rng(2).normal(size=ref.shape)
    out.backward(torch.tensor(w, dtype=torch.float32))
    ref_g = selective_scan_ref_np_bwd(w, **case, delta_softplus=sp)
    for k, g in zip(SCAN_ARGS, ref_g):
        if g is None: assert c[k] is None; continue
        np.testing.assert_allclose(c[k].grad.numpy(), g, rtol=TOL_GRAD, atol=TOL_GRAD, err_msg=f"{backend} d{k}")


def test_numba_chunking_is_exact():
    "The Numba result does not depend on the chunk size between stored states (fp32 rounding only)."
    case = random_scan_inputs(Bt=2, Dc=4, L=50, N=5, G=2, z=True, seed=11)
    outs, grads = [], []
    for tc in (1, 7, 50, 64):
        c = _torch_case(case)
        o = selective_scan_numba(**c, tc=tc); o.sum().backward()
        outs.append(o.detach()); grads.append([c[k].grad for k in SCAN_ARGS])
    for o, g in zip(outs[1:], grads[1:]):
        torch.testing.assert_close(o, outs[0], rtol=1e-5, atol=1e-6)
        for a, b in zip(g, grads[0]): torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_numba_threshold_and_large_steps():
    "delta + bias above 20 (identity branch of softplus) in the Numba kernels."
    case = random_scan_inputs(Bt=1, Dc=4, L=12, N=4, G=2, seed=4)
    case["delta_bias"] = np.array([0.0, 19.5, 20.5, 30.0]); case["A"] = case["A"] * 0.01
    c = _torch_case(case)
    out = selective_scan(**c, backend="numba")
    np.testing.assert_allclose(out.detach().numpy(), selective_scan_ref_np(**case), rtol=RTOL_OUT, atol=ATOL_OUT)
    w = np.ones(case["u"].shape)
    out.backward(torch.ones_like(out))
    for k, g in zip(SCAN_ARGS, selective_scan_ref_np_bwd(w, **case)):
        if g is not None: np.testing.assert_allclose(c[k].grad.numpy(), g, rtol=TOL_GRAD, atol=TOL_GRAD, err_msg=k)


def test_torch_path_float64_matches_reference_exactly():
    case = random_scan_inputs(Bt=2, Dc=4, L=7, N=3, G=2, z=True, seed=9)
    c = _torch_case(case, torch.float64)
    out = selective_scan(**c, backend="torch")
    assert out.dtype == torch.float64
    np.testing.assert_allclose(out.detach().numpy(), selective_scan_ref_np(**case), rtol=1e-12, atol=1e-12)
    w = np.random.default_rng(0).normal(size=case["u"].shape)
    out.backward(torch.tensor(w))
    for k, g in zip(SCAN_ARGS, selective_scan_ref_np_bwd(w, **case)):
        np.testing.assert_allclose(c[k].grad.numpy(), g, rtol=1e-10, atol=1e-10, err_msg=k)


def test_torch_path_gradcheck():
    case = random_scan_inputs(Bt=1, Dc=2, L=3, N=2, G=1, z=True, seed=1)
    c = _torch_case(case, torch.float64)
    assert torch.autograd.gradcheck(lambda *a: selective_scan_torch(*a), tuple(c[k] for k in SCAN_ARGS))


def test_auto_backend_and_reference_backend():
    case = random_scan_inputs(Bt=2, Dc=4, L=6, N=3, G=2, seed=2)
    c = _torch_case(case)
    a = selective_scan(**c)
    n = selective_scan(**c, backend="numba")
    torch.testing.assert_close(a, n, rtol=0, atol=0)
    r = selective_scan(**c, backend="reference")
    assert r.dtype == torch.float32 and not r.requires_grad
    np.testing.assert_allclose(r.numpy(), selective_scan_ref_np(**case), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_half_inputs(dtype, backend):
    case = random_scan_inputs(Bt=2, Dc=4, L=8, N=4, G=2, seed=3)
    c = {k: None if v is None else torch.tensor(v, dtype=torch.float32) for k, v in case.items()}
    c["u"] = c["u"].to(dtype).requires_grad_(True)
    c["B"] = c["B"].to(dtype).requires_grad_(True)
    out = selective_scan(**c, backend=backend)
    assert out.dtype == dtype
    ref = selective_scan_ref_np(**dict(case, u=c["u"].detach().double().numpy(), B=c["B"].detach().double().numpy()))
    np.testing.assert_allclose(out.detach().double().numpy(), ref, rtol=2e-2, atol=2e-2)
    out.float().sum().backward()
    assert c["u"].grad.dtype == dtype and c["B"].grad.dtype == dtype


def test_noncontiguous_and_3d_BC():
    case = random_scan_inputs(Bt=2, Dc=3, L=6, N=2, G=1, seed=8)
    c = _torch_case(case)
    u_nc = torch.tensor(case["u"], dtype=torch.float32).transpose(1, 2).contiguous().transpose(1, 2).requires_grad_(True)
    B3 = torch.tensor(case["B"][:, 0], dtype=torch.float32, requires_grad=True)
    C3 = torch.tensor(case["C"][:, 0], dtype=torch.float32).transpose(1, 2).contiguous().transpose(1, 2)
    assert not u_nc.is_contiguous() and not C3.is_contiguous()
    for be in ("numba", "torch"):
        out = selective_scan(u_nc, c["delta"], c["A"], B3, C3, c["D"], None, c["delta_bias"], backend=be)
        np.testing.assert_allclose(out.detach().numpy(), selective_scan_ref_np(**case), rtol=RTOL_OUT, atol=ATOL_OUT)
        out.sum().backward()
        assert B3.grad.shape == (2, 2, 6)
        np.testing.assert_allclose(B3.grad.numpy(), selective_scan_ref_np_bwd(np.ones(out.shape), **case)[3][:, 0],
                                   rtol=TOL_GRAD, atol=TOL_GRAD)
        B3.grad = None


# --- input validation ------------------------------------------------------------------------------------------------
def _good():
    return {k: None if v is None else torch.tensor(v, dtype=torch.float32)
            for k, v in random_scan_inputs(Bt=2, Dc=8, L=5, N=4, G=4, z=True).items()}


BAD = [  # (modification, exception, text that must appear in the message)
    (lambda c: dict(c, u=c["u"].long()), TypeError, "u must be a floating"),
    (lambda c: dict(c, A=c["A"].to(torch.complex64)), TypeError, "A must be a floating"),
    (lambda c: dict(c, D=c["D"].int()), TypeError, "D must be a floating"),
    (lambda c: dict(c, z=c["z"].bool()), TypeError, "z must be a floating"),
    (lambda c: dict(c, delta=c["delta"].numpy()), TypeError, "delta must be a torch.Tensor"),
    (lambda c: dict(c, B=None), TypeError, "B is required"),
    (lambda c: dict(c, u=c["u"][0]), ValueError, "u must be 3-D"),
    (lambda c: dict(c, delta=c["delta"][:, :, :4]), ValueError, "delta must have u's shape"),
    (lambda c: dict(c, A=c["A"][:7]), ValueError, "A must be (D_, N)"),
    (lambda c: dict(c, A=c["A"][None]), ValueError, "A must be (D_, N)"),
    (lambda c: dict(c, B=c["B"][:, :, :3]), ValueError, "B must be (Bt=2, G, N=4, L=5)"),
    (lambda c: dict(c, C=c["C"][:1]), ValueError, "C must be (Bt=2"),
    (lambda c: dict(c, C=c["C"][:, :2]), ValueError, "B and C must have the same shape"),
    (lambda c: dict(c, B=c["B"][..., None]), ValueError, "B must be (Bt, G, N, L) or (Bt, N, L)"),
    (lambda c: dict(c, B=c["B"][:, :3], C=c["C"][:, :3]), ValueError, "divisible by the groups G=3"),
    (lambda c: dict(c, D=c["D"][:5]), ValueError, "D must have shape (8,)"),
    (lambda c: dict(c, delta_bias=c["delta_bias"][None]), ValueError, "delta_bias must have shape (8,)"),
    (lambda c: dict(c, z=c["z"][:, :4]), ValueError, "z must have u's shape"),
    (lambda c: dict(c, A=torch.zeros(8, 257), B=torch.zeros(2, 4, 257, 5), C=torch.zeros(2, 4, 257, 5)),
     ValueError, "1..256"),
    (lambda c: dict(c, u=c["u"][:, :, :0], delta=c["delta"][:, :, :0]), ValueError, "non-empty"),
    (lambda c: dict(c, delta_bias=c["delta_bias"].to("meta")), ValueError, "one device"),
]


@pytest.mark.parametrize("i", range(len(BAD)))
def test_bad_inputs_raise_before_launch(i):
    mod, exc, text = BAD[i]
    c = mod(_good())
    for be in ("auto", "numba", "torch"):
        with pytest.raises(exc) as e: selective_scan(**c, backend=be)
        assert text in str(e.value), (text, str(e.value))


def test_bad_backend_and_device():
    c = _good()
    with pytest.raises(ValueError, match="backend must be one of"): selective_scan(**c, backend="jax")
    with pytest.raises(ValueError, match="needs CUDA tensors"): selective_scan(**c, backend="cuda")
    u, d, A, B, C, D, z, b = check_scan_inputs(c["u"], c["delta"], c["A"], c["B"][:, 0], c["C"][:, 0])
    assert B.shape == (2, 1, 4, 5) and C.shape == (2, 1, 4, 5)


def test_benchmark_smoke(tmp_path):
    rows = benchmark_scan_cpu(batch=1, shapes=((8, 10),), N=4, G=2, reps=1, naive_shapes=((8, 10),), verbose=False)
    r = rows[0]
    for k in ("torch_fwd_s", "torch_fwdbwd_s", "numba_fwd_s", "numba_fwdbwd_s", "torch_naive_fwdbwd_s"):
        assert r[k] > 0, k
    assert r["ratio_fwdbwd_torch"] == pytest.approx(r["torch_fwdbwd_s"] / r["numba_fwdbwd_s"])
    out = tmp_path / "b.json"
    assert main_bench_scan(["--batch", "1", "--reps", "1", "--reps-torch-bwd", "1", "--stages", "4",
                            "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["rows"][0]["channels"] == 768 and rec["rows"][0]["L"] == 49
    assert {"cpu", "numba_threads", "torch", "numba", "git_commit", "date"} <= set(rec["env"])


def test_numba_direct_call_is_checked_and_guards_inplace_edits():
    c = _good()
    with pytest.raises(ValueError, match="divisible by the groups"):
        selective_scan_numba(**dict(c, B=c["B"][:, :3], C=c["C"][:, :3]))
    with pytest.raises(ValueError, match="tc must be"): selective_scan_numba(**c, tc=0)
    u = c["u"].clone().requires_grad_(True)
    x = u * 1.0
    out = selective_scan_numba(**dict(c, u=x))
    x.add_(1.0)                                                  # edit a saved input in place
    with pytest.raises(RuntimeError, match="modified by an inplace operation"): out.sum().backward()
