#!/usr/bin/env python3
"""Warm GETs of one blob from several servers, interleaved round by round, for
benches/sendfile_or_copy.sh (outside CI).

    warm_clients.py ROUNDS CLIENTS NAME=PID@HOST:PORT/PATH ...

First one client per server on a kept-alive connection (one untimed round, then ROUNDS
timed ones); then CLIENTS at once per server (5 rounds), each on its own connection and
thread. Prints per server: median [min-max] GB/s, the client's CPU over its wall time,
and the server's CPU seconds per GB (from /proc/PID/stat). The client is as cheap as a
Python client gets: `recv_into` a 1 MiB buffer; the length is checked against
Content-Length.
"""
import os
import socket
import statistics
import sys
import threading
import time

TICK = os.sysconf("SC_CLK_TCK")


def server_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def connect(hostport):
    host, port = hostport.split(":")
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def get(s, hostport, path, buf):
    """One GET on `s`; the body's length."""
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: {hostport}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        more = s.recv(4096)
        if not more:
            raise SystemExit(f"{hostport}: closed before the response head")
        head += more
    head, rest = head.split(b"\r\n\r\n", 1)
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise SystemExit(f"{hostport}{path}: {status.decode(errors='replace')}")
    lengths = [l.split(b":", 1)[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")]
    if not lengths:
        raise SystemExit(f"{hostport}{path}: no Content-Length")
    length, got = int(lengths[0]), len(rest)
    view = memoryview(buf)
    while got < length:
        n = s.recv_into(view)
        if n == 0:
            raise SystemExit(f"{hostport}{path}: body cut at {got} of {length} bytes")
        got += n
    return length


def parse(arg):
    name, rest = arg.split("=", 1)
    pid, url = rest.split("@", 1)
    hostport, path = url.split("/", 1)
    return name, int(pid), hostport, "/" + path


def one_client(targets, rounds):
    buf = bytearray(1 << 20)
    conns = {name: connect(hp) for name, _, hp, _ in targets}
    speeds = {name: [] for name, *_ in targets}
    busy = {name: 0.0 for name, *_ in targets}
    cpu = {name: 0.0 for name, *_ in targets}
    for r in range(rounds + 1):
        for name, pid, hostport, path in targets:
            c0, s0, t0 = time.thread_time(), server_cpu(pid), time.perf_counter()
            n = get(conns[name], hostport, path, buf)
            wall = time.perf_counter() - t0
            if r:
                speeds[name].append(n / wall / 1e9)
                busy[name] += (time.thread_time() - c0) / wall / rounds
                cpu[name] += (server_cpu(pid) - s0) / (n / 1e9) / rounds
    print(f"one client, {rounds} rounds:")
    for name, *_ in targets:
        v = speeds[name]
        print(f"  {name:24} {statistics.median(v):.2f} GB/s [{min(v):.2f}-{max(v):.2f}]"
              f"  client busy {busy[name]:.2f}  server {cpu[name]:.2f} CPU s/GB")


def many_clients(targets, clients, rounds=5):
    speeds = {name: [] for name, *_ in targets}
    cpu = {name: 0.0 for name, *_ in targets}
    for _ in range(rounds):
        for name, pid, hostport, path in targets:
            got = [0] * clients
            start = threading.Barrier(clients + 1)

            def client(i):
                s = connect(hostport)
                start.wait()
                got[i] = get(s, hostport, path, bytearray(1 << 20))
                s.close()

            threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
            for t in threads:
                t.start()
            start.wait()
            s0, t0 = server_cpu(pid), time.perf_counter()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            if sum(got) != clients * got[0] or got[0] == 0:
                raise SystemExit(f"{name}: a client failed")
            speeds[name].append(sum(got) / wall / 1e9)
            cpu[name] += (server_cpu(pid) - s0) / (sum(got) / 1e9) / rounds
    print(f"{clients} clients at once, {rounds} rounds (aggregate):")
    for name, *_ in targets:
        v = speeds[name]
        print(f"  {name:24} {statistics.median(v):.2f} GB/s [{min(v):.2f}-{max(v):.2f}]"
              f"  server {cpu[name]:.2f} CPU s/GB")


def main():
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    rounds, clients = int(sys.argv[1]), int(sys.argv[2])
    targets = [parse(a) for a in sys.argv[3:]]
    one_client(targets, rounds)
    if clients > 1:
        many_clients(targets, clients)


if __name__ == "__main__":
    main()
