#!/usr/bin/env python3
"""Prints a free loopback TCP port below Linux's ephemeral range (32768-60999).

Port 0 would hand out an ephemeral port, which an outgoing connection of another process can take
between this check and the server's bind (CI saw "Address already in use"). Below the range only
listeners compete, and those the bind check sees.

Usage: free-port.py [COUNT [ALSO_OFFSET]]
  COUNT        the first of COUNT consecutive free ports (default 1)
  ALSO_OFFSET  ports ALSO_OFFSET higher must be free too (a Redis Cluster's bus ports: 10000)
"""
import random
import socket
import sys

count = int(sys.argv[1]) if len(sys.argv) > 1 else 1
also = int(sys.argv[2]) if len(sys.argv) > 2 else None
offsets = [0] if also is None else [0, also]
highest = 32000 - count - max(offsets)


def free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


for _ in range(200):
    base = random.randrange(10000, highest)
    if all(free(base + i + offset) for i in range(count) for offset in offsets):
        print(base)
        break
else:
    raise SystemExit(f"free-port: no {count} free port(s) in 10000-31999")
