// The MAG's DHCP relay hook (seed Figure 3) for its common messages, as three tc programs,
// so that no process wakes up to pass them on, to send the PBU an OFFER calls for, or to
// send the MAG's own OFFER once the PBA grants it. Loaded by pmip_agent/dhcp/kernel_relay.py
// when mag.dhcp.kernel_relay is set; the daemon's own relay handles everything else.
//
// access_in (each access link's ingress): a known MN's DISCOVER or SELECTING REQUEST
//   gets hops + 1, giaddr, the MN's option 82 in place of END, and IPv4/UDP/Ethernet
//   headers to the DHCP server, and leaves by the route to it. A DISCOVER also goes up
//   to the daemon, marked (MARK), which attaches the MN without relaying it again.
//   An MN the MAG's own server answers, whose OFFER the kernel sent (below), gets its
//   ACK from here too when it REQUESTs that offer (send_ack); a marked copy goes up.
// uplink_in (ingress of the links toward the server and the LMAs):
//   - the server's OFFER, or an ACK of the address the LMA granted (the grants map), loses
//     option 82 and goes to the MN as a broadcast on its access link. An OFFER also goes
//     up marked: the daemon reports its address to the LMA in a PBU. If the daemon armed
//     that PBU at the DISCOVER (the armed map: built with 0.0.0.0 for the address), the
//     OFFER itself becomes it instead, with the offered address in and the checksum
//     mended, once a clone of it has left for the MN. No copy then goes up: the daemon
//     learns of the PBU from its PBA (or from the server's next reply), and reads the
//     address from the armed map. An ACK not granted yet goes up unmarked, and
//     the daemon holds it until the PBA; a copy of it waits here too (the held map);
//   - a PBA (over IPv6, in the clear) that accepts the address a PBU asked for (read by
//     uplink_out into expects) puts it in grants at once, so that the server's ACK need
//     not wait for the daemon to read the PBA. If that ACK came first and waits in held,
//     the PBA goes up as a marked copy and becomes the ACK, which leaves for the MN: no
//     process wakes up between the PBA and the ACK. The daemon sees the entry released
//     and does not send its own copy again;
//   - a PBA answering a PBU that asked the LMA for an address (seed Figure 2), for an MN
//     whose DISCOVER the MAG's own server answers: the daemon armed that OFFER as it
//     sent the PBU (the offers map), and the PBA, once a marked copy of it has gone up,
//     becomes it, with what the PBA grants filled in, and leaves for the MN. The OFFER
//     is kept (acks) for the MN's REQUEST, which access_in answers.
// uplink_out (egress of the links toward the LMAs): notes each PBU that asks for a given
//   IPv4 address for an MN known by its MAC, in expects, by sequence number.
// Anything else, or anything unusual, goes up the stack untouched (TC_ACT_OK), where the
// daemon relays it as it would without these programs.
#include <linux/ipv6.h>

#include "bootp.h"

#define MAX_HOPS 16 // RFC 1542 section 4.1.1: more is discarded (by the daemon)
#define TAIL_MAX 128
#define MARK 0x5eed // kernel_relay.MARK: the daemon's copies
#define DISCOVER 1
#define OFFER 2
#define REQUEST 3
#define ACK 5

struct conf {
    __u32 relay_ip; // giaddr, and where the server's replies come to (network order)
    __u32 server_ip;
    __u32 upstream_if; // the route to the server leaves here
    __u32 pad;
    __u8 proxy_coa[16]; // where the LMAs' PBAs come to
};

struct expect { // per PBU sequence number: a PBU asking for this address for this MN
    __u64 mac;
    __u32 hoa;
    __u32 pad;
    __u8 lmaa[16]; // the LMA it went to, which alone may answer it
};

struct link_key {
    __u64 mac; // the MN's, in the low six octets; 0: any MN on a link of its own
    __u32 ifindex;
    __u32 pad;
};

struct mn_link { // per MN and access link: what its relayed requests carry
    __u8 access_mac[6]; // the access link's own
    __u8 tail_len; // option 82 and END
    __u8 pad;
    __u8 tail[TAIL_MAX];
};

struct attached { // per MN, written here when its request goes up to the server
    __u32 access_if;
    __u32 own_link; // its mn_link is the link's own (key.mac 0)
};

#define HELD_MAX 1024 // a held ACK's frame; a longer one waits for the daemon alone
#define HELD_NS 4000000000ULL // a held ACK older than this is the daemon's alone
#define HELD 1
#define RELEASED 2 // the kernel sent it: kernel_relay.py reads this, and deletes the entry

struct held { // per MN's MAC: a server's ACK that came before the PBA granting it
    __u32 state; // HELD or RELEASED
    __u32 len; // of frame: MIN_LEN..HELD_MAX
    __u32 info_at; // where its option 82 begins
    __u32 gone; // its option 82 and END: the MN's mn_link tail_len
    __u32 yiaddr;
    __u32 xid;
    __u32 access_if;
    __u32 own_link;
    __u64 at_ns; // bpf_ktime_get_ns when it came
    __u8 frame[HELD_MAX]; // as it came from the server, Ethernet header first
};

#define ARMED_MAX 512 // an armed PBU's frame
#define ARMED_NS 100000000ULL // an armed PBU older than this is the daemon's to send
#define ARMED 1
#define SENT 2

#define ARMED_SLOTS 4096 // armed PBUs, by a hash of the MN's MAC (armed_slot)

struct armed { // per MN's MAC: a PBU the daemon built at the DISCOVER, to send at the OFFER
    __u32 state; // 0 (free), ARMED or SENT; written last by the daemon
    __u32 len; // of frame
    __u32 hoa_at; // where the IPv4 address (0.0.0.0 in frame) goes
    __u32 csum_at; // the Mobility Header's checksum, computed with 0.0.0.0 there
    __u32 uplink_if; // the route to the LMA leaves here
    __u32 hoa; // SENT: the address it went with
    __u64 at_ns; // bpf_ktime_get_ns when it was armed
    __u64 mac; // the MN's, whose slot this is for now
    __u8 frame[ARMED_MAX]; // Ethernet (addresses left to the FIB), IPv6, Mobility Header
};

#define OFFER_MAX 512 // an armed OFFER's frame
#define OFFER_FIELDS 6 // codec.ReplyTemplate's: server identifier, lease time, T1, T2, mask, router

#define OFFER_SLOTS 4096 // armed OFFERs, by PBU sequence number modulo this

struct offer { // per PBU sequence number: the MAG's own OFFER (Figure 2), less the grant
    __u32 state; // 0 (free), ARMED or SENT; written last by the daemon
    __u32 seq; // the sequence number of the PBU asking the LMA for an address
    __u32 len; // of frame
    __u32 access_if; // the MN's access link
    __u32 lease_max; // the MAG's lease time, in seconds
    __u16 at[OFFER_FIELDS]; // where their values go in frame (zeros there)
    __u64 at_ns; // bpf_ktime_get_ns when it was armed
    __u8 lmaa[16]; // the LMA the PBU went to, which alone may answer it
    // Ethernet (broadcast, from the access link), IPv4 from 0.0.0.0 to 255.255.255.255,
    // UDP 67 to 68 and BOOTP, with 0.0.0.0 for yiaddr: the checksums computed so.
    __u8 frame[OFFER_MAX];
};

#define ACK_NS 4000000000ULL // a REQUEST this long after the kernel's OFFER is the daemon's
#define READY 1

struct acked { // per MN's MAC: the OFFER send_offer sent it, which its REQUEST may take
    __u32 state; // READY, or SENT once its ACK left (send_ack)
    __u32 len; // of frame
    __u32 xid; // as on the wire
    __u32 hoa; // what the PBA granted
    __u32 router;
    __u32 access_if; // where the OFFER went
    __u64 at_ns; // bpf_ktime_get_ns when it went
    __u8 frame[OFFER_MAX]; // the OFFER as it left
};

enum {
    STAT_TO_SERVER,
    STAT_TO_MN,
    STAT_NO_ROUTE,
    STAT_ACK_UP,
    STAT_PBA_GRANT,
    STAT_ACK_RELEASED,
    STAT_PBU_SENT,
    STAT_OFFER_SENT,
    STAT_ACK_SENT,
    STAT_N
};

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct conf);
} conf SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, struct link_key);
    __type(value, struct mn_link);
} links SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, __u64);
    __type(value, struct attached);
} attached SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 65536);
    __type(key, __u64); // the MN's MAC
    __type(value, __u32); // the address the LMA granted it
} grants SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, __u32); // the PBU's sequence number
    __type(value, struct expect);
} expects SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 1024); // held for a few ms each; an evicted one is the daemon's
    __type(key, __u64); // the MN's MAC
    __type(value, struct held);
} held SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    // Written in place by the daemon, as offers are: at the DISCOVER, while the server
    // works on its OFFER, a map update took 60 us of the MAG's CPU.
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(max_entries, ARMED_SLOTS); // armed for the few ms to the OFFER
    __type(key, __u32); // armed_slot of the MN's MAC
    __type(value, struct armed);
} armed SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    // The daemon writes its OFFERs in place, through mmap: no system call on the heels
    // of the PBU, whose PBA can be back within 0.2 ms (a map update took 50 us then).
    __uint(map_flags, BPF_F_MMAPABLE);
    __uint(max_entries, OFFER_SLOTS);
    __type(key, __u32); // the PBU's sequence number modulo OFFER_SLOTS
    __type(value, struct offer);
} offers SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 4096); // kept for the MN's REQUEST, a few ms later
    __type(key, __u64); // the MN's MAC
    __type(value, struct acked);
} acks SEC(".maps");

struct { // where an OFFER is copied before it goes into acks, and where its ACK is built
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct acked);
} acks_scratch SEC(".maps");

struct { // where an ACK is built before it goes into held (too big for the stack)
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, 1);
    __type(key, __u32);
    __type(value, struct held);
} held_scratch SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
    __uint(max_entries, STAT_N);
    __type(key, __u32);
    __type(value, __u64);
} stats SEC(".maps");

static const __u8 zeros[TAIL_MAX] = {};

static __always_inline void count(__u32 which) {
    __u64 *n = bpf_map_lookup_elem(&stats, &which);
    if (n)
        *n += 1;
}

static __always_inline __u32 fold(__u32 sum) {
    sum = (sum & 0xffff) + (sum >> 16);
    return (sum & 0xffff) + (sum >> 16);
}

// The one's complement sum of a value's two 16-bit halves, as it lies in memory at
// offset `at` of a checksummed run that starts at an even offset: at an odd one, each
// octet counts in the other half of its word.
static __always_inline __u32 words(__u32 value, __u32 at) {
    __u32 sum = fold((value & 0xffff) + (value >> 16));
    return at & 1 ? ((sum & 0xff) << 8) | (sum >> 8) : sum;
}

// A marked clone of `skb` up to the daemon; 0 when it went.
static __always_inline int copy_up(struct __sk_buff *skb) {
    skb->mark = MARK;
    int failed = bpf_clone_redirect(skb, skb->ifindex, BPF_F_INGRESS);
    skb->mark = 0;
    return failed;
}

// The offset of the value of the first BOOTP option `code` of four octets (a request's
// requested address or server identifier), or 0. Not inlined, as mh_option.
__attribute__((noinline)) __u32 bootp_option(struct __sk_buff *skb, __u32 code) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    __u32 off = OPTIONS_AT;
    for (int k = 0; k < MAX_OPTIONS; k++) {
        off &= 0x7ff;
        __u8 *p = data + off;
        if ((void *)(p + 2) > end || p[0] == 255)
            return 0;
        if (p[0] == 0) {
            off += 1;
            continue;
        }
        if (p[0] == code && p[1] == 4)
            return off + 2;
        off += 2 + p[1];
    }
    return 0;
}

// The ACK of the OFFER the kernel sent this MN (send_offer, kept in acks), in place of
// the MN's SELECTING REQUEST for that very offer (its xid, the granted address, the
// router as server identifier): the REQUEST goes up as a marked copy first, then the
// ACK leaves, built as the daemon builds it (DhcpAgent, codec.reply_template): the
// OFFER with the REQUEST's xid, flags, ciaddr, giaddr and chaddr, and message type ACK.
// TC_ACT_OK for anything else: the daemon answers it.
static __always_inline int send_ack(struct __sk_buff *skb, __u64 mac) {
    struct acked *a = bpf_map_lookup_elem(&acks, &mac);
    if (!a || a->state != READY || a->access_if != skb->ifindex ||
        bpf_ktime_get_ns() - a->at_ns > ACK_NS)
        return TC_ACT_OK;
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    if (data + BOOTP_AT + 44 > end)
        return TC_ACT_OK;
    __u8 *bootp = data + BOOTP_AT;
    if (*(__u32 *)(bootp + 4) != a->xid || *(__u32 *)(bootp + 12) || *(__u32 *)(bootp + 24))
        return TC_ACT_OK; // another exchange's, a renewal (ciaddr), or relayed already
    __u32 asked_at = bootp_option(skb, 50), server_at = bootp_option(skb, 54);
    data = (void *)(long)skb->data, end = (void *)(long)skb->data_end;
    __u8 *asked = data + (asked_at & 0x7ff), *server = data + (server_at & 0x7ff);
    if (!asked_at || !server_at || (void *)(asked + 4) > end || (void *)(server + 4) > end ||
        *(__u32 *)asked != a->hoa || *(__u32 *)server != a->router)
        return TC_ACT_OK;
    __u32 zero = 0, len = a->len, router = a->router, access_if = a->access_if;
    struct acked *k = bpf_map_lookup_elem(&acks_scratch, &zero);
    __u32 udp_len = len - UDP_AT;
    if (!k || len < OPTIONS_AT + 4 || len > OFFER_MAX || udp_len & 3)
        return TC_ACT_OK; // bpf_csum_diff takes whole words
    __builtin_memcpy(k->frame, a->frame, OFFER_MAX);
    if (k->frame[BOOTP_AT + 240] != 53 || k->frame[BOOTP_AT + 241] != 1 ||
        bpf_skb_load_bytes(skb, BOOTP_AT + 4, k->frame + BOOTP_AT + 4, 4) ||
        bpf_skb_load_bytes(skb, BOOTP_AT + 10, k->frame + BOOTP_AT + 10, 6) ||
        bpf_skb_load_bytes(skb, BOOTP_AT + 24, k->frame + BOOTP_AT + 24, 20))
        return TC_ACT_OK;
    k->frame[BOOTP_AT + 242] = ACK; // build_reply's first option: the message type
    *(__u16 *)(k->frame + UDP_AT + 6) = 0;
    udp_len = ((udp_len - 4) & 0x1fc) + 4; // 4..512 in words, for the verifier
    if (udp_len > OFFER_MAX - UDP_AT - 2)
        return TC_ACT_OK;
    __s64 part = bpf_csum_diff(0, 0, (__be32 *)(k->frame + UDP_AT), udp_len, 0);
    if (part < 0)
        return TC_ACT_OK;
    // With the pseudo-header: from the router, to 255.255.255.255, UDP, its length.
    __u32 sum = fold((__u32)part) + words(router, 0) + 0xffff + bpf_htons(IPPROTO_UDP) +
                bpf_htons((__u16)udp_len);
    __u16 udp_sum = ~fold(sum);
    *(__u16 *)(k->frame + UDP_AT + 6) = udp_sum ? udp_sum : 0xffff;
    if (!__sync_bool_compare_and_swap(&a->state, READY, SENT))
        return TC_ACT_OK; // the same REQUEST, on another CPU, got there first
    copy_up(skb); // the daemon notes the exchange done
    len = ((len - 1) & (OFFER_MAX - 1)) + 1;
    if (bpf_skb_change_tail(skb, len, 0) || bpf_skb_store_bytes(skb, 0, k->frame, len, 0))
        return TC_ACT_SHOT;
    count(STAT_ACK_SENT);
    return bpf_redirect(access_if, 0);
}

SEC("tc")
int access_in(struct __sk_buff *skb) {
    __u32 zero = 0;
    struct conf *cf = bpf_map_lookup_elem(&conf, &zero);
    if (!cf || !cf->relay_ip || skb->mark == MARK || !is_bootp(skb, 1))
        return TC_ACT_OK;
    __u32 end_at, info_at, kind;
    if (walk(skb, &end_at, &info_at, &kind) || info_at)
        return TC_ACT_OK; // option 82 from the MN's side: the daemon decides
    if ((kind & 0xff) != DISCOVER && kind != (SELECTING | REQUEST))
        return TC_ACT_OK;
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    if (data + BOOTP_AT + 34 > end)
        return TC_ACT_OK;
    __u8 *bootp = data + BOOTP_AT;
    if (bootp[3] >= MAX_HOPS || *(__u32 *)(bootp + 24))
        return TC_ACT_OK; // too many hops, or relayed already
    struct link_key key = {.ifindex = skb->ifindex};
    __builtin_memcpy(&key.mac, bootp + 28, 6);
    __u64 mac = key.mac;
    struct mn_link *link = bpf_map_lookup_elem(&links, &key);
    if (!link) {
        key.mac = 0;
        link = bpf_map_lookup_elem(&links, &key);
        if (!link) // not relayed: the MAG's own server's, which the kernel may ACK
            return kind == (SELECTING | REQUEST) ? send_ack(skb, mac) : TC_ACT_OK;
    }
    __u32 tail_len = link->tail_len;
    if (tail_len < 3 || tail_len > TAIL_MAX)
        return TC_ACT_OK;
    tail_len = ((tail_len - 1) & (TAIL_MAX - 1)) + 1; // 1..TAIL_MAX, for the verifier
    // Where the server's replies go, even when the daemon relays this one (below).
    struct attached at = {.access_if = skb->ifindex, .own_link = key.mac == 0};
    bpf_map_update_elem(&attached, &mac, &at, BPF_ANY);
    struct bpf_fib_lookup fib = {};
    fib.family = 2; // AF_INET
    fib.ipv4_src = cf->relay_ip;
    fib.ipv4_dst = cf->server_ip;
    fib.ifindex = cf->upstream_if; // an output lookup: the MAG's policy routes are for MNs
    if (bpf_fib_lookup(skb, &fib, sizeof(fib), BPF_FIB_LOOKUP_OUTPUT) !=
        BPF_FIB_LKUP_RET_SUCCESS) {
        count(STAT_NO_ROUTE); // no neighbour yet, say: the daemon's relay resolves it
        return TC_ACT_OK;
    }
    __u32 relay_ip = cf->relay_ip, server_ip = cf->server_ip;
    if ((kind & 0xff) == DISCOVER)
        copy_up(skb); // the daemon attaches the MN
    if (relay_up(skb, end_at, link->tail, tail_len, relay_ip, server_ip, fib.dmac, fib.smac))
        return TC_ACT_SHOT;
    count(STAT_TO_SERVER);
    return bpf_redirect(fib.ifindex, 0);
}

#define MH_AT (ETH_LEN + 40) // no extension headers: anything else goes up the stack
#define IPPROTO_MH 135
#define MH_BU 5
#define MH_BA 6
#define OPT_MN_LINK_LAYER_ID 25 // RFC 5213 section 8.6: 2 reserved octets, then the MAC
#define OPT_IPV4_HOME_ADDRESS 29 // RFC 5555 (the seed's)
#define OPT_IPV4_ADDRESS_ACK 30 // RFC 5555 (the seed's)
#define OPT_IPV4_HOA_REQUEST 36 // RFC 5844: the same layout as 29
#define OPT_IPV4_HOA_REPLY 37 // RFC 5844: the same layout as 30
#define OPT_IPV4_DEFAULT_ROUTER 38 // RFC 5844: 2 reserved octets, then the address
#define MAX_MH_OPTIONS 16

// The Mobility Header of `skb` if it is IPv6 with no extension headers, carrying one of
// `type` with its 12 fixed octets (a BU's or a BA's) in linear data; else 0. Its IPv6
// header is just before it.
static __always_inline __u8 *mobility_header(struct __sk_buff *skb, __u8 type) {
    if (bpf_skb_pull_data(skb, skb->len))
        return 0;
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    if (data + MH_AT + 12 > end)
        return 0;
    struct ipv6hdr *ip6 = data + ETH_LEN;
    __u8 *mh = data + MH_AT;
    return ip6->nexthdr == IPPROTO_MH && mh[2] == type ? mh : 0;
}

// The offset of the first Mobility Header option of type `a` or `b` and length `len`
// before `stop` (the end of the options), or 0. A function of its own (not inlined): the
// verifier checks it once, and its callers see an offset they check before use.
__attribute__((noinline)) __u32 mh_option(struct __sk_buff *skb, __u32 stop, __u32 a, __u32 b,
                                          __u32 len) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    __u32 off = MH_AT + 12; // past the header and the BU's or BA's fixed fields
    for (int k = 0; k < MAX_MH_OPTIONS && off < stop; k++) {
        off &= 0x3ff;
        __u8 *p = data + off;
        if ((void *)(p + 2) > end)
            return 0;
        if (p[0] == 0) { // Pad1
            off += 1;
            continue;
        }
        if ((p[0] == a || p[0] == b) && p[1] == len)
            return off;
        off += 2 + p[1];
    }
    return 0;
}

// A PBU leaving the Proxy-CoA (over IPv6, in the clear) that asks for a given IPv4
// address for the MN with this MAC (its link-layer identifier option): into expects, by
// its sequence number, so that the LMA's PBA accepting the address grants it (pba_in).
// The PBU leaves as it is: always TC_ACT_OK.
SEC("tc")
int uplink_out(struct __sk_buff *skb) {
    __u32 zero = 0;
    struct conf *cf = bpf_map_lookup_elem(&conf, &zero);
    if (!cf || !cf->relay_ip || skb->protocol != bpf_htons(ETH_P_IPV6))
        return TC_ACT_OK;
    __u8 *mh = mobility_header(skb, MH_BU);
    if (!mh || (mh[10] | mh[11]) == 0)
        return TC_ACT_OK; // not a PBU, or a de-registration (lifetime 0)
    struct ipv6hdr *ip6 = (void *)mh - sizeof(*ip6);
    __u32 *from = (__u32 *)&ip6->saddr, *coa = (__u32 *)cf->proxy_coa;
    if (from[0] != coa[0] || from[1] != coa[1] || from[2] != coa[2] || from[3] != coa[3])
        return TC_ACT_OK;
    __u32 seq = ((__u32)mh[6] << 8) | mh[7], stop = MH_AT + ((__u32)mh[1] + 1) * 8;
    struct expect ex = {};
    __builtin_memcpy(ex.lmaa, &ip6->daddr, 16);
    __u32 hoa_at = mh_option(skb, stop, OPT_IPV4_HOME_ADDRESS, OPT_IPV4_HOA_REQUEST, 6);
    __u32 llid_at = mh_option(skb, stop, OPT_MN_LINK_LAYER_ID, OPT_MN_LINK_LAYER_ID, 8);
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    __u8 *h = data + (hoa_at & 0x3ff), *l = data + (llid_at & 0x3ff);
    if (!hoa_at || !llid_at || (void *)(h + 8) > end || (void *)(l + 10) > end)
        return TC_ACT_OK;
    ex.hoa = *(__u32 *)(h + 4);
    __builtin_memcpy(&ex.mac, l + 4, 6);
    if (ex.hoa && ex.mac) // 0.0.0.0 asks the LMA to choose: nothing to expect
        bpf_map_update_elem(&expects, &seq, &ex, BPF_ANY);
    return TC_ACT_OK;
}

// The ACK in held for this MN and address, if there is one, in place of the PBA in `skb`:
// the PBA goes up as a marked copy first, then the ACK leaves for the MN. TC_ACT_OK when
// there is none; TC_ACT_SHOT when it cannot be built (the entry is HELD again: the
// daemon, reading the PBA's copy, sends its own).
static __always_inline int release(struct __sk_buff *skb, struct conf *cf, __u64 mac,
                                   __u32 hoa) {
    struct held *h = bpf_map_lookup_elem(&held, &mac);
    if (!h || h->state != HELD || h->yiaddr != hoa || bpf_ktime_get_ns() - h->at_ns > HELD_NS)
        return TC_ACT_OK;
    struct link_key key = {.mac = h->own_link ? 0 : mac, .ifindex = h->access_if};
    struct mn_link *link = bpf_map_lookup_elem(&links, &key);
    __u32 len = h->len, gone = h->gone, info_at = h->info_at;
    if (!link || link->tail_len != gone || gone < 3 || gone > TAIL_MAX || len < OPTIONS_AT ||
        len > HELD_MAX)
        return TC_ACT_OK; // no longer relayed so (a reload): the daemon's
    len = ((len - 1) & (HELD_MAX - 1)) + 1; // 1..HELD_MAX, for the verifier
    if (!__sync_bool_compare_and_swap(&h->state, HELD, RELEASED))
        return TC_ACT_OK; // the same PBA, on another CPU, got there first
    if (copy_up(skb)) {
        h->state = HELD;
        return TC_ACT_OK;
    }
    __u32 relay_ip = cf->relay_ip, access_if = key.ifindex;
    __u8 from[6];
    __builtin_memcpy(from, link->access_mac, 6);
    if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0) || bpf_skb_change_tail(skb, len, 0) ||
        bpf_skb_store_bytes(skb, 0, h->frame, len, 0) ||
        relay_down(skb, info_at, zeros, ((gone - 2) & (TAIL_MAX - 1)) + 1, relay_ip, from)) {
        h->state = HELD;
        return TC_ACT_SHOT;
    }
    count(STAT_ACK_RELEASED);
    count(STAT_TO_MN);
    return bpf_redirect(access_if, 0);
}

// The OFFER in `skb`, as send_offer completed it: into acks, for the MN's REQUEST.
static __always_inline void keep_offer(struct __sk_buff *skb, __u32 len, __u32 hoa,
                                       __u32 router, __u32 access_if) {
    __u32 zero = 0;
    struct acked *k = bpf_map_lookup_elem(&acks_scratch, &zero);
    if (!k || len < OPTIONS_AT || len > OFFER_MAX)
        return;
    len = ((len - 1) & (OFFER_MAX - 1)) + 1;
    if (bpf_skb_load_bytes(skb, 0, k->frame, len))
        return;
    k->state = READY;
    k->len = len;
    k->hoa = hoa;
    k->router = router;
    k->access_if = access_if;
    k->at_ns = bpf_ktime_get_ns();
    __builtin_memcpy(&k->xid, k->frame + BOOTP_AT + 4, 4);
    __u64 mac = 0;
    __builtin_memcpy(&mac, k->frame + BOOTP_AT + 28, 6);
    bpf_map_update_elem(&acks, &mac, k, BPF_ANY);
}

// The OFFER armed for this PBA's PBU, completed with what the PBA grants (the address and
// prefix length, the default router, the lifetime that bounds the lease), in place of the
// PBA: the PBA goes up as a marked copy first, then the OFFER leaves for the MN, so that
// no process wakes up between the PBA and the OFFER (seed Figure 2, steps 3 to 5).
// TC_ACT_OK when the PBA does not grant all of that (the daemon answers, or not, as it
// decides), or when the OFFER cannot be sent (SHOT: it is lost, and the MN's DISCOVER
// comes again). The daemon reads the PBA and does not send its own copy of the OFFER.
static __always_inline int send_offer(struct __sk_buff *skb, struct offer *o) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    if (data + MH_AT + 12 > end)
        return TC_ACT_OK;
    struct ipv6hdr *ip6 = data + ETH_LEN;
    __u8 *mh = data + MH_AT;
    __u32 *from = (__u32 *)&ip6->saddr, *lma = (__u32 *)o->lmaa;
    if (from[0] != lma[0] || from[1] != lma[1] || from[2] != lma[2] || from[3] != lma[3] ||
        o->state != ARMED || bpf_ktime_get_ns() - o->at_ns > ARMED_NS)
        return TC_ACT_OK;
    __u32 lifetime = (((__u32)mh[10] << 8) | mh[11]) * 4; // in units of 4 s
    __u32 stop = MH_AT + ((__u32)mh[1] + 1) * 8;
    __u32 ack_at = mh_option(skb, stop, OPT_IPV4_ADDRESS_ACK, OPT_IPV4_HOA_REPLY, 6);
    __u32 router_at = mh_option(skb, stop, OPT_IPV4_DEFAULT_ROUTER, OPT_IPV4_DEFAULT_ROUTER, 6);
    data = (void *)(long)skb->data, end = (void *)(long)skb->data_end;
    __u8 *a = data + (ack_at & 0x3ff), *r = data + (router_at & 0x3ff);
    if (!ack_at || !router_at || (void *)(a + 8) > end || (void *)(r + 8) > end || a[2] != 0 ||
        lifetime < 2)
        return TC_ACT_OK; // refused, or no router: the daemon's
    __u32 hoa = *(__u32 *)(a + 4), router = *(__u32 *)(r + 4), plen = a[3] >> 2;
    __u32 len = o->len, access_if = o->access_if;
    if (!hoa || !router || plen > 32 || len < OPTIONS_AT || len > OFFER_MAX)
        return TC_ACT_OK;
    len = ((len - 1) & (OFFER_MAX - 1)) + 1; // 1..OFFER_MAX, for the verifier
    // As agent.py's lease: the MAG's, but never past the binding (its lifetime counted
    // from the PBA, less the second the daemon's own rounding takes off).
    __u32 lease = o->lease_max < lifetime - 1 ? o->lease_max : lifetime - 1;
    lease = lease ? lease : 1;
    __u32 mask = plen ? 0xffffffff << (32 - plen) : 0;
    __u32 values[OFFER_FIELDS] = {router, bpf_htonl(lease), bpf_htonl(lease / 2),
                                  bpf_htonl(lease * 7 / 8), bpf_htonl(mask), router};
    __u32 at[OFFER_FIELDS];
    for (int i = 0; i < OFFER_FIELDS; i++) {
        at[i] = o->at[i];
        if (at[i] < OPTIONS_AT || at[i] + 4 > len)
            return TC_ACT_OK;
    }
    if (!__sync_bool_compare_and_swap(&o->state, ARMED, SENT))
        return TC_ACT_OK; // the same PBA, on another CPU, got there first
    if (copy_up(skb)) {
        o->state = ARMED;
        return TC_ACT_OK;
    }
    // The checksums, computed from 0.0.0.0 with zeros where the values go, plus them:
    // the router's address is the OFFER's source (its server identifier too).
    __u16 ip_sum = *(__u16 *)(o->frame + ETH_LEN + 10), udp_sum = *(__u16 *)(o->frame + UDP_AT + 6);
    ip_sum = ~fold((__u16)~ip_sum + words(router, 0));
    __u32 sum = (__u16)~udp_sum + words(router, 0) + words(hoa, 0);
    for (int i = 0; i < OFFER_FIELDS; i++)
        sum += words(values[i], at[i]);
    udp_sum = ~fold(sum);
    udp_sum = udp_sum ? udp_sum : 0xffff; // RFC 768: 0 would say there is none
    if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IP), 0) || bpf_skb_change_tail(skb, len, 0) ||
        bpf_skb_store_bytes(skb, 0, o->frame, len, 0) ||
        bpf_skb_store_bytes(skb, ETH_LEN + 10, &ip_sum, 2, 0) ||
        bpf_skb_store_bytes(skb, ETH_LEN + 12, &router, 4, 0) ||
        bpf_skb_store_bytes(skb, UDP_AT + 6, &udp_sum, 2, 0) ||
        bpf_skb_store_bytes(skb, BOOTP_AT + 16, &hoa, 4, 0))
        return TC_ACT_SHOT;
    for (int i = 0; i < OFFER_FIELDS; i++)
        if (bpf_skb_store_bytes(skb, at[i] & 0x1ff, &values[i], 4, 0))
            return TC_ACT_SHOT;
    keep_offer(skb, len, hoa, router, access_if);
    count(STAT_OFFER_SENT);
    return bpf_redirect(access_if, 0);
}

// A PBA answering a PBU whose OFFER is armed: that OFFER (send_offer). A PBA accepting the
// address an expected PBU reported: into grants, and the ACK of it that came first, if
// any, to the MN (release). Else TC_ACT_OK.
static __always_inline int pba_in(struct __sk_buff *skb, struct conf *cf) {
    __u8 *mh = mobility_header(skb, MH_BA);
    if (!mh || mh[6] >= 128) // status: accepted
        return TC_ACT_OK;
    struct ipv6hdr *ip6 = (void *)mh - sizeof(*ip6);
    __u32 *to = (__u32 *)&ip6->daddr, *coa = (__u32 *)cf->proxy_coa;
    if (to[0] != coa[0] || to[1] != coa[1] || to[2] != coa[2] || to[3] != coa[3])
        return TC_ACT_OK;
    __u32 seq = ((__u32)mh[8] << 8) | mh[9];
    __u32 slot = seq % OFFER_SLOTS;
    struct offer *o = bpf_map_lookup_elem(&offers, &slot);
    if (o && o->state == ARMED && o->seq == seq)
        return send_offer(skb, o);
    struct expect *ex = bpf_map_lookup_elem(&expects, &seq);
    if (!ex)
        return TC_ACT_OK;
    __u32 *from = (__u32 *)&ip6->saddr, *lma = (__u32 *)ex->lmaa;
    if (from[0] != lma[0] || from[1] != lma[1] || from[2] != lma[2] || from[3] != lma[3])
        return TC_ACT_OK;
    __u32 stop = MH_AT + ((__u32)mh[1] + 1) * 8;
    __u32 at = mh_option(skb, stop, OPT_IPV4_ADDRESS_ACK, OPT_IPV4_HOA_REPLY, 6);
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    __u8 *p = data + (at & 0x3ff);
    if (!at || (void *)(p + 8) > end || p[2] != 0) // none, or status: not success
        return TC_ACT_OK;
    __u32 hoa = *(__u32 *)(p + 4);
    if (hoa != ex->hoa) // not the address reported
        return TC_ACT_OK;
    __u64 mac = ex->mac;
    bpf_map_update_elem(&grants, &mac, &hoa, BPF_ANY);
    bpf_map_delete_elem(&expects, &seq);
    count(STAT_PBA_GRANT);
    return release(skb, cf, mac, hoa);
}

// An MN's slot in armed (kernel_relay.armed_slot): two MNs whose DISCOVERs share one
// within the few ms to their OFFERs leave the first one's PBU to the daemon.
static __always_inline __u32 armed_slot(__u64 mac) {
    return (__u32)((mac * 0x9E3779B97F4A7C15ULL) >> 52) & (ARMED_SLOTS - 1);
}

// The PBU armed for this MN, claimed (SENT) for sending with the server's OFFER: fresh,
// with a route and a neighbour toward its LMA (into *fib). 0: none; the daemon sends the
// PBU.
static __always_inline struct armed *armed_pbu(struct __sk_buff *skb, __u64 mac,
                                               struct bpf_fib_lookup *fib) {
    __u32 slot = armed_slot(mac);
    struct armed *a = bpf_map_lookup_elem(&armed, &slot);
    if (!a || a->state != ARMED || a->mac != mac || bpf_ktime_get_ns() - a->at_ns > ARMED_NS)
        return 0;
    __u32 len = a->len;
    if (len < MH_AT + 12 || len > ARMED_MAX)
        return 0;
    fib->family = 10; // AF_INET6
    fib->l4_protocol = IPPROTO_MH;
    fib->tot_len = len - ETH_LEN;
    fib->ifindex = a->uplink_if; // an output lookup, as the daemon's socket would make
    __builtin_memcpy(fib->ipv6_src, a->frame + ETH_LEN + 8, 16);
    __builtin_memcpy(fib->ipv6_dst, a->frame + ETH_LEN + 24, 16);
    if (bpf_fib_lookup(skb, fib, sizeof(*fib), BPF_FIB_LOOKUP_OUTPUT) !=
        BPF_FIB_LKUP_RET_SUCCESS)
        return 0; // no neighbour yet, say: the daemon's socket resolves it
    if (!__sync_bool_compare_and_swap(&a->state, ARMED, SENT))
        return 0;
    return a;
}

// `skb` (an OFFER, already passed on to its MN) made into the armed PBU, with the
// offered address in it, to the LMA.
static __always_inline int send_pbu(struct __sk_buff *skb, struct armed *a, __u32 hoa,
                                    struct bpf_fib_lookup *fib) {
    __u32 len = a->len, hoa_at = a->hoa_at & 0x1ff, csum_at = a->csum_at & 0x1ff;
    if (len < MH_AT + 12 || len > ARMED_MAX)
        return TC_ACT_SHOT;
    len = ((len - 1) & (ARMED_MAX - 1)) + 1;
    // The checksum, computed over 0.0.0.0 where the address goes, plus the address.
    __u16 csum = *(__u16 *)(a->frame + (csum_at & 0x1fe));
    csum = ~fold((__u16)~csum + words(hoa, 0));
    if (bpf_skb_change_proto(skb, bpf_htons(ETH_P_IPV6), 0) || bpf_skb_change_tail(skb, len, 0) ||
        bpf_skb_store_bytes(skb, 0, a->frame, len, 0) ||
        bpf_skb_store_bytes(skb, hoa_at, &hoa, 4, 0) ||
        bpf_skb_store_bytes(skb, csum_at, &csum, 2, 0) ||
        bpf_skb_store_bytes(skb, 0, fib->dmac, 6, 0) ||
        bpf_skb_store_bytes(skb, 6, fib->smac, 6, 0))
        return TC_ACT_SHOT;
    count(STAT_PBU_SENT);
    return bpf_redirect(fib->ifindex, 0);
}

// A server's ACK that the LMA has not granted yet: a copy into held, for release.
static __always_inline void hold(struct __sk_buff *skb, __u64 mac, struct link_key *key,
                                 __u32 info_at, __u32 gone, __u32 yiaddr, __u32 xid) {
    __u32 zero = 0, len = skb->len;
    struct held *h = bpf_map_lookup_elem(&held_scratch, &zero);
    if (!h || len < OPTIONS_AT || len > HELD_MAX)
        return;
    len = ((len - 1) & (HELD_MAX - 1)) + 1;
    if (bpf_skb_load_bytes(skb, 0, h->frame, len))
        return;
    h->state = HELD;
    h->len = len;
    h->info_at = info_at;
    h->gone = gone;
    h->yiaddr = yiaddr;
    h->xid = xid;
    h->access_if = key->ifindex;
    h->own_link = key->mac == 0;
    h->at_ns = bpf_ktime_get_ns();
    bpf_map_update_elem(&held, &mac, h, BPF_ANY);
}

SEC("tc")
int uplink_in(struct __sk_buff *skb) {
    __u32 zero = 0;
    struct conf *cf = bpf_map_lookup_elem(&conf, &zero);
    if (!cf || !cf->relay_ip || skb->mark == MARK)
        return TC_ACT_OK;
    if (skb->protocol == bpf_htons(ETH_P_IPV6))
        return pba_in(skb, cf);
    if (!is_bootp(skb, 2))
        return TC_ACT_OK;
    __u32 end_at, info_at, kind;
    if (walk(skb, &end_at, &info_at, &kind) || !info_at)
        return TC_ACT_OK;
    kind &= 0xff;
    if (kind != OFFER && kind != ACK)
        return TC_ACT_OK; // a NAK, say: the daemon's
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    if (data + BOOTP_AT + 34 > end)
        return TC_ACT_OK;
    struct iphdr *iph = data + ETH_LEN;
    __u8 *bootp = data + BOOTP_AT;
    __u32 relay_ip = cf->relay_ip;
    if (iph->daddr != relay_ip || iph->saddr != cf->server_ip ||
        *(__u32 *)(bootp + 24) != relay_ip)
        return TC_ACT_OK;
    __u32 yiaddr = *(__u32 *)(bootp + 16), xid = *(__u32 *)(bootp + 4);
    __u64 mac = 0;
    __builtin_memcpy(&mac, bootp + 28, 6);
    struct attached *at = bpf_map_lookup_elem(&attached, &mac);
    if (!at)
        return TC_ACT_OK;
    struct link_key key = {.mac = at->own_link ? 0 : mac, .ifindex = at->access_if};
    struct mn_link *link = bpf_map_lookup_elem(&links, &key);
    if (!link)
        return TC_ACT_OK; // no longer relayed here (a denied MN, a reload)
    // Option 82 must be last and the very one the MN's request carried.
    __u32 gone = link->tail_len; // option 82 and END: zeros after the new END
    if (gone < 3 || gone > TAIL_MAX || end_at - info_at != gone - 1)
        return TC_ACT_OK;
    for (__u32 i = 0; i < TAIL_MAX - 1; i++) {
        if (i >= gone - 1)
            break;
        __u8 *p = data + ((info_at + i) & 0x7ff);
        if ((void *)(p + 1) > end || *p != link->tail[i])
            return TC_ACT_OK;
    }
    if (kind == ACK) {
        __u32 *granted = bpf_map_lookup_elem(&grants, &mac);
        if (!granted || *granted != yiaddr) {
            // The daemon holds it until the PBA grants it; so does held, and the PBA's
            // program (release) is usually first.
            hold(skb, mac, &key, info_at, gone, yiaddr, xid);
            count(STAT_ACK_UP);
            return TC_ACT_OK;
        }
    }
    struct armed *pbu = 0;
    struct bpf_fib_lookup fib = {};
    if (kind == OFFER) {
        pbu = yiaddr ? armed_pbu(skb, mac, &fib) : 0;
        if (!pbu)
            copy_up(skb); // the daemon reports the address in a PBU
        else
            pbu->hoa = yiaddr; // for the daemon, which learns of it from the PBA
    }
    __u32 access_if = key.ifindex;
    __u8 from[6];
    __builtin_memcpy(from, link->access_mac, 6);
    // zeros over the rest of option 82 and the old END: gone - 1 octets, 1..TAIL_MAX
    if (relay_down(skb, info_at, zeros, ((gone - 2) & (TAIL_MAX - 1)) + 1, relay_ip, from))
        return TC_ACT_SHOT;
    count(STAT_TO_MN);
    // The OFFER goes to the MN as a clone; this skb then becomes the PBU. Should that
    // clone fail, the OFFER goes as the skb; should the PBU not be built, it is dropped.
    // Either way the PBU is lost: the daemon, told it was sent (by the server's ACK to
    // come), sends it again when its PBA does not come.
    if (pbu && !bpf_clone_redirect(skb, access_if, 0))
        return send_pbu(skb, pbu, yiaddr, &fib);
    return bpf_redirect(access_if, 0);
}

char _license[] SEC("license") = "GPL";
