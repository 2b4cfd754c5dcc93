#!/usr/bin/env bash
# The image/container layer split, shown with real commands (run by `make demo`, as root).
set -euo pipefail
cd "$(dirname "$0")/.."
M="${MINIRUN:-.venv/bin/minirun}"
say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }
run() { printf "\$ minirun"; printf " %q" "$@"; printf "\n"; "$M" "$@"; }

say "Three images built offline from the host's static busybox; two are built on busybox."
run images
say "Their history: the busybox layer is stored once and shared by all three images."
run history busybox-edit

say "A container: the image's layers, read-only, under its own thin writable layer."
"$M" rm -f demo >/dev/null 2>&1 || true
run run --name demo --network none busybox sh -c 'echo hello from $(hostname); echo x > /etc/motd; rm /bin/ls; mkdir /data'
say "What the container changed, read straight from its writable layer (the overlay upperdir):"
run diff demo
say "The layer stack: each image layer dir is \"ro\" (shared), the container layer \"rw\":"
"$M" inspect demo | sed -n '/"Layers"/,/^        }$/p' | grep -E '"(Dir|Mode)"' | paste - - | sed 's/  */ /g'
say "The image is untouched: a second container of it still has /bin/ls."
run run --rm --network none busybox sh -c 'ls -l /bin/ls'
run ps -a
run rm demo
