"""Model-level tests: shapes, published parameter counts, every variant/switch forward+backward, one optimisation step,
batched vs released scan layout, fix_transpose, errors, bf16 autocast, MAC counts, init, the CPU benchmark entry point."""
import json, math, pytest, torch
import torch.nn.functional as F
from msmamba_nb.model import (MicroscopicMamba, microscopic_mamba, count_params, unused_params, count_macs,
                              main_bench_model_cpu, PatchMerging2D)
from msmamba_nb.pvm import set_scan_layout
from msmamba_nb.psffn import PSFFN, make_ffn
from msmamba_nb.ss2d import record_scans


def test_shapes_224_t():
    torch.manual_seed(0)
    m = MicroscopicMamba("t", num_classes=5).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        f = m.forward_features(x)
        assert f.shape == (1, 7, 7, 768)
        assert m.head(m.avgpool(f.permute(0, 3, 1, 2)).flatten(1)).shape == (1, 5)


def test_shapes_64():
    torch.manual_seed(0)
    m = MicroscopicMamba("t", num_classes=2).eval()
    h = m.stem(torch.randn(2, 3, 64, 64)).permute(0, 2, 3, 1)
    shapes = [tuple(h.shape)]
    with torch.no_grad():
        for layer in m.layers:
            for b in layer.blocks: h = b(h)
            shapes.append(tuple(h.shape))
            if layer.downsample is not None: h = layer.downsample(h)
        assert m(torch.randn(2, 3, 64, 64)).shape == (2, 2)
    assert shapes == [(2, 16, 16, 96), (2, 16, 16, 96), (2, 8, 8, 192), (2, 4, 4, 384), (2, 2, 2, 768)]


@pytest.mark.parametrize("variant,k,expected", [("t", 1000, 4_321_310), ("s", 1000, 4_971_714), ("b", 1000, 9_405_578),
                                                ("t", 2, 3_553_848), ("b", 8, 8_388_778)])
def test_published_param_counts(variant, k, expected):
    assert count_params(microscopic_mamba(variant, k)) == expected


def test_ablation_and_unused_param_counts():
    assert count_params(MicroscopicMamba("t", parallel=False)) == 8_832_530      # v2 Table III, exact
    assert count_params(MicroscopicMamba("t", mifa=False)) == 4_299_422          # v2 Table II, exact
    m = MicroscopicMamba("t")
    assert unused_params(m) == 467_232 + 58_176                                   # spec §3.1 dead weights
    assert count_params(MicroscopicMamba("t", drop_unused=True)) == 4_321_310 - 525_408
    assert unused_params(MicroscopicMamba("t", drop_unused=True)) == 0
    psffn = sum(count_params(x) for x in m.modules() if isinstance(x, PSFFN))
    assert count_params(MicroscopicMamba("t", ffn="linear")) == 4_321_310 - psffn  # spec §6.4: 4.26 M (paper: 4.89 M)
    assert psffn == 2 * 330 + 2 * 1236 + 4 * 4776 + 2 * 18768                      # di·dm + dm + 10p per SS2D
    lin = count_params(MicroscopicMamba("t", ffn="linear"))
    for k in ("conv3", "convglu", "dfn"):                                          # out_proj stays (dead) + the new layer
        extra = sum(nb * count_params(make_ffn(k, C // 4, C // 8)) for nb, C in [(2, 96), (2, 192), (4, 384), (2, 768)])
        assert count_params(MicroscopicMamba("t", ffn=k)) == lin + extra


SWITCHES = [dict(), dict(fix_transpose=True), dict(drop_unused=True), dict(mifa=False), dict(parallel=False),
            dict(ffn="linear"), dict(ffn="conv3"), dict(ffn="convglu"), dict(ffn="dfn"),
            dict(psffn_ratio=1/12), dict(psffn_ratio=1.0), dict(scan_layout="released")]

@pytest.mark.parametrize("variant,kw", [("s", {}), ("b", {})] + [("t", kw) for kw in SWITCHES])
def test_forward_backward_every_variant_and_switch(variant, kw):
    torch.manual_seed(0)
    m = MicroscopicMamba(variant, num_classes=3, **kw).train()
    x = torch.randn(2, 3, 32, 32)
    out = m(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.tensor([0, 2])).backward()
    used = [p for mod_name, p in m.named_parameters() if not (".proj." in mod_name or "out_proj" in mod_name)
            or (kw.get("ffn") == "linear" and "out_proj" in mod_name)]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in used)
    assert m.stem[0].c.weight.grad.abs().sum() > 0 and m.head.weight.grad.abs().sum() > 0


def test_one_step_lowers_loss():
    torch.manual_seed(0)
    m = MicroscopicMamba("t", num_classes=4, drop_path_rate=0.)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    loss0 = F.cross_entropy(m(x), y)
    opt.zero_grad(); loss0.backward(); opt.step()
    with torch.no_grad(): loss1 = F.cross_entropy(m(x), y)
    assert loss1 < loss0


def test_batched_layout_equals_released_16_calls():
    torch.manual_seed(0)
    a = MicroscopicMamba("t", num_classes=3).eval()
    b = MicroscopicMamba("t", num_classes=3, scan_layout="released").eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), record_scans() as ra: ya = a(x)
    with torch.no_grad(), record_scans() as rb: yb = b(x)
    assert (ra.calls, rb.calls) == (10, 160)                                      # 1 vs 16 scan calls per block
    assert ra.scan_macs == rb.scan_macs
    torch.testing.assert_close(ya, yb, rtol=1e-4, atol=1e-4)
    set_scan_layout(b, "batched")
    with torch.no_grad(): torch.testing.assert_close(b(x), ya)


def test_fix_transpose_model():
    torch.manual_seed(0)
    m = MicroscopicMamba("t", num_classes=3).eval()
    with pytest.raises(ValueError, match="fix_transpose=True"): m(torch.randn(1, 3, 64, 96))
    f = MicroscopicMamba("t", num_classes=3, fix_transpose=True).eval()
    f.load_state_dict(m.state_dict())                                             # same parameters, no transpose
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert f(torch.randn(2, 3, 64, 96)).shape == (2, 3)                      # any H, W divisible by 32
        assert not torch.allclose(f(x), m(x))                                     # the transpose matters on square input
        assert f.forward_features(torch.randn(1, 3, 32, 96)).shape == (1, 1, 3, 768)
        assert MicroscopicMamba("t", 3, ffn="conv3")(torch.randn(1, 3, 32, 64)).shape == (1, 3)  # no transpose, no limit
        g = MicroscopicMamba("t", num_classes=3, fix_transpose=True, scan_layout="released").eval()
        g.load_state_dict(m.state_dict())
        xr = torch.randn(1, 3, 64, 96)
        torch.testing.assert_close(g(xr), f(xr), rtol=1e-4, atol=1e-4)


def test_clear_errors():
    m = MicroscopicMamba("t", num_classes=3)
    with pytest.raises(ValueError, match=r"expects images \(B, 3, H, W\)"): m(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match=r"expects images"): m(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="fix_transpose=True"): m(torch.randn(1, 3, 64, 32))
    with pytest.raises(ValueError, match="variant"): MicroscopicMamba("xl")
    with pytest.raises(ValueError, match="ffn"): MicroscopicMamba("t", ffn="mlp")
    with pytest.raises(ValueError, match="scan_layout"): MicroscopicMamba("t", scan_layout="fast")
    with pytest.raises(ValueError, match="HybridConvSSM"): m.layers[0].blocks[0](torch.randn(1, 8, 8, 48))


def test_bf16_autocast_forward_backward():
    torch.manual_seed(0)
    m = MicroscopicMamba("t", num_classes=3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(torch.randn(2, 3, 32, 32))
        loss = F.cross_entropy(out.float(), torch.tensor([0, 1]))
    loss.backward()
    assert torch.isfinite(out.float()).all() and torch.isfinite(m.head.weight.grad).all()


def test_count_macs():
    r = {v: count_macs(MicroscopicMamba(v)) for v in "ts"}
    assert (round(r["t"]["paper"], 2), round(r["s"]["paper"], 2)) == (0.64, 0.76)   # Table I
    assert abs(r["t"]["scan"] - 0.742) < 1e-3 and abs(r["s"]["scan"] - 0.917) < 1e-3  # spec §3.2 VMamba-style scan count
    assert r["t"]["scan_calls"] == 160
    assert abs(r["t"]["full"] - (r["t"]["paper"] + r["t"]["proj"] + r["t"]["scan"])) < 1e-12
    # the scan term by hand: per block 16 calls (4 chunks × 4 directions) of 9·L·di·N + di·L, N = 16
    hand = sum(nb * 16 * (9 * L * di * 16 + L * di) for nb, L, di in [(2, 3136, 24), (2, 784, 48), (4, 196, 96), (2, 49, 192)])
    assert r["t"]["scan"] * 1e9 == pytest.approx(hand, rel=1e-12)


def test_released_init():
    torch.manual_seed(0)
    m = MicroscopicMamba("t")
    w = m.layers[2].downsample.reduction.weight                                     # Linear: trunc-normal 0.02
    assert abs(w.std().item() - 0.02) < 1e-3 and m.head.bias.abs().sum() == 0
    ln = m.layers[0].blocks[0].pvm.norm
    assert (ln.weight == 1).all() and (ln.bias == 0).all()
    c = m.layers[3].blocks[0].conv_branch[7]                                         # 1×1 conv 768 → 384, fan_out
    assert abs(c.weight.std().item() - math.sqrt(2 / c.out_channels)) < 0.1 * math.sqrt(2 / c.out_channels)
    ss = m.layers[0].blocks[0].pvm.ss2d
    assert torch.allclose(-torch.exp(ss.A_logs[0]), -torch.arange(1., 17.)) and (ss.Ds == 1).all()


def test_patch_merging_order():
    x = torch.arange(8.).view(1, 2, 2, 2)
    pm = PatchMerging2D(2)
    with torch.no_grad():
        pm.norm.weight.fill_(1); pm.norm.bias.zero_()
        cat = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        assert cat.view(-1).tolist() == [0, 1, 4, 5, 2, 3, 6, 7]
        torch.testing.assert_close(pm(x), pm.reduction(pm.norm(cat)))


def test_bench_model_cpu_entry_point(tmp_path):
    out = tmp_path / "bench.json"
    assert main_bench_model_cpu(["--img-size", "32", "--batch", "1", "--warmup", "1", "--iters", "1",
                                 "--num-classes", "2", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["images_per_s"] > 0 and rec["variant"] == "t" and "torch" in rec["versions"] and rec["cpu"]


@pytest.mark.parametrize("ffn", ["psffn", "convglu", "dfn", "conv3"])
def test_grouped_convs_run_float32_under_autocast(ffn):
    "Every grouped conv is a GroupedConv2d: under bf16 autocast it returns float32 and the same numbers as without autocast."
    import torch.nn as nn
    from msmamba_nb.ss2d import GroupedConv2d
    torch.manual_seed(0)
    m = MicroscopicMamba("t", num_classes=2, depths=(1, 1, 1, 1), ffn=ffn, drop_path_rate=0.0)
    grouped = [mod for mod in m.modules() if isinstance(mod, nn.Conv2d) and mod.groups > 1]
    assert grouped and all(isinstance(mod, GroupedConv2d) for mod in grouped)
    seen = []
    hooks = [mod.register_forward_hook(lambda mod, i, o: seen.append(o.dtype))
             for mod in grouped]
    x = torch.randn(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x)
    for h in hooks: h.remove()
    assert seen and all(dt == torch.float32 for dt in seen)
    out.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for mod in grouped for p in mod.parameters())
    conv, xin = grouped[0], torch.randn(2, grouped[0].in_channels, 9, 9)
    with torch.autocast("cpu", dtype=torch.bfloat16): ya = conv(xin)
    torch.testing.assert_close(ya, conv(xin))
