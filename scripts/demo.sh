#!/usr/bin/env bash
# The image/container layer split, told with real commands (`make demo`, as root). Each
# command is shown exactly as you would type it, then run.
set -euo pipefail
cd "$(dirname "$0")/.."
M="${MINIRUN:-$PWD/.venv/bin/minirun}"
minirun() { "$M" "$@"; }
say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
show() { printf '\033[1;34m$\033[0m %s\n' "$1"; eval "$1"; }

work=$(mktemp -d /tmp/minirun-demo.XXXXXX)
tidy() {
    "$M" rm -f demo >/dev/null 2>&1 || true
    "$M" rmi demo-web:changed demo-web demo-edit >/dev/null 2>&1 || true
}
trap 'tidy; rm -rf "$work"' EXIT
tidy
mkdir -p "$work/web" "$work/edit"
echo '<h1>hello from an image layer</h1>' > "$work/web/index.html"
cat > "$work/web/Containerfile" <<'EOF'
FROM busybox
COPY index.html /srv/www/index.html
RUN echo "Welcome to demo-web" > /etc/motd
CMD ["httpd", "-f", "-p", "80", "-h", "/srv/www"]
EOF
cat > "$work/edit/Containerfile" <<'EOF'
FROM busybox
RUN rm /etc/issue && rm -rf /home && mkdir /home && echo "a new /home" > /home/NOTE
EOF
cd "$work"

say "busybox: an image minirun built offline from the host's static busybox (make images)."
show "minirun images busybox"

say "Two images built by minirun from Containerfiles, both FROM busybox."
show "cat web/Containerfile"
show "minirun build -t demo-web web"
show "cat edit/Containerfile"
show "minirun build -q -t demo-edit edit"

say "They share busybox's layer: one dir on disk, used by every image that has it (SHARED BY)."
show "minirun history demo-web"
show "minirun layers demo-edit"

say "An image layer records deletions as OCI whiteouts: .wh.<name>, and .wh..wh..opq for a replaced dir."
show "top=\$(minirun image inspect -f '{{index .RootFS.Layers 1}}' demo-edit)"
show "minirun save demo-edit | tar -xO \"blobs/sha256/\${top#sha256:}\" | tar -tv | grep '\\.wh\\.'"

say "Checksum every file of demo-web's layer dirs before a container uses them."
show "layers=\$(minirun image inspect -f '{{.GraphDriver.Data.LowerDir}}' demo-web | tr : ' ')"
show "find \$layers -type f -exec sha256sum {} + | sort | sha256sum"

say "A container writes, deletes and replaces files: all of it lands in its own thin writable layer."
show "minirun run --name demo --network none demo-web sh -c 'echo changed > /srv/www/index.html; rm /etc/motd; rm -rf /home && mkdir /home && echo mine > /home/NOTE; echo new > /new'"
show "minirun diff demo"

say "In the container layer (overlayfs's upper dir) a deletion is a 0:0 char device, a replaced dir has the opaque xattr."
show "upper=\$(minirun inspect -f '{{.GraphDriver.Data.UpperDir}}' demo)"
show "ls -l \$upper/etc/motd"
show "getfattr -n trusted.overlay.opaque \$upper/home"

say "Which layer does a path come from? Before: image layers. After the container changed it: rw."
show "minirun blame demo-web /srv/www/index.html /etc/motd /bin/sh"
show "minirun blame demo /srv/www/index.html /etc/motd /bin/sh"

say "The image's layer dirs are untouched: the same checksum as before the container ran."
show "find \$layers -type f -exec sha256sum {} + | sort | sha256sum"

say "commit turns the container layer into one new image layer; every lower layer is shared, not copied."
show "minirun commit -m 'the demo container, committed' demo demo-web:changed"
show "minirun history demo-web:changed"

say "The disk: each shared layer counted once, and per image its shared and unique bytes."
show "minirun system df"
show "minirun system df -v | sed -n '/^REPOSITORY/,/^\$/p'"

say "Done: removing what the demo made."
show "minirun rm demo"
show "minirun rmi demo-web:changed demo-web demo-edit"
