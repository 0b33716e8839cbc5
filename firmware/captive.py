"""The access point's captive portal: a DNS responder that answers every name with the board's
own address, so a phone that joins IP22-XXXX opens the status page by itself (its connectivity
probe lands on our web server, which redirects it to "/"). Runs only while the access point is
open. The answer format is pure (`answer()`), the socket loop is small.
"""

import asyncio
import socket

AP_IP = "192.168.4.1"
TTL_S = 0  # nothing stale stays cached once the home WiFi is joined
QTYPE_A, QTYPE_ANY = 1, 255
POLL_S = 0.05


def answer(query, ip=AP_IP):
    """The reply to one DNS query (bytes), or None for what is not a plain query."""
    if len(query) < 12 or query[2] & 0x80 or query[2] & 0x78:  # a reply, or not QUERY
        return None
    if query[4:6] != b"\x00\x01":  # exactly one question
        return None
    end = 12
    while end < len(query) and query[end]:  # the name's labels
        if query[end] & 0xC0:
            return None  # compression in a question: not from a normal resolver
        end += query[end] + 1
    end += 5  # the zero label, type, class
    if end > len(query):
        return None
    qtype = query[end - 4] << 8 | query[end - 3]
    found = qtype in (QTYPE_A, QTYPE_ANY)
    flags = bytes([0x84 | (query[2] & 0x01), 0x80])  # QR, AA, RD copied; RA; NOERROR
    counts = b"\x00\x01" + (b"\x00\x01" if found else b"\x00\x00") + b"\x00\x00\x00\x00"
    reply = query[:2] + flags + counts + query[12:end]
    if found:
        address = bytes(int(part) for part in ip.split("."))
        reply += b"\xc0\x0c\x00\x01\x00\x01" + TTL_S.to_bytes(4, "big") + b"\x00\x04" + address
    return reply


class Responder:
    def __init__(self, port=53, ip=AP_IP, host="0.0.0.0"):
        self.port = port
        self.ip = ip
        self.host = host
        self.answered = 0
        self.dropped = 0
        self.sock = None

    async def run(self, is_open):
        """Answer while `is_open()`; the socket is closed while the access point is closed."""
        while True:
            if not is_open():
                self.close()
                await asyncio.sleep(1)
                continue
            if self.sock is None:
                self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                self.sock.bind(socket.getaddrinfo(self.host, self.port)[0][-1])
                self.sock.setblocking(False)
            try:
                query, sender = self.sock.recvfrom(512)
            except OSError:  # nothing waiting (EAGAIN)
                await asyncio.sleep(POLL_S)
                continue
            reply = answer(query, self.ip)
            if reply is None:
                self.dropped += 1
                continue
            try:
                self.sock.sendto(reply, sender)
                self.answered += 1
            except OSError:
                self.dropped += 1

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
