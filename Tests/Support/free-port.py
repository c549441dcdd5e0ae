#!/usr/bin/env python3
"""Prints a free loopback TCP port below Linux's ephemeral range (32768-60999).

Port 0 would hand out an ephemeral port, which an outgoing connection of another process can take
between this check and the server's bind (CI saw "Address already in use"). Below the range only
listeners compete, and those the bind check sees.
"""
import random
import socket

for _ in range(200):
    port = random.randrange(10000, 32000)
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        print(port)
        break
else:
    raise SystemExit("free-port: no free port in 10000-31999")
