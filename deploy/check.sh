#!/usr/bin/env bash
# Renders every overlay of deploy/ and validates it offline (deploy/check.py
# says what is checked). Installs its tools on first use, pinned, into
# ${DEPLOY_TOOLS_DIR:-$HOME/.cache/birdsong/deploy-tools}:
#   - kubectl from Debian's kubernetes-client package (its built-in
#     kustomize renders the overlays), unpacked there, not installed;
#   - kubernetes-validate (with the Kubernetes schemas) in a virtualenv.
# A newer kubectl on PATH, if any, renders the overlays too, and the two
# renderings must agree.
#
# When the tools cannot be installed it says so loudly and exits 0, unless
# CI is set: then it fails.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tools=${DEPLOY_TOOLS_DIR:-$HOME/.cache/birdsong/deploy-tools}
kubectl_deb_version=1.20.5+really1.20.2-1.1+deb12u1
mkdir -p "$tools"

skip() {
  if [ -n "${CI:-}" ]; then
    echo "deploy check: $1 (CI is set, so this fails)" >&2
    exit 1
  fi
  {
    echo "################################################################"
    echo "## deploy check SKIPPED: $1"
    echo "## deploy/ was NOT rendered or validated."
    echo "################################################################"
  } >&2
  exit 0
}

# kubectl, from the Debian package, into $tools/kubectl-$version.
kubectl_dir="$tools/kubectl-$kubectl_deb_version"
kubectl="$kubectl_dir/usr/bin/kubectl"
if [ ! -x "$kubectl" ]; then
  if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    skip "no apt-get/dpkg-deb to fetch Debian's kubernetes-client"
  fi
  work=$(mktemp -d)
  fetch() { (cd "$work" && apt-get download -q "kubernetes-client=$kubectl_deb_version") >/dev/null 2>&1; }
  if ! fetch; then
    # A new machine may not have read the package lists yet.
    if [ "$(id -u)" = 0 ]; then apt-get update -qq >/dev/null 2>&1 || true; fi
    fetch || skip "cannot download Debian's kubernetes-client $kubectl_deb_version"
  fi
  rm -rf "$kubectl_dir.tmp"
  dpkg-deb -x "$work"/kubernetes-client_*.deb "$kubectl_dir.tmp"
  mv "$kubectl_dir.tmp" "$kubectl_dir"
  rm -rf "$work"
fi

# kubernetes-validate and its pinned dependencies, in a virtualenv keyed by
# the requirements file's content.
req_hash=$(sha256sum "$here/requirements.txt" | cut -c1-12)
venv="$tools/venv-$req_hash"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv" >/dev/null 2>&1 || skip "python3 -m venv does not work here"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$here/requirements.txt" >/dev/null 2>&1 \
    || { rm -rf "$venv"; skip "cannot install kubernetes-validate from PyPI"; }
fi

renderers=(--kubectl "$kubectl")
echo "deploy check: $("$kubectl" version --client --short 2>/dev/null || true) (Debian $kubectl_deb_version)," \
  "kubernetes-validate $("$venv/bin/kubernetes-validate" --version 2>/dev/null | tr -d '\n')"
if other=$(command -v kubectl) && [ "$other" != "$kubectl" ]; then
  renderers+=(--kubectl "$other")
  echo "deploy check: also rendering with $other ($("$other" version --client 2>/dev/null | tr '\n' ' '))"
fi
exec "$venv/bin/python" "$here/check.py" "${renderers[@]}"
