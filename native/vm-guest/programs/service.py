# The idle-then-burst service of the programs guest: builds an in-memory catalogue at boot
# (a dict of records and a sorted index, ~30 MiB of Python heap), reports ready, then sleeps
# in a blocking read of its request FIFO until a burst arrives: "burst SEED COUNT" answers
# COUNT lookups and range scans drawn from SEED, one reply line per burst.
import bisect, random, sys

inp, out = sys.argv[1], sys.argv[2]
rng = random.Random(7)
words = ['page', 'fault', 'guest', 'memory', 'snapshot', 'resume', 'kernel', 'policy', 'trace', 'region']
catalogue = {}
for i in range(120_000):
    key = f'item-{i:06d}'
    catalogue[key] = (i, rng.random(), ' '.join(rng.choice(words) for _ in range(6)))
index = sorted((v[1], k) for k, v in catalogue.items())
open('/tmp/service.ready', 'w').close()

while True:
    with open(inp) as requests:
        for line in requests:
            parts = line.split()
            if len(parts) != 3 or parts[0] != 'burst':
                continue
            r = random.Random(int(parts[1]))
            hits = total = 0
            for _ in range(int(parts[2])):
                if r.random() < 0.7:
                    rec = catalogue.get(f'item-{r.randrange(len(catalogue)):06d}')
                    hits += rec is not None
                    total += len(rec[2]) if rec else 0
                else:
                    lo = r.random()
                    at = bisect.bisect_left(index, (lo, ''))
                    for score, key in index[at:at + 20]:
                        total += catalogue[key][0] & 0xff
            with open(out, 'w') as replies:
                replies.write(f'done {hits} {total}\n')
