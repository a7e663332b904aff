#!/usr/bin/env python3
"""Router advertisements for the bridge test: `send IFACE` sends three
RAs to all nodes on IFACE; `count SECONDS` counts the RAs this host
receives within SECONDS and prints the number."""
import socket
import struct
import sys
import time

RA = 134


def send(iface):
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    index = socket.if_nametoindex(iface)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, index)
    # type, code, checksum (the kernel fills it in), hop limit, flags,
    # router lifetime, reachable time, retransmission timer
    ra = struct.pack("!BBHBBHII", RA, 0, 0, 64, 0, 1800, 0, 0)
    sent, deadline = 0, time.time() + 5
    while sent < 3 and time.time() < deadline:
        try:
            s.sendto(ra, ("ff02::1", 0, 0, index))
            sent += 1
        except OSError:
            pass  # link-local address still tentative (DAD)
        time.sleep(0.2)
    print(sent)


def count(seconds):
    s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    deadline = time.time() + seconds
    n = 0
    while True:
        left = deadline - time.time()
        if left <= 0:
            break
        s.settimeout(left)
        try:
            data = s.recv(2048)
        except socket.timeout:
            break
        if data and data[0] == RA:
            n += 1
    print(n)


if __name__ == "__main__":
    if sys.argv[1] == "send":
        send(sys.argv[2])
    else:
        count(float(sys.argv[2]))
