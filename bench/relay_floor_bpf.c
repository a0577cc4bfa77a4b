// relay_floor.py --bpf: the flow-3 relay in the kernel, as tc programs on MAG1's links.
//
// acc_in (acc1 ingress): an MN's BOOTREQUEST gets hops + 1, giaddr, option 82 in place of
// END, and IPv4/UDP headers to Kea; out of k0, with no wake-up of any process.
// k0_in (k0 ingress): Kea's reply loses option 82 (it must be the last option, as Kea
// puts it) and goes to the MN as a broadcast out of acc1. With HOLD, an OFFER also goes up
// to the relay process unchanged (a clone marked MARK, which k0_in lets through), which
// sends the PBU; an ACK goes on only if the grants map holds its address for the MN's MAC
// (the PBA came first), else up to the process, which holds it for the PBA.
// Anything else, or anything unusual, goes up the stack untouched (TC_ACT_OK).
//
// The bench compiles this at run time with the lab's addresses as -D macros: RELAY_IP and
// KEA_IP (IPv4 addresses as the u32 they are in memory), K0_IF and ACC_IF (ifindexes),
// ACC_MAC, K0_MAC, KEA_MAC (six comma-separated octets), INFO_LEN and INFO (option 82's
// content, comma-separated octets), HOLD (0 or 1).
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
#define MARK 0x5eed
#define OFFER 2
#define ACK 5
#define NAK 6

static const __u8 relay_tail[] = {82, INFO_LEN, INFO, 255};
static const __u8 zeros[2 + INFO_LEN] = {}; // what option 82 and END took

struct {
    __uint(type, BPF_MAP_TYPE_HASH);
    __uint(max_entries, 4096);
    __type(key, __u64); // the MN's MAC in the low six octets
    __type(value, __u32); // the address the LMA granted it
} grants SEC(".maps");

static __always_inline __u16 ip_checksum(struct iphdr *iph) {
    iph->check = 0;
    __u32 sum = bpf_csum_diff(0, 0, (__be32 *)iph, 20, 0);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    return ~sum;
}

// A BOOTP message with the magic cookie, to UDP port `port`, all in linear data.
static __always_inline int is_bootp(struct __sk_buff *skb, __u16 port, __u8 op) {
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
           iph->protocol == IPPROTO_UDP && udp->dest == bpf_htons(port) && bootp[0] == op &&
           bootp[236] == 99 && bootp[237] == 130 && bootp[238] == 83 && bootp[239] == 99;
}

// Offsets of END and of option 82 (0: none), and the message type (0: none). -1: no END
// within the packet or within MAX_OPTIONS options.
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
        if ((void *)(p + 3) > end)
            return -1;
        if (p[0] == 82)
            *info_at = off;
        else if (p[0] == 53 && p[1] == 1)
            *kind = p[2];
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
    udp->check = 0; // none: allowed over IPv4
    iph->saddr = saddr;
    iph->daddr = daddr;
    iph->ttl = 64;
    iph->tot_len = bpf_htons(len - ETH_LEN);
    iph->check = ip_checksum(iph);
}

SEC("tc")
int acc_in(struct __sk_buff *skb) {
    if (!is_bootp(skb, 67, 1))
        return TC_ACT_OK;
    __u32 end_at, info_at, kind;
    if (walk(skb, &end_at, &info_at, &kind) || info_at)
        return TC_ACT_OK;
    __u32 len = end_at + sizeof(relay_tail);
    if (len < MIN_LEN)
        len = MIN_LEN;
    if (bpf_skb_change_tail(skb, len, 0))
        return TC_ACT_SHOT;
    if (bpf_skb_store_bytes(skb, end_at & 0x7ff, relay_tail, sizeof(relay_tail), 0))
        return TC_ACT_SHOT;
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    if (data + BOOTP_AT + 28 > end)
        return TC_ACT_SHOT;
    __u8 *bootp = data + BOOTP_AT;
    bootp[3] += 1;
    *(__u32 *)(bootp + 24) = RELAY_IP;
    set_udp_ip(data, len, 67, RELAY_IP, KEA_IP);
    struct ethhdr *eth = data;
    __u8 to[6] = {KEA_MAC}, from[6] = {K0_MAC};
    __builtin_memcpy(eth->h_dest, to, 6);
    __builtin_memcpy(eth->h_source, from, 6);
    return bpf_redirect(K0_IF, 0);
}

SEC("tc")
int k0_in(struct __sk_buff *skb) {
    if (skb->mark == MARK || !is_bootp(skb, 67, 2))
        return TC_ACT_OK;
    __u32 end_at, info_at, kind;
    if (walk(skb, &end_at, &info_at, &kind) || !info_at)
        return TC_ACT_OK;
    void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
    __u8 *p = data + (info_at & 0x7ff);
    if ((void *)(p + 2) > end || info_at + 2 + p[1] != end_at || p[1] != INFO_LEN)
        return TC_ACT_OK; // option 82 not last, or not the one the relay sent
    if (data + BOOTP_AT + 34 > end)
        return TC_ACT_OK;
    if (HOLD && kind == ACK) {
        __u64 mac = 0;
        __builtin_memcpy(&mac, data + BOOTP_AT + 28, 6);
        __u32 *granted = bpf_map_lookup_elem(&grants, &mac);
        if (!granted || *granted != *(__u32 *)(data + BOOTP_AT + 16))
            return TC_ACT_OK;
    } else if (HOLD && kind == OFFER) {
        skb->mark = MARK;
        bpf_clone_redirect(skb, K0_IF, BPF_F_INGRESS);
        skb->mark = 0;
    } else if (kind != OFFER && kind != ACK && kind != NAK) {
        return TC_ACT_OK;
    }
    // END where option 82 began, zeros after it, then trimmed to the BOOTP minimum
    __u8 end_option = 255;
    if (bpf_skb_store_bytes(skb, info_at & 0x7ff, &end_option, 1, 0))
        return TC_ACT_SHOT;
    if (bpf_skb_store_bytes(skb, (info_at + 1) & 0x7ff, zeros, 2 + INFO_LEN, 0))
        return TC_ACT_SHOT;
    __u32 len = info_at + 1;
    if (len < MIN_LEN)
        len = MIN_LEN;
    if (bpf_skb_change_tail(skb, len, 0))
        return TC_ACT_SHOT;
    data = (void *)(long)skb->data;
    end = (void *)(long)skb->data_end;
    if (data + BOOTP_AT > end)
        return TC_ACT_SHOT;
    set_udp_ip(data, len, 68, RELAY_IP, 0xffffffff);
    struct ethhdr *eth = data;
    __u8 to[6] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, from[6] = {ACC_MAC};
    __builtin_memcpy(eth->h_dest, to, 6);
    __builtin_memcpy(eth->h_source, from, 6);
    return bpf_redirect(ACC_IF, 0);
}

char _license[] SEC("license") = "GPL";
