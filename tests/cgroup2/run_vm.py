#!/usr/bin/env python3
"""``make test-cgroup2``: minirun's cgroup tests on a cgroup-v2-only kernel, in a VM.

Boots Debian's kernel (``/boot/vmlinuz-6.1.*``, from ``linux-image-amd64``) with
virtme-ng (``vng``, in ``.venv-vm``) and ``cgroup_no_v1=all
systemd.unified_cgroup_hierarchy=1``; the guest sees the host's root filesystem read-only
(9p: Debian 12 has no virtiofsd) and the repo as an overlay (writable in the guest, the
host's copy untouched). ``guest.sh`` sets up what a v2 host has and runs pytest as root.
Prints the guest's output as it comes, then the kernel, ``cgroups.version()``, the pytest
summary and the time; the whole output goes to ``tests/cgroup2/last-run.txt``. Exits with
pytest's code (2 for a VM or set-up failure).

Usage: run_vm.py [PYTEST_ARGS...]  (none: the default cgroup selection below)

Environment:
  MINIRUN_VM_TCG        1: boot without KVM (qemu's software emulation: ~10x slower); 0:
                        KVM or fail in one line; unset: KVM, or TCG (with a note) on a host
                        whose KVM cannot boot a stock kernel (no vmx/svm, as this VM's).
  MINIRUN_VM_KERNEL     the kernel image (default: the newest /boot/vmlinuz-6.1.*)
  MINIRUN_VM_MEMORY     guest memory (default 4G); MINIRUN_VM_CPUS (default: host's, max 4)
  MINIRUN_VM_TIMEOUT    seconds before the VM is killed (default 3600)
  MINIRUN_VM_VERBOSE=1  show the guest kernel's console too
"""

from __future__ import annotations

import glob
import os
import re
import selectors
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VNG = REPO / ".venv-vm" / "bin" / "vng"
LOG = HERE / "last-run.txt"
APPEND = "systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all"
RESULT_RE = re.compile(r"^CGROUP2-VM-RESULT rc=(\d+)$")
SUMMARY_RE = re.compile(r"\b(passed|failed|errors?|skipped|deselected|no tests ran)\b.* in [\d.]+s")

# The cgroup tests: the two cgroup modules, the unit tests of the OCI mapping, the eBPF
# device filter's module once it exists, and the OOM / pids / cpu / freezer (pause) /
# update / stats / device tests of the other integration modules, and commit's (it freezes
# the container it reads). -k also matches module names, so every test of test_cgroups*.py
# and test_devices_bpf*.py is in.
KEYWORDS = ("cgroup or oom or pids or pause or freez or resume or resources or update"
            " or stats or cpus or memory or device or commit")  # fmt: skip


def default_selection() -> list[str]:
    paths = ["tests/integration", "tests/unit/test_cgroups_oci.py"]
    return [*paths, "-k", KEYWORDS, "-rfEs", "--tb=short"]


def fail(msg: str) -> None:
    print(f"test-cgroup2: {msg}", file=sys.stderr)
    sys.exit(2)


def kernel() -> Path:
    if k := os.environ.get("MINIRUN_VM_KERNEL"):
        if not Path(k).is_file():
            fail(f"MINIRUN_VM_KERNEL={k} is not a file")
        return Path(k)

    def ver(p: str) -> list[int]:
        return [int(x) for x in re.findall(r"\d+", p)]

    found = sorted(glob.glob("/boot/vmlinuz-6.1.*"), key=ver)
    if not found:
        fail("no /boot/vmlinuz-6.1.* (Debian's linux-image-amd64): run `make cgroup2-deps`")
    return Path(found[-1])


def kvm_problem() -> str | None:
    """Why KVM cannot boot a stock kernel here, or None when it can."""
    if not os.path.exists("/dev/kvm"):
        return "/dev/kvm is missing"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is not read-writable by this user"
    flags = set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[1].split())
                break
    if not flags & {"vmx", "svm"}:
        # e.g. a nested host whose /dev/kvm is kvm_pvm: it runs PVM-built guest kernels only,
        # a stock kernel hangs right after the real-mode setup ("Probing EDD").
        pvm = " (kvm_pvm: PVM guests only)" if os.path.isdir("/sys/module/kvm_pvm") else ""
        return f"/dev/kvm has no hardware virtualisation (no vmx/svm){pvm}"
    return None


def main() -> int:
    pytest_args = sys.argv[1:] or default_selection()
    if not VNG.exists():
        fail(f"no {VNG.relative_to(REPO)}: run `make cgroup2-deps`")
    kern = kernel()
    release = re.sub(r"^vmlinuz-", "", kern.name)
    if not Path(f"/lib/modules/{release}").is_dir():
        fail(f"no /lib/modules/{release} for {kern} (virtme-ng loads 9p/virtio from there)")
    choice = os.environ.get("MINIRUN_VM_TCG", "")
    tcg = choice == "1"
    if not tcg and (why := kvm_problem()):
        if choice == "0":
            fail(f"{why}: cannot boot the cgroup v2 VM with KVM (MINIRUN_VM_TCG=0 forbids "
                 "software emulation)")  # fmt: skip
        print(f"test-cgroup2: {why}: using qemu's software emulation (TCG, ~8 min)",
              file=sys.stderr, flush=True)  # fmt: skip
        tcg = True
    if not (REPO / ".venv" / "bin" / "pytest").exists():
        fail("no .venv/bin/pytest: run `make install`")

    cpus = os.environ.get("MINIRUN_VM_CPUS") or str(min(os.cpu_count() or 1, 4))
    # A small empty disk (virtio-blk, /dev/vda in the guest): the device-rule tests need a
    # block device root can open, and the guest's root is 9p (no block device behind it).
    scratch = tempfile.TemporaryDirectory(prefix="minirun-cgroup2-vm-")
    disk = Path(scratch.name) / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(16 << 20)
    guest_cmd = shlex.join(["bash", str(HERE / "guest.sh"), str(REPO), *pytest_args])
    cmd = [str(VNG), "--run", str(kern), "--user", "root", "--cpus", cpus,
           "--memory", os.environ.get("MINIRUN_VM_MEMORY", "4G"),
           "--overlay-rwdir", str(REPO), "--cwd", str(REPO),
           f"--qemu-opts=-drive file={disk},format=raw,if=virtio",
           "--append", APPEND, "--exec", guest_cmd]  # fmt: skip
    if tcg:
        cmd.insert(1, "--disable-kvm")
    if os.environ.get("MINIRUN_VM_VERBOSE") == "1":
        cmd.insert(1, "--verbose")
    env = {**os.environ, "PATH": f"{VNG.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
    timeout = float(os.environ.get("MINIRUN_VM_TIMEOUT", "3600"))
    accel = "TCG (software emulation)" if tcg else "KVM"
    print(f"test-cgroup2: booting {kern} ({accel}, {cpus} vCPUs) with {APPEND}", flush=True)

    start = time.monotonic()
    lines: list[str] = []
    # Its own session, so a timeout or ^C ends vng and its qemu (and nothing else).
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=REPO,
                            start_new_session=True)  # fmt: skip
    deadline = start + timeout
    timed_out = False
    try:
        assert proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        buf = b""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                break
            if not sel.select(timeout=min(left, 5)):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            *done, buf = buf.split(b"\n")
            for raw in done:
                line = raw.decode(errors="replace").rstrip("\r")
                lines.append(line)
                print(line, flush=True)
        if buf:
            lines.append(buf.decode(errors="replace"))
            print(lines[-1], flush=True)
    except KeyboardInterrupt:
        stop(proc)
        raise
    if timed_out:
        stop(proc)
    vng_rc = proc.wait()
    elapsed = time.monotonic() - start
    scratch.cleanup()

    def last(pattern: str) -> str:
        hits = [ln for ln in lines if ln.startswith(pattern)]
        return hits[-1][len(pattern) :].strip() if hits else "?"

    results = [int(m.group(1)) for ln in lines if (m := RESULT_RE.match(ln))]
    summaries = [ln.strip("= ") for ln in lines if SUMMARY_RE.search(ln)]
    if timed_out:
        rc, why = 2, f"the VM was killed after {timeout:.0f} s (MINIRUN_VM_TIMEOUT)"
    elif not results:
        rc, why = 2, (f"the VM ended without a result (vng exit {vng_rc}); "
                      "MINIRUN_VM_VERBOSE=1 shows the guest console")  # fmt: skip
    else:
        rc, why = results[-1], ""
    recap = [
        "",
        "== test-cgroup2 (cgroup v2 only VM)",
        f"guest kernel:      {last('guest kernel:')}",
        f"cgroups.version(): {last('cgroups.version():')}",
        f"pytest:            {summaries[-1] if summaries else '(no summary)'}",
        f"accel:             {accel}",
        f"time:              {elapsed:.0f} s (boot + tests)",
        f"full output:       {LOG.relative_to(REPO)}",
    ]
    if why:
        recap.append(f"test-cgroup2: FAILED: {why}")
    print("\n".join(recap), flush=True)
    LOG.write_text("\n".join([" ".join(shlex.quote(c) for c in cmd), *lines, *recap]) + "\n")
    return rc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """End vng and its qemu: the process group it leads (its own session)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


if __name__ == "__main__":
    sys.exit(main())
