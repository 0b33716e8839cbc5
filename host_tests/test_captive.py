"""The access point's captive portal: DNS answers (pure), and on the Unix port the responder
plus the web server's redirect, as a phone's connectivity check meets them."""

from __future__ import annotations

import socket
import struct
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import captive
import pytest
from fwrun import Background, Firmware, free_port, make_world


def query(name: str, qtype: int = 1, ident: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return (
        struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0)
        + labels
        + b"\x00"
        + struct.pack(">HH", qtype, 1)
    )


def test_an_a_query_gets_the_board_address() -> None:
    q = query("connectivitycheck.gstatic.com")
    reply = captive.answer(q)
    assert reply is not None and reply[:2] == q[:2]
    flags, qd, an = struct.unpack(">HHH", reply[2:8])
    assert flags & 0x8000 and flags & 0x0400 and flags & 0x0100  # reply, authoritative, RD
    assert (qd, an) == (1, 1)
    assert reply[len(q) :] == b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x00\x00\x04\xc0\xa8\x04\x01"


def test_aaaa_gets_no_record_and_junk_gets_nothing() -> None:
    reply = captive.answer(query("captive.apple.com", qtype=28))
    assert reply is not None and struct.unpack(">H", reply[6:8])[0] == 0
    assert captive.answer(b"") is None
    assert captive.answer(b"\x00" * 11) is None
    assert captive.answer(query("x.y")[:-3]) is None  # cut short
    as_reply = bytearray(query("x.y"))
    as_reply[2] |= 0x80
    assert captive.answer(bytes(as_reply)) is None  # a reply, not a question
    two = bytearray(query("x.y"))
    two[5] = 2
    assert captive.answer(bytes(two)) is None


@pytest.mark.parametrize("path", ["/generate_204", "/hotspot-detect.html", "/connecttest.txt"])
def test_probes_on_the_access_point_reach_the_page(
    tmp_path: Path, path: str, monkeypatch: Any
) -> None:
    dns_port = free_port()
    monkeypatch.setenv("IP22_DNS_PORT", str(dns_port))
    with Background(make_world()) as sim, Firmware(tmp_path, sim.endpoints["charger"], {}) as fw:
        fw.wait_for(lambda st: st["wifi"]["mode"] == "ap", 10, "the access point")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            s.sendto(query("connectivitycheck.gstatic.com"), ("127.0.0.1", dns_port))
            reply, _ = s.recvfrom(512)
        assert reply.endswith(b"\xc0\xa8\x04\x01")  # 192.168.4.1
        request = urllib.request.Request("http://127.0.0.1:%d%s" % (fw.port, path))

        class NoFollow(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any) -> None:
                return None

        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.build_opener(NoFollow).open(request, timeout=5)
        assert caught.value.code == 302
        assert caught.value.headers["Location"] == "http://192.168.4.1/"
        with pytest.raises(urllib.error.HTTPError) as caught:  # the API keeps its 404
            urllib.request.urlopen("http://127.0.0.1:%d/api/nothing" % fw.port, timeout=5)
        assert caught.value.code == 404
