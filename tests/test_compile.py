"torch.compile traces MicroscopicMamba as ONE graph through the scan's custom ops (CPU, Numba scan): no graph break, eager numbers."
import torch, pytest
from msmamba_nb.model import MicroscopicMamba

def test_compiled_model_fullgraph_matches_eager():
    torch.manual_seed(0)
    m = MicroscopicMamba("t", num_classes=3, depths=(1, 1, 1, 1), drop_path_rate=0.0).train()
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 2])
    def run(f):
        m.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(f(x), y); loss.backward()
        return loss.item(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
    l0, g0 = run(m)
    torch._dynamo.reset()
    l1, g1 = run(torch.compile(m, fullgraph=True, dynamic=False))   # fullgraph: any graph break is an error
    assert g1.keys() == g0.keys() and len(g0) > 100
    assert abs(l1 - l0) < 1e-5
    for n in g0: torch.testing.assert_close(g1[n], g0[n], rtol=1e-3, atol=1e-5, msg=n)
