# Sourced by the other scripts: finds uv (or installs a pinned copy into .tools/) and syncs .venv from uv.lock.
# Why: the README's two commands must work on a fresh clone with only Python 3.11+ installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
UV_VERSION="0.13.9"
if command -v uv >/dev/null 2>&1; then
  UV="$(command -v uv)"
else
  if [ ! -x "$ROOT/.tools/bin/uv" ]; then
    PY="$(command -v python3.11 || command -v python3)"
    "$PY" -m venv "$ROOT/.tools"
    "$ROOT/.tools/bin/python" -m pip install --quiet "uv==$UV_VERSION"
  fi
  UV="$ROOT/.tools/bin/uv"
fi
export UV_PYTHON_DOWNLOADS=never
"$UV" sync --frozen --quiet
VENV="$ROOT/.venv/bin"
