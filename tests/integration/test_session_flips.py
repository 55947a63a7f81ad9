"""16 threads call a function while 10,000 upgrade/rollback flips run over one session.

tests/stress/session_host.c is a real program linked with libhotpatch: its threads call
add_func without pause and check that every result is exactly the original's (a + b) or the
upgrade's (a * b + 100, examples/add_func_patch1.c). One client connection, in session mode
(docs/protocol.md), loads the patch library and then alternates `func upgrade p1 add_func` and
`func rollback add_func` FLIPS times (HOTPATCH_SESSION_FLIPS, default 10000; fewer under
ASan, set by CTest). Every reply must be ok; the process must survive, answer afterwards, and
report no wrong result when it is told to stop.

One refusal is legitimate: on an overloaded machine a running thread can fail to reach its
stop within the engine's deadline, and the engine then refuses the write with "did not stop
within", having changed nothing. Such a flip is sent again (at most MAX_RETRIES in all, and the
state it left must be the one before); any other error fails the test.
"""
import os

from conftest import BIN, LIB, session

P1 = LIB / "libadd_func_patch1.so"
FLIPS = int(os.environ.get("HOTPATCH_SESSION_FLIPS", "10000"))
THREADS = 16
MAX_RETRIES = max(10, FLIPS // 100)


def test_flips_over_one_session(spawn):
    host = spawn([BIN / "session_host", str(THREADS)])
    host.wait_output(r"^ready$")
    s = session(host.socket)
    s.sock.settimeout(30)
    assert s.opened["ok"], s.opened
    reply = s.send(f"lib load p1 {P1}")
    assert reply["ok"], reply
    retries = 0
    for flip in range(FLIPS):
        line = "func upgrade p1 add_func" if flip % 2 == 0 else "func rollback add_func"
        reply = s.send(line)
        while not reply["ok"] and "did not stop within" in reply.get("error", "") \
                and "nothing changed" in reply["error"] and retries < MAX_RETRIES:
            retries += 1
            reply = s.send(line)
        assert reply["ok"], (flip, line, reply, retries)
        assert reply["depth"] == (1 if flip % 2 == 0 else 0), (flip, reply)
    listed = s.send("func list")
    assert listed["ok"], listed
    assert [i["depth"] for i in listed["items"] if i["name"] == "add_func"] == [FLIPS % 2]
    bye = s.send("quit")
    assert bye["ok"], bye
    s.close()
    assert host.alive()
    host.stop()
    code = host.wait_exit(timeout=30)
    summary = [l for l in host.lines if l.startswith("calls=")]
    assert summary and " wrong=0 " in summary[-1] + " " and "idle_threads=0" in summary[-1], \
        (summary, host.err_lines[-5:])
    assert code == 0, (code, host.err_lines[-5:])
