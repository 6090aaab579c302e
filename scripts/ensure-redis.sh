#!/usr/bin/env bash
# Start a throwaway local Redis on 127.0.0.1:6379 if none answers (installs it if missing).
set -euo pipefail
if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then exit 0; fi
if ! command -v redis-server >/dev/null 2>&1; then
  echo "ensure-redis: installing redis-server" >&2
  (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null
fi
mkdir -p /tmp/hydraguard-redis
redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
  --dir /tmp/hydraguard-redis --logfile /tmp/hydraguard-redis/redis.log
for _ in $(seq 1 50); do
  redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG && exit 0
  sleep 0.1
done
echo "ensure-redis: redis did not start" >&2
exit 1
