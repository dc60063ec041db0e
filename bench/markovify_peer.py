#!/usr/bin/env python3
"""The markovify peer: model build rate (transitions/s) and make_sentence(tries=1, test_output=False) rate on a
corpus with one message per line. Prints key=value figures."""
import sys
import time

import markovify

text = open(sys.argv[1], encoding='utf-8').read()
transitions = sum(len(line.split()) + 1 for line in text.splitlines() if line.strip())
start = time.perf_counter()
model = markovify.NewlineText(text, state_size=2, retain_original=False)
build = time.perf_counter() - start
calls = made = 0
start = time.perf_counter()
while time.perf_counter() - start < 3:
    calls += 1
    made += model.make_sentence(tries=1, test_output=False) is not None
elapsed = time.perf_counter() - start
print(f'build_transitions_per_sec={int(transitions / build)} calls_per_sec={int(calls / elapsed)} '
      f'sentences_per_sec={int(made / elapsed)}')
