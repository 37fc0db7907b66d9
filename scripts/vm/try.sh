#!/bin/sh
# Compiles scripts/vm/try.ts with src/vm/ into a scratch directory and runs it: the repo's
# tsconfig only builds src/, and this driver is not part of the package.
# usage: scripts/vm/try.sh [--modes eager,mmap,floor,faultline] [--cache warm,cold] [--ram-mib 256]
#        [--workload-mib N] [--batch-pages 1,16] [--policy ondemand,readahead:15] [--work DIR] [--image DIR] [--reuse-checkpoint] [--repeat N]
set -eu
repo=$(cd "$(dirname "$0")/../.." && pwd)
out=${FL_TRY_OUT:-/tmp/fl-vm-try-dist}
mkdir -p "$out"
(cd "$repo" && npx tsc --outDir "$out" --rootDir "$repo" --module NodeNext --moduleResolution NodeNext \
  --target ES2022 --strict --skipLibCheck --types node "$repo/scripts/vm/try.ts")
echo '{"type":"module"}' >"$out/package.json"
exec node "$out/scripts/vm/try.js" --repo "$repo" "$@"
