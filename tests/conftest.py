import os, pytest

def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")

def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long CPU test, run with --runslow")
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped without one)")

def pytest_collection_modifyitems(config, items):
    import torch
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run")
    skip_cuda = pytest.mark.skip(reason="cuda: no CUDA GPU on this machine")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"): item.add_marker(skip_slow)
        if "cuda" in item.keywords and not torch.cuda.is_available(): item.add_marker(skip_cuda)
