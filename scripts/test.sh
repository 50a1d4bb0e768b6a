#!/usr/bin/env bash
# The whole test command: test dependencies (apt: slurm-wlm, munge, dataset-fashion-mnist; pip: the package with
# its dev extras), a SLURM for the tests marked `slurm` (the running one, used as it is, or a one-node SLURM
# started when none runs: scripts/start_slurm.sh), then the suite. Exits non-zero when a test fails.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m "not slurm"`).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v sbatch >/dev/null 2>&1 || missing+=(slurm-wlm)
command -v munged >/dev/null 2>&1 || missing+=(munge)
[ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  else
    echo "test.sh: ${missing[*]} missing and not installable here (needs root and apt-get); their tests skip" >&2
  fi
fi

if ! python -c "import ssl_zoo, pytest, ruff, xdist, importlinter" >/dev/null 2>&1; then
  python -m pip install -q -e ".[dev]"
fi

# SLURM for the `slurm` tests; without it they skip (and say why).
bash scripts/start_slurm.sh || echo "test.sh: no SLURM (the line above says why); the slurm tests will skip" >&2

# Two workers (pytest-xdist): much of the suite waits on subprocesses, SLURM and files. tests/conftest.py gives
# each worker one thread and keeps the SLURM tests on one worker.
python -m pytest -q -rs -n 2 --dist loadgroup "$@"
