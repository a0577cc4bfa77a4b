"""IPv4 home address pools and IPv6 home network prefix pools on the LMA.

Allocation state is one byte per address (a bytearray), so a pool of a million addresses
costs a megabyte; which MN holds an address is known from the binding cache.
"""

from __future__ import annotations

from collections import deque
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network


class _IndexPool:
    """Free/used bookkeeping over slots 0..size-1: reuse released slots first (FIFO, so a
    released address rests before it is handed out again), then fresh ones."""

    __slots__ = ("_cursor", "_released", "_used", "size", "used_count")

    def __init__(self, size: int) -> None:
        self.size = size
        self._used = bytearray(size)
        self._cursor = 0
        self._released: deque[int] = deque()
        self.used_count = 0

    def take_any(self) -> int | None:
        while self._released:
            idx = self._released.popleft()
            if not self._used[idx]:
                self._mark(idx)
                return idx
        while self._cursor < self.size:
            idx = self._cursor
            self._cursor += 1
            if not self._used[idx]:
                self._mark(idx)
                return idx
        return None

    def take(self, idx: int) -> bool:
        if self._used[idx]:
            return False
        self._mark(idx)
        return True

    def give_back(self, idx: int) -> None:
        if self._used[idx]:
            self._used[idx] = 0
            self.used_count -= 1
            self._released.append(idx)

    def is_used(self, idx: int) -> bool:
        return bool(self._used[idx])

    def _mark(self, idx: int) -> None:
        self._used[idx] = 1
        self.used_count += 1


class Ipv4Pool:
    """Host addresses of ``network`` minus the network, broadcast and router addresses."""

    def __init__(
        self,
        name: str,
        network: IPv4Network,
        default_router: IPv4Address | None = None,
        exclude: tuple[IPv4Address, ...] = (),
    ) -> None:
        if network.prefixlen > 30:
            raise ValueError(f"pool {name}: {network} is too small to hold home addresses")
        self.name = name
        self.network = network
        self.prefix_len = network.prefixlen
        self.default_router = default_router or IPv4Address(int(network.network_address) + 1)
        if self.default_router not in network:
            raise ValueError(f"pool {name}: router {self.default_router} is outside {network}")
        self._base = int(network.network_address) + 1
        self._slots = _IndexPool(network.num_addresses - 2)
        for addr in (self.default_router, *exclude):
            if addr in network and self._index(addr) is not None:
                self._slots.take(self._index(addr))  # type: ignore[arg-type]
        self._reserved = self._slots.used_count

    def _index(self, addr: IPv4Address) -> int | None:
        idx = int(addr) - self._base
        return idx if 0 <= idx < self._slots.size else None

    def __contains__(self, addr: IPv4Address) -> bool:
        return self._index(addr) is not None

    def allocate(self) -> IPv4Address | None:
        idx = self._slots.take_any()
        return None if idx is None else IPv4Address(self._base + idx)

    def reserve(self, addr: IPv4Address) -> bool:
        """Take this exact address if it is in the pool and free."""
        idx = self._index(addr)
        return idx is not None and self._slots.take(idx)

    def release(self, addr: IPv4Address) -> None:
        idx = self._index(addr)
        if idx is not None:
            self._slots.give_back(idx)

    def is_allocated(self, addr: IPv4Address) -> bool:
        idx = self._index(addr)
        return idx is not None and self._slots.is_used(idx)

    @property
    def size(self) -> int:
        return self._slots.size - self._reserved

    @property
    def used(self) -> int:
        return self._slots.used_count - self._reserved


class PrefixPool:
    """Home network prefixes of length ``prefix_len`` carved out of ``network``."""

    def __init__(self, network: IPv6Network, prefix_len: int = 64) -> None:
        if not network.prefixlen <= prefix_len <= 128 or prefix_len - network.prefixlen > 24:
            raise ValueError(f"cannot carve /{prefix_len} prefixes out of {network}")
        self.network = network
        self.prefix_len = prefix_len
        self._shift = 128 - prefix_len
        self._base = int(network.network_address) >> self._shift
        self._slots = _IndexPool(1 << (prefix_len - network.prefixlen))

    def _index(self, prefix: IPv6Address, plen: int) -> int | None:
        if plen != self.prefix_len or int(prefix) & ((1 << self._shift) - 1):
            return None
        idx = (int(prefix) >> self._shift) - self._base
        return idx if 0 <= idx < self._slots.size else None

    def allocate(self) -> tuple[IPv6Address, int] | None:
        idx = self._slots.take_any()
        if idx is None:
            return None
        return IPv6Address((self._base + idx) << self._shift), self.prefix_len

    def has_free(self) -> bool:
        """Whether ``allocate`` would succeed: every free slot is either past the cursor
        or on the released queue."""
        return self._slots.used_count < self._slots.size

    def reserve(self, prefix: IPv6Address, plen: int) -> bool:
        idx = self._index(prefix, plen)
        return idx is not None and self._slots.take(idx)

    def release(self, prefix: IPv6Address, plen: int) -> None:
        idx = self._index(prefix, plen)
        if idx is not None:
            self._slots.give_back(idx)

    @property
    def size(self) -> int:
        return self._slots.size

    @property
    def used(self) -> int:
        return self._slots.used_count


class PoolSet:
    """The LMA's named IPv4 pools. The first one is the default."""

    def __init__(self, pools: list[Ipv4Pool]) -> None:
        self.pools = {p.name: p for p in pools}
        self.default = pools[0] if pools else None
        for i, a in enumerate(pools):
            for b in pools[i + 1 :]:
                if a.network.overlaps(b.network):
                    raise ValueError(f"pools {a.name} ({a.network}) and {b.name} overlap")

    def get(self, name: str | None) -> Ipv4Pool | None:
        return self.default if name is None else self.pools.get(name)

    def owner_pool(self, addr: IPv4Address) -> Ipv4Pool | None:
        for pool in self.pools.values():
            if addr in pool.network:
                return pool
        return None
