import torch, copy, sys, json
sys.path.insert(0, "gpu/src/tests")
from test_scan_cuda_gpu import _loss_and_grads, _rel
from msmamba_nb.model import MicroscopicMamba
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
S = int(sys.argv[1])
torch.manual_seed(0)
m = MicroscopicMamba("t", num_classes=2, depths=(1, 1, 2, 1), drop_path_rate=0.0).cuda()
x, y = torch.randn(8, 3, S, S, device="cuda"), torch.randint(0, 2, (8,), device="cuda")
m64 = copy.deepcopy(m).double()
for mod in m64.modules():
    if hasattr(mod, "scan_backend"): mod.scan_backend = "torch"
l64, g64 = _loss_and_grads(m64, m64, x.double(), y)
l0, g0 = _loss_and_grads(m, m, x, y)
cm = torch.compile(m, fullgraph=True, dynamic=False)
for _ in range(2): l1, g1 = _loss_and_grads(m, cm, x, y)
print(json.dumps(dict(size=S, loss64=l64, l0=l0, l1=l1, e_eager=_rel(g0, g64), e_comp=_rel(g1, g64), pair=_rel(g1, g0))))
rows = sorted(((float((g1[n].double()-g64[n]).norm()), float((g0[n].double()-g64[n]).norm()), float(g64[n].norm()), n) for n in g64), reverse=True)
for r in rows[:8]: print("comp_err %.3e eager_err %.3e norm %.3e %s" % r)
