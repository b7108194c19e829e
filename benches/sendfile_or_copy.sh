#!/usr/bin/env bash
# Warm blob GETs with and without sendfile, side by side (outside CI):
#
#   benches/sendfile_or_copy.sh [ROUNDS] [MIB] [CLIENTS]     # defaults 15 512 8
#
# Starts, on loopback in a temp dir: Debian's docker-registry (distribution 2.8) holding one
# MIB-MiB blob; two pullgate release builds in front of it, `[server] sendfile = true` and
# `false`, both filled once; nginx serving the same file with `sendfile on` and `off`. Then
# benches/support/warm_clients.py GETs the blob from all five, interleaved round by round:
# one client for ROUNDS rounds, then CLIENTS at once for 5, printing GB/s (median and
# min-max), the client's busy share and each server's CPU seconds per GB. This is what
# decided the default of `[server] sendfile` (benches/README.md, "sendfile or copy").
# Missing docker-registry, nginx or curl are installed with apt-get (root). Everything it
# started is stopped and the temp dir removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-15}
mib=${2:-512}
clients=${3:-8}
for n in "$rounds" "$mib" "$clients"; do
    case $n in '' | *[!0-9]*) echo "sendfile_or_copy.sh: ROUNDS, MIB and CLIENTS are numbers" >&2; exit 2 ;; esac
done
for tool in docker-registry nginx curl python3; do
    if ! command -v "$tool" >/dev/null; then
        [ "$(id -u)" = 0 ] || { echo "sendfile_or_copy.sh: $tool is missing (apt-get install it)" >&2; exit 1; }
        apt-get install -y -q "$tool" >/dev/null
    fi
done
cargo build --release --quiet
bin=$(pwd)/target/release/pullgate

dir=$(mktemp -d /tmp/pullgate-sendfile-or-copy.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_http() { # url
    for _ in $(seq 100); do curl -s -o /dev/null "$1" && return 0; sleep 0.1; done
    echo "sendfile_or_copy.sh: $1 did not answer" >&2; exit 1
}

# The upstream, with the blob.
reg_port=$(free_port)
printf 'version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$dir/registry" "$reg_port" >"$dir/registry.yml"
docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$reg_port/v2/"
mkdir -p "$dir/www"
head -c $((mib * 1024 * 1024)) /dev/urandom >"$dir/www/blob"
digest=sha256:$(sha256sum "$dir/www/blob" | cut -d' ' -f1)
upload=$(curl -sf -D - -o /dev/null -X POST "http://127.0.0.1:$reg_port/v2/bench/blob/blobs/uploads/" |
    tr -d '\r' | awk 'tolower($1) == "location:" { print $2 }')
curl -sf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' --data-binary @"$dir/www/blob" \
    "$upload&digest=$digest"

# pullgate with sendfile on and off, each filled once (verified by its digest).
targets=("distribution=${pids[0]}@127.0.0.1:$reg_port/v2/bench/blob/blobs/$digest")
for sendfile in true false; do
    d=$dir/pullgate-$sendfile
    mkdir -p "$d"
    printf 'listen = "127.0.0.1:0"\ndata_dir = "%s/data"\n[server]\nsendfile = %s\n[cache]\ntag_ttl = "1h"\n[[upstream]]\nname = "registry.redhat.io"\nurl = "http://127.0.0.1:%s"\n' \
        "$d" "$sendfile" "$reg_port" >"$d/pullgate.toml"
    "$bin" serve --config "$d/pullgate.toml" >"$d/log" 2>&1 &
    pids+=($!)
    url=""
    for _ in $(seq 100); do
        url=$(grep -o 'listening on http://[0-9.:]*' "$d/log" | head -1 | sed 's/listening on http:\/\///') || true
        [ -n "$url" ] && break
        sleep 0.1
    done
    [ -n "$url" ] || { echo "sendfile_or_copy.sh: pullgate did not start:" >&2; cat "$d/log" >&2; exit 1; }
    path=/v2/registry.redhat.io/bench/blob/blobs/$digest
    got=$(curl -sf "http://$url$path" | sha256sum | cut -d' ' -f1)
    [ "sha256:$got" = "$digest" ] || { echo "sendfile_or_copy.sh: pullgate's fill differs" >&2; exit 1; }
    targets+=("pullgate-sendfile-$sendfile=${pids[-1]}@$url$path")
done

# nginx serving the file, sendfile on and off.
for sendfile in on off; do
    port=$(free_port)
    cat >"$dir/nginx-$sendfile.conf" <<EOF
daemon off; master_process off; worker_processes 1; pid $dir/nginx-$sendfile.pid;
error_log $dir/nginx-$sendfile.log;
events { worker_connections 64; }
http {
  access_log off; sendfile $sendfile; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path $dir; proxy_temp_path $dir; fastcgi_temp_path $dir;
  uwsgi_temp_path $dir; scgi_temp_path $dir;
  server { listen 127.0.0.1:$port; root $dir/www; }
}
EOF
    nginx -p "$dir" -c "$dir/nginx-$sendfile.conf" &
    pids+=($!)
    wait_http "http://127.0.0.1:$port/blob"
    targets+=("nginx-sendfile-$sendfile=${pids[-1]}@127.0.0.1:$port/blob")
done

echo "sendfile_or_copy.sh: ${mib} MiB blob, $(nproc) cores, kernel $(uname -r)"
python3 benches/support/warm_clients.py "$rounds" "$clients" "${targets[@]}"
