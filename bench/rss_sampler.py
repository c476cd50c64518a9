"""Samples another process's resident set size until its stdin closes: `python rss_sampler.py PID PERIOD_S`.

Prints "ready" once sampling has started, then, after stdin reaches EOF, "<first RSS> <peak RSS>" in
bytes. Run as a subprocess so the sampling thread is not one more thread inside the measured process.
"""

import select
import sys

import psutil


def main() -> int:
    pid, period = int(sys.argv[1]), float(sys.argv[2])
    proc = psutil.Process(pid)
    first = peak = proc.memory_info().rss
    print("ready", flush=True)
    while True:
        readable, _, _ = select.select([sys.stdin], [], [], period)
        peak = max(peak, proc.memory_info().rss)
        if readable and not sys.stdin.read(1):  # EOF: the parent's step is done
            break
    print(first, peak, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
