# Sourced by scripts/demo and scripts/test: make .venv and install the project into it, once per pyproject.toml.
#
# uv installs in seconds where pip takes minutes (measured in bench/README.md), so it is used where it can be
# had: bootstrapped into .venv with pip (about 2 s), and pip does the install itself when uv cannot (no
# network route for uv, an exotic platform) or when VIGIE_NO_UV=1.
# Usage: ensure_venv SPEC STAMP   (SPEC: '.' or '.[test]'; STAMP: the marker file's name prefix)

ensure_venv() {
  local spec=$1 stamp
  stamp=".venv/$2-$(sha1sum pyproject.toml | cut -c1-12)"
  [ -f "$stamp" ] && return 0
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  if [ "${VIGIE_NO_UV:-0}" != 1 ] && { [ -x .venv/bin/uv ] || .venv/bin/pip install -q uv; }; then
    if .venv/bin/uv pip install -q --python .venv/bin/python -e "$spec"; then
      touch "$stamp"
      return 0
    fi
    echo "uv could not install the project: installing with pip instead" >&2
  fi
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e "$spec"
  touch "$stamp"
}
