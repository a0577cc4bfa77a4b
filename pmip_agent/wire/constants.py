"""Protocol numbers: one table each for MH types, option types, statuses and flags.

Sources: RFC 6275 (Mobility Header), RFC 5213 (PMIPv6), RFC 5555 (DSMIPv6 options used
by the seed draft), RFC 5844 (IPv4 support codepoints), RFC 5845 (GRE key).
"""

from __future__ import annotations

from enum import IntEnum, IntFlag, StrEnum

IPPROTO_MH = 135
IPPROTO_NONE = 59
MH_HEADER_LEN = 6  # Payload Proto, Header Len, MH Type, Reserved, Checksum

# RFC 5844 §4 and the IANA port registry: pmip6-cntl carries signalling, pmip6-data traffic.
PMIP6_CNTL_PORT = 5436
PMIP6_DATA_PORT = 5437


class MhType(IntEnum):
    BINDING_UPDATE = 5
    BINDING_ACK = 6


class OptionType(IntEnum):
    PAD1 = 0
    PADN = 1
    MN_IDENTIFIER = 8  # RFC 4283
    HOME_NETWORK_PREFIX = 22  # RFC 5213 §8.3
    HANDOFF_INDICATOR = 23  # RFC 5213 §8.4
    ACCESS_TECH_TYPE = 24  # RFC 5213 §8.5
    MN_LINK_LAYER_ID = 25  # RFC 5213 §8.6
    LINK_LOCAL_ADDRESS = 26  # RFC 5213 §8.7
    TIMESTAMP = 27  # RFC 5213 §8.8
    IPV4_HOME_ADDRESS = 29  # RFC 5555 §3.1.1 (seed)
    IPV4_ADDRESS_ACK = 30  # RFC 5555 §3.2.1 (seed)
    NAT_DETECTION = 31  # RFC 5555 §3.2.2 (seed)
    IPV4_CARE_OF_ADDRESS = 32  # RFC 5555 §3.1.2
    GRE_KEY = 33  # RFC 5845
    IPV4_HOA_REQUEST = 36  # RFC 5844 §3.3.1
    IPV4_HOA_REPLY = 37  # RFC 5844 §3.3.2
    IPV4_DEFAULT_ROUTER = 38  # RFC 5844 §3.3.3 (the seed's IPv4-DRA)
    IPV4_DHCP_SUPPORT_MODE = 39  # RFC 5844 §3.3.4


class Status(IntEnum):
    """Binding Acknowledgement status (RFC 6275 §6.1.8, RFC 5213 §8.9, RFC 5844 §3.3)."""

    ACCEPTED = 0
    REASON_UNSPECIFIED = 128
    ADMINISTRATIVELY_PROHIBITED = 129
    INSUFFICIENT_RESOURCES = 130
    SEQUENCE_OUT_OF_WINDOW = 135
    PROXY_REG_NOT_ENABLED = 152
    NOT_LMA_FOR_THIS_MOBILE_NODE = 153
    MAG_NOT_AUTHORIZED_FOR_PROXY_REG = 154
    NOT_AUTHORIZED_FOR_HOME_NETWORK_PREFIX = 155
    TIMESTAMP_MISMATCH = 156
    TIMESTAMP_LOWER_THAN_PREV_ACCEPTED = 157
    MISSING_HOME_NETWORK_PREFIX_OPTION = 158
    BCE_PBU_PREFIX_SET_DO_NOT_MATCH = 159
    MISSING_MN_IDENTIFIER_OPTION = 160
    MISSING_HANDOFF_INDICATOR_OPTION = 161
    MISSING_ACCESS_TECH_TYPE_OPTION = 162
    NOT_AUTHORIZED_FOR_IPV4_MOBILITY_SERVICE = 170
    NOT_AUTHORIZED_FOR_IPV4_HOME_ADDRESS = 171
    NOT_AUTHORIZED_FOR_IPV6_MOBILITY_SERVICE = 172
    MULTIPLE_IPV4_HOME_ADDRESS_ASSIGNMENT_NOT_SUPPORTED = 173


class Ipv4Status(IntEnum):
    """Status in the IPv4 Address Acknowledgement (RFC 5555 §3.2.1) and the IPv4 Home
    Address Reply (RFC 5844 §3.3.2); the reply uses 0 and 128-132 with the same meaning."""

    SUCCESS = 0
    FAILURE_UNSPECIFIED = 128
    ADMINISTRATIVELY_PROHIBITED = 129
    INCORRECT_IPV4_HOME_ADDRESS = 130
    INVALID_IPV4_ADDRESS = 131
    DYNAMIC_ASSIGNMENT_NOT_AVAILABLE = 132
    PREFIX_ALLOCATION_UNAUTHORIZED = 133


class HandoffIndicator(IntEnum):
    """RFC 5213 §8.4."""

    NEW_INTERFACE = 1
    HANDOFF_BETWEEN_INTERFACES = 2
    HANDOFF_BETWEEN_MAGS = 3
    UNKNOWN = 4
    NO_HANDOFF = 5


class AccessTechType(IntEnum):
    """RFC 5213 §8.5."""

    VIRTUAL = 1
    PPP = 2
    IEEE_802_3 = 3
    IEEE_802_11 = 4
    IEEE_802_16E = 5


class BuFlags(IntFlag):
    """Binding Update flags (16 bits), RFC 6275 §6.1.7, RFC 5213 §8.1, RFC 5555, RFC 5845."""

    NONE = 0
    A = 0x8000  # acknowledge
    H = 0x4000  # home registration
    L = 0x2000  # link-local compatibility
    K = 0x1000  # key management mobility
    M = 0x0800  # MAP registration
    R = 0x0400  # mobile router
    P = 0x0200  # proxy registration
    F = 0x0100  # forced UDP encapsulation
    T = 0x0080  # TLV-header tunnel format


class BaFlags(IntFlag):
    """Binding Acknowledgement flags (8 bits)."""

    NONE = 0
    K = 0x80
    R = 0x40
    P = 0x20
    T = 0x10


class MnIdSubtype(IntEnum):
    NAI = 1  # RFC 4283


class WireProfile(StrEnum):
    """Which IPv4 option codepoints a message uses.

    DRAFT: the seed draft, reusing the DSMIPv6 options 29-32 and the default-router
    option 38. RFC5844: the IPv4 HoA Request/Reply 36/37, 38 and DHCP Support Mode 39.
    """

    DRAFT = "draft"
    RFC5844 = "rfc5844"


# Lifetime is carried in 4-second units in a 16-bit field (RFC 6275 §6.1.7).
LIFETIME_UNIT_S = 4
MAX_LIFETIME_S = 0xFFFF * LIFETIME_UNIT_S
