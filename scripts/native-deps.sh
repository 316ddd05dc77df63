# shellcheck shell=bash
# Sourced by the scripts that build birdsong: the one C library it links.
#
# The audio crate resamples with libsoxr, the library librosa resamples with,
# so that resampled recordings give librosa's features. Building needs its
# headers and pkg-config file (Debian: libsoxr-dev; Fedora: soxr-devel;
# Homebrew: libsoxr); running needs the shared library (Debian: libsoxr0).

have_native_deps() {
  [ -e /usr/include/soxr.h ] || pkg-config --exists soxr 2>/dev/null
}

ensure_native_deps() {
  if have_native_deps; then
    return 0
  fi
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing libsoxr-dev (the resampler birdsong links)…" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsoxr-dev >/dev/null 2>&1 || {
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libsoxr-dev
    }
    return 0
  fi
  echo "libsoxr is missing: install its development package first" >&2
  echo "  Debian/Ubuntu: sudo apt-get install libsoxr-dev" >&2
  echo "  Fedora: sudo dnf install soxr-devel    macOS: brew install libsoxr" >&2
  return 1
}
