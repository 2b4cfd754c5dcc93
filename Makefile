# minirun — every target pulls in what it needs, so on a fresh Debian/Ubuntu machine
# `make demo` and `make test` (as root, or with sudo) each work as the first command.

VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.installed
IMAGES    := images/out
# Debian 12 / Ubuntu 24.04 ship python3 >= 3.11; on Ubuntu 22.04 `deps` adds python3.11.
# The distribution's python first: it is what `sudo` finds and what python3-dev matches.
PYTHON     = $(shell for p in /usr/bin/python3.13 /usr/bin/python3.12 /usr/bin/python3.11 /usr/bin/python3 python3; do \
               if command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; \
               then command -v $$p; break; fi; done)
# nftables: bridge networking's masquerade and isolation rules (podman only suggests a
# firewall, so a --no-install-recommends install would not bring one).
# podman + conmon, containerd (ctr, its runc shim), runc and crun: the real clients and
# peers minirun-runtime is tested and benchmarked against; hyperfine times the benches;
# pipx: the install test installs minirun with it, as users do; attr: getfattr, with which
# `make demo` shows the opaque xattr of a replaced dir in a container layer.
APT_PKGS  := python3 python3-venv python3-dev gcc make libcap-dev busybox-static zstd \
             iproute2 util-linux procps docker-registry skopeo podman conmon runc crun \
             containerd debootstrap libseccomp2 libc6-dev nftables kmod hyperfine pipx attr
PYTEST_ARGS ?=

.PHONY: deps install images demo test lint bench bench-all soak fuzz clean

deps:
	@missing=$$(for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -z "$(PYTHON)" ]; then missing="$$missing python3.11 python3.11-venv python3.11-dev"; fi; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@modprobe overlay 2>/dev/null || true

$(STAMP): pyproject.toml setup.py | deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# compat mode: a plain path in a .pth file; the default editable finder costs ~10 ms
	# at every start of `minirun`.
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=compat
	@touch $@

# The C helpers (minirun-shim, -init, -exec: see minirun/shim/build.py) go into the
# package's libexec/, where `pip install .` puts them too.
HELPERS := minirun/libexec/minirun-shim minirun/libexec/minirun-init minirun/libexec/minirun-exec
$(HELPERS) &: minirun/shim/build.py minirun/shim/shim.c minirun/shim/init.c minirun/shim/exec.c | $(STAMP)
	$(BIN)/python minirun/shim/build.py minirun/libexec

install: deps $(STAMP) $(HELPERS)
	@# bytecode up front: with PYTHONDONTWRITEBYTECODE set, every start would recompile.
	@$(BIN)/python -m compileall -q minirun >/dev/null
	ln -sf $(CURDIR)/$(BIN)/minirun /usr/local/bin/minirun
	ln -sf $(CURDIR)/$(BIN)/minirun-runtime /usr/local/bin/minirun-runtime
	@echo "installed: $$(command -v minirun) -> $(CURDIR)/$(BIN)/minirun"

# The offline images are images/*/Containerfile, built by `minirun build` from contexts
# images/context.py makes from the host (its static busybox and applet list) in a temp dir.
# SOURCE_DATE_EPOCH (2026-01-01, minirun.image.build.EPOCH) makes them reproducible: the
# same IDs on every machine with the same busybox, and as the test fixtures'.
SOURCE_DATE_EPOCH ?= 1767225600
images: install
	@ctx=$$(mktemp -d /tmp/minirun-images.XXXXXX) && trap 'rm -rf "$$ctx"' EXIT && \
	$(BIN)/python images/context.py "$$ctx" >/dev/null && \
	for i in busybox busybox-extra busybox-edit; do \
	  echo "building $$i:latest"; \
	  $(BIN)/minirun build -q --network none --build-arg SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) \
	    -t $$i:latest -f images/$$i/Containerfile "$$ctx/$$i" || exit 1; \
	done
	$(BIN)/minirun images

demo: images
	@bash scripts/demo.sh

test: install
	$(BIN)/pytest -q $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check minirun tests bench images
	$(BIN)/mypy

# `make bench`: the one table (bench/bench_table.py), also written to bench/results/;
# `make bench-all`: every bench (pull, unpack, networking, detach memory, breakdown...).
bench: install
	$(BIN)/python bench/bench_table.py

# `make soak`: 1000 sequential runs of every kind, then the before/after counts of
# everything a leak would leave (tests/soak.py; CI runs a short version in the tests).
soak: install
	$(BIN)/python tests/soak.py --runs 1000

# `make fuzz`: the Hypothesis tests with 20x their examples (271,420 inputs, ~13 min), then
# coverage-guided atheris runs of the byte parsers, FUZZ_SECONDS each (tests/fuzz/).
FUZZ_SECONDS ?= 60
FUZZ_DIR     := /tmp/minirun-fuzz
fuzz: install
	$(BIN)/pip install -q atheris
	MINIRUN_FUZZ_SCALE=20 $(BIN)/pytest -q -p no:cacheprovider tests/unit/test_fuzz.py
	@rm -rf $(FUZZ_DIR); status=0; \
	for t in layer archive manifest runtime-config; do \
	  echo "== atheris $$t ($(FUZZ_SECONDS) s)"; dict=; \
	  case $$t in manifest|runtime-config) dict=-dict=tests/fuzz/json.dict;; esac; \
	  MINIRUN_FUZZ_DIR=$(FUZZ_DIR) $(BIN)/python tests/fuzz/fuzz_atheris.py $$t \
	    -max_total_time=$(FUZZ_SECONDS) -timeout=20 $$dict \
	    -artifact_prefix=$(FUZZ_DIR)/crash-$$t- 2>&1 | grep -E '^(#[0-9]+ +DONE|Done|==|Traceback|AssertionError|.*Error)' \
	    || true; \
	  if ls $(FUZZ_DIR)/crash-$$t-* >/dev/null 2>&1; then echo "atheris $$t: crash saved in $(FUZZ_DIR)"; status=1; fi; \
	done; \
	if [ $$status = 0 ]; then rm -rf $(FUZZ_DIR); fi; exit $$status

bench-all: install
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) $(IMAGES) bench/out *.egg-info minirun/libexec

# `make test-cgroup2`: the cgroup tests as root in a VM whose kernel has cgroup v2 only
# (Debian's 6.1 kernel booted by virtme-ng; tests/cgroup2/run_vm.py, docs/testing.md).
# Without usable KVM it boots under TCG (MINIRUN_VM_TCG=1 forces it, =0 forbids it). `cgroup2-deps`: qemu, that kernel (the VM's own: the
# host never boots it), virtme-ng 1.42 in .venv-vm (busybox-static builds its initramfs).
VM_VENV     := .venv-vm
VM_APT_PKGS := qemu-system-x86 linux-image-amd64 busybox-static
CGROUP2_PYTEST_ARGS ?=

.PHONY: cgroup2-deps test-cgroup2

cgroup2-deps: deps $(VM_VENV)/bin/vng
	@missing=$$(for p in $(VM_APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VM_VENV)/bin/vng: | deps
	$(PYTHON) -m venv $(VM_VENV)
	$(VM_VENV)/bin/pip install -q virtme-ng==1.42

test-cgroup2: install cgroup2-deps
	$(BIN)/python tests/cgroup2/run_vm.py $(CGROUP2_PYTEST_ARGS)
