/* Monotonic nanosecond clock shared by the guest, the floor handler and the probe, so every
 * number in their JSON comes from the same clock (CLOCK_MONOTONIC, as the Node side uses). */
#ifndef FAULTLINE_TIMING_H
#define FAULTLINE_TIMING_H

#include <stdint.h>
#include <time.h>

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
