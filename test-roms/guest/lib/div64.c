// div64.c - the 64-bit division helpers gcc calls on i386.
//
// i386 has no 64-by-64-bit divide, so gcc turns `/` and `%` on 64-bit
// integers into calls to these libgcc routines.  Debian's gcc ships no 32-bit
// libgcc unless gcc-multilib is installed, so the ROMs carry their own copy
// instead of linking -lgcc.  Division by zero is undefined, as in libgcc.
#include <stdint.h>

// Schoolbook binary long division: one quotient bit per iteration.
uint64_t __udivmoddi4(uint64_t n, uint64_t d, uint64_t *rem)
{
	uint64_t q = 0, r = 0;

	for (int i = 63; i >= 0; i--) {
		// r < d fits in 64 bits, but 2*r may not when d > 2^63: keep
		// the bit shifted out, since it means r certainly exceeds d.
		uint64_t carry = r >> 63;

		r = (r << 1) | ((n >> i) & 1);
		if (carry || r >= d) {
			r -= d;
			q |= 1ull << i;
		}
	}
	if (rem)
		*rem = r;
	return q;
}

uint64_t __udivdi3(uint64_t n, uint64_t d)
{
	return __udivmoddi4(n, d, 0);
}

uint64_t __umoddi3(uint64_t n, uint64_t d)
{
	uint64_t r;

	__udivmoddi4(n, d, &r);
	return r;
}

// C99 signed division truncates toward zero: divide the magnitudes, then the
// quotient is negative when the signs differ and the remainder takes n's sign.
int64_t __divmoddi4(int64_t n, int64_t d, int64_t *rem)
{
	// Negating in unsigned arithmetic keeps INT64_MIN well defined.
	uint64_t un = n < 0 ? 0 - (uint64_t)n : (uint64_t)n;
	uint64_t ud = d < 0 ? 0 - (uint64_t)d : (uint64_t)d;
	uint64_t ur;
	uint64_t uq = __udivmoddi4(un, ud, &ur);

	if (rem)
		*rem = (int64_t)(n < 0 ? 0 - ur : ur);
	return (int64_t)((n < 0) != (d < 0) ? 0 - uq : uq);
}

int64_t __divdi3(int64_t n, int64_t d)
{
	return __divmoddi4(n, d, 0);
}

int64_t __moddi3(int64_t n, int64_t d)
{
	int64_t r;

	__divmoddi4(n, d, &r);
	return r;
}
