#!/usr/bin/python
# Copyright: the pmip_agent project. BSD-2-Clause.
# ruff: noqa: E402  (Ansible modules put DOCUMENTATION before the imports)
"""Ansible module: a running pmip-agent's state, read with pmipctl --json, as facts."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pmip_agent_facts
short_description: Read a running pmip-agent's status, bindings and pools into facts
description:
  - Runs C(pmipctl --socket SOCKET --json COMMAND) on the host for each of O(gather) and
    returns the replies as the fact C(pmip_agent), a dictionary keyed by command.
  - Read-only; never reports a change. For verification after a deployment, such as
    "the agent runs, and mobile node X still has its binding with the same address".
  - The replies are the agent's own JSON (see C(pmipctl --help)); binding objects carry
    at least C(mn_id), C(ipv4_hoa), C(ipv6_hnps), C(mag) or C(lma), C(transport), C(nat),
    C(lifetime_remaining_s) and C(state).
options:
  pmipctl:
    description: Path of the C(pmipctl) executable on the host (in the agent's venv).
    type: path
    default: /opt/pmip-agent/venv/bin/pmipctl
  socket:
    description: The agent's control socket.
    type: path
    required: true
  gather:
    description: The pmipctl commands to run.
    type: list
    elements: str
    choices: [status, bindings, pools]
    default: [status, bindings]
  retries:
    description: Attempts while the socket does not answer yet (0.2 s apart).
    type: int
    default: 0
author: the pmip_agent project
"""

EXAMPLES = r"""
- name: Read the LMA's bindings
  pmip_agent_facts:
    pmipctl: "{{ pmip_agent_venv }}/bin/pmipctl"
    socket: "{{ pmip_agent_control_socket }}"
    gather: [status, bindings, pools]

- name: MN1 is bound
  ansible.builtin.assert:
    that: ansible_facts.pmip_agent.bindings | selectattr('mn_id', '==', 'mn1@lab.example') | list
"""

RETURN = r"""
ansible_facts:
  description: C(pmip_agent) with one key per command of O(gather).
  returned: success
  type: dict
  sample:
    pmip_agent:
      status: {role: lma, node_name: lma1, bindings: 2}
      bindings: [{mn_id: mn1@lab.example, ipv4_hoa: 10.100.0.2, state: active}]
"""

import json
import time

from ansible.module_utils.basic import AnsibleModule


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "pmipctl": {"type": "path", "default": "/opt/pmip-agent/venv/bin/pmipctl"},
            "socket": {"type": "path", "required": True},
            "gather": {
                "type": "list",
                "elements": "str",
                "choices": ["status", "bindings", "pools"],
                "default": ["status", "bindings"],
            },
            "retries": {"type": "int", "default": 0},
        },
        supports_check_mode=True,
    )
    p = module.params
    facts: dict = {}
    for command in p["gather"]:
        argv = [p["pmipctl"], "--socket", p["socket"], "--json", command]
        for attempt in range(p["retries"] + 1):
            rc, out, err = module.run_command(argv)
            if rc != 2 or attempt == p["retries"]:  # 2: socket not reachable (yet)
                break
            time.sleep(0.2)
        if rc != 0:
            module.fail_json(msg=f"pmipctl {command} failed (exit {rc}): {err.strip()}", rc=rc)
        try:
            facts[command] = json.loads(out)
        except ValueError as exc:
            module.fail_json(msg=f"pmipctl {command}: not JSON: {exc}", stdout=out)
    module.exit_json(changed=False, ansible_facts={"pmip_agent": facts})


if __name__ == "__main__":
    main()
