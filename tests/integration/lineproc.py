"""A helper process spoken to in lines (the Kafka mock cluster of kafka_helpers, the browser
driver of browser_helpers): requests go to its stdin, its answers come one line each on its
stdout, its stderr is kept in a log file for the failure message. Every read is bounded."""

import os
import select
import subprocess
import time


class LineProcess:
    """Attributes: proc (the Popen), log_path. Subclasses answer their own protocol on top of
    send() and readline()."""

    def __init__(self, args, log_path, cwd=None):
        self.log_path = str(log_path)
        self._logf = open(self.log_path, "wb")
        self.proc = subprocess.Popen(args, cwd=cwd, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._logf, bufsize=0)
        self._buf = b""

    def logs(self):
        """The last 4000 characters of its stderr."""
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def send(self, line):
        self.proc.stdin.write((line + "\n").encode())
        self.proc.stdin.flush()

    def readline(self, timeout):
        """One stdout line as bytes (without the newline), or None on timeout or EOF."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line

    def quit(self):
        """Asks the process to exit: the line "quit" (subclasses may wait for an answer)."""
        try:
            self.send("quit")
        except OSError:
            pass

    def close(self):
        """quit(), then waits up to 5 s (kills it after that) and closes its pipes and log."""
        if self.proc.poll() is None:
            self.quit()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass
        self._logf.close()
