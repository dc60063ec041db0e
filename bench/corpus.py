#!/usr/bin/env python3
"""Writes benchmark corpora, one message per line.

  corpus.py fortunes OUT   Debian's fortunes (apt-get install fortunes): one entry per message, newlines folded.
  corpus.py discord OUT N  Discord-shaped messages: 1-30 words, heavy-tailed word frequencies, mentions, emoji and
                           links, seeded so runs repeat.
  corpus.py dce OUT N      The same N messages as one DiscordChatExporter JSON file (guild, channel, messages with
                           id, type, timestamp, author and content), written as a stream.
"""
import json
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


def discord_messages(count):
    rng = random.Random(20261128)
    vocabulary = [f'w{i}' for i in range(20000)]
    extras = ['<@1234567890>', '<@!987654321>', '🎉', '😂', 'https://example.com/x', 'lol', '!!', '{braces}']
    for _ in range(count):
        words = []
        for _ in range(min(30, 1 + int(rng.paretovariate(1.2) * 3))):
            if rng.random() < 0.05:
                words.append(rng.choice(extras))
            else:
                # Zipf-like: index ~ exp of a uniform draw.
                words.append(vocabulary[min(len(vocabulary) - 1, int(len(vocabulary) ** rng.random()) - 1)])
        yield ' '.join(words)


def discord(out, count):
    with open(out, 'w') as handle:
        for message in discord_messages(count):
            handle.write(message + '\n')
    return count


def dce(out, count):
    with open(out, 'w') as handle:
        handle.write('{"guild": {"id": "1", "name": "bench"}, "channel": {"id": "2", "type": "GuildTextChat", "name": "general"},\n')
        handle.write(' "messages": [\n')
        for index, message in enumerate(discord_messages(count)):
            record = {'id': str(100000000000000000 + index), 'type': 'Default', 'timestamp': '2026-01-01T00:00:00+00:00',
                      'isPinned': False, 'content': message,
                      'author': {'id': str(200000000000000000 + index % 5000), 'name': f'user{index % 5000}', 'isBot': False},
                      'attachments': [], 'embeds': [], 'reactions': [], 'mentions': []}
            handle.write(('    ' if index == 0 else '   ,') + json.dumps(record, ensure_ascii=False) + '\n')
        handle.write(' ],\n "messageCount": %d\n}\n' % count)
    return count


if __name__ == '__main__':
    kind, out = sys.argv[1], sys.argv[2]
    n = {'fortunes': lambda: fortunes(out), 'discord': lambda: discord(out, int(sys.argv[3])),
         'dce': lambda: dce(out, int(sys.argv[3]))}[kind]()
    print(f'{n} messages written to {out}', file=sys.stderr)
