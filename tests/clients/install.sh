#!/usr/bin/env bash
# Install the third-party Mixpanel clients used against the Ferry receiver.
# Idempotent and quiet: does nothing when the pinned versions are already present.
#   PyPI mixpanel-utils (pinned below)  -> into the current python3's environment
#   npm  mixpanel-import (pinned in node/package.json + package-lock.json) -> node/node_modules
set -euo pipefail

MIXPANEL_UTILS_VERSION=2.2.7
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"

# --- mixpanel-utils --------------------------------------------------------
have_py_version() {
	"$PYTHON" - "$MIXPANEL_UTILS_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version("mixpanel-utils") == sys.argv[1] else 1)
EOF
}

if ! have_py_version; then
	pip_args=(-m pip install --quiet --disable-pip-version-check --no-input "mixpanel-utils==${MIXPANEL_UTILS_VERSION}")
	export PIP_ROOT_USER_ACTION=ignore
	if ! out="$("$PYTHON" "${pip_args[@]}" 2>&1)"; then
		if grep -q externally-managed-environment <<<"$out"; then
			# Debian/Ubuntu system Python (PEP 668): it is a pure-Python, dependency-free package.
			"$PYTHON" "${pip_args[@]}" --break-system-packages
		else
			printf '%s\n' "$out" >&2
			exit 1
		fi
	fi
	have_py_version || { echo "install.sh: mixpanel-utils ${MIXPANEL_UTILS_VERSION} not importable after install" >&2; exit 1; }
fi

# --- mixpanel-import -------------------------------------------------------
command -v npm >/dev/null || { echo "install.sh: npm not found (mixpanel-import needs node >= 20.18.1)" >&2; exit 1; }
want_js="$(cd "$here/node" && node -p "require('./package.json').dependencies['mixpanel-import']")"
have_js="$(cd "$here/node" && node -p "try { require('mixpanel-import/package.json').version } catch (e) { '' }" 2>/dev/null || true)"
if [ "$have_js" != "$want_js" ]; then
	(cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
