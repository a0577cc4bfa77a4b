// BOOTP framing for tc programs: what the MAG's kernel relay (relay.c) and the bench's
// relay floor (bench/relay_floor_bpf.c) both read and write. Plain IPv4 without options,
// UDP, BOOTP with the magic cookie, all in linear data; anything else is not BOOTP here.
#pragma once
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define ETH_LEN 14
#define UDP_AT (ETH_LEN + 20) // no IP options: anything else goes up the stack
#define BOOTP_AT (UDP_AT + 8)
#define OPTIONS_AT (BOOTP_AT + 240)
#define MIN_LEN (BOOTP_AT + 300) // the BOOTP minimum (RFC 1542 section 3.4)
#define MAX_OPTIONS 80
#define SELECTING 0x100 // walk's kind: a server identifier was there

static __always_inline __u16 ip_checksum(struct iphdr *iph) {
    iph->check = 0;
    __u32 sum = bpf_csum_diff(0, 0, (__be32 *)iph, 20, 0);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return ~sum;
}

// A BOOTP message with the magic cookie, to UDP port 67, all in linear data.
static __always_inline int is_bootp(struct __sk_buff *skb, __u8 op) {
    if (bpf_skb_pull_data(skb, skb->len))
        return 0;
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    if (data + OPTIONS_AT > end)
        return 0;
    struct ethhdr *eth = data;
    struct iphdr *iph = data + ETH_LEN;
    struct udphdr *udp = data + UDP_AT;
    __u8 *bootp = data + BOOTP_AT;
    return eth->h_proto == bpf_htons(ETH_P_IP) && iph->ihl == 5 &&
           !(iph->frag_off & bpf_htons(0x3fff)) && iph->protocol == IPPROTO_UDP &&
           udp->dest == bpf_htons(67) && bootp[0] == op && bootp[1] == 1 && bootp[2] == 6 &&
           bootp[236] == 99 && bootp[237] == 130 && bootp[238] == 83 && bootp[239] == 99;
}

// Offsets of END and of option 82 (0: none), and the message type, | SELECTING with a
// server identifier. -1: no END within the packet or within MAX_OPTIONS options, or an
// option overload (52), whose options elsewhere these programs do not read.
static __always_inline int walk(struct __sk_buff *skb, __u32 *end_at, __u32 *info_at,
                                __u32 *kind) {
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    __u32 off = OPTIONS_AT;
    *info_at = 0;
    *kind = 0;
    for (int k = 0; k < MAX_OPTIONS; k++) {
        off &= 0x7ff;
        __u8 *p = data + off;
        if ((void *)(p + 1) > end)
            return -1;
        if (p[0] == 255) {
            *end_at = off;
            return 0;
        }
        if (p[0] == 0) {
            off += 1;
            continue;
        }
        if ((void *)(p + 3) > end || p[0] == 52)
            return -1;
        if (p[0] == 82)
            *info_at = off;
        else if (p[0] == 53 && p[1] == 1)
            *kind = (*kind & SELECTING) | p[2];
        else if (p[0] == 54)
            *kind |= SELECTING;
        off += 2 + p[1];
    }
    return -1;
}

static __always_inline void set_udp_ip(void *data, __u32 len, __u16 dport, __u32 saddr,
                                       __u32 daddr) {
    struct iphdr *iph = data + ETH_LEN;
    struct udphdr *udp = data + UDP_AT;
    udp->source = bpf_htons(67);
    udp->dest = bpf_htons(dport);
    udp->len = bpf_htons(len - UDP_AT);
    udp->check = 0; // none: allowed over IPv4 (RFC 768)
    iph->saddr = saddr;
    iph->daddr = daddr;
    iph->ttl = 64;
    iph->tot_len = bpf_htons(len - ETH_LEN);
    iph->check = ip_checksum(iph);
}

// An MN's request, relayed up: `tail` (option 82 and END) where END was, hops + 1, giaddr,
// IPv4/UDP from the relay to the server, Ethernet from `smac` to `dmac`. 0, or -1: drop it
// (the message may be half rewritten).
static __always_inline int relay_up(struct __sk_buff *skb, __u32 end_at, const void *tail,
                                    __u32 tail_len, __u32 relay_ip, __u32 server_ip,
                                    const __u8 *dmac, const __u8 *smac) {
    __u32 len = end_at + tail_len;
    if (len < MIN_LEN)
        len = MIN_LEN;
    if (bpf_skb_change_tail(skb, len, 0))
        return -1;
    if (bpf_skb_store_bytes(skb, end_at & 0x7ff, tail, tail_len, 0))
        return -1;
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    if (data + BOOTP_AT + 28 > end)
        return -1;
    __u8 *bootp = data + BOOTP_AT;
    bootp[3] += 1;
    *(__u32 *)(bootp + 24) = relay_ip;
    set_udp_ip(data, len, 67, relay_ip, server_ip);
    struct ethhdr *eth = data;
    __builtin_memcpy(eth->h_dest, dmac, 6);
    __builtin_memcpy(eth->h_source, smac, 6);
    return 0;
}

// A server's reply, relayed down: END where option 82 (at `info_at`, the last option)
// began, `zeros_len` zeros over the rest of it and the old END, trimmed to the BOOTP
// minimum, and a broadcast to the MN from the relay and `from`. 0, or -1: drop it.
static __always_inline int relay_down(struct __sk_buff *skb, __u32 info_at, const void *zeros,
                                      __u32 zeros_len, __u32 relay_ip, const __u8 *from) {
    __u8 end_option = 255;
    if (bpf_skb_store_bytes(skb, info_at & 0x7ff, &end_option, 1, 0))
        return -1;
    if (bpf_skb_store_bytes(skb, (info_at + 1) & 0x7ff, zeros, zeros_len, 0))
        return -1;
    __u32 len = info_at + 1;
    if (len < MIN_LEN)
        len = MIN_LEN;
    if (bpf_skb_change_tail(skb, len, 0))
        return -1;
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    if (data + BOOTP_AT > end)
        return -1;
    set_udp_ip(data, len, 68, relay_ip, 0xffffffff);
    struct ethhdr *eth = data;
    __u8 to[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    __builtin_memcpy(eth->h_dest, to, 6);
    __builtin_memcpy(eth->h_source, from, 6);
    return 0;
}
