// rom: rings, para-virtualized: hypercalls instead of privileged instructions
//
// The rings kernel ported to Popek's para-virtualization ABI
// (docs/guest-abi.md): the same ring-3 task and the same output, but the
// kernel registers a trap table instead of loading an IDT, has the VMM
// check and load its page tables and apply its page-table updates in
// batches, masks events through the shared-info page instead of CLI/STI,
// waits for a one-shot timer event, and prints through the hypervisor
// console.  It runs only under Popek: elsewhere it fails pv-init.
#define RINGS_PV 1
#include "rings.c"
