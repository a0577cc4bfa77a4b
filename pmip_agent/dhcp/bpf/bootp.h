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
