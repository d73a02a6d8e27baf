#!/usr/bin/env bash
# `make run`: migrate, start the API and one worker (and a private Redis if none answers).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
mkdir -p var

if [ ! -f .env ]; then
  cp .env.example .env
  echo "run: created .env from .env.example (it enables the development API key)"
fi

# The app's own settings loader reads .env and the environment, and validates them.
REDIS_URL=$($BIN/python -c 'from src.config import get_settings; print(get_settings().redis_url)')

pids=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup INT TERM EXIT

if ! $BIN/python -m scripts.redis_ping "$REDIS_URL"; then
  target=$($BIN/python -m scripts.redis_ping --local-port "$REDIS_URL" || true)
  if [ -z "$target" ]; then
    echo "run: nothing answers at REDIS_URL=$REDIS_URL and it is not a local address." >&2
    echo "     Start Redis there or set REDIS_URL (in .env) to a Redis you can reach." >&2
    exit 1
  fi
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "run: nothing answers at REDIS_URL=$REDIS_URL and no redis-server is installed." >&2
    echo "     Install Redis (Debian/Ubuntu: apt-get install redis-server; macOS: brew install redis)" >&2
    echo "     or set REDIS_URL (in .env) to a Redis you can reach." >&2
    exit 1
  fi
  mkdir -p var/redis
  echo "run: starting a private redis-server on 127.0.0.1:$target (data in var/redis)"
  redis-server --bind 127.0.0.1 --port "$target" --dir var/redis --appendonly yes \
    --save "" --logfile redis.log &
  pids+=($!)
  for _ in $(seq 50); do $BIN/python -m scripts.redis_ping "$REDIS_URL" && break; sleep 0.1; done
fi

$BIN/alembic upgrade head
$BIN/uvicorn src.main:app --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" &
pids+=($!)
$BIN/arq src.arq.worker.WorkerSettings &
pids+=($!)
echo "run: API on http://${HOST:-127.0.0.1}:${PORT:-8000} (docs at /docs), one worker; Ctrl-C stops all"
# Stop everything as soon as one of them exits.
wait -n
