#!/bin/sh
# run.sh - developer check, not part of the build: compiles the arith ROM as
# a 32-bit Linux program and runs it on this machine's own CPU, to confirm
# that its expected values are what real hardware computes.  Prints the
# ROM's output and exits non-zero if any case failed.
#
# Usage: test-roms/guest/host-check/run.sh
set -eu
here=$(cd "$(dirname "$0")" && pwd)
guest=$(dirname "$here")
exe=$(mktemp "${TMPDIR:-/tmp}/popek-host-arith.XXXXXX")
trap 'rm -f "$exe"' EXIT
# The same code-generation flags as build.rs, linked for Linux instead of
# with link.ld; host.c stands in for lib/io.c and lib/boot.S.
${CC:-gcc} -m32 -march=i686 -std=gnu11 -O2 -Wall -Wextra -Werror \
	-ffreestanding -fno-builtin -fno-pic -fno-pie -fno-stack-protector \
	-fno-asynchronous-unwind-tables -fcf-protection=none \
	-mgeneral-regs-only -nostdlib -static -no-pie \
	-I "$guest/lib" -o "$exe" "$guest/roms/arith.c" "$here/host.c" \
	"$guest/lib/print.c" "$guest/lib/div64.c"
"$exe"
