"""Byte templates behind the fast paths: PBU shapes and the PBAs that answer them (the
LMA's), PBU templates and PBA shapes (the MAG's).

A PBU *shape* is a Proxy Binding Update with its variable fields masked out: sequence
number, checksum, MN identifier octets (not their length or subtype), timestamp value, the
HNP's 16 prefix octets, the MN link-layer identifier's octets (not its length) and the IPv4
address of the IPv4 HoA Request / Home Address option. A MAG that names each MN's interface
(RFC 5213 §8.6) sends every new MN in a shape of its own without the last mask.
Decoding accepts any value in those fields, so a message whose unmasked octets equal those
of a PBU the strict decoder once accepted decodes to the same options with the new values:
no strictness rule is skipped by recognising the shape instead of decoding it.

A *PBA template* is an acknowledgement the full path once produced for one shape and one
kind of policy profile, with the offsets of the fields that vary per MN (sequence number,
MN identifier, HNP, link-layer identifier, timestamp, IPv4 home address). Templates are
shared by every binding that was answered with them: a binding keeps a reference, not its
own bytes.

A *PBU template* is the MAG's PBU as the constant runs between its per-MN fields. A PBA
*shape* (`AckShape`) is the MAG's reading of a PBA by the same masking: what the decoder
made of an accepting PBA, kept with the masked fields' offsets, so the next PBA in that
shape is read, not decoded.

Everything here is plain bytes and offsets; the engines decide when a template or shape
may be used, and check each against the full path once before trusting it.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

MN_ID_TYPE, TIMESTAMP_TYPE, HNP_TYPE, LLID_TYPE = 8, 27, 22, 25
IPV4_REQUEST_TYPES = (36, 29)  # IPv4 HoA Request (RFC 5844), IPv4 Home Address (draft)
IPV4_REPLY_TYPES = (37, 30)  # IPv4 HoA Reply (RFC 5844), IPv4 Address Ack (draft)
ZERO4 = bytes(4)
ZERO16 = bytes(16)
MAX_SHAPES = 1024  # distinct shapes kept; beyond that, new ones just take the full path
MAX_TEMPLATES_PER_SHAPE = 64
MAX_ACK_SHAPES = 256  # the MAG's PBA shapes; beyond that, new ones are decoded in full


def option_offsets(mh: bytes) -> dict[int, list[int]]:
    """Offsets of each option's Type octet in a Mobility Header the decoder accepted."""
    found: dict[int, list[int]] = {}
    offset, end = 12, len(mh)
    while offset < end:
        kind = mh[offset]
        if kind == 0:
            offset += 1
            continue
        if kind != 1:
            found.setdefault(kind, []).append(offset)
        offset += 2 + mh[offset + 1]
    return found


def accepted_ipv4(mh: bytes) -> tuple[int, bytes] | None:
    """The sequence number of a PBA, and the IPv4 address it acknowledges, read from its
    bytes before any decoding, if it accepts the binding (status < 128) and the address
    (IPv4 Address Ack or HoA Reply, status 0). None for anything else, malformed too: the
    caller then waits for the decoder, which has the last word on every PBA."""
    if len(mh) < 12 or mh[2] != 6 or mh[6] >= 128:  # not a PBA, or not accepting
        return None
    end = min(len(mh), (mh[1] + 1) * 8)
    offset = 12
    while offset + 1 < end:
        kind = mh[offset]
        if kind == 0:
            offset += 1
            continue
        size = mh[offset + 1]
        if kind in IPV4_REPLY_TYPES and size == 6 and offset + 8 <= end:
            if mh[offset + 2] != 0:
                return None
            return int.from_bytes(mh[8:10], "big"), mh[offset + 4 : offset + 8]
        offset += 2 + size
    return None


def shape_head(mh: bytes) -> bytes:
    """Header, flags, lifetime, and the MN-ID option's type, length and subtype: what a
    PBU's shape is looked up by (sequence number and checksum left out)."""
    return mh[:4] + mh[8:15]


class PbuShape:
    """One PBU shape and what the decoder made of its unmasked part."""

    __slots__ = (
        "att",
        "flags",
        "head",
        "hnp",
        "hnp_plen",
        "keep",
        "length",
        "lifetime",
        "llid",
        "llid_len",
        "tail",
        "templates",
        "ts",
        "v4",
        "wire_profile",
    )

    def __init__(
        self,
        mh: bytes,
        ts: int,
        hnp: int,
        hnp_plen: int,
        v4: int,
        llid: int,
        decoded: dict[str, Any],
    ) -> None:
        self.head = shape_head(mh)
        self.length = len(mh)
        self.ts, self.hnp, self.hnp_plen, self.v4 = ts, hnp, hnp_plen, v4  # 0: not present
        # The identifier's octets; its length (and so the option's) is part of the shape.
        self.llid, self.llid_len = llid, (mh[llid - 3] - 2 if llid else 0)
        fields = ((ts, 8), (hnp, 16), (v4, 4), (llid, self.llid_len))
        masked = sorted((o, n) for o, n in fields if o)
        # The head again (so one comparison checks all), then what follows the identifier.
        cuts, start = [slice(0, 4), slice(8, 15)], 14 + mh[13]
        for offset, size in masked:
            cuts.append(slice(start, offset))
            start = offset + size
        cuts.append(slice(start, None))
        self.keep = itemgetter(*cuts)
        self.tail: tuple[bytes, ...] = self.keep(mh)
        self.flags: int = decoded["flags"]
        self.lifetime: int = decoded["lifetime"]
        self.wire_profile = decoded["wire_profile"]
        self.att: int = decoded["att"]
        self.templates: dict[object, PbaTemplate] = {}

    def matches(self, mh: bytes) -> bool:
        return len(mh) == self.length and self.keep(mh) == self.tail


class ShapeBook:
    """The shapes learnt so far, by head."""

    __slots__ = ("_by_head", "count")

    def __init__(self) -> None:
        self._by_head: dict[bytes, list[PbuShape]] = {}
        self.count = 0

    def clear(self) -> None:
        self._by_head.clear()
        self.count = 0

    def find(self, mh: bytes) -> PbuShape | None:
        shapes = self._by_head.get(mh[:4] + mh[8:15])
        if shapes is not None:
            for shape in shapes:
                if len(mh) == shape.length and shape.keep(mh) == shape.tail:
                    return shape
        return None

    def learn(self, mh: bytes, decoded: dict[str, Any]) -> PbuShape | None:
        """The shape of an accepted PBU (MN-ID first, one timestamp, at most one HNP and
        one IPv4 request), adding it if new; None for anything else."""
        if len(mh) < 16 or mh[12] != MN_ID_TYPE:
            return None
        offsets = option_offsets(mh)
        stamps, hnps = offsets.get(TIMESTAMP_TYPE, ()), offsets.get(HNP_TYPE, ())
        requests = [o for t in IPV4_REQUEST_TYPES for o in offsets.get(t, ())]
        llids = offsets.get(LLID_TYPE, ())
        if len(stamps) != 1 or len(hnps) > 1 or len(requests) > 1:
            return None
        ts = stamps[0] + 2
        hnp = hnps[0] + 4 if hnps else 0
        v4 = requests[0] + 4 if requests else 0
        llid = llids[0] + 4 if len(llids) == 1 else 0  # several: kept whole in the shape
        hnp_plen = mh[hnps[0] + 3] if hnps else 0
        found = self.find(mh)
        if found is not None:
            same = (found.ts, found.hnp, found.v4, found.llid) == (ts, hnp, v4, llid)
            return found if same else None
        if self.count >= MAX_SHAPES:
            return None
        shape = PbuShape(mh, ts, hnp, hnp_plen, v4, llid, decoded)
        self._by_head.setdefault(shape.head, []).append(shape)
        self.count += 1
        return shape


def ack_head(mh: bytes) -> bytes:
    """Header, status, flags, lifetime, and the MN-ID option's type, length and subtype:
    what a PBA's shape is looked up by (checksum and sequence number left out)."""
    return mh[:4] + mh[6:8] + mh[10:15]


class AckShape:
    """One accepting PBA's shape, the MAG's counterpart of PbuShape: a PBA with its per-MN
    fields masked out (checksum, sequence number, MN identifier octets, timestamp value,
    HNP prefix octets, link-layer identifier octets and the IPv4 HoA Reply's address).
    ``facts`` is what the MAG made of the PBA the strict decoder accepted in this shape;
    a PBA whose unmasked octets equal that one's reads as the same facts with its own
    values in the masked fields. ``trusted`` once a second PBA's reading matched what the
    decoder made of it."""

    __slots__ = ("facts", "head", "hnp", "keep", "length", "mn_id_end", "tail", "trusted", "v4")

    def __init__(self, mh: bytes, ts: int, hnp: int, v4: int, llid: int, facts: Any) -> None:
        self.head = ack_head(mh)
        self.length = len(mh)
        self.mn_id_end = 14 + mh[13]  # the option's length counts the subtype octet
        self.hnp, self.v4 = hnp, v4  # 0: not present
        fields = [(ts, 8), (hnp, 16), (v4, 4), (llid, mh[llid - 3] - 2 if llid else 0)]
        # The head again (so one comparison checks all), then what follows the identifier.
        cuts, start = [slice(0, 4), slice(6, 8), slice(10, 15)], self.mn_id_end
        for offset, size in sorted((o, n) for o, n in fields if o):
            cuts.append(slice(start, offset))
            start = offset + size
        cuts.append(slice(start, None))
        self.keep = itemgetter(*cuts)
        self.tail: tuple[bytes, ...] = self.keep(mh)
        self.facts = facts
        self.trusted = False


class AckShapeBook:
    """The PBA shapes the MAG has learnt, by head (see AckShape)."""

    __slots__ = ("_by_head", "count")

    def __init__(self) -> None:
        self._by_head: dict[bytes, list[AckShape]] = {}
        self.count = 0

    def find(self, mh: bytes) -> AckShape | None:
        if len(mh) < 16:
            return None
        shapes = self._by_head.get(mh[:4] + mh[6:8] + mh[10:15])
        if shapes is not None:
            for shape in shapes:
                if len(mh) == shape.length and shape.keep(mh) == shape.tail:
                    return shape
        return None

    def learn(self, mh: bytes, facts: Any) -> AckShape | None:
        """The shape of a PBA the decoder accepted (MN-ID first, at most one timestamp,
        HNP, link-layer identifier and IPv4 reply), added if new; None for anything else."""
        if len(mh) < 16 or mh[12] != MN_ID_TYPE or self.count >= MAX_ACK_SHAPES:
            return None
        offsets = option_offsets(mh)
        stamps, hnps = offsets.get(TIMESTAMP_TYPE, ()), offsets.get(HNP_TYPE, ())
        llids = offsets.get(LLID_TYPE, ())
        replies = [o for t in IPV4_REPLY_TYPES for o in offsets.get(t, ())]
        if len(offsets[MN_ID_TYPE]) != 1 or max(map(len, (stamps, hnps, llids, replies))) > 1:
            return None
        if self.find(mh) is not None:
            return None
        shape = AckShape(
            mh,
            stamps[0] + 2 if stamps else 0,
            hnps[0] + 4 if hnps else 0,
            replies[0] + 4 if replies else 0,
            llids[0] + 4 if llids else 0,
            facts,
        )
        self._by_head.setdefault(shape.head, []).append(shape)
        self.count += 1
        return shape

    def forget(self, shape: AckShape) -> None:
        """Drop a shape whose reading did not match the decoder's (never expected)."""
        shapes = self._by_head.get(shape.head, [])
        if shape in shapes:
            shapes.remove(shape)
            self.count -= 1


class PbaTemplate:
    """A PBA for one (shape, profile kind): its constant runs of octets between the per-MN
    fields, which lie in the order the LMA writes them (sequence number, MN identifier,
    HNP, link-layer identifier, timestamp, IPv4 home address)."""

    __slots__ = ("generation", "hnp", "llid_len", "mn_id_len", "pieces", "shape", "v4")

    def __init__(
        self,
        shape: PbuShape,
        data: bytes,
        generation: int,
        mn_id: int,
        ts: int,
        hnp: int,
        v4: int,
        llid: int,
    ) -> None:
        self.shape = shape
        self.generation = generation
        self.mn_id_len = shape.head[-2] - 1  # the option's length counts the subtype octet
        self.hnp, self.v4 = bool(hnp), bool(v4)
        self.llid_len = shape.llid_len  # 0: the PBU had none, so the PBA echoes none
        fields = [(8, 2), (mn_id, self.mn_id_len), (hnp, 16 if hnp else 0)]
        fields += [(llid, self.llid_len), (ts, 8), (v4, 4 if v4 else 0)]
        self.pieces = _runs_between(data, fields)

    @classmethod
    def derive(cls, shape: PbuShape, pba: bytes, generation: int) -> PbaTemplate | None:
        """Locate the per-MN fields in a PBA the full path produced for ``shape``."""
        offsets = option_offsets(pba)
        ids = offsets.get(MN_ID_TYPE, ())
        stamps = offsets.get(TIMESTAMP_TYPE, ())
        hnps = offsets.get(HNP_TYPE, ())
        llids = offsets.get(LLID_TYPE, ())
        replies = [o for t in IPV4_REPLY_TYPES for o in offsets.get(t, ())]
        if (
            len(ids) != 1
            or pba[ids[0] + 1] != shape.head[-2]
            or len(stamps) != 1
            or len(hnps) != (1 if shape.hnp else 0)
            or len(llids) != (1 if shape.llid else 0)
            or (llids and pba[llids[0] + 1] - 2 != shape.llid_len)
            or len(replies) > 1
        ):
            return None
        mn_id, ts = ids[0] + 3, stamps[0] + 2
        hnp = hnps[0] + 4 if hnps else 0
        llid = llids[0] + 4 if llids else 0
        v4 = replies[0] + 4 if replies else 0
        present = [o for o in (10, mn_id, hnp, llid, ts, v4) if o]
        if present != sorted(present) or (v4 and v4 < ts + 8):
            return None  # not the order the LMA writes: no template
        return cls(shape, pba, generation, mn_id, ts, hnp, v4, llid)

    def build(
        self,
        sequence: bytes,
        mn_id: bytes,
        stamp: bytes,
        hnp: bytes | None,
        hoa: bytes | None,
        llid: bytes | None = None,
    ) -> bytes | None:
        """This PBA for another MN; None when the values do not fit the template."""
        if (
            len(mn_id) != self.mn_id_len
            or (hnp is not None) is not self.hnp
            or (hoa is not None) is not self.v4
            or (len(llid) if llid is not None else 0) != self.llid_len
        ):
            return None
        return _join(self.pieces, sequence, mn_id, hnp, llid, stamp, hoa)


class PbuTemplate:
    """A PBU the MAG's full encoder produced, as the constant runs of octets between its
    per-MN fields: sequence number, MN identifier, HNP, link-layer identifier, timestamp
    value and IPv4 home address, in the order the MAG writes them. The MAG builds the next
    PBU with the same constant part (`MagEngine` keys them) by joining, instead of
    encoding every option again; it checks a template against the full encoder once
    before trusting it."""

    __slots__ = ("hnp", "llid_len", "mn_id_len", "pieces", "ts", "v4")

    def __init__(
        self, pbu: bytes, mn_id_len: int, hnp: int, llid: int, llid_len: int, ts: int, v4: int
    ) -> None:
        self.mn_id_len, self.llid_len = mn_id_len, llid_len
        self.hnp, self.ts, self.v4 = bool(hnp), bool(ts), bool(v4)
        fields = [(6, 2), (15, mn_id_len), (hnp, 16 if hnp else 0), (llid, llid_len)]
        fields += [(ts, 8 if ts else 0), (v4, 4 if v4 else 0)]
        self.pieces = _runs_between(pbu, fields)

    @classmethod
    def derive(cls, pbu: bytes) -> PbuTemplate | None:
        """Locate the per-MN fields in ``pbu`` (checksum zero); None for a PBU with more
        than one of any of them, or with its MN identifier not first."""
        if len(pbu) < 16 or pbu[12] != MN_ID_TYPE:
            return None
        offsets = option_offsets(pbu)
        stamps = offsets.get(TIMESTAMP_TYPE, ())
        hnps = offsets.get(HNP_TYPE, ())
        llids = offsets.get(LLID_TYPE, ())
        requests = [o for t in IPV4_REQUEST_TYPES for o in offsets.get(t, ())]
        if len(offsets[MN_ID_TYPE]) != 1 or max(map(len, (stamps, hnps, llids, requests))) > 1:
            return None
        hnp = hnps[0] + 4 if hnps else 0
        llid = llids[0] + 4 if llids else 0
        ts = stamps[0] + 2 if stamps else 0
        v4 = requests[0] + 4 if requests else 0
        present = [o for o in (6, 15, hnp, llid, ts, v4) if o]
        if present != sorted(present):
            return None
        llid_len = pbu[llids[0] + 1] - 2 if llids else 0
        return cls(pbu, pbu[13] - 1, hnp, llid, llid_len, ts, v4)

    def build(
        self,
        sequence: bytes,
        mn_id: bytes,
        hnp: bytes | None,
        llid: bytes | None,
        stamp: bytes | None,
        hoa: bytes | None,
    ) -> bytes | None:
        """This PBU with other values; None when they do not fit the template."""
        if (
            len(mn_id) != self.mn_id_len
            or (hnp is not None) is not self.hnp
            or (stamp is not None) is not self.ts
            or (hoa is not None) is not self.v4
            or (len(llid) if llid else 0) != self.llid_len
        ):
            return None
        return _join(self.pieces, sequence, mn_id, hnp, llid, stamp, hoa)


# --- shared by the two templates: their per-MN fields lie in the same order -------------


def _runs_between(data: bytes, fields: list[tuple[int, int]]) -> tuple[bytes, ...]:
    """The constant runs of ``data`` around its (offset, size) fields, which are in
    order; an absent field (size 0) leaves an empty run, so there are always seven."""
    pieces, start = [], 0
    for offset, size in fields:
        if size:
            pieces.append(data[start:offset])
            start = offset + size
        else:
            pieces.append(b"")
    pieces.append(data[start:])
    return tuple(pieces)


def _join(
    p: tuple[bytes, ...],
    sequence: bytes,
    mn_id: bytes,
    hnp: bytes | None,
    llid: bytes | None,
    stamp: bytes | None,
    hoa: bytes | None,
) -> bytes:
    """The runs ``p`` with the field values between them (None: an absent field)."""
    return b"".join(
        (
            p[0],
            sequence,
            p[1],
            mn_id,
            p[2],
            hnp or b"",
            p[3],
            llid or b"",
            p[4],
            stamp or b"",
            p[5],
            hoa or b"",
            p[6],
        )
    )
