"""Build minirun's offline images from the host's static busybox (Debian busybox-static).

    python images/build.py OUTDIR

writes one OCI image layout directory per image (OUTDIR/busybox, OUTDIR/busybox-extra,
OUTDIR/busybox-edit); `make images` loads them with `minirun load -i`. The builds are
reproducible, so the two derived images share busybox's layer byte for byte — loading
them prints "Already exists" for it, as `docker pull` does for a shared base.

  busybox        one layer: static busybox, its applet links, /etc/passwd, /etc/group; Cmd ["sh"]
  busybox-extra  busybox + a layer that adds files (a web page, a script, /etc/motd)
  busybox-edit   busybox + a layer that deletes /etc/issue (whiteout), replaces /home
                 wholesale (opaque dir) and deletes /usr/share/doc (whiteout of a dir)
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from minirun.image import build as b  # noqa: E402

PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def find_busybox() -> Path:
    for p in (Path("/bin/busybox"), Path("/usr/bin/busybox")):
        if p.is_file():
            out = subprocess.run(["ldd", str(p)], capture_output=True, text=True)
            if "not a dynamic executable" in out.stdout + out.stderr or out.returncode != 0:
                return p
            raise SystemExit(f"{p} is dynamically linked; install busybox-static (make deps)")
    raise SystemExit("no busybox found; install busybox-static (make deps)")


def busybox_layer(busybox: Path) -> b.Layer:
    entries = [
        b.directory(d) for d in ("bin", "sbin", "usr", "usr/bin", "usr/sbin", "usr/share",
                                  "usr/share/doc", "usr/share/doc/busybox", "etc", "home",
                                  "var", "var/log", "dev", "proc", "sys", "run")
    ]
    entries += [b.Entry("tmp", "dir", mode=0o1777), b.Entry("root", "dir", mode=0o700)]
    entries.append(b.file("bin/busybox", busybox.read_bytes(), 0o755))
    applets = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True,
                             check=True).stdout.split()
    for path in applets:
        if path == "bin/busybox":
            continue
        depth = path.count("/")
        entries.append(b.symlink(path, "../" * depth + "bin/busybox" if depth > 1 else "busybox"))
    entries += [
        b.file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
               "www-data:x:33:33:www-data:/var/www:/bin/false\nnobody:x:65534:65534:nobody:/home:/bin/false\n"),
        b.file("etc/group", "root:x:0:\ndaemon:x:1:\nwheel:x:10:root\nwww-data:x:33:\n"
               "users:x:100:\nnogroup:x:65534:\n"),
        b.file("etc/issue", "minirun busybox image\n"),
        b.file("usr/share/doc/busybox/README", "BusyBox: the Swiss Army Knife of embedded Linux.\n"),
        b.file("home/README", "home of the busybox image\n"),
    ]
    return b.Layer(b.layer_tar(entries), f"COPY {busybox} /bin/busybox + applet links")


def build_all(out: Path) -> list[Path]:
    busybox = find_busybox()
    base = busybox_layer(busybox)
    cfg = {"Env": [PATH_ENV], "Cmd": ["sh"]}
    images = [b.image("busybox:latest", [base], cfg)]

    extra = b.Layer(b.layer_tar([
        b.directory("srv"), b.directory("srv/www"),
        b.file("srv/www/index.html", "<h1>hello from minirun</h1>\n"),
        b.file("etc/motd", "Welcome to busybox-extra, built offline by minirun.\n"),
        b.directory("usr/local"), b.directory("usr/local/bin"),
        b.file("usr/local/bin/hello", "#!/bin/sh\necho \"hello from $(hostname)\"\n", 0o755),
    ]), "COPY site/ /srv/www/ + motd + hello")
    images.append(b.image("busybox-extra:latest", [base, extra],
                          {"Env": [PATH_ENV, "GREETING=hello"], "Cmd": ["hello"], "WorkingDir": "/srv/www"}))

    edit = b.Layer(b.layer_tar([
        b.whiteout("etc/issue"),
        b.opaque("home"), b.directory("home"), b.directory("home/app"),
        b.file("home/app/NEW", "this directory replaced the base image's /home\n"),
        b.whiteout("usr/share/doc"),
    ]), "RUN rm /etc/issue && rm -rf /home/* /usr/share/doc && mkdir /home/app")
    images.append(b.image("busybox-edit:latest", [base, edit], cfg))

    paths = []
    for img in images:
        dest = out / img.name.split(":")[0]
        if dest.exists():
            shutil.rmtree(dest)
        b.write_oci_layout(dest, [img])
        paths.append(dest)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    args = ap.parse_args()
    for p in build_all(args.out):
        print(p)


if __name__ == "__main__":
    main()
