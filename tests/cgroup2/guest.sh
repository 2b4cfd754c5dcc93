#!/bin/bash
# Runs INSIDE the cgroup-v2-only VM that tests/cgroup2/run_vm.py boots (as root, PID 1 is
# virtme-ng-init, the host's root filesystem shared read-only over 9p, the repo an overlay
# that is writable here and untouched on the host). Sets up what a cgroup v2 host has, then
# runs pytest with the arguments given. Its last line is always "CGROUP2-VM-RESULT rc=N",
# which the host side reads (a VM that dies early prints none).
#
#   guest.sh REPO PYTEST_ARGS...
set -u
repo=$1
shift
rc=1
trap 'echo "CGROUP2-VM-RESULT rc=$rc"' EXIT
die() { echo "cgroup2-vm: $*"; rc=2; exit 2; }

echo "guest kernel: $(uname -r)"
echo "guest cmdline: $(cat /proc/cmdline | tr ' ' '\n' | grep -E '^(cgroup|systemd\.unified)' | tr '\n' ' ')"

# cgroup2 at /sys/fs/cgroup (virtme-ng-init mounts it; mount it if a version does not).
if [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ]; then
    mount -t cgroup2 none /sys/fs/cgroup || die "cannot mount cgroup2 at /sys/fs/cgroup"
fi
if grep -q ' cgroup ' /proc/mounts; then die "a cgroup v1 hierarchy is mounted"; fi

# What a systemd host has: every controller on in the root's subtree_control, and no
# process in an inner cgroup: the test run goes into a leaf of its own (like a session
# scope), so minirun's cgroups below / are siblings of it.
for c in $(cat /sys/fs/cgroup/cgroup.controllers); do
    echo "+$c" > /sys/fs/cgroup/cgroup.subtree_control || die "cannot enable $c in /"
done
mkdir -p /sys/fs/cgroup/cgroup2-vm.scope
echo $$ > /sys/fs/cgroup/cgroup2-vm.scope/cgroup.procs || die "cannot join cgroup2-vm.scope"
echo "root controllers: $(cat /sys/fs/cgroup/cgroup.subtree_control)"

# /tmp: virtme-ng gives an overlay whose upper dir lives on /run; overlayfs refuses an
# overlay as its upper layer, and the tests' stores and rootfs upper dirs are in /tmp.
mount -t tmpfs -o mode=1777,size=75% tmpfs /tmp || die "cannot mount a tmpfs on /tmp"
# /run is a tmpfs already (minirun keeps /run/minirun there); /var/lib is an overlay.
touch /run/.cgroup2-vm-rw && rm /run/.cgroup2-vm-rw || die "/run is not writable"
mkdir -p /var/lib/minirun || die "/var/lib is not writable"
modprobe overlay 2>/dev/null
grep -qw overlay /proc/filesystems || die "no overlayfs in the guest kernel"
ip link set lo up 2>/dev/null
echo "block devices: $(ls /sys/block | tr "\n" " ")"

cd "$repo" || die "no repo at $repo"
py=$repo/.venv/bin/python
[ -x "$py" ] || die "no $py (run make install on the host)"
v=$("$py" -c 'from minirun.runtime import cgroups; print(cgroups.version())') ||
    die "cannot import minirun in the guest"
echo "cgroups.version(): $v"
[ "$v" = 2 ] || die "minirun sees cgroup v$v, not v2"

export PYTHONDONTWRITEBYTECODE=1 TMPDIR=/tmp
"$repo/.venv/bin/pytest" -p no:cacheprovider "$@"
rc=$?
exit $rc
