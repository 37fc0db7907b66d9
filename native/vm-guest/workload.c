/* The guest workload for faultline's VM resume runs: runs as the busybox guest's main process,
 * fills most of guest RAM with a deterministic mix of pages and prints checksums on request. */

/* Protocol on the console (stdin/stdout, the serial line):
 *   FAULTLINE-FILLED <mib> <pages> <zero> <text> <random>   once, after the fill
 *   FAULTLINE-CHECKSUM <hex> <pages>                         after the fill and per request
 *   FAULTLINE-PONG                                           answer to "ping" (memory untouched)
 *   FAULTLINE-READY                                          before waiting for a request
 * A request is one line: "ping" = PONG (how soon a resumed guest answers at all, before it
 * reads its memory); "quit" = exit; anything else (an empty line) = checksum again.
 * The pattern depends only on the page index, so the checksum is the same on every boot for
 * a given size: a host can compare before/after a snapshot and across runs. */

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <termios.h>
#include <unistd.h>

#define PAGE 4096u

static uint64_t mix64(uint64_t x) {
  /* splitmix64's finaliser: decides each page's kind and seeds its contents */
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static const char *const words[] = {
    "page", "fault", "guest", "memory", "snapshot", "resume", "kernel", "the", "of", "and",
    "to", "a", "in", "is", "lz4", "block", "index", "server", "socket", "region", "offset",
    "qemu", "device", "state", "serial", "console", "checksum", "zero", "random", "text",
};
#define NWORDS (sizeof(words) / sizeof(words[0]))

/* Text-like pages compress well but not to nothing, like real heap and page-cache data. */
static void fill_text(uint8_t *p, uint64_t seed) {
  size_t n = 0;
  uint64_t s = seed | 1;
  while (n < PAGE) {
    s ^= s << 13; s ^= s >> 7; s ^= s << 17;
    const char *w = words[s % NWORDS];
    while (*w && n < PAGE) p[n++] = (uint8_t)*w++;
    if (n < PAGE) p[n++] = (s >> 40) % 11 == 0 ? '\n' : ' ';
  }
}

/* Incompressible pages: xorshift64* output. */
static void fill_random(uint8_t *p, uint64_t seed) {
  uint64_t s = seed | 1;
  uint64_t *q = (uint64_t *)p;
  for (size_t i = 0; i < PAGE / 8; i++) {
    s ^= s >> 12; s ^= s << 25; s ^= s >> 27;
    q[i] = s * 0x2545f4914f6cdd1dull;
  }
}

/* Kinds: 0 zero, 1-2 text, 3 random (about 1/4, 1/2, 1/4). */
static unsigned page_kind(uint64_t i) { return (unsigned)(mix64(i) & 3); }

/* Pages are copies of a few pregenerated ones, each stamped with its own index: generating
 * every page byte by byte took minutes per GiB under TCG, a copy is ~20x faster. The stamp
 * keeps every page distinct, so a page served at the wrong index changes the checksum. */
#define POOL 64
static uint8_t text_pool[POOL][PAGE], random_pool[POOL][PAGE];

static void fill_pools(void) {
  for (uint64_t j = 0; j < POOL; j++) {
    fill_text(text_pool[j], mix64(j ^ 0x7e47));
    fill_random(random_pool[j], mix64(j ^ 0x5eed));
  }
}

static void fill_page(uint8_t *p, uint64_t i, unsigned kind) {
  uint64_t m = mix64(i ^ 0xf111);
  memcpy(p, (kind == 3 ? random_pool : text_pool)[(m >> 8) % POOL], PAGE);
  uint64_t stamp = i ^ (m << 24);
  memcpy(p + (m >> 32) % (PAGE / 8) * 8, &stamp, 8);
}

static uint64_t checksum(const uint8_t *mem, uint64_t pages) {
  /* Word-wise so it is fast enough under TCG; position-dependent so swapped pages show. */
  uint64_t h = 0xcbf29ce484222325ull;
  for (uint64_t pg = 0; pg < pages; pg++) {
    const uint64_t *q = (const uint64_t *)(mem + pg * PAGE);
    uint64_t ph = pg * 0x100000001b3ull;
    for (size_t i = 0; i < PAGE / 8; i++) ph = (ph ^ q[i]) * 0x100000001b3ull;
    h = ((h << 7) | (h >> 57)) ^ ph;
  }
  return h;
}

static long mib_from_cmdline(void) {
  /* fl.mib=N on the kernel command line; the init script may also pass it as argv[1]. */
  FILE *f = fopen("/proc/cmdline", "r");
  if (!f) return -1;
  char buf[4096];
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[n] = 0;
  char *p = strstr(buf, "fl.mib=");
  return p ? strtol(p + 7, NULL, 10) : -1;
}

static void quiet_console(void) {
  /* No echo: the host driver must only see what the workload prints. Keep canonical mode so
   * read() returns whole lines. Not a tty (tests on the host): nothing to do. */
  struct termios t;
  if (tcgetattr(0, &t) != 0) return;
  t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
  tcsetattr(0, TCSANOW, &t);
}

int main(int argc, char **argv) {
  long mib = argc > 1 ? strtol(argv[1], NULL, 10) : mib_from_cmdline();
  if (mib <= 0) mib = 64;
  setvbuf(stdout, NULL, _IOLBF, 0);
  quiet_console();

  uint64_t pages = (uint64_t)mib * (1024 * 1024 / PAGE);
  uint8_t *mem = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                      -1, 0);
  if (mem == MAP_FAILED) {
    printf("FAULTLINE-ERROR cannot map %ld MiB: %s\n", mib, strerror(errno));
    return 1;
  }
  uint64_t counts[3] = {0, 0, 0};
  fill_pools();
  for (uint64_t i = 0; i < pages; i++) {
    uint8_t *p = mem + i * PAGE;
    unsigned k = page_kind(i);
    /* Zero pages are written too: they must be real guest pages, not the shared zero page. */
    if (k == 0) memset(p, 0, PAGE), counts[0]++;
    else fill_page(p, i, k), counts[k == 3 ? 2 : 1]++;
  }
  printf("FAULTLINE-FILLED %ld %llu %llu %llu %llu\n", mib, (unsigned long long)pages,
         (unsigned long long)counts[0], (unsigned long long)counts[1],
         (unsigned long long)counts[2]);

  char line[256];
  int ping = 0;
  for (;;) {
    if (ping)
      printf("FAULTLINE-PONG\n");
    else
      printf("FAULTLINE-CHECKSUM %016llx %llu\n", (unsigned long long)checksum(mem, pages),
             (unsigned long long)pages);
    printf("FAULTLINE-READY\n");
    /* EOF or an interrupted read: wait for the next line rather than exit, since exiting
     * would power the guest off under the driver. */
    while (!fgets(line, sizeof(line), stdin)) {
      clearerr(stdin);
      sleep(1);
    }
    if (strncmp(line, "quit", 4) == 0) return 0;
    ping = strncmp(line, "ping", 4) == 0;
  }
}
