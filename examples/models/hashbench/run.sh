#!/bin/sh
# Hash the weights ROUNDS times, reading BATCH_SIZE MB per read; report MB per CPU second
# (the CPU time of the work, from the shell's `times`: neighbours on a shared machine move
# it far less than they move wall time).
# SLOWDOWN=P (percent, default 0) adds P% more hashing that is not counted: a deliberate
# regression for the performance-tracking walk-through (P=25 costs 20% of the throughput).
set -e
mkdir -p /tmp  # FROM scratch: no /tmp until we make one
batch=${BATCH_SIZE:-1}
rounds=${ROUNDS:-1}
slowdown=${SLOWDOWN:-0}
size=$(wc -c < /model/weights.bin)
expected=$(cut -d' ' -f1 /model/weights.sha256)
# `times` in this shell, not in a $(...) subshell: its second line is the CPU time of the
# children this shell has waited for (user, system).
cpu() { awk 'NR == 2 { split($1, u, "m"); split($2, s, "m"); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$1"; }
times > /tmp/times.0
i=0
while [ "$i" -lt "$rounds" ]; do
    got=$(dd if=/model/weights.bin bs="${batch}M" 2>/dev/null | sha256sum | cut -d' ' -f1)
    [ "$got" = "$expected" ] || { echo "checksum mismatch: $got" >&2; exit 3; }
    i=$((i + 1))
done
extra=$((size / 1048576 * rounds * slowdown / 100))  # MB hashed and not counted
while [ "$extra" -gt 0 ]; do
    n=$((extra > 32 ? 32 : extra))
    dd if=/model/weights.bin bs=1M count="$n" 2>/dev/null | sha256sum > /dev/null
    extra=$((extra - n))
done
times > /tmp/times.1
c0=$(cpu /tmp/times.0) c1=$(cpu /tmp/times.1)
echo "hashed $rounds x $size bytes in batches of ${batch} MB in $(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }') CPU seconds"
awk -v s="$size" -v r="$rounds" -v a="$c0" -v b="$c1" \
    'BEGIN { t = b - a; if (t < 0.01) t = 0.01; printf "performance: %.1f MB/s\n", s * r / 1048576 / t }'
