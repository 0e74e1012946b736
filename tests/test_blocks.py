"Block-level tests: cross-scan/merge, SS2D, PSFFN and its alternatives, MIFA, parallel VSSM, Hybrid-Conv-SSM block."
import pytest, torch
import torch.nn.functional as F
from msmamba_nb.ss2d import SS2D, cross_scan, cross_merge, dwconv_cl, record_scans, selective_scan_map
from msmamba_nb.scan_cuda import scan_orders
from msmamba_nb.psffn import PSFFN, channel_shuffle, make_ffn, FFN_KINDS
from msmamba_nb.mifa import MIFA, ECAGate
from msmamba_nb.pvm import ParallelVSSM, HybridConvSSM, set_scan_layout, drop_path

n_params = lambda m: sum(p.numel() for p in m.parameters())


def test_cross_scan_orders_and_adjoint():
    x = torch.arange(6.).view(1, 1, 2, 3)
    xs = cross_scan(x)
    assert xs[0, :, 0].tolist() == [[0, 1, 2, 3, 4, 5], [0, 3, 1, 4, 2, 5], [5, 4, 3, 2, 1, 0], [5, 2, 4, 1, 3, 0]]
    x, y = torch.randn(2, 3, 4, 5, dtype=torch.float64), torch.randn(2, 4, 3, 20, dtype=torch.float64)
    torch.testing.assert_close((cross_scan(x) * y).sum(), (x * cross_merge(y, 4, 5)).sum())


def test_channel_shuffle():
    assert channel_shuffle(torch.arange(8), 4).tolist() == [0, 2, 4, 6, 1, 3, 5, 7]      # 2 per group: evens, odds
    assert channel_shuffle(torch.arange(8), 2).tolist() == [0, 4, 1, 5, 2, 6, 3, 7]      # 4 per group
    with pytest.raises(ValueError, match="not divisible"): channel_shuffle(torch.arange(6), 4)


def test_dwconv_cl_equals_per_chunk_conv():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 4, 3, 6)
    for conv in (torch.nn.Conv2d(6, 6, 3, padding=1, groups=6), torch.nn.Conv2d(6, 4, 3, padding=1)):
        ref = torch.stack([conv(x[:, :, :, g].permute(0, 3, 1, 2)).permute(0, 2, 3, 1) for g in range(3)], 3)
        torch.testing.assert_close(dwconv_cl(x, conv), ref, rtol=1e-5, atol=1e-5)


def test_ss2d_params_init_and_chunks():
    torch.manual_seed(0)
    m = SS2D(12, out_layer=PSFFN(24, 12))
    assert n_params(m) == 6474                                          # spec §3.1: t stage-1 SS2D incl. dead out_proj
    assert n_params(SS2D(12, out_layer=PSFFN(24, 12), drop_unused=True)) == 6474 - 288
    torch.testing.assert_close(m.A_logs[5], torch.log(torch.arange(1., 17.)))
    assert (m.Ds == 1).all()
    dt = F.softplus(m.dt_projs_bias)
    assert dt.min() > 0.99e-3 and dt.max() < 0.1001
    x = torch.randn(2, 6, 6, 3, 12)
    torch.testing.assert_close(m(x)[:, :, :, 2], m(x[:, :, :, 2]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="d_model=12"): m(torch.randn(1, 6, 6, 10))


def test_ss2d_fix_transpose_relation():
    "Only the PSFFN branch is transposed; SS2D's own residual is not: default(x) - x == (fix(x) - x) with H/W swapped."
    torch.manual_seed(0)
    a = SS2D(12, out_layer=PSFFN(24, 12, fix_transpose=False))
    b = SS2D(12, out_layer=PSFFN(24, 12, fix_transpose=True))
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 7, 7, 4, 12)
    torch.testing.assert_close(a(x) - x, (b(x) - x).transpose(1, 2), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="fix_transpose=True"): a(torch.randn(1, 6, 8, 12))
    assert b(torch.randn(1, 6, 8, 12)).shape == (1, 6, 8, 12)


def test_psffn_paths_and_transpose():
    torch.manual_seed(0)
    f_rel, f_fix = PSFFN(16, 8), PSFFN(16, 8, fix_transpose=True)
    f_fix.load_state_dict(f_rel.state_dict())
    y = torch.randn(2, 6, 6, 16)
    torch.testing.assert_close(f_rel(y), f_fix(y).transpose(1, 2))
    for f in (f_rel, f_fix):
        torch.testing.assert_close(f.forward_nchw(y.permute(0, 3, 1, 2)).permute(0, 2, 3, 1), f(y), rtol=1e-5, atol=1e-5)
    # the 75 % identity channels are exactly SiLU(1×1 conv)
    un = f_fix(y)[..., channel_shuffle(torch.arange(8), 4).argsort()]
    torch.testing.assert_close(un[..., 2:], F.silu(f_fix.conv_0(y.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)[..., 2:])
    with pytest.raises(ValueError, match="fix_transpose=True"): f_rel(torch.randn(1, 4, 6, 16))
    assert [PSFFN(24, 12, r).p_dim for r in (1/12, 1/6, 1/4, 1/2, 1)] == [1, 2, 3, 6, 12]


@pytest.mark.parametrize("kind", [k for k in FFN_KINDS if k != "linear"])
def test_ffn_alternatives_paths(kind):
    torch.manual_seed(0)
    f = make_ffn(kind, 24, 12, fix_transpose=True)
    y = torch.randn(2, 5, 7, 3, 24)
    o = f(y)
    assert o.shape == (2, 5, 7, 3, 12)
    torch.testing.assert_close(o[:, :, :, 1], f.forward_nchw(y[:, :, :, 1].permute(0, 3, 1, 2)).permute(0, 2, 3, 1),
                               rtol=1e-5, atol=1e-5)


def test_mifa_formula_and_eca_gate():
    torch.manual_seed(0)
    m = MIFA(8)
    assert n_params(MIFA(48)) == 576
    l, g = torch.randn(2, 8, 5, 6), torch.randn(2, 8, 5, 6)
    ml = torch.sigmoid(F.relu(m.dwconv(l))); mg = torch.sigmoid(F.gelu(m.dwconv(g)))
    cat = torch.cat([ml * g, mg * l], 1)
    shuf = cat[:, [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15]]
    gate = torch.sigmoid(m.eca.conv.weight.view(1, 16, 1, 1) * shuf.mean((2, 3), keepdim=True))   # k=1: per channel
    torch.testing.assert_close(m(l, g), shuf * gate, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="MIFA"): m(torch.randn(1, 6, 4, 4), torch.randn(1, 6, 4, 4))
    assert n_params(ECAGate(10)) == 10


def _layouts_agree(a, b, x):
    "Modules a, b (same weights, two scan layouts) on x: outputs and every gradient agree; returns their scan records."
    with record_scans() as ra: ya = a(x)
    with record_scans() as rb: yb = b(x)
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-5)
    w = torch.randn_like(ya)
    (ya * w).sum().backward(); (yb * w).sum().backward()
    for (na, pa), (nb, pb) in zip(a.named_parameters(), b.named_parameters()):
        if pa.grad is None: assert pb.grad is None, na; continue
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-3, atol=1e-5, msg=na)
    return ra, rb


def test_pvm_batched_equals_released_forward_and_grads():
    "One grouped scan call per block equals the released 16 calls, outputs and every gradient."
    torch.manual_seed(0)
    a = ParallelVSSM(48)
    b = ParallelVSSM(48, scan_layout="released"); b.load_state_dict(a.state_dict())
    ra, rb = _layouts_agree(a, b, torch.randn(2, 8, 8, 48))
    assert (ra.calls, rb.calls) == (1, 16)


def test_scan_orders_are_cross_scan():
    "The map layout's step → position table walks the map exactly as cross_scan lays it out, for every K and odd shapes."
    for H, W in ((2, 3), (5, 4), (1, 7)):
        x = torch.randn(3, H, W)
        for K in (1, 2, 4):
            o = scan_orders(H, W, K)
            assert o.dtype == torch.int32 and o.shape == (K, H * W)
            torch.testing.assert_close(x.flatten(-2)[:, o.long()], cross_scan(x)[:K].transpose(0, 1), rtol=0, atol=0)
    with pytest.raises(ValueError, match="K=5"): scan_orders(2, 2, 5)


def test_ss2d_map_layout_equals_batched():
    "The map layout (projections and scan on the channels-last map, no cross-scan copies) equals the batched layout: outputs, gradients, counted work."
    torch.manual_seed(0)
    a = SS2D(12)                                                          # a non-square map with 4 chunks, as in a ParallelVSSM
    b = SS2D(12, scan_layout="map"); b.load_state_dict(a.state_dict())
    ra, rb = _layouts_agree(a, b, torch.randn(2, 5, 7, 4, 12))
    assert (ra.calls, ra.scan_macs, ra.proj_macs) == (rb.calls, rb.scan_macs, rb.proj_macs) and rb.calls == 1
    u = torch.randn(1, 3, 4, 2, 6, dtype=torch.float64)                  # selective_scan_map's reference path, K = 2
    d, B, C = torch.randn(1, 3, 4, 2, 2, 6, dtype=torch.float64), *torch.randn(2, 1, 3, 4, 2, 2, 5, dtype=torch.float64)
    y = selective_scan_map(u, d, -torch.rand(12, 5, dtype=torch.float64), B, C, backend="torch")
    assert y.shape == u.shape and torch.isfinite(y).all()

def test_block_counts_and_switches():
    assert [n_params(HybridConvSSM(C)) for C in (96, 192, 384, 768)] == [16075, 48661, 162601, 587857]
    assert n_params(HybridConvSSM(96, mifa=False)) == 16075 - 576
    torch.manual_seed(0)
    x = torch.randn(2, 8, 8, 96)
    blk = HybridConvSSM(96).eval()
    y1 = blk(x)
    y2 = set_scan_layout(blk, "released")(x)
    torch.testing.assert_close(y1, y2, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="HybridConvSSM\\(dim=96\\)"): blk(torch.randn(2, 8, 8, 64))
    with pytest.raises(ValueError, match="ParallelVSSM\\(dim=48\\)"): blk.pvm(torch.randn(2, 8, 8, 40))


def test_drop_path():
    torch.manual_seed(0)
    o = drop_path(torch.ones(2000, 3), 0.25, training=True)
    assert set(o[:, 0].unique().tolist()) <= {0., torch.tensor(1 / 0.75).item()} and abs(o.mean().item() - 1) < 0.05
    assert torch.equal(drop_path(torch.ones(4, 3), 0.25, training=False), torch.ones(4, 3))

@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_multiplier_conv_depthwise_on_cuda(monkeypatch, dtype):
    "On CUDA the conv branch's 1→2-per-group conv as a depthwise conv of the repeated input (an option, slower): same output and gradients as cuDNN's."
    from msmamba_nb import ss2d
    g = torch.Generator(device='cuda').manual_seed(0)
    x = torch.randn(4, 48, 28, 28, device='cuda', generator=g).to(dtype).requires_grad_()
    conv = ss2d.GroupedConv2d(48, 96, 3, 1, 1, groups=48).cuda()
    res = {}
    for mode in ('cudnn', 'depthwise'):
        monkeypatch.setattr(ss2d, 'GROUPED_CONV', mode)
        with torch.autocast('cuda', dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            y = conv(x)
        res[mode] = (y, *torch.autograd.grad(y.float().square().sum(), (x, conv.weight, conv.bias)))
    for a, b in zip(res['depthwise'], res['cudnn']):
        assert torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-3), float((a.float() - b.float()).abs().max())
