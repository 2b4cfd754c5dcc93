"""Everyday verbs on existing containers: ``rename``, ``pause``/``unpause`` and ``top``,
with Docker's rules and messages.

* **rename** moves the name in the names index atomically (records.Containers.rename):
  the new name is claimed first, then the record is rewritten, then the old name is
  released, so at every moment the container has at least one name and no other
  container can take either. The container's /etc/hosts is not rewritten (Docker does
  not either); a user-defined network's peers learn the new name at its next start.
* **pause/unpause** freeze and thaw the container's cgroup through the runtime (v1
  ``freezer.state``, v2 ``cgroup.freeze``): the processes are not told, unlike SIGSTOP.
  The record's status stays "running" (Docker: State.Running stays true); that it is
  paused is derived from the cgroup (:meth:`ContainerRecord.paused`).
* **top** runs the host's ``ps`` (``-ef`` unless other options are given) and keeps the
  rows whose PID is in the container's cgroup, as dockerd does.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Sequence

from minirun import events
from minirun.container.records import ContainerRecord, Containers
from minirun.errors import ContainerError
from minirun.image.store import Store


def rename(store: Store, rec: ContainerRecord, new_name: str) -> ContainerRecord:
    """``rename OLD NEW``: the container's new name (running or not); the record."""
    old = rec.name
    renamed = Containers(store).rename(rec, new_name)
    events.container(store, renamed, "rename", oldName=old)
    return renamed


def pause(store: Store, rec: ContainerRecord) -> None:
    """``pause``: freeze every process of a running container."""
    from minirun.container.lifecycle import runtime
    from minirun.runtime.state import StateError

    if not rec.alive():
        raise ContainerError(f"container {rec.name} is not running")
    if rec.paused():
        raise ContainerError(f"container {rec.name} is already paused")
    try:
        runtime(store).pause(rec.id)
    except StateError as e:
        raise ContainerError(f"cannot pause container {rec.name}: {e}") from None
    events.container(store, rec, "pause")


def unpause(store: Store, rec: ContainerRecord) -> None:
    """``unpause``: thaw a paused container (Docker: "is not paused" for any other)."""
    from minirun.container.lifecycle import runtime
    from minirun.runtime.state import StateError

    if not rec.paused():
        raise ContainerError(f"container {rec.name} is not paused")
    try:
        runtime(store).resume(rec.id)
    except StateError as e:
        raise ContainerError(f"cannot unpause container {rec.name}: {e}") from None
    events.container(store, rec, "unpause")


def unpause_after_signal(store: Store, rec: ContainerRecord, sig: int) -> None:
    """After ``kill``/``stop`` signalled a paused container: thaw it when the signal is
    meant to end it, so it is delivered (a frozen process handles no signal). Docker's
    rule: SIGKILL, the image's StopSignal, or any signal when the image names none;
    another signal stays pending until ``unpause``."""
    if rec.stop_signal and sig != signal.SIGKILL:
        from minirun.container.lifecycle import parse_signal

        try:
            if parse_signal(rec.stop_signal) != sig:
                return
        except ContainerError:
            return
    if not rec.paused():
        return
    from minirun.container.lifecycle import runtime
    from minirun.runtime.state import StateError

    try:
        runtime(store).resume(rec.id)
    except StateError:
        pass  # it ended, or was thawed, meanwhile


# -- top -----------------------------------------------------------------------------------

DEFAULT_PS_ARGS = ("-ef",)

# dockerd's validatePSArgs: no other column may be renamed to PID (``-o user=PID``), or
# the PID column the rows are filtered by would be another one
_RENAMED_PID = re.compile(r"\s+([^\s]*)=\s*(PID[^\s]*)")


def top(store: Store, rec: ContainerRecord, ps_args: Sequence[str] = ()
        ) -> tuple[list[str], list[list[str]]]:
    """``top CONTAINER [ps OPTIONS]``: (titles, rows) of the host's ``ps`` output, only
    the container's processes (its cgroup's, read through the runtime)."""
    from minirun.container.lifecycle import runtime
    from minirun.runtime.state import StateError

    if not rec.alive():
        raise ContainerError(f"container {rec.name} is not running")
    args = list(ps_args) or list(DEFAULT_PS_ARGS)
    for key, value in _RENAMED_PID.findall(" " + " ".join(args)):
        if key != "pid":
            raise ContainerError(f'specifying "{key}={value}" is not allowed')
    try:
        pids = runtime(store).ps(rec.id)
    except StateError:
        raise ContainerError(f"container {rec.name} is not running") from None
    return parse_ps_output(_run_ps(args, pids), set(pids))


def _run_ps(args: list[str], pids: list[int]) -> str:
    """``ps ARGS -qPIDS`` (quick: only the container's), or, when ps refuses that
    combination (some options, such as f, do not go with -q), ``ps ARGS``."""
    import subprocess  # only top needs it (kill imports this module too)

    attempts = [[*args, "-q" + ",".join(map(str, pids))], args] if pids else [args]
    err = ""
    for argv in attempts:
        try:
            p = subprocess.run(["ps", *argv], capture_output=True, text=True, errors="replace",
                               timeout=30)
        except FileNotFoundError:
            raise ContainerError("ps: executable file not found in $PATH (install procps)") from None
        except subprocess.TimeoutExpired:
            raise ContainerError("ps did not answer within 30 s") from None
        if p.returncode == 0:
            return p.stdout
        err = next((ln.strip() for ln in p.stderr.splitlines() if ln.strip()), "")
    raise ContainerError(f"ps: {err or 'failed'}")


def parse_ps_output(output: str, pids: set[int]) -> tuple[list[str], list[list[str]]]:
    """dockerd's parsePSOutput: the titles, and the rows whose PID is one of ``pids``
    (with the thread lines, PID "-", that follow such a row); the last column keeps its
    spaces (a command line)."""
    lines = output.split("\n")
    titles = lines[0].split()
    if "PID" not in titles:
        raise ContainerError("couldn't find PID field in ps output")
    at = titles.index("PID")
    rows: list[list[str]] = []
    keep_threads = False
    for line in lines[1:]:
        fields = line.split()
        if not fields:
            continue
        if len(fields) <= at:
            raise ContainerError(f"unexpected ps output line: {line.strip()!r}")
        if fields[at] == "-":
            if keep_threads:
                rows.append(_fit(fields, len(titles)))
            continue
        try:
            pid = int(fields[at])
        except ValueError:
            raise ContainerError(f"unexpected pid {fields[at]!r} in ps output") from None
        keep_threads = pid in pids
        if keep_threads:
            rows.append(_fit(fields, len(titles)))
    return titles, rows


def _fit(fields: list[str], n: int) -> list[str]:
    """As many cells as titles: the overhanging fields are the last column's words."""
    return [*fields[:n - 1], " ".join(fields[n - 1:])]
