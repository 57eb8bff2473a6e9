#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests: Debian's packages (installed when missing), a new cluster in DIR,
# listening on a loopback port only, trusting local connections (nothing but this machine's own tests reach it).
#   scripts/postgres.sh start DIR [PORT]   prints the server's URL, e.g. postgres://postgres@127.0.0.1:55432/
#                                          (without PORT, a free one)
#   scripts/postgres.sh stop DIR
set -euo pipefail
command=${1:?usage: postgres.sh start|stop DIR [PORT]}
dir=${2:?usage: postgres.sh start|stop DIR [PORT]}
port=${3:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}

bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
if [ -z "$(bin_dir)" ]; then
  as_root=$([ "$(id -u)" = 0 ] || echo sudo)
  $as_root apt-get update >&2 && $as_root apt-get install -y postgresql >&2
fi
bin=$(bin_dir)
# PostgreSQL refuses to run as root: as root, the cluster belongs to the packages' `postgres` user.
as_owner() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

case $command in
  start)
    mkdir -p "$dir"
    if [ "$(id -u)" = 0 ]; then chown postgres "$dir"; fi
    as_owner "$bin/initdb" --pgdata="$dir/data" --username=postgres --auth=trust --encoding=UTF8 \
      --locale=C.UTF-8 >"$dir/initdb.log"
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait \
      --options="-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories='$dir' \
                 -c max_connections=400 -c fsync=on" start >&2
    echo "postgres://postgres@127.0.0.1:$port/"
    ;;
  stop)
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --mode=fast stop >&2
    ;;
  *) echo "usage: postgres.sh start|stop DIR [PORT]" >&2; exit 2 ;;
esac
