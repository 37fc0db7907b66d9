/* Input of the programs guest's second compiler run (gcc-2.sh): a small self-contained C
 * program, different from the first run's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct range { unsigned lo, hi; };

static unsigned count_primes(struct range r, unsigned char *sieve) {
  memset(sieve, 1, r.hi + 1);
  sieve[0] = sieve[1] = 0;
  for (unsigned i = 2; (unsigned long)i * i <= r.hi; i++)
    if (sieve[i])
      for (unsigned j = i * i; j <= r.hi; j += i) sieve[j] = 0;
  unsigned n = 0;
  for (unsigned i = r.lo; i <= r.hi; i++) n += sieve[i];
  return n;
}

int main(int argc, char **argv) {
  struct range r = {2, argc > 1 ? (unsigned)strtoul(argv[1], NULL, 10) : 100000};
  unsigned char *sieve = malloc(r.hi + 1);
  if (!sieve) return 1;
  printf("%u primes up to %u\n", count_primes(r, sieve), r.hi);
  free(sieve);
  return 0;
}
