#!/usr/bin/env bash
# Builds vmrun's guest kernel: Debian's linux-source-6.1, `make tinyconfig`, our
# Kconfig fragments and compatibility patches, no modules, uncompressed `vmlinux`
# with the PVH entry note.
#
# usage: guest-kernel/build.sh OUTPUT_VMLINUX
#
# The result is cached under $VMRUN_CACHE/kernel/<key>/vmlinux, where the key
# hashes the fragments, the patches and the linux-source package version: a
# second run with the same inputs only copies the cached file.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:?usage: $0 OUTPUT_VMLINUX}
cache=${VMRUN_CACHE:-/var/cache/vmrun}
tarball=/usr/src/linux-source-6.1.tar.xz
jobs=${JOBS:-$(nproc)}

[ -f "$tarball" ] || { echo "build.sh: $tarball missing: apt-get install linux-source-6.1" >&2; exit 1; }
version=$(dpkg-query -W -f='${Version}' linux-source-6.1)

key=$( {
    echo "linux-source-6.1 $version"
    for f in "$here"/fragments/*.config "$here"/patches/*.patch; do
        echo "== ${f#"$here"/}"
        cat "$f"
    done
} | sha256sum | cut -c1-16)
cached="$cache/kernel/$key/vmlinux"

if [ ! -f "$cached" ]; then
    echo "guest-kernel: building $key (linux-source-6.1 $version, $jobs jobs)" >&2
    build="$cache/kernel/build-$key"
    rm -rf "$build"
    mkdir -p "$build"
    trap 'rm -rf "$build"' EXIT
    tar -xf "$tarball" -C "$build" --strip-components=1
    cd "$build"
    for p in "$here"/patches/*.patch; do
        patch -p1 --quiet --forward < "$p"
    done
    make -s tinyconfig
    KCONFIG_CONFIG=.config scripts/kconfig/merge_config.sh -m -O . .config "$here"/fragments/*.config >/dev/null
    make -s olddefconfig

    # Every symbol a fragment asks for must survive olddefconfig: a silently
    # dropped option (an unmet dependency) would give a kernel that boots but
    # lacks a feature.
    missing=0
    while IFS= read -r line; do
        case "$line" in
            CONFIG_*=*)
                grep -qxF "$line" .config || { echo "guest-kernel: wanted $line, got: $(grep "^${line%%=*}=" .config || echo unset)" >&2; missing=1; } ;;
            "# CONFIG_"*" is not set")
                sym=${line#"# "}; sym=${sym%" is not set"}
                if grep -q "^$sym=" .config; then echo "guest-kernel: wanted $sym off, got $(grep "^$sym=" .config)" >&2; missing=1; fi ;;
        esac
    done < <(cat "$here"/fragments/*.config)
    [ "$missing" = 0 ] || { echo "guest-kernel: configuration incomplete" >&2; exit 1; }

    make -s -j"$jobs" vmlinux
    mkdir -p "$(dirname "$cached")"
    cp .config "$(dirname "$cached")/config"
    cp vmlinux "$cached.tmp"
    mv "$cached.tmp" "$cached"
    echo "guest-kernel: cached $cached" >&2
fi

mkdir -p "$(dirname "$out")"
cp "$cached" "$out"
