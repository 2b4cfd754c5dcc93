"""The runtime without root: config.json validation, and the order in which the container's
setup process makes its syscalls for a given config (through the recording fake)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import pytest

from minirun.runtime import config, linux
from minirun.runtime.api import Runtime
from minirun.runtime.child import CREATED, Plan, become
from minirun.runtime.config import ConfigError
from minirun.runtime.syscalls import ExecReached, Recorder

BASE: dict[str, Any] = {
    "ociVersion": "1.2.0",
    "root": {"path": "rootfs"},
    "process": {"args": ["sh", "-c", "true"], "cwd": "/", "env": ["PATH=/bin"],
                "user": {"uid": 1000, "gid": 1000},
                "capabilities": {"bounding": ["CAP_KILL"], "effective": ["CAP_KILL"],
                                 "permitted": ["CAP_KILL"]}},
    "hostname": "box",
    "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
    "linux": {"namespaces": [{"type": t} for t in ("pid", "mount", "uts", "ipc", "network")],
              "maskedPaths": ["/proc/kcore"], "readonlyPaths": ["/proc/sys"]},
}  # fmt: skip


DEV: dict[str, Any] = {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}


def cfg(**changes: Any) -> dict[str, Any]:
    c = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = c
        keys = path.split("__")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return c


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "rootfs").mkdir()
    return tmp_path


# --- validation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"ociVersion": "2.0.0"}, "ociVersion"),
        ({"ociVersion": 1}, "ociVersion"),
        ({"process__args": []}, "process.args"),
        ({"process__cwd": "relative"}, "process.cwd"),
        ({"process__user": {"uid": -1}}, "process.user.uid"),
        ({"process__user": {"uid": "root"}}, "process.user.uid"),
        ({"process__capabilities": {"bounding": ["CAP_NOPE"]}}, "process.capabilities.bounding[0]"),
        ({"process__rlimits": [{"type": "RLIMIT_BOGUS", "soft": 1, "hard": 1}]}, "process.rlimits[0].type"),
        ({"process__oomScoreAdj": 5000}, "process.oomScoreAdj"),
        ({"linux__namespaces": [{"type": "bogus"}]}, "linux.namespaces[0].type"),
        ({"linux__namespaces": [{"type": "mount"}, {"type": "mount"}]}, "linux.namespaces[1].type"),
        ({"linux__namespaces": [{"type": "pid"}]}, "linux.namespaces"),
        ({"linux__namespaces": [{"type": "mount"}, {"type": "net", "path": "x"}]}, "linux.namespaces[1].type"),
        ({"mounts": [{"destination": "", "type": "proc"}]}, "mounts[0].destination"),
        ({"linux__sysctl": {"kernel.panic": "1"}}, "linux.sysctl.kernel.panic"),
        ({"linux__sysctl": {"net.ipv4.ip_forward": 1}}, "linux.sysctl.net.ipv4.ip_forward"),
        ({"linux__devices": [{"path": "/dev/x", "type": "z"}]}, "linux.devices[0].type"),
        ({"linux__uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}]}, "linux.uidMappings"),
        ({"linux__seccomp": {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/x"}}, "linux.seccomp.listenerPath"),
        ({"linux__rootfsPropagation": "sideways"}, "linux.rootfsPropagation"),
        ({"hooks": {"prestart": [{"path": "relative"}]}}, "hooks.prestart[0].path"),
        ({"hooks": {"poststop": [{"path": "/bin/true", "timeout": 0}]}}, "hooks.poststop[0].timeout"),
        ({"root": {"path": ""}}, "root.path"),
        ({"annotations": {"a": 1}}, "annotations.a"),
        # untrusted keys are quoted when they are not plain text: the message stays one line
        ({"annotations": {"a\nb": 1}}, "annotations['a\\nb']"),
        ({"linux__sysctl": {"a\nb": "1"}}, "linux.sysctl['a\\nb']"),
        ({"linux__sysctl": {"kernel.x\n": 1}}, "linux.sysctl['kernel.x\\n']"),
        ({"linux__namespaces": [{"type": []}]}, "linux.namespaces[0].type"),
        ({"linux__namespaces": [{"type": {"a": 1}}]}, "linux.namespaces[0].type"),
        ({"hooks": {"prestart": [{"path": "/bin/true", "timeout": 10**400}]}}, "hooks.prestart[0].timeout"),
        ({"hooks": {"prestart": [{"path": "/bin/true", "timeout": 2**63}]}}, "hooks.prestart[0].timeout"),
        ({"hooks": {"prestart": [{"path": "/bin/true", "timeout": 1.5}]}}, "hooks.prestart[0].timeout"),
        ({"linux__devices": [{**DEV, "fileMode": "x"}]}, "linux.devices[0].fileMode"),
        ({"linux__devices": [{**DEV, "fileMode": -1}]}, "linux.devices[0].fileMode"),
        ({"linux__devices": [{**DEV, "uid": []}]}, "linux.devices[0].uid"),
        ({"linux__devices": [{**DEV, "gid": 2**32}]}, "linux.devices[0].gid"),
        ({"linux__devices": [{**DEV, "major": 2**32}]}, "linux.devices[0].major"),
        ({"linux__devices": [{**DEV, "minor": float("inf")}]}, "linux.devices[0].minor"),
        ({"linux__devices": [{"path": "/dev/p", "type": "p", "major": "x"}]}, "linux.devices[0].major"),
        ({"linux__devices": [{"path": "/dev/x", "type": "c"}]}, "linux.devices[0].major"),
    ],
)  # fmt: skip
def test_invalid_values_name_their_field(bundle: Path, changes: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.parse(cfg(**changes), str(bundle))
    assert str(e.value).startswith(field + ":"), str(e.value)
    assert "\n" not in str(e.value)


def test_devices_defaults_and_null_fields(bundle: Path) -> None:
    from minirun.runtime import mounts

    devs = [{**DEV, "fileMode": None, "uid": None, "gid": None},
            {"path": "/dev/p", "type": "p"},
            {**DEV, "path": "/dev/y", "fileMode": 0o20640, "uid": 5, "gid": 6}]
    c = config.parse(cfg(linux__devices=devs), str(bundle))
    got = mounts.parse_devices(c.devices)
    assert [(d.path, d.major, d.minor, d.mode, d.uid, d.gid) for d in got] == [
        ("/dev/fuse", 10, 229, 0o666, 0, 0), ("/dev/p", 0, 0, 0o666, 0, 0),
        ("/dev/y", 10, 229, 0o640, 5, 6)]


def test_hook_timeout_in_range(bundle: Path) -> None:
    hooks = {"prestart": [{"path": "/bin/true", "timeout": 2**63 - 1}]}
    c = config.parse(cfg(hooks=hooks), str(bundle))
    assert c.hooks["prestart"][0].timeout == float(2**63 - 1)


@pytest.mark.parametrize(("doc", "message"), [
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": [[]]}, "linux.seccomp.flags[0]: unsupported flag"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": "1"}, "linux.seccomp.defaultErrnoRet"),
    ({"defaultAction": []}, "linux.seccomp.defaultAction: unsupported action"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1 << 16}]},
     "linux.seccomp.syscalls[0].errnoRet"),
    *[({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ALLOW", "args": [arg]}]}, message)
      for arg, message in [
          ({"op": {}, "index": 0}, "syscalls[0].args[0].op: unknown operator"),
          ({"op": [1], "index": 0}, "syscalls[0].args[0].op: unknown operator"),
          ({"op": "SCMP_CMP_EQ", "index": True}, "syscalls[0].args[0].index"),
          ({"op": "SCMP_CMP_EQ", "index": 1.0}, "syscalls[0].args[0].index"),
          ({"op": "SCMP_CMP_EQ", "index": 0, "value": "1"}, "syscalls[0].args[0].value"),
          ({"op": "SCMP_CMP_EQ", "index": 0, "valueTwo": 1 << 64}, "syscalls[0].args[0].valueTwo"),
      ]],
])  # fmt: skip
def test_oci_seccomp_check_names_the_field(doc: dict[str, Any], message: str) -> None:
    from minirun.errors import RuntimeFailure
    from minirun.runtime import seccomp

    with pytest.raises(RuntimeFailure, match=message.replace("[", r"\[").replace("]", r"\]")):
        seccomp._check(doc)


def test_versions_and_unknown_fields(bundle: Path) -> None:
    for v in ("1.0.0", "1.0.2-dev", "1.1.0", "1.2.0", "1.3.1"):
        config.parse(cfg(ociVersion=v, someFutureField={"x": 1}, linux__future=True), str(bundle))
    c = config.parse(cfg(process__apparmorProfile="p", linux__mountLabel="m"), str(bundle))
    assert "process.apparmorProfile" in c.ignored and "linux.mountLabel" in c.ignored


def test_load_reads_the_bundle(bundle: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        config.load(str(bundle))
    (bundle / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(str(bundle))
    import json

    (bundle / "config.json").write_text(json.dumps(cfg()))
    c = config.load(str(bundle))
    assert c.root_path == str(bundle / "rootfs") and c.process is not None
    assert c.process.args == ["sh", "-c", "true"]


# --- the order of operations -----------------------------------------------------------------


def plan_for(bundle: Path, raw: dict[str, Any]) -> Plan:
    c = config.parse(raw, str(bundle))
    rt = Runtime(str(bundle / "state"))
    plan = Plan()
    rt._plan(plan, c, None, False, 0)
    return plan


def record(plan: Plan, *, gate: bool = True) -> Recorder:
    sc = Recorder()
    r, w = os.pipe()
    try:
        with pytest.raises(ExecReached):
            become(plan, (None, None, None), w, (w, r) if gate else None, None, sc)
    finally:
        os.close(r)
        os.close(w)
    return sc


def test_create_order(bundle: Path) -> None:
    plan = plan_for(bundle, cfg())
    plan.fifo = 7
    names = record(plan).names()
    # what runc does, in its order: isolate, mount, hooks, pivot, then the process
    assert names == [
        "set_dumpable", "setup_stdio", "set_umask", "unshare", "sethostname", "loopback_up",
        "set_propagation", "bind_root", "open_root", "mount_all", "rendezvous", "mask_paths",
        "make_dir_in_root", "pivot", "close", "chdir", "set_user_and_caps", "lookup",
        "wait_for_start", "prepare_exec", "execve",
    ]
    calls = dict(record(plan).calls)
    flags = calls["unshare"][0]
    assert flags == linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWNET
    assert not flags & linux.CLONE_NEWPID  # the parent unshares PID before its fork
    assert calls["execve"] == ("/bin/sh", ["sh", "-c", "true"])


def test_seccomp_before_the_capability_drop_unless_no_new_privs(bundle: Path) -> None:
    plan = plan_for(bundle, cfg())
    plan.seccomp = object()
    names = record(plan).names()
    assert names.index("load_seccomp") < names.index("set_user_and_caps")
    plan.no_new_privs = True
    sc = record(plan)
    names = sc.names()
    # with no_new_privs the sealed minirun-exec installs it, right before its execve
    assert "load_seccomp" not in names
    assert (names.index("set_user_and_caps") < names.index("set_no_new_privs")
            < names.index("execve") < names.index("seccomp_at_exec"))  # fmt: skip
    assert dict(sc.calls)["seccomp_at_exec"] == (plan.seccomp,)


def test_user_and_capabilities_are_set_before_created(bundle: Path) -> None:
    # runc's order: a bad user or capability set fails `create`, not a later `start`;
    # the command is looked up as the container's user
    plan = plan_for(bundle, cfg())
    plan.fifo = 7
    names = record(plan).names()
    assert names.index("set_user_and_caps") < names.index("lookup") < names.index("wait_for_start")


def test_missing_capabilities_mean_none(bundle: Path) -> None:
    raw = cfg()
    raw["process"].pop("capabilities", None)
    plan = plan_for(bundle, raw)
    assert plan.caps is not None
    assert not (plan.caps.bounding or plan.caps.effective or plan.caps.permitted
                or plan.caps.inheritable or plan.caps.ambient)  # fmt: skip


def test_pdeathsig_is_set_first_and_again_after_setuid(bundle: Path) -> None:
    plan = plan_for(bundle, cfg())
    plan.pdeathsig, plan.parent = 9, 1234
    sc = record(plan)
    names = sc.names()
    at = [i for i, n in enumerate(names) if n == "set_pdeathsig"]
    assert len(at) == 2 and at[0] == 1 and at[1] == names.index("set_user_and_caps") + 1
    assert dict(sc.calls)["set_pdeathsig"] == (9, 1234)


def test_joined_namespaces_sysctl_and_readonly_root(bundle: Path, tmp_path: Path) -> None:
    raw = cfg(root={"path": "rootfs", "readonly": True}, linux__sysctl={"net.ipv4.ip_forward": "1"},
              process__oomScoreAdj=100)  # fmt: skip
    raw["linux"]["namespaces"][4] = {"type": "network", "path": "/proc/self/ns/net"}
    plan = plan_for(bundle, raw)
    try:
        sc = record(plan)
    finally:
        for fd, _ in plan.join:
            os.close(fd)
    names = sc.names()
    assert names.index("setns") < names.index("unshare")
    assert "loopback_up" not in names  # a joined network namespace is not ours to change
    writes = [a for c, a in sc.calls if c == "write_file"]
    assert ("/proc/self/oom_score_adj", "100") in writes
    assert ("/proc/sys/net/ipv4/ip_forward", "1") in writes
    assert names.index("pivot") < names.index("readonly_root") < names.index("execve")


def test_overlay_rootfs_and_hooks(bundle: Path) -> None:
    from minirun.runtime import OverlayRootfs

    raw = cfg(hooks={"createContainer": [{"path": "/bin/true"}],
                     "startContainer": [{"path": "/bin/true"}]})  # fmt: skip
    c = config.parse(raw, str(bundle))
    plan = Plan()
    Runtime(str(bundle / "s"))._plan(
        plan, c, OverlayRootfs(["/l1", "/l2"], "/up", "/work", str(bundle / "rootfs")), False, 0)
    names = record(plan).names()
    assert "bind_root" not in names and names.index("mount_overlay") < names.index("open_root")
    hooks = [i for i, n in enumerate(names) if n == "run_hook"]
    assert names.index("rendezvous") < hooks[0] < names.index("pivot")  # createContainer
    assert names.index("set_user_and_caps") < hooks[1] < names.index("execve")  # startContainer


def test_exec_joins_and_chroots_instead_of_mounting() -> None:
    plan = Plan()
    plan.args, plan.env = ["ls"], {"PATH": "/bin"}
    plan.join = [(50, linux.CLONE_NEWNET), (51, linux.CLONE_NEWNS)]
    plan.chroot_fd = 52
    plan.cgroup_procs = ["/sys/fs/cgroup/x/cgroup.procs"]
    names = record(plan, gate=False).names()
    assert names == ["set_dumpable", "setup_stdio", "set_umask", "write_file", "setns", "close", "setns",
                     "close", "chroot_fd", "close", "chdir", "set_user_and_caps", "lookup",
                     "prepare_exec", "execve"]  # fmt: skip


def test_created_record_is_sent_before_waiting(bundle: Path) -> None:
    plan = plan_for(bundle, cfg())
    plan.fifo = 9
    sc = Recorder()
    r, w = os.pipe()
    try:
        with pytest.raises(ExecReached):
            become(plan, (None, None, None), w, None, None, sc)
        assert os.read(r, 16) == CREATED
    finally:
        os.close(r)
        os.close(w)


def test_cgroup_moved_by_the_parent_before_anything_cgroup_dependent(bundle: Path) -> None:
    # the parent moves the init into its cgroup while it sets up; the init waits for that
    # ("J") before the cgroup namespace is made and the cgroup filesystems are mounted
    raw = cfg()
    raw["linux"]["namespaces"].append({"type": "cgroup"})
    plan = plan_for(bundle, raw)
    plan.cgroup_by_parent = True
    plan.cgroup_procs = ["/sys/fs/cgroup/x/cgroup.procs"]
    sc = record(plan)
    names = sc.names()
    assert "write_file" not in names  # the child does not join itself
    first = next(a for n, a in sc.calls if n == "unshare")[0]
    assert first & linux.CLONE_NEWNS and not first & linux.CLONE_NEWCGROUP
    cg_unshare = [i for i, (n, a) in enumerate(sc.calls) if n == "unshare" and a == (linux.CLONE_NEWCGROUP,)]
    assert len(cg_unshare) == 1
    assert names.index("wait_joined") < cg_unshare[0] < names.index("mount_all") < names.index("execve")


def test_state_remove_tolerates_a_concurrent_delete(tmp_path: Path) -> None:
    """A shim's cleanup and `rm -f` delete the same runtime container at once: the
    second remove finds the dir gone and must not fail (the soak found this race)."""
    from minirun.runtime.state import StateDir

    sd = StateDir(str(tmp_path / "rt"))
    d = sd.reserve("x")
    os.rmdir(d)  # the other process won
    sd.remove("x")
    assert not os.path.exists(d)
