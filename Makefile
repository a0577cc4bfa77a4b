# Entry points. `make test` and `make lab` install what they need on a fresh Debian host (as root).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# The venv's interpreter: the distribution's, when there is one, as the pmip_agent role
# deploys the agent (pmip_agent_python). A python3 found first in PATH may be a build
# without PGO/LTO; here a pyenv build ran the same pure-Python loop 1.7x slower.
PYTHON ?= $(firstword $(wildcard /usr/bin/python3) python3)
APT_PACKAGES := tshark iproute2 ethtool nftables busybox iperf3 python3-venv kea-dhcp4-server \
	isc-dhcp-client dhcpcd5 iputils-ping clang libbpf-dev \
	strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-extra-plugins \
	systemd

.PHONY: test lint unit deps venv bench bench-quick clean lab lab-down

test: deps venv ansible-venv lint unit ansible-test

deps: .deps-stamp
.deps-stamp: Makefile
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	  if [ -n "$$missing" ]; then \
	    echo "installing:$$missing"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	  fi; \
	else echo "not root or no apt-get: system packages ($(APT_PACKAGES)) must already be installed"; fi
	@touch $@

venv: $(VENV)/.stamp
$(VENV)/.stamp: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements.txt
	$(VENV)/bin/pip install -q --no-deps -e .
	@touch $@

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

unit: venv
	$(PY) -m pytest

bench: venv
	$(PY) bench/run_all.py

# The main job: seed Figure 1 in network namespaces, deployed and exercised.
lab: deps venv ansible-venv
	$(PY) lab/figure1.py up

lab-down: venv
	$(PY) lab/figure1.py down

clean:
	rm -rf $(VENV) .deps-stamp build .pytest_cache .hypothesis

# --- Ansible: roles, plugins, inventories, Molecule (issue 6) ----------------------------
# requirements-ansible.txt pins ansible-core, ansible (the collections), molecule and
# ansible-lint, installed into the same venv.
.PHONY: ansible-venv ansible-lint ansible-unit ansible-test molecule
ANSIBLE_ENV := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" ANSIBLE_CONFIG="$(CURDIR)/ansible.cfg"

ansible-venv: $(VENV)/.ansible-stamp
$(VENV)/.ansible-stamp: requirements-ansible.txt $(VENV)/.stamp
	$(VENV)/bin/pip install -q -r requirements-ansible.txt
	@touch $@

ansible-lint: ansible-venv
	$(ANSIBLE_ENV) ANSIBLE_VAULT_IDENTITY_LIST="lab@$(CURDIR)/inventories/lab/vault-password.txt,molecule@$(CURDIR)/molecule/strongswan/vault-password.txt" \
	  $(VENV)/bin/ansible-lint

# The filter, module and plan unit tests (tests/test_ansible*.py also run under `unit`).
ansible-unit: ansible-venv
	$(ANSIBLE_ENV) $(PY) -m pytest -q tests/test_ansible_filters.py tests/test_ansible_lab.py

# Every Molecule scenario, in order, on namespace hosts that carry this run's prefix
# (m<pid>); a scenario's own destroy removes them, and the trap below sweeps whatever a
# killed run left (namespaces with the prefix, overlay mounts of the chroot hosts). The
# first run builds the Debian rootfs of the chroot hosts into build/rootfs (debootstrap,
# about 2 minutes and 310 MB), later runs reuse it. Logs: build/molecule/<scenario>.log.
MOLECULE_SCENARIOS ?= lab_topology nat kea strongswan pmip_agent pmip_lma pmip_mag addressing-change
molecule: ansible-venv
	@mkdir -p build/molecule; prefix=m$$(( $$$$ % 100000 )); \
	sweep() { \
	  $(ANSIBLE_ENV) $(VENV)/bin/ansible localhost -m netns_topology \
	    -a "prefix=$$prefix state=absent" >/dev/null 2>&1; \
	  for s in $(MOLECULE_SCENARIOS); do \
	    for m in $$(awk '{print $$2}' /proc/mounts | grep "/molecule\.[^/]*\.$$s/roots/" | sort -r); do \
	      umount -l "$$m" 2>/dev/null; done; done; }; \
	trap sweep EXIT; \
	for s in $(MOLECULE_SCENARIOS); do \
	  start=$$(date +%s); \
	  if $(ANSIBLE_ENV) MOLECULE_RUN_PREFIX=$$prefix $(VENV)/bin/molecule test -s $$s \
	      > build/molecule/$$s.log 2>&1; then \
	    echo "molecule $$s: passed ($$(( $$(date +%s) - start )) s)"; \
	  else \
	    echo "molecule $$s: FAILED ($$(( $$(date +%s) - start )) s), the end of build/molecule/$$s.log:"; \
	    tail -n 60 build/molecule/$$s.log; exit 1; \
	  fi; \
	done

# What `make test` adds for the Ansible side: lint (no findings allowed) and Molecule.
ansible-test: ansible-lint molecule

# The converge time of a fleet: SCALE_MAGS MAGs (50) and one LMA, each a namespace,
# deployed with SCALE_FORKS forks (25); cold, then a no-change converge. Appends the
# figures to build/molecule/scale.jsonl.
.PHONY: molecule-scale
molecule-scale: ansible-venv
	$(ANSIBLE_ENV) MOLECULE_RUN_PREFIX=s$$(( $$$$ % 100000 )) $(VENV)/bin/molecule test -s scale
