# per-parameter gradient comparison: eager vs eager (noise), eager vs compiled, TF32 off
import torch, sys, json
torch.backends.cuda.matmul.allow_tf32 = False; torch.backends.cudnn.allow_tf32 = False
from msmamba_nb.model import MicroscopicMamba
torch.manual_seed(0)
m = MicroscopicMamba("t", num_classes=2, drop_path_rate=0.0).cuda()
x, y = torch.randn(8, 3, 224, 224, device="cuda"), torch.randint(0, 2, (8,), device="cuda")
def run(f):
    m.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(f(x), y); loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in m.named_parameters() if p.grad is not None}
l0, g0 = run(m); l0b, g0b = run(m)
tot = torch.cat([g.flatten() for g in g0.values()]).norm().item()
def cmp(ga, gb, tag):
    rows = sorted(((float((ga[n]-gb[n]).norm()), float(gb[n].norm()), n) for n in gb), reverse=True)
    allr = torch.cat([(ga[n]-gb[n]).flatten() for n in gb]).norm().item() / tot
    print(f"{tag}: global rel {allr:.2e}; worst by abs diff:")
    for d, nb, n in rows[:6]: print(f"   {n:60s} diff {d:.3e} norm {nb:.3e} rel {d/max(nb,1e-30):.2e}")
    rr = sorted(((float((ga[n]-gb[n]).norm())/max(float(gb[n].norm()),1e-30), float(gb[n].norm()), n) for n in gb), reverse=True)
    print("   worst by rel:"); [print(f"   {n:60s} rel {r:.2e} norm {nb:.3e}") for r, nb, n in rr[:6]]
print("loss", l0, l0b, "total grad norm", tot)
cmp(g0b, g0, "eager vs eager")
for mode in (None, "reduce-overhead"):
    torch._dynamo.reset()
    cm = torch.compile(m, mode=mode, fullgraph=True, dynamic=False)
    for _ in range(3): l1, g1 = run(cm)
    print("mode", mode, "loss", l1)
    cmp(g1, g0, f"compiled {mode} vs eager")
