"""Hostile and broken clients against one real process, then proof it is unharmed.

One simple_server takes every abuse below in turn; afterwards it must answer normally, hold
exactly the descriptors it held before, and its resident memory must not have grown by more
than RSS_BOUND_KB (the bound docs/protocol.md states).
"""
import os
import random
import socket
import threading
import time

import pytest

from conftest import BIN, cli, open_fds, raw

RSS_BOUND_KB = 8 * 1024
# A real client is answered within a second; sanitizer runtimes slow everything several-fold.
LATENCY_BOUND_S = 3.0 if os.environ.get("HOTPATCH_SANITIZE") else 1.0


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def victim():
    from conftest import Proc
    p = Proc([BIN / "simple_server", "--interval-ms", "100"],
             env={"HOTPATCH_IDLE_TIMEOUT_MS": "3000", "HOTPATCH_WRITE_TIMEOUT_MS": "2000"})
    assert cli("-p", p.pid, "var", "get", "age").stdout == "10\n"
    p.fds_before = open_fds(p.pid)
    p.rss_before = rss_kb(p.pid)
    yield p
    p.stop()


def test_300_stalled_half_lines_do_not_delay_a_real_client(victim):
    stalled = []
    try:
        for _ in range(300):
            s = socket.socket(socket.AF_UNIX)
            s.connect(victim.socket)
            s.sendall(b"var set age 1")  # half a request, never finished
            stalled.append(s)
        time.sleep(0.2)
        start = time.monotonic()
        r = cli("-p", victim.pid, "var", "get", "age")
        elapsed = time.monotonic() - start
        assert r.stdout == "10\n"
        assert elapsed < LATENCY_BOUND_S, f"answered after {elapsed:.3f} s"
    finally:
        for s in stalled:
            s.close()


def test_3000_connect_garbage_close_cycles(victim):
    rnd = random.Random(6)
    for i in range(3000):
        s = socket.socket(socket.AF_UNIX)
        s.connect(victim.socket)
        if i % 3:
            s.sendall(bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 64))))
        s.close()
    assert cli("-p", victim.pid, "var", "get", "age").stdout == "10\n"


def test_one_mebibyte_line(victim):
    reply = raw(victim.socket, b"var set user_name " + b"y" * (1 << 20) + b"\n", timeout=10)
    assert reply == b"error: request line longer than 4096 bytes; nothing was done\n"
    assert cli("-p", victim.pid, "var", "get", "user_name").stdout == "myname\n"


def test_random_binary_streams(victim):
    rnd = random.Random(7)
    for _ in range(300):
        blob = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 9000)))
        reply = raw(victim.socket, blob, timeout=5, shut_write=True)
        assert reply.startswith(b"error: ") or reply.startswith(b'{"ok":false'), reply[:80]


def test_clients_that_never_read_their_replies(victim):
    hogs = []
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        s.connect(victim.socket)
        s.sendall(b"session\n" + b"help\n" * 500)
        hogs.append(s)
    start = time.monotonic()
    assert cli("-p", victim.pid, "var", "get", "age").stdout == "10\n"
    assert time.monotonic() - start < LATENCY_BOUND_S
    time.sleep(2.5)  # past the write timeout: the agent has dropped them
    for s in hogs:
        s.close()


def test_concurrent_abuse_while_real_clients_work(victim):
    stop = threading.Event()

    def abuse(seed):
        rnd = random.Random(seed)
        while not stop.is_set():
            try:
                raw(victim.socket, bytes(rnd.randrange(256) for _ in range(100)), timeout=1)
            except OSError:
                pass

    threads = [threading.Thread(target=abuse, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        for i in range(50):
            assert cli("-p", victim.pid, "var", "set", "age", str(i)).returncode == 0
        assert cli("-p", victim.pid, "var", "get", "age").stdout == "49\n"
    finally:
        stop.set()
        for t in threads:
            t.join()
        cli("-p", victim.pid, "var", "set", "age", "10")


def test_afterwards_the_process_is_unharmed(victim):
    assert victim.alive()
    assert cli("-p", victim.pid, "var", "get", "age").stdout == "10\n"
    victim.wait_output(r"user_name=myname age=10", start=len(victim.lines))
    fds = open_fds(victim.pid, expect=victim.fds_before, timeout=10)
    assert fds == victim.fds_before
    grown = rss_kb(victim.pid) - victim.rss_before
    if os.environ.get("HOTPATCH_SANITIZE"):
        return  # sanitizer runtimes keep freed memory in quarantine: RSS says nothing there
    assert grown < RSS_BOUND_KB, f"resident memory grew by {grown} KiB"
    print(f"rss before {victim.rss_before} KiB, growth {grown} KiB")
