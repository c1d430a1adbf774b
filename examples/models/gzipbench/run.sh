#!/bin/sh
# Compress the dataset with gzip -LEVEL and hash fresh random data; report MB per CPU second
# (the CPU time of the work, from the shell's `times`, as hashbench does).
set -e
mkdir -p /tmp  # FROM scratch: no /tmp until we make one
level=${LEVEL:-1}
size=$(wc -c < /data/dataset.txt)
# `times` in this shell, not in a $(...) subshell: its second line is the CPU time of the
# children this shell has waited for (user, system).
cpu() { awk 'NR == 2 { split($1, u, "m"); split($2, s, "m"); print u[1] * 60 + u[2] + s[1] * 60 + s[2] }' "$1"; }
times > /tmp/times.0
gzip "-$level" -c /data/dataset.txt > /tmp/packed.gz
packed=$(wc -c < /tmp/packed.gz)
dd if=/dev/urandom bs=1M count=8 2>/dev/null | sha256sum > /dev/null
times > /tmp/times.1
c0=$(cpu /tmp/times.0) c1=$(cpu /tmp/times.1)
echo "compressed $size bytes to $packed bytes (level $level), hashed 8 MB of random data"
awk -v s="$size" -v a="$c0" -v b="$c1" \
    'BEGIN { t = b - a; if (t < 0.01) t = 0.01; printf "performance: %.1f MB/s\n", (s + 8 * 1048576) / 1048576 / t }'
