#!/bin/sh
# Compress the dataset with gzip -LEVEL and hash fresh random data; report MB/s.
set -e
level=${LEVEL:-1}
size=$(wc -c < /data/dataset.txt)
read t0 _ < /proc/uptime
packed=$(gzip "-$level" -c /data/dataset.txt | wc -c)
dd if=/dev/urandom bs=1M count=8 2>/dev/null | sha256sum > /dev/null
read t1 _ < /proc/uptime
echo "compressed $size bytes to $packed bytes (level $level), hashed 8 MB of random data"
awk -v s="$size" -v a="$t0" -v b="$t1" \
    'BEGIN { t = b - a; if (t < 0.01) t = 0.01; printf "performance: %.1f MB/s\n", (s + 8 * 1048576) / 1048576 / t }'
