"""OCI whiteouts in layer tars, and the overlayfs form they take in a layer dir.

A tar member ``.wh.NAME`` deletes NAME of the layers below; ``.wh..wh..opq`` in a dir
hides everything the layers below have there (OCI image-spec layer.md). In a layer dir
that overlayfs uses as a lowerdir, the first is a char device 0:0 named NAME and the
second the xattr ``trusted.overlay.opaque=y`` on the dir. Kept apart from the unpacker
so that ``run`` and ``diff`` can use them without importing it.
"""

from __future__ import annotations

import os
import stat

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OVERLAY_OPAQUE_XATTR = "trusted.overlay.opaque"


def is_overlay_whiteout(st: os.stat_result) -> bool:
    """overlayfs's whiteout: a character device with device number 0:0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
