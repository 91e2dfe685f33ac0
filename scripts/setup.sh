#!/usr/bin/env bash
# Installs everything vmrun needs on a Debian 12 host with /dev/kvm:
# packages, the guest kernel (cached under $VMRUN_CACHE), the static agent,
# the initramfs, `vmrun` on PATH, and a demo busybox OCI bundle. Safe to
# run again: finished steps are cheap the second time.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
share=${VMRUN_SHARE:-/usr/local/share/vmrun}
bindir=${VMRUN_BINDIR:-/usr/local/bin}
export VMRUN_CACHE=${VMRUN_CACHE:-/var/cache/vmrun}
export CARGO_TERM_PROGRESS_WHEN=never

packages=(
    # guest kernel build
    linux-source-6.1 build-essential bc bison flex libelf-dev libssl-dev cpio xz-utils
    # guest user space and the agent's static libseccomp
    busybox-static libseccomp-dev
    # the agent's device cgroup (eBPF): libbpf-sys builds its vendored libbpf
    # and links libelf and zlib statically
    pkg-config zlib1g-dev
    # the reference VMM for `cargo xtask bench`
    qemu-system-x86
    # `runc spec` bundles in the tests
    runc
    # the ext4 volume image of the container tests (mkfs.ext4, debugfs)
    e2fsprogs
    # the containerd shim's tests: containerd 1.6 (ctr, the CRI plugin) with
    # CNI plugins in /usr/lib/cni; protoc for the k8s-cri crate's build
    # (it runs prost-build itself, so the vendored protoc cannot be handed
    # to it). The tests start their own containerd; the system service, if
    # the package starts one, is not used.
    containerd containernetworking-plugins protobuf-compiler
    # `ip` (the tests remove their CNI bridge) and `script` (a terminal for `ctr run -t`)
    iproute2 bsdutils
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
command -v cargo >/dev/null || { echo "setup: cargo not found: install Rust (rustup) first" >&2; exit 1; }
[ -c /dev/kvm ] || { echo "setup: /dev/kvm missing: vmrun needs KVM" >&2; exit 1; }

mkdir -p "$share" "$bindir"
"$root/guest-kernel/build.sh" "$share/vmlinux"

cd "$root"
# The agent is PID 1 of an initramfs: fully static, glibc target (no musl
# here), with libseccomp linked in statically (a dynamic one would not load).
LIBSECCOMP_LINK_TYPE=static LIBSECCOMP_LIB_PATH=/usr/lib/x86_64-linux-gnu \
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --quiet --release --locked -p vmrun-agent --features device-cgroup --target x86_64-unknown-linux-gnu
cargo build --quiet --release --locked -p vmrun -p vmrun-vmm -p rootfs-builder -p containerd-shim-vmrun-v2
target=${CARGO_TARGET_DIR:-$root/target}
"$target/release/rootfs-builder" initramfs \
    --agent "$target/x86_64-unknown-linux-gnu/release/vmrun-agent" \
    --busybox /bin/busybox \
    --output "$share/initramfs.cpio"
install -m 0755 "$target/release/vmrun" "$bindir/vmrun"
# The VMM process of every sandbox; `vmrun` and the shim run the one next
# to them.
install -m 0755 "$target/release/vmrun-vmm" "$bindir/vmrun-vmm"
# containerd finds runtime `io.containerd.vmrun.v2` as this binary on its PATH.
install -m 0755 "$target/release/containerd-shim-vmrun-v2" "$bindir/containerd-shim-vmrun-v2"
# The snapshot every VM of the default configuration restores from (one
# cold boot, cached under $VMRUN_CACHE/snapshot keyed by kernel, initramfs,
# vCPUs, memory, compat profile and VMM version; skipped while it fits).
"$bindir/vmrun" snapshot create --if-missing >/dev/null
# The demo the README's first command runs: a busybox bundle whose process
# prints a line (no terminal) and exits 0. Rebuilt from scratch each time.
rm -rf "$share/bundle"
"$target/release/rootfs-builder" bundle --output "$share/bundle" -- \
    sh -c 'echo "Hello from a busybox container in a vmrun microVM (guest kernel $(uname -r))"'
echo "setup: installed vmrun, vmrun-vmm and containerd-shim-vmrun-v2 to $bindir, kernel, initramfs and the demo bundle to $share, the default snapshot to $VMRUN_CACHE/snapshot" >&2
