#!/bin/sh
# Counts up in the named volume, so the count survives new releases.
n=$(cat /data/count 2>/dev/null || echo 0)
while true; do
  n=$((n + 1))
  echo "$n" > /data/count
  echo "${GREETING:-tick} $n"
  sleep "${INTERVAL:-10}"
done
