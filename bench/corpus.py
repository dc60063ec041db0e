#!/usr/bin/env python3
"""Writes benchmark corpora, one message per line.

  corpus.py fortunes OUT   Debian's fortunes (apt-get install fortunes): one entry per message, newlines folded.
  corpus.py discord OUT N  Discord-shaped messages: 1-30 words, heavy-tailed word frequencies, mentions, emoji and
                           links, seeded so runs repeat.
"""
import glob
import os
import random
import sys


def fortunes(out):
    messages = []
    for path in sorted(glob.glob('/usr/share/games/fortunes/*')):
        if path.endswith(('.dat', '.u8')) or os.path.islink(path) or os.path.isdir(path):
            continue
        with open(path, encoding='utf-8', errors='replace') as handle:
            for entry in handle.read().split('\n%\n'):
                text = ' '.join(entry.split())
                if text:
                    messages.append(text)
    with open(out, 'w') as handle:
        handle.write('\n'.join(messages) + '\n')
    return len(messages)


def discord(out, count):
    rng = random.Random(20261128)
    vocabulary = [f'w{i}' for i in range(20000)]
    extras = ['<@1234567890>', '<@!987654321>', '🎉', '😂', 'https://example.com/x', 'lol', '!!', '{braces}']
    with open(out, 'w') as handle:
        for _ in range(count):
            words = []
            for _ in range(min(30, 1 + int(rng.paretovariate(1.2) * 3))):
                if rng.random() < 0.05:
                    words.append(rng.choice(extras))
                else:
                    # Zipf-like: index ~ exp of a uniform draw.
                    words.append(vocabulary[min(len(vocabulary) - 1, int(len(vocabulary) ** rng.random()) - 1)])
            handle.write(' '.join(words) + '\n')
    return count


if __name__ == '__main__':
    kind, out = sys.argv[1], sys.argv[2]
    n = fortunes(out) if kind == 'fortunes' else discord(out, int(sys.argv[3]))
    print(f'{n} messages written to {out}', file=sys.stderr)
