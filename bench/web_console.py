#!/usr/bin/env python3
"""The web console's cost, against `markov up --no-web` in the same run (bench/RESULTS.md, "Web console").

  bench/web_console.py BINARY [--rounds N] [--messages N] [--idle SECONDS]

- The page's load size: every file the page fetches to start (the HTML, its script and style sheet, /api/info).
- CPU while idle, over --idle seconds (default 30) after a 5 s settle: `--no-web`; the console with no page open;
  the console with one page listening (its event stream, one sample a second).
- CPU and wall time of importing a DiscordChatExporter file of --messages (default 300,000) Discord-shaped
  messages with `--import`: `--no-web`, against the console with one page listening the whole time.

CPU is utime + stime from /proc of the markov process and of its private redis-server, medians over --rounds
(default 3) alternating rounds.
"""
import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

TICK = os.sysconf('SC_CLK_TCK')


def cpu_seconds(pid):
    with open(f'/proc/{pid}/stat') as handle:
        fields = handle.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


class Up:
    def __init__(self, binary, web, imports=()):
        self.data = tempfile.mkdtemp(prefix='markov-bench-web-')
        arguments = [binary, 'up', '--data', self.data] + (['--web-port', '0'] if web else ['--no-web'])
        for path in imports:
            arguments += ['--import', path]
        env = {k: v for k, v in os.environ.items() if not k.startswith(('REDIS_', 'MARKOV_', 'DISCORD_'))}
        self.started = time.monotonic()
        self.process = subprocess.Popen(arguments, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, env=env)
        self.url = None
        self.console_at = None
        self.events = threading.Event()
        self.greeted = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.process.stdout:
            line = raw.decode('utf-8', 'replace')
            if line.startswith('web console: '):
                self.url = line.split(': ', 1)[1].strip()
                self.events.set()
            if line.startswith('markov console:'):
                self.console_at = time.monotonic()
                self.greeted.set()

    def redis_pid(self):
        for _ in range(100):
            try:
                with open(os.path.join(self.data, 'redis.pid')) as handle:
                    return int(handle.read().strip())
            except (OSError, ValueError):
                time.sleep(0.1)
        raise RuntimeError('no private redis-server')

    def cpu(self):
        return cpu_seconds(self.process.pid) + cpu_seconds(self.redis_pid())

    def listen(self):
        """A page's event stream, read until the process ends."""
        self.events.wait(60)
        parts = urllib.parse.urlsplit(self.url)

        def read():
            connection = http.client.HTTPConnection('127.0.0.1', parts.port, timeout=600)
            connection.request('GET', '/api/events')
            response = connection.getresponse()
            try:
                while response.fp.readline():
                    pass
            except OSError:
                pass

        threading.Thread(target=read, daemon=True).start()

    def stop(self):
        self.process.stdin.close()
        self.process.wait(120)
        subprocess.run(['rm', '-rf', self.data])


def idle(binary, mode, seconds):
    up = Up(binary, web=mode != 'no-web')
    up.greeted.wait(60)
    if mode == 'page':
        up.listen()
    time.sleep(5)
    before = up.cpu()
    time.sleep(seconds)
    used = up.cpu() - before
    up.stop()
    return used / seconds * 100


def run_import(binary, web, path):
    up = Up(binary, web=web, imports=[path])
    if web:
        up.listen()
    up.greeted.wait(3600)
    wall = up.console_at - up.started
    used = up.cpu()
    up.stop()
    return wall, used


def page_size(binary):
    up = Up(binary, web=True)
    up.events.wait(60)
    parts = urllib.parse.urlsplit(up.url)
    total = 0
    files = {}
    for path in ['/', '/console.js', '/console.css', '/api/info']:
        connection = http.client.HTTPConnection('127.0.0.1', parts.port, timeout=30)
        connection.request('GET', path)
        size = len(connection.getresponse().read())
        files[path] = size
        total += size
    up.stop()
    return total, files


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('binary')
    parser.add_argument('--rounds', type=int, default=3)
    parser.add_argument('--messages', type=int, default=300_000)
    parser.add_argument('--idle', type=float, default=30)
    args = parser.parse_args()

    total, files = page_size(args.binary)
    print(f'page load: {total} bytes ({", ".join(f"{p} {s}" for p, s in files.items())})')

    idles = {mode: [] for mode in ['no-web', 'no-page', 'page']}
    for round in range(args.rounds):
        for mode in idles:
            idles[mode].append(idle(args.binary, mode, args.idle))
            print(f'round {round + 1} idle {mode}: {idles[mode][-1]:.2f} % of a core', file=sys.stderr)
    for mode, values in idles.items():
        print(f'idle {mode}: {statistics.median(values):.2f} % of a core (markov + its redis-server)')

    corpus = os.path.join(tempfile.mkdtemp(prefix='markov-bench-corpus-'), 'history.json')
    subprocess.run([sys.executable, os.path.join(os.path.dirname(__file__), 'corpus.py'), 'dce', corpus, str(args.messages)], check=True)
    imports = {'no-web': [], 'page': []}
    for round in range(args.rounds):
        for mode in imports:
            imports[mode].append(run_import(args.binary, mode == 'page', corpus))
            wall, used = imports[mode][-1]
            print(f'round {round + 1} import {mode}: {wall:.1f} s, {used:.1f} CPU s', file=sys.stderr)
    for mode, values in imports.items():
        wall = statistics.median(v[0] for v in values)
        used = statistics.median(v[1] for v in values)
        print(f'import {args.messages} {mode}: {wall:.1f} s wall, {args.messages / wall:,.0f} messages/s, {used:.1f} CPU s')
    os.remove(corpus)


if __name__ == '__main__':
    main()
