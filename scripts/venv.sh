#!/usr/bin/env bash
# Run a command inside the project's virtual environment, creating or updating it first.
#
#   bash scripts/venv.sh hf-slug demo     # the main job
#   bash scripts/venv.sh pytest           # the tests
#
# torch is installed first and exactly (torch==2.13.0, the CPU wheel this machine's pip finds
# locally); then the project with all extras. The install is skipped while pyproject.toml is
# unchanged. VENV overrides the environment's folder (default: .venv in the repository).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  echo "creating $venv" >&2
  "$python" -m venv "$venv"
fi
stamp="$venv/.hf_slug-installed"
wanted="$(sha256sum "$root/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  echo "installing hf_slug and its dependencies into $venv (a few minutes the first time)" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" >&2 || true
  "$venv/bin/python" -m pip install -q "torch==2.13.0" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  "$venv/bin/python" -c "import torch" || { echo "torch failed to install" >&2; exit 1; }
  "$venv/bin/python" -m pip install -q -e "$root[test]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
  "$venv/bin/python" -c "import hf_slug, transformers, diffusers, peft" \
    || { echo "hf_slug failed to install" >&2; exit 1; }
  echo "$wanted" > "$stamp"
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
export TOKENIZERS_PARALLELISM=false
cd "$root"
export PATH="$venv/bin:$PATH"
exec "$@"
