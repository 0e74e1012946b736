#!/usr/bin/env bash
# The project's one test command (README, and .ci/run): set up a fresh venv, check that the notebooks are clean
# and the library is in sync with them, run the notebooks (nbdev_test) and then the library tests (pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1 MPLBACKEND=Agg PIP_DISABLE_PIP_VERSION_CHECK=1
[ -x .venv/bin/python ] || python3 -m venv .venv
. .venv/bin/activate
echo "== install"
pip install -q torch==2.13.0
pip install -q -e ".[dev]"
echo "== notebooks clean (nbdev_clean leaves no diff)"
nbdev_clean
git diff --exit-code --stat -- nbs || { echo "notebooks are not clean: run nbdev_clean and commit"; exit 1; }
echo "== library in sync with notebooks (nbdev_export leaves no diff)"
nbdev_export
if [ -n "$(git status --porcelain -uno -- msmamba_nb)" ]; then
  git status --porcelain -uno -- msmamba_nb; echo "library differs from the notebooks: run nbdev_export and commit"; exit 1
fi
echo "== nbdev_test (skips cells flagged: $(grep ^tst_flags settings.ini))"
NUMBA_NUM_THREADS=1 nbdev_test --n_workers 2 --do_print --timing
echo "== pytest"
set +e
NUMBA_NUM_THREADS=2 python -m pytest -q -p no:cacheprovider tests
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi
exit "$rc"
