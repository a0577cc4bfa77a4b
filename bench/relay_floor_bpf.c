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
#include "bootp.h" // pmip_agent/dhcp/bpf: the kernel relay's own BOOTP framing

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

SEC("tc")
int acc_in(struct __sk_buff *skb) {
    if (!is_bootp(skb, 1))
        return TC_ACT_OK;
    __u32 end_at, info_at, kind;
    if (walk(skb, &end_at, &info_at, &kind) || info_at)
        return TC_ACT_OK;
    __u8 to[6] = {KEA_MAC}, from[6] = {K0_MAC};
    if (relay_up(skb, end_at, relay_tail, sizeof(relay_tail), RELAY_IP, KEA_IP, to, from))
        return TC_ACT_SHOT;
    return bpf_redirect(K0_IF, 0);
}

SEC("tc")
int k0_in(struct __sk_buff *skb) {
    if (skb->mark == MARK || !is_bootp(skb, 2))
        return TC_ACT_OK;
    __u32 end_at, info_at, kind;
    if (walk(skb, &end_at, &info_at, &kind) || !info_at)
        return TC_ACT_OK;
    kind &= 0xff; // without the SELECTING bit
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
    __u8 from[6] = {ACC_MAC};
    if (relay_down(skb, info_at, zeros, sizeof(zeros), RELAY_IP, from))
        return TC_ACT_SHOT;
    return bpf_redirect(ACC_IF, 0);
}

char _license[] SEC("license") = "GPL";
