#!/usr/bin/python
# Copyright: the pmip_agent project. BSD-2-Clause.
# ruff: noqa: E402  (Ansible modules put DOCUMENTATION before the imports)
"""Ansible module: flush the connection tracking table of the host's network namespace."""

from __future__ import annotations

DOCUMENTATION = r"""
module: conntrack_flush
short_description: Flush the connection tracking table (ctnetlink), without conntrack-tools
description:
  - Deletes every conntrack entry of one address family in the host's network namespace,
    with one ctnetlink message (what C(conntrack -F) does), so NAT mappings are made again
    from the current ruleset.
  - A NAT keeps translating an existing flow with the mapping it was created with. After
    its public address changes, a flow that keeps sending (a MAG's PBU retransmissions)
    would keep the dead address for ever; the nat role runs this when the public address
    changes.
  - Needs CAP_NET_ADMIN in the namespace; uses only the Python standard library.
options:
  family:
    description: Address family of the entries to delete.
    type: str
    choices: [ipv4, ipv6]
    default: ipv4
author: the pmip_agent project
"""

EXAMPLES = r"""
- name: Forget the NAT mappings made with the old public address
  conntrack_flush:
    family: ipv4
"""

RETURN = r"""
family:
  description: The family flushed.
  type: str
  returned: always
"""

import errno
import os
import socket
import struct

from ansible.module_utils.basic import AnsibleModule

NETLINK_NETFILTER = 12
NFNL_SUBSYS_CTNETLINK = 1
IPCTNL_MSG_CT_DELETE = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 2


def flush(family: int) -> None:
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER) as sock:
        sock.bind((0, 0))
        body = struct.pack("BBH", family, 0, 0)  # struct nfgenmsg, no attributes: all
        kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE
        header = struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, 1, 0)
        sock.send(header + body)
        reply = sock.recv(65536)
        _length, msg_type = struct.unpack_from("=IH", reply)
        if msg_type == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", reply, 16)
            if code not in (0, -errno.ENOENT):  # ENOENT: the table was already empty
                raise OSError(-code, os.strerror(-code))


def main() -> None:
    module = AnsibleModule(
        argument_spec={"family": {"type": "str", "choices": ["ipv4", "ipv6"], "default": "ipv4"}},
        supports_check_mode=True,
    )
    family = module.params["family"]
    if not module.check_mode:
        try:
            flush(socket.AF_INET if family == "ipv4" else socket.AF_INET6)
        except OSError as exc:
            module.fail_json(msg=f"flushing the {family} conntrack table failed: {exc}")
    module.exit_json(changed=True, family=family)


if __name__ == "__main__":
    main()
