"""A stand-in agent for test_python_security.py: a process of its own (so the client's pid and
uid checks see a real server process, as the test arranges it) that records what it receives.

    fake_agent.py --path PATTERN [--path PATTERN...] [--record FILE] [--mkdir] [--chmod MODE]
                  [--ruid R --euid E] [--hand-to FD] [--child-holds] [--lifetime S]

Each PATTERN (``%p`` = its own pid) is bound and listened on. It prints ``ready PID`` (and
the holding child's pid with --child-holds) on stdout once listening. For every connection it
appends one JSON line to FILE: the path it came in on and each chunk received, with the
``(st_dev, st_ino)`` and first bytes of every descriptor that came with the chunk
(SCM_RIGHTS). It answers like an agent: ``session`` and ``quit``, and any other request with
``{"ok": true, "message": REQUEST, "text": REQUEST + "\\n"}``.

--ruid/--euid: run with that real and effective uid (from root), so SO_PEERCRED (the
effective uid at listen) and /proc/PID/status (real uid) disagree. --hand-to FD: send the
listener over the Unix socket FD and exit at once (the listener outlives its creator).
--child-holds: fork a child that only holds the listeners, and serve in the parent.
"""
import argparse
import json
import os
import select
import socket
import sys
import time

CHUNK = 65536
MAX_FDS = 8


def parse_args(argv):
    p = argparse.ArgumentParser()
    p.add_argument("--path", action="append", required=True)
    p.add_argument("--record")
    p.add_argument("--mkdir", action="store_true")
    p.add_argument("--chmod", type=lambda text: int(text, 8))
    p.add_argument("--ruid", type=int)
    p.add_argument("--euid", type=int)
    p.add_argument("--hand-to", type=int)
    p.add_argument("--child-holds", action="store_true")
    p.add_argument("--lifetime", type=float, default=60.0)
    return p.parse_args(argv)


def listen(pattern, args):
    path = pattern.replace("%p", str(os.getpid()))
    if args.mkdir:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    if args.chmod is not None:
        os.chmod(path, args.chmod)
    s.listen(16)
    return path, s


def describe(fd):
    st = os.fstat(fd)
    try:
        head = os.pread(fd, 16, 0).decode("latin-1")
    except OSError:
        head = None
    return {"dev": st.st_dev, "ino": st.st_ino, "head": head}


def answer(line):
    words = line.split(b" ")
    if words[0] == b"json":
        words = words[1:]
    if words == [b"session"]:
        return {"ok": True, "protocol": 1, "message": "session started", "text": "session started\n"}
    if words == [b"quit"]:
        return {"ok": True, "message": "bye", "text": "bye\n"}
    request = line.decode("utf-8", "replace")
    return {"ok": True, "message": request, "text": request + "\n"}


def serve_connection(conn, path, record):
    """Reads and answers until the client closes (or 5 s of silence); records every chunk."""
    chunks, buf, in_session = [], b"", False
    conn.settimeout(5)
    with conn:
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(conn, CHUNK, MAX_FDS)
            except OSError:
                break
            chunks.append({"data": data.decode("latin-1"), "fds": [describe(fd) for fd in fds]})
            for fd in fds:
                os.close(fd)
            if not data:
                break
            buf += data
            done = False
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                in_session = in_session or line == b"session"
                conn.sendall((json.dumps(answer(line)) + "\n").encode())
                if not in_session or line == b"quit":
                    done = True
                    break
            if done:
                break
    if record is not None:
        record.write(json.dumps({"path": path, "chunks": chunks}) + "\n")
        record.flush()


def serve(listeners, record, lifetime):
    deadline = time.monotonic() + lifetime
    by_fd = {s.fileno(): (path, s) for path, s in listeners}
    while time.monotonic() < deadline:
        ready, _, _ = select.select(list(by_fd), [], [], 0.2)
        for fd in ready:
            path, s = by_fd[fd]
            conn, _ = s.accept()
            serve_connection(conn, path, record)


def main(argv):
    args = parse_args(argv)
    # Opened before dropping root, and never created: the test made it (O_CREAT on another
    # user's file in a sticky directory is refused where fs.protected_regular is set).
    record = (os.fdopen(os.open(args.record, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC), "a")
              if args.record else None)
    if args.euid is not None:
        os.setresuid(args.ruid if args.ruid is not None else args.euid, args.euid, args.euid)
    listeners = [listen(pattern, args) for pattern in args.path]
    if args.hand_to is not None:
        channel = socket.socket(fileno=args.hand_to)
        socket.send_fds(channel, [b"L"], [s.fileno() for _, s in listeners])
        print(f"ready {os.getpid()}", flush=True)
        os._exit(0)
    child = None
    if args.child_holds:
        child = os.fork()
        if child == 0:
            time.sleep(args.lifetime)
            os._exit(0)
    print(f"ready {os.getpid()}" + (f" {child}" if child else ""), flush=True)
    serve(listeners, record, args.lifetime)


if __name__ == "__main__":
    main(sys.argv[1:])
