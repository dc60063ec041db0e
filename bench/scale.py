#!/usr/bin/env python3
"""Scale benchmarks of training, driven against a scratch Redis by bench/run (prints key=value lines).

  scale.py import URL MARKOV FILE [FLAG…]    `markov train` of FILE (with FLAGs) into one fresh guild: wall time, the process's
                                             CPU and peak RSS, Redis's CPU, training commands over 5 ms (SLOWLOG),
                                             the average transaction (EXEC) time, Redis memory per message.
  scale.py during URL MARKOV CHAINBENCH GATEWAYBENCH FILE
                                             While `markov train` of FILE runs with one partition: one-sentence
                                             generation p50/p99 on another guild, freshness of live messages in the
                                             import's partition, and reply latency at 300 triggers/s (GatewayBench,
                                             database 1 of the same Redis).
  scale.py trainers URL|CLUSTER MARKOV FILE N
                                             FILE split over 16 guilds (one per partition), appended to the bulk
                                             lanes first, then applied by N `markov trainer` processes: wall time,
                                             transitions/s, trainer and Redis CPU per transition.
Never run by `make test`.
"""
import os
import re
import signal
import subprocess
import sys
import tempfile
import time


class Redis:
    """redis-cli against a standalone URL or every master of a cluster."""

    def __init__(self, target):
        self.cluster = not target.startswith('redis://')
        if self.cluster:
            self.masters = [tuple(node.rsplit(':', 1)) for node in target.split(',')]
        else:
            hostport = target[len('redis://'):].split('/')[0]
            self.masters = [tuple(hostport.rsplit(':', 1))]

    def cli(self, *args, node=None):
        host, port = node or self.masters[0]
        flags = ['-c'] if self.cluster else []
        return subprocess.run(['redis-cli', '-h', host, '-p', port] + flags + list(args),
                              capture_output=True, text=True, check=True).stdout

    def each(self, *args):
        return [self.cli(*args, node=node) for node in self.masters]

    def flush(self):
        self.each('FLUSHALL')

    def cpu(self):
        total = 0.0
        for info in self.each('INFO', 'cpu'):
            for key in ('used_cpu_user', 'used_cpu_sys'):
                total += float(re.search(key + r':([0-9.]+)', info).group(1))
        return total

    def reset_stats(self):
        for args in (['CONFIG', 'SET', 'slowlog-log-slower-than', '5000'], ['CONFIG', 'SET', 'slowlog-max-len', '10000'],
                     ['SLOWLOG', 'RESET'], ['CONFIG', 'RESETSTAT']):
            self.each(*args)

    def slow(self):
        return sum(int(reply.strip() or 0) for reply in self.each('SLOWLOG', 'LEN'))

    def exec_stats(self):
        calls, usec = 0, 0
        for info in self.each('INFO', 'commandstats'):
            match = re.search(r'cmdstat_exec:calls=(\d+),usec=(\d+)', info)
            if match:
                calls += int(match.group(1))
                usec += int(match.group(2))
        return calls, usec

    def memory(self):
        return sum(int(re.search(r'used_memory:(\d+)', info).group(1)) for info in self.each('INFO', 'memory'))

    def meta(self, guild, field):
        value = self.cli('HGET', '{g:%s}:meta' % guild, field).strip()
        return int(value) if value else 0


def timed(command, env):
    """Runs command under /usr/bin/time; returns (wall seconds, cpu seconds, max RSS in MiB, stderr)."""
    start = time.monotonic()
    result = subprocess.run(['/usr/bin/time', '-f', 'TIME %e %U %S %M'] + command, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.monotonic() - start
    if result.returncode != 0:
        sys.exit(f'{command} failed:\n{result.stderr[-3000:]}')
    _, _, user, system, rss = result.stderr.strip().splitlines()[-1].split()
    return wall, float(user) + float(system), int(rss) / 1024, result.stderr


def environment(target, partitions=None):
    env = dict(os.environ, LOG_LEVEL='warning')
    if target.startswith('redis://'):
        env['REDIS_URL'] = target
    else:
        env['REDIS_CLUSTER_NODES'] = target
    if partitions:
        env['MARKOV_PARTITIONS'] = str(partitions)
    return env


def do_import(url, markov, path, *flags):
    redis = Redis(url)
    redis.flush()
    redis.reset_stats()
    cpu = redis.cpu()
    wall, own, rss, _ = timed([markov, 'train', '--guild', '1', path, *flags], environment(url))
    redis_cpu = redis.cpu() - cpu
    calls, usec = redis.exec_stats()
    messages, transitions = redis.meta(1, 'messages'), redis.meta(1, 'count')
    print(f'import messages={messages} transitions={transitions} wall_s={wall:.1f} messages_per_sec={messages / wall:.0f} '
          f'trainer_cpu_us_per_transition={own * 1e6 / max(1, transitions):.2f} '
          f'redis_cpu_us_per_transition={redis_cpu * 1e6 / max(1, transitions):.2f} peak_rss_mb={rss:.0f} '
          f'slow_commands={redis.slow()} exec_avg_ms={usec / max(1, calls) / 1000:.2f} '
          f'redis_bytes_per_message={redis.memory() / max(1, messages):.0f}')


def during(url, markov, chainbench, gatewaybench, path):
    redis = Redis(url)
    redis.flush()
    fortunes = os.path.join(os.path.dirname(path), 'fortunes.txt')
    subprocess.run([chainbench, 'train', '--url', url, '--corpus', fortunes, '--partitions', '1'], check=True,
                   stdout=subprocess.DEVNULL)
    idle = subprocess.run([chainbench, 'generate', '--url', url, '--callers', '1', '--count', '2000'],
                          check=True, capture_output=True, text=True).stdout.strip()
    print('idle ' + idle)
    importer = subprocess.Popen([markov, 'train', '--guild', '1', path], env=environment(url, partitions=1),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(5)
        for name, command in (
            ('busy', [chainbench, 'generate', '--url', url, '--callers', '1', '--count', '4000']),
            ('fresh', [chainbench, 'fresh', '--url', url, '--partitions', '1', '--no-trainer', '--rate', '50',
                       '--seconds', '20']),
            ('replies', [gatewaybench, '--url', url.rstrip('/') + '/1', '--mode', 'replies', '--rate', '300',
                         '--triggers', '6000']),
        ):
            if importer.poll() is not None:
                sys.exit(f'the import ended before {name} was measured: use a bigger corpus')
            print(name + ' ' + subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        print(f'still_importing={int(importer.poll() is None)}')
    finally:
        importer.send_signal(signal.SIGINT)
        importer.wait()


def trainers(target, markov, path, count):
    redis = Redis(target)
    redis.flush()
    with open(path) as handle:
        lines = handle.readlines()
    guilds = list(range(1, 17))
    with tempfile.TemporaryDirectory() as scratch:
        env = environment(target)
        for guild in guilds:
            part = os.path.join(scratch, f'{guild}.txt')
            with open(part, 'w') as handle:
                handle.writelines(lines[guild - 1::len(guilds)])
            subprocess.run([markov, 'train', '--no-apply', '--guild', str(guild), part], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    redis.reset_stats()
    cpu = redis.cpu()
    start = time.monotonic()
    processes = []
    for index in range(count):
        env = environment(target)
        env['MARKOV_HTTP_PORT'] = '0'
        processes.append(subprocess.Popen([markov, 'trainer'], env=env, stdout=subprocess.DEVNULL,
                                          stderr=tempfile.TemporaryFile(mode='w+')))
    expected = len(lines)
    while True:
        applied = sum(redis.meta(guild, 'messages') for guild in guilds)
        if applied >= expected:
            break
        if any(process.poll() is not None for process in processes):
            sys.exit(f'a trainer exited with status {[process.poll() for process in processes]}')
        time.sleep(0.05)
    wall = time.monotonic() - start
    redis_cpu = redis.cpu() - cpu
    ticks = os.sysconf('SC_CLK_TCK')
    own = 0.0
    for process in processes:
        with open(f'/proc/{process.pid}/stat') as handle:
            fields = handle.read().rsplit(')', 1)[1].split()
        own += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait()
    transitions = sum(redis.meta(guild, 'count') for guild in guilds)
    t_t, t_r = own * 1e6 / transitions, redis_cpu * 1e6 / transitions
    print(f'trainers n={count} messages={applied} transitions={transitions} wall_s={wall:.1f} '
          f'transitions_per_sec={transitions / wall:.0f} trainer_cpu_us_per_transition={t_t:.2f} '
          f'redis_cpu_us_per_transition={t_r:.2f} saturating_trainers={t_t / t_r:.1f}')


if __name__ == '__main__':
    mode = sys.argv[1] if len(sys.argv) > 1 else ''
    if mode == 'import' and len(sys.argv) >= 5:
        do_import(*sys.argv[2:])
    elif mode == 'during' and len(sys.argv) == 7:
        during(*sys.argv[2:])
    elif mode == 'trainers' and len(sys.argv) == 6:
        trainers(*sys.argv[2:5], int(sys.argv[5]))
    else:
        sys.exit(__doc__)
