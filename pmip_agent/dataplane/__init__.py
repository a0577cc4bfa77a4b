"""The data plane: the MAG-LMA tunnels that carry the mobile nodes' traffic, and the
routes that lead into them.

Layers, each replaceable on its own:

* :mod:`.lma` and :mod:`.mag` observe the engines' events (the daemon's ``observers``)
  and turn them into tunnels, reference counts and routes. They know PMIPv6, not how
  packets move.
* :mod:`.tunnel` is the narrow backend interface they call: add/remove a shared tunnel,
  route a prefix into one. A kernel-tunnel backend would implement it with ip6tnl/ipip
  devices where the kernel has them.
* :mod:`.userspace` is the one backend shipped: a TUN device and the user-space
  :mod:`.forwarder`, built on the pure functions of :mod:`.packet`.
* :mod:`.ra` sends Router Advertisements on the MAG's access links.
"""

from .lma import LmaDataPlane
from .mag import MagDataPlane

__all__ = ["LmaDataPlane", "MagDataPlane"]
