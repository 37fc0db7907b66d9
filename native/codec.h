/* The snapshot page codec's core (liblz4, ISA-L CRC-32), shared by the page codec library the
 * TypeScript server loads (codec.c's entry points) and the C page server (snapshot.c). */
#ifndef FAULTLINE_CODEC_H
#define FAULTLINE_CODEC_H

#include <stdint.h>

/* Index entry kinds, as in src/snapshot/format.ts. */
enum { KIND_ZERO = 0, KIND_LZ4 = 1, KIND_RAW = 2 };

/* Why a page failed, written to detail[0]; detail[1] carries the number the message needs.
 * The same codes are in src/snapshot/native-codec.ts. */
enum { FAIL_LZ4_MALFORMED = 1, FAIL_LZ4_SIZE = 2, FAIL_CHECKSUM = 3 };

/* Decodes pages first..first+count-1 into dst. words is the index (four uint32 a page:
 * offset low, offset high 16 | kind << 16, stored length, CRC); src holds the stored bytes
 * from the run's first stored byte on. Returns -1 when every page decoded and checked, else
 * the failing page, with detail[0] the reason and detail[1] the byte where LZ4 input went
 * wrong, the size it decoded to, or the CRC computed. */
long fl_decode_pages(const uint32_t *words, uint64_t first, uint64_t count, const uint8_t *src,
		     uint8_t *dst, uint32_t page_size, double *detail);

#endif
