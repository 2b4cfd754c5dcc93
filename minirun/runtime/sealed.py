"""The sealed copy of minirun-exec every container command is exec'd through.

CVE-2019-5736: the runtime's setup process is the host's python; exec'ing the container's
command from it would let a "#!/proc/self/exe" command run (and then overwrite) the host's
python. Instead the child execs a memfd holding minirun-exec, sealed against writes and
resizes, and that execs the command (see minirun/shim/exec.c for the argument protocol).
runc protects its own binary the same way (a sealed memfd clone of /proc/self/exe)."""

from __future__ import annotations

import fcntl
import os

from minirun.errors import RuntimeFailure

MAGIC = "minirun-exec\1"  # argv[0]: the helper refuses to run under any other name
_SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE

_fd = -1


def exec_fd() -> int:
    """An O_CLOEXEC memfd of minirun-exec, sealed; made once per process (~0.1 ms)."""
    global _fd
    if _fd >= 0:
        try:  # still ours (nobody closed and reused the number)?
            if fcntl.fcntl(_fd, fcntl.F_GET_SEALS) == _SEALS:
                return _fd
        except OSError:
            pass
    from minirun.helpers import helper_binary

    path = helper_binary("minirun-exec")
    if path is None:
        raise RuntimeFailure("minirun-exec is missing (it execs every container command); "
                             "reinstall minirun: pip install . (or make install)")  # fmt: skip
    src = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        size = os.fstat(src).st_size
        fd = os.memfd_create("minirun-exec", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            off = 0
            while off < size:
                n = os.sendfile(fd, src, off, size - off)
                if n == 0:
                    raise RuntimeFailure(f"{path}: short read")
                off += n
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _SEALS)
        except BaseException:
            os.close(fd)
            raise
    finally:
        os.close(src)
    if fd < 3:  # never one of the stdio numbers the child dup2()s onto
        new = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
        os.close(fd)
        fd = new
    _fd = fd
    return fd


def argv(sync: int, to_stderr: bool, seccomp_fd: int, seccomp_flags: int, path: str,
         args: list[str]) -> list[str]:  # fmt: skip
    return [MAGIC, str(sync), "1" if to_stderr else "0", str(seccomp_fd), str(seccomp_flags),
            path, *args]  # fmt: skip
