"""The flags `run` and `create` share (Docker's names and defaults), and the one
function that turns them into :class:`RunOptions`. Flag values that are small languages
of their own are parsed by :mod:`minirun.container.runflags`, before anything is made."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from minirun.container.spec import RunOptions, expand_env, parse_env_file
from minirun.errors import MinirunError, UsageError

# The flags `run` and `create` share (Docker's names); `run` adds -d.
RUN_FLAGS: list[Callable[[Any], Any]] = [
    click.option("-i", "--interactive", is_flag=True, help="Keep STDIN open."),
    click.option("-t", "--tty", is_flag=True, help="Allocate a pseudo-TTY."),
    click.option("--init", "use_init", is_flag=True, help="Run a minimal init as PID 1 (reaps zombies, forwards signals)."),
    click.option("--rm", "remove", is_flag=True, help="Remove the container when it exits."),
    click.option("--name", help="Assign a name to the container."),
    click.option("-e", "--env", multiple=True, help="Set environment variables (KEY=VAL, or KEY to pass the host's)."),
    click.option("--env-file", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
                 help="Read environment variables from a file."),
    click.option("-w", "--workdir", help="Working directory inside the container."),
    click.option("-u", "--user", help="Username or UID (format: <name|uid>[:<group|gid>])."),
    click.option("-h", "--hostname", help="Container host name."),
    click.option("--entrypoint", help="Overwrite the image's ENTRYPOINT (\"\" for none)."),
    click.option("--read-only", is_flag=True, help="Mount the container's root filesystem read-only."),
    click.option("-v", "--volume", multiple=True,
                 help="Bind mount a host dir (/host:/ctr[:ro]), a named volume (NAME:/ctr)"
                      " or a new anonymous one (/ctr)."),
    click.option("--tmpfs", multiple=True, help="Mount a tmpfs directory (PATH[:options])."),
    click.option("--cap-add", multiple=True, help="Add Linux capabilities."),
    click.option("--cap-drop", multiple=True, help="Drop Linux capabilities."),
    click.option("--security-opt", multiple=True, help="Security options (no-new-privileges)."),
    click.option("--chroot", is_flag=True, help="Use chroot instead of pivot_root (runc's --no-pivot)."),
    click.option("--pull", type=click.Choice(["missing", "always", "never"]), default="missing",
                 show_default=True, help="Pull the image before running."),
    click.option("--platform", metavar="OS/ARCH[/VARIANT]", help="Platform to pull, for a multi-platform image."),
    click.option("--privileged", is_flag=True,
                 help="All capabilities and host devices; no seccomp, no masked paths."),
    click.option("-m", "--memory", help="Memory limit (e.g. 32m, 1g)."),
    click.option("--memory-swap", help="Memory + swap limit; -1 for unlimited swap."),
    click.option("--cpus", help="Number of CPUs (e.g. 0.5)."),
    click.option("-c", "--cpu-shares", type=int, help="CPU shares (relative weight)."),
    click.option("--pids-limit", type=int, help="Tune the container's pids limit (-1 for unlimited)."),
    click.option("--network", "--net", "network", default="bridge", show_default=True,
                 help="Connect to a network: bridge, none, host or a network's name."),
    click.option("-p", "--publish", multiple=True,
                 help="Publish a container's port to the host ([IP:][HOSTPORT:]CTRPORT[/PROTO])."),
    click.option("-P", "--publish-all", is_flag=True, help="Publish all exposed ports to random host ports."),
    click.option("--dns", multiple=True, help="Set custom DNS servers."),
    click.option("--add-host", multiple=True, help="Add a custom host-to-IP mapping (HOST:IP)."),
    click.option("-l", "--label", multiple=True, help="Set metadata on the container (KEY=VALUE)."),
    click.option("--label-file", multiple=True, help="Read labels from a file of KEY=VALUE lines."),
    click.option("--ulimit", multiple=True, help="Ulimit options (e.g. nofile=1024:2048)."),
    click.option("--device", multiple=True, help="Add a host device to the container (HOST[:CONTAINER][:rwm])."),
    click.option("--sysctl", multiple=True, help="Namespaced kernel parameters (KEY=VALUE)."),
    click.option("--stop-signal", help="Signal to stop the container (default: the image's, or SIGTERM)."),
    click.option("--stop-timeout", type=int, help="Seconds to wait before killing the container at stop."),
    click.option("--restart", default="no", show_default=True,
                 help="Restart policy: no, on-failure[:max-retries], always, unless-stopped."),
    click.option("--cidfile", help="Write the container ID to the file."),
    click.option("--health-cmd", help="Command to run to check health."),
    click.option("--health-interval", help="Time between running the check (ms|s|m|h) (default 30s)."),
    click.option("--health-timeout", help="Maximum time to allow one check to run (ms|s|m|h) (default 30s)."),
    click.option("--health-start-period", help="Start period for the container to initialize "
                 "before starting health-retries countdown (ms|s|m|h) (default 0s)."),
    click.option("--health-retries", type=int, help="Consecutive failures needed to report unhealthy."),
    click.option("--no-healthcheck", is_flag=True, help="Disable any container-specified HEALTHCHECK."),
    click.option("--mount", "mounts", multiple=True,
                 help="Attach a filesystem mount: type=bind|volume|tmpfs,source=,target=[,readonly]."),
]


def run_flags(f: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed(RUN_FLAGS):
        f = option(f)
    return f


def run_options(flags: dict[str, Any], command: list[str], detach: bool) -> RunOptions:
    """The parsed flags of `run`/`create`; a malformed one is a UsageError (exit 125)."""
    from minirun.container import runflags as parse

    f = flags
    host_env = dict(os.environ)
    env_list: list[str] = []
    for path in f["env_file"]:
        try:
            text = path.read_text()
        except OSError as e:
            raise MinirunError(f"--env-file {path}: {e.strerror}") from None
        env_list += parse_env_file(text, host_env, str(path))
    env_list += expand_env(list(f["env"]), host_env)
    nnp, seccomp = _security_opts(f["security_opt"])
    restart = parse.parse_restart(f["restart"])
    if restart.name != "no" and f["remove"]:
        raise UsageError("conflicting options: cannot specify both --restart and --rm")
    if f["stop_signal"] is not None:
        from minirun.container.lifecycle import parse_signal

        parse_signal(f["stop_signal"])
    health = parse.HealthFlags(
        cmd=f["health_cmd"], interval=f["health_interval"], timeout=f["health_timeout"],
        start_period=f["health_start_period"], retries=f["health_retries"],
        disabled=f["no_healthcheck"])
    parse.healthcheck(health, None)  # the flags' own errors now, before anything is made
    for u in f["ulimit"]:
        parse.parse_ulimit(u)
    for d in f["device"]:
        parse.parse_device(d)
    return RunOptions(
        command=command, entrypoint=f["entrypoint"], env=env_list, workdir=f["workdir"],
        user=f["user"], hostname=f["hostname"], tty=f["tty"], interactive=f["interactive"],
        read_only=f["read_only"], volumes=list(f["volume"]), tmpfs=list(f["tmpfs"]),
        cap_add=list(f["cap_add"]), cap_drop=list(f["cap_drop"]), no_new_privileges=nnp,
        chroot=f["chroot"], name=f["name"], remove=f["remove"], detach=detach, init=f["use_init"],
        privileged=f["privileged"], seccomp=seccomp, pull=f["pull"], platform=f["platform"],
        memory=f["memory"], memory_swap=f["memory_swap"], cpus=f["cpus"],
        cpu_shares=f["cpu_shares"], pids_limit=f["pids_limit"], network=f["network"],
        publish=list(f["publish"]), publish_all=f["publish_all"], dns=list(f["dns"]),
        add_hosts=list(f["add_host"]),
        labels=parse.parse_labels(list(f["label"]), list(f["label_file"])),
        ulimits=list(f["ulimit"]), devices=list(f["device"]),
        sysctls=parse.parse_sysctls(list(f["sysctl"]), f["network"]),
        stop_signal=f["stop_signal"], stop_timeout=parse.parse_stop_timeout(f["stop_timeout"]),
        restart=f["restart"], health={k: v for k, v in vars(health).items() if v not in (None, False)},
        mounts=list(f["mounts"]), cidfile=f["cidfile"])


def _security_opts(items: tuple[str, ...]) -> tuple[bool, str | None]:
    """--security-opt: (no-new-privileges, seccomp profile or None)."""
    nnp = False
    seccomp: str | None = None
    for opt in items:
        key, sep, value = opt.replace(":", "=", 1).partition("=") if opt.startswith("seccomp") \
            else (opt, "", "")
        if opt in ("no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"):
            nnp = True
        elif opt in ("no-new-privileges:false", "no-new-privileges=false"):
            pass
        elif key == "seccomp" and sep and value:
            seccomp = value
        else:
            raise MinirunError(f"unsupported --security-opt {opt!r} (supported: no-new-privileges, "
                               "seccomp=unconfined, seccomp=PROFILE.json)")
    return nnp, seccomp
