"""Named crash points, for the fault tests: with ``MINIRUN_CRASH_AT=<name>`` in its
environment, a minirun process SIGKILLs itself when it reaches that point, as a power
cut or an OOM kill would stop it there. Each write path names the moments after which a
crash must still leave a consistent store (tests/integration/test_crash_points.py):

    load.blob-written       a blob is in blobs/, no layer or image names it yet
    load.layer-unpacked     a layer dir is complete, no image names it yet
    load.image-recorded     the image and its tags are recorded, the load not finished
    run.record-written      the container is registered, nothing of it runs
    run.rootfs-mounted      (the container's init) its overlay root is mounted
    run.network-attached    its veth and address exist, the command has not run
    run.process-started     the command runs; the minirun supervising it dies
    rm.renamed              the container dir is renamed away, not yet deleted

Unset (always, outside tests) a point costs one comparison.
"""

from __future__ import annotations

import os
import signal

_AT = os.environ.get("MINIRUN_CRASH_AT") or None


def point(name: str) -> None:
    if _AT == name:
        if os.getpid() == 1:
            # a container's init: the kernel ignores its own SIGKILL to a namespace's
            # PID 1, so end it as abruptly (no cleanup, no report)
            os._exit(128 + signal.SIGKILL)
        os.kill(os.getpid(), signal.SIGKILL)
