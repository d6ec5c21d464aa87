// rom: sends frames=N (default 32) Ethernet frames over a virtio-net loopback and checks each comes back
//
// Finds the virtio-net device the command line announces, reads its MAC,
// posts receive buffers, then sends frames of growing length (60 bytes up
// to 1514) addressed to itself, each with its sequence number and a
// pattern, and checks that the loopback returns every one unchanged and in
// order.  If a virtio-console is announced too, the summary line is also
// written through it.
#include "popek.h"
#include "virtio.h"

#define MIN_FRAME 60u
#define MAX_FRAME 1514u
#define ETHERTYPE 0x88B5u	/* IEEE 802 local experimental */

static struct virtio_net net;
static struct virtio_console con;
static uint8_t frame[MAX_FRAME], back[MAX_FRAME];

static uint32_t frame_len(uint32_t seq)
{
	return MIN_FRAME + (seq * 97u) % (MAX_FRAME - MIN_FRAME + 1);
}

static void build(uint32_t seq)
{
	for (unsigned i = 0; i < 6; i++)
		frame[i] = frame[6 + i] = net.mac[i];
	frame[12] = ETHERTYPE >> 8;
	frame[13] = ETHERTYPE & 0xFF;
	for (uint32_t i = 14; i < frame_len(seq); i++)
		frame[i] = (uint8_t)(seq * 31u + i * 7u);
	frame[14] = (uint8_t)seq;
	frame[15] = (uint8_t)(seq >> 8);
}

int main(uint32_t magic, const struct multiboot_info *mbi)
{
	uint32_t frames = (uint32_t)cmdline_ulong(mbi, "frames", 32);
	uint32_t bad = 0, lost = 0;

	(void)magic;
	if (!check_true("net-found", virtio_net_open(mbi, &net) == 0,
			"no virtio-net device announced, or it refused the driver"))
		return 1;
	serial_puts("net: virtio-net at ");
	print_hex32((uint32_t)net.dev.base);
	serial_puts(", mac ");
	for (unsigned i = 0; i < 6; i++) {
		static const char hex[] = "0123456789abcdef";
		serial_putc(hex[net.mac[i] >> 4]);
		serial_putc(hex[net.mac[i] & 15]);
		if (i < 5)
			serial_putc(':');
	}
	serial_puts("\n");
	for (uint32_t seq = 0; seq < frames; seq++) {
		build(seq);
		if (virtio_net_send(&net, frame, frame_len(seq))) {
			lost++;
			continue;
		}
		int len = virtio_net_recv(&net, back, sizeof(back));
		if (len < 0) {
			lost++;
			continue;
		}
		if ((uint32_t)len != frame_len(seq)) {
			bad++;
			continue;
		}
		for (uint32_t i = 0; i < (uint32_t)len; i++)
			if (back[i] != frame[i]) {
				bad++;
				break;
			}
	}
	check_eq("net-lost", lost, 0);
	check_eq("net-data", bad, 0);
	if (virtio_console_open(mbi, &con) == 0)
		check_eq("net-console", (uint32_t)virtio_console_puts(&con,
			 check_failures ? "net: frames lost or changed\n"
					: "net: every frame came back\n"), 0);
	return check_failures ? 1 : 0;
}
