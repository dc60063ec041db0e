"""The web console of `markov up`, end to end: a real `markov up` (private Redis, trainer, console guild), every
endpoint the page uses over HTTP, and the page itself in headless Chromium (Selenium).

Run by scripts/test-web.sh (from `make test`): MARKOV_BINARY names the binary; SCREENSHOTS a folder for the
screenshots taken; UPDATE_SCREENSHOT=1 also writes docs/web-console.png. Without chromium and chromedriver
the browser tests are skipped with a message (the HTTP tests still run).
"""
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

BINARY = os.environ.get('MARKOV_BINARY', '.build/debug/markov')
SCREENSHOTS = os.environ.get('SCREENSHOTS', '.build/web-console')
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


class Console:
    """A `markov up` process with its web console; its terminal console reads a pipe we keep open."""

    def __init__(self, data, *args, port=0):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(('REDIS_', 'MARKOV_', 'DISCORD_')) and k != 'LOG_LEVEL'}
        self.log = open(os.path.join(data, 'up.log'), 'ab')
        self.process = subprocess.Popen(
            [BINARY, 'up', '--data', data, '--web-port', str(port), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env)
        self.lines = []
        self.url = None
        ready = threading.Event()

        def read():
            for raw in self.process.stdout:
                line = raw.decode('utf-8', 'replace').rstrip('\n')
                self.lines.append(line)
                if line.startswith('web console: '):
                    self.url = line[len('web console: '):]
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(90) or self.url is None:
            self.stop()
            raise AssertionError(f'markov up printed no web console URL: {self.lines}')
        parts = urllib.parse.urlsplit(self.url)
        self.port = parts.port
        self.token = urllib.parse.parse_qs(parts.query).get('token', [None])[0]
        self.base = f'http://127.0.0.1:{self.port}'

    def stop(self):
        """Ctrl-D on the terminal console: a graceful stop of every role."""
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        self.process.stdout.close()
        return self.process.returncode

    def request(self, method, path, body=None, headers=None, token=True):
        """(status, content type, body bytes) of one request."""
        if token and self.token:
            path += ('&' if '?' in path else '?') + 'token=' + self.token
        connection = http.client.HTTPConnection('127.0.0.1', self.port, timeout=30)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.getheader('Content-Type', ''), response.read()
        finally:
            connection.close()

    def json(self, method, path, body=None, headers=None, token=True):
        status, kind, data = self.request(method, path, body, headers, token)
        return status, kind, json.loads(data)

    def say(self, text):
        return self.json('POST', '/api/messages', json.dumps({'text': text}),
                         {'Content-Type': 'application/json', 'X-Markov-Console': '1'})

    def wait_for_messages(self, count, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, _, stats = self.json('GET', '/api/stats')
            if status == 200 and stats['messages'] >= count:
                return stats
            time.sleep(0.2)
        raise AssertionError(f'the trainer did not learn {count} messages in {timeout} s: {stats}')

    def wait_for_import(self, id, timeout=120):
        deadline = time.time() + timeout
        while time.time() < deadline:
            status, _, job = self.json('GET', f'/api/imports/{id}')
            if job['progress']['phase'] in ('done', 'failed'):
                return job
            time.sleep(0.2)
        raise AssertionError(f'import {id} did not finish: {job}')


CORPUS = [
    'the quick brown fox jumps over the lazy dog',
    'the quick red fox runs into the woods',
    'a lazy dog sleeps in the sun',
    'the brown dog jumps over the fence',
]
# The lines test_imports imports.
IMPORTED = 'imported line number {n} says hello to the importer'


class HTTPTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.data = tempfile.mkdtemp(prefix='markov-web-')
        cls.console = Console(cls.data)
        for line in CORPUS:
            status, _, answer = cls.console.say(line)
            assert status == 200 and answer['kind'] == 'learnt', answer
        cls.console.wait_for_messages(len(CORPUS))

    @classmethod
    def tearDownClass(cls):
        code = cls.console.stop()
        shutil.rmtree(cls.data, ignore_errors=True)
        assert code == 0, f'markov up exited with {code}'

    def test_assets(self):
        for path, kind in [('/', 'text/html'), ('/console.js', 'text/javascript'), ('/console.css', 'text/css')]:
            status, content_type, body = self.console.request('GET', path)
            self.assertEqual(status, 200, path)
            self.assertTrue(content_type.startswith(kind), (path, content_type))
            self.assertGreater(len(body), 500)
        status, content_type, body = self.console.request('GET', '/nothing-here')
        self.assertEqual(status, 404)

    def test_info(self):
        status, content_type, info = self.console.json('GET', '/api/info')
        self.assertEqual(status, 200)
        self.assertEqual(content_type, 'application/json; charset=utf-8')
        self.assertEqual(info['guild'], '1')
        self.assertEqual(info['prefix'], '!mark')
        self.assertFalse(info['discord'])

    def test_messages(self):
        status, _, answer = self.console.say('!mark')
        self.assertEqual(status, 200)
        self.assertEqual(answer['kind'], 'reply')
        vocabulary = set(' '.join(CORPUS).split()) | set(IMPORTED.split()) | {str(n) for n in range(500)}
        self.assertTrue(set(answer['text'].split()) <= vocabulary, answer['text'])
        # Steps come with every reply: one per word and one for the end.
        self.assertEqual([s['token'] for s in answer['steps']][:-1], answer['text'].split())
        for step in answer['steps']:
            self.assertAlmostEqual(step['probability'], step['count'] / step['total'])
        status, _, answer = self.console.say('!mark debug the quick')
        self.assertTrue(answer['text'].startswith('the quick'), answer['text'])
        self.assertIn('```', answer['text'])
        status, _, answer = self.console.say('/mark seed:a lazy')
        self.assertTrue(answer['text'].startswith('a lazy dog'), answer['text'])
        status, _, answer = self.console.say('@markov hello')
        self.assertEqual(answer['kind'], 'reply')
        status, _, answer = self.console.say('!mark help')
        self.assertTrue(answer['help'])
        status, _, answer = self.console.say('   ')
        self.assertEqual(answer['kind'], 'ignored')

    def test_bad_messages(self):
        headers = {'Content-Type': 'application/json', 'X-Markov-Console': '1'}
        # A 10 MB paste.
        status, _, answer = self.console.json('POST', '/api/messages', json.dumps({'text': 'x' * 10_000_000}), headers)
        self.assertEqual(status, 413)
        self.assertIn('at most 4000 characters', answer['error'])
        status, _, answer = self.console.say('y' * 5000)
        self.assertEqual(status, 400)
        self.assertIn('at most 4000', answer['error'])
        # Invalid UTF-8, not JSON, the wrong shape, NUL.
        for body in [b'{"text": "\xff\xfe"}', b'hello', b'{"words": 1}']:
            status, _, answer = self.console.json('POST', '/api/messages', body, headers)
            self.assertEqual(status, 400, body)
            self.assertIn('JSON', answer['error'])
        status, _, answer = self.console.say('a\u0000b')
        self.assertEqual(status, 400)
        self.assertIn('NUL', answer['error'])
        # Without the console header (what a cross-site form would send).
        status, _, answer = self.console.json('POST', '/api/messages', json.dumps({'text': 'hi'}), {'Content-Type': 'text/plain'})
        self.assertEqual(status, 403)
        # Still learning and answering after all that.
        status, _, answer = self.console.say('!mark')
        self.assertEqual((status, answer['kind']), (200, 'reply'))

    def test_state(self):
        status, content_type, state = self.console.json('GET', '/api/state?words=' + urllib.parse.quote('the quick'))
        self.assertEqual(status, 200)
        self.assertEqual(state['state'], ['the', 'quick'])
        self.assertEqual(state['kind'], 'small')
        self.assertEqual({s['token']: s['count'] for s in state['successors']}, {'brown': 1, 'red': 1})
        self.assertAlmostEqual(sum(s['probability'] for s in state['successors']), 1)
        # A message's start: the empty words before "the".
        status, _, state = self.console.json('GET', '/api/state?words=' + urllib.parse.quote(' the'))
        self.assertEqual(state['state'], ['', 'the'])
        self.assertEqual({s['token'] for s in state['successors']}, {'quick', 'brown'})
        status, _, state = self.console.json('GET', '/api/state?words=' + urllib.parse.quote('{g:2} }{'))
        self.assertEqual((status, state['kind'], state['successors']), (200, 'unknown', []))
        # `+` is a plus, not a space (the page sends spaces as %20).
        status, _, state = self.console.json('GET', '/api/state?words=the+quick')
        self.assertEqual((status, state['state'], state['kind']), (200, ['', 'the+quick'], 'unknown'))
        status, _, state = self.console.json('GET', '/api/state?words=a%00b')
        self.assertEqual(status, 400)
        self.assertIn('NUL', state['error'])
        status, _, state = self.console.json('GET', '/api/state?words=' + 'w' * 2000)
        self.assertEqual(status, 400)

    def test_stats(self):
        status, content_type, stats = self.console.json('GET', '/api/stats')
        self.assertEqual(status, 200)
        self.assertGreaterEqual(stats['messages'], len(CORPUS))
        self.assertGreater(stats['states'], 10)
        self.assertGreater(stats['transitions'], 10)
        self.assertGreater(stats['bytes'], 500)

    def test_imports(self):
        headers = {'X-Markov-Console': '1'}
        text = '\n'.join(IMPORTED.format(n=n) for n in range(500)) + '\n'
        before = self.console.json('GET', '/api/stats')[2]['messages']
        status, content_type, answer = self.console.json('POST', '/api/imports?name=lines.txt', text.encode(), headers)
        self.assertEqual(status, 202)
        job = self.console.wait_for_import(answer['id'])
        self.assertEqual(job['progress']['phase'], 'done', job)
        self.assertEqual(job['fraction'], 1)
        self.assertEqual(job['progress']['appended'], 500)
        self.assertEqual(job['name'], 'lines.txt')
        self.assertGreaterEqual(self.console.json('GET', '/api/stats')[2]['messages'], before + 500)
        # A malformed export: the import fails with a clear error; nothing else is lost.
        status, _, answer = self.console.json('POST', '/api/imports?name=broken.json', b'{"messages": [{"id": ', headers)
        self.assertEqual(status, 202)
        job = self.console.wait_for_import(answer['id'])
        self.assertEqual(job['progress']['phase'], 'failed')
        self.assertIn('broken.json', job['progress']['error'])
        self.assertNotIn('markov-import-', job['progress']['error'])
        # Too large, said before the body is read (Content-Length).
        connection = http.client.HTTPConnection('127.0.0.1', self.console.port, timeout=30)
        connection.putrequest('POST', '/api/imports?name=huge.json')
        connection.putheader('X-Markov-Console', '1')
        connection.putheader('Content-Length', str(2 << 30))
        connection.endheaders()
        response = connection.getresponse()
        self.assertEqual(response.status, 413)
        self.assertIn('at most', json.loads(response.read())['error'])
        connection.close()
        status, _, answer = self.console.json('POST', '/api/imports?name=empty.txt', b'', headers)
        self.assertEqual(status, 400)
        status, _, answer = self.console.json('POST', '/api/imports?name=x.txt', b'hello', {})
        self.assertEqual(status, 403)
        status, _, answer = self.console.json('GET', '/api/imports/no-such-import')
        self.assertEqual(status, 404)
        self.assertEqual(self.console.say('!mark')[2]['kind'], 'reply')

    def test_events(self):
        connection = http.client.HTTPConnection('127.0.0.1', self.console.port, timeout=30)
        connection.request('GET', '/api/events')
        response = connection.getresponse()
        self.assertEqual(response.status, 200)
        self.assertEqual(response.getheader('Content-Type'), 'text/event-stream')
        ticks = []
        while len(ticks) < 3:
            line = response.fp.readline().decode()
            if line.startswith('data: '):
                ticks.append(json.loads(line[len('data: '):]))
        for tick in ticks:
            self.assertGreaterEqual(tick['guild']['messages'], len(CORPUS))
            self.assertIn('eventsPerSecond', tick['metrics'])
            self.assertIn('lag', tick['metrics'])
        self.assertGreater(ticks[2]['time'], ticks[0]['time'])
        # A client that goes mid-stream: the console goes on.
        connection.sock.shutdown(socket.SHUT_RDWR)
        connection.close()
        time.sleep(2.5)
        self.assertEqual(self.console.request('GET', '/api/info')[0], 200)

    def test_system(self):
        status, content_type, first = self.console.json('GET', '/api/system')
        self.assertEqual((status, content_type), (200, 'application/json; charset=utf-8'))
        self.console.say('one more line for the rates')
        time.sleep(1.2)
        status, _, second = self.console.json('GET', '/api/system')
        self.assertGreater(second['metrics']['eventsPerSecond'], 0, second)
        self.assertGreater(second['metrics']['residentBytes'], 1 << 20)
        self.assertNotIn('rateLimits', second, 'no Discord here')

    def test_cross_site_refused(self):
        headers = {'Content-Type': 'application/json', 'X-Markov-Console': '1', 'Sec-Fetch-Site': 'cross-site'}
        status, _, answer = self.console.json('POST', '/api/messages', json.dumps({'text': 'hi'}), headers)
        self.assertEqual(status, 403)
        status, _, answer = self.console.json('GET', '/api/stats', headers={'Sec-Fetch-Site': 'cross-site'})
        self.assertEqual(status, 403)
        # However the path is spelt.
        status, _, answer = self.console.json('POST', '//api/messages', json.dumps({'text': 'hi'}), {'Content-Type': 'text/plain'})
        self.assertEqual(status, 403)
        status, _, _ = self.console.json('GET', '//api/info', headers={'Host': 'attacker.example'})
        self.assertEqual(status, 403)
        status, _, _ = self.console.request('GET', '/', headers={'Sec-Fetch-Site': 'same-origin'})
        self.assertEqual(status, 200)

    def test_rebinding_refused(self):
        status, _, answer = self.console.json('GET', '/api/info', headers={'Host': 'attacker.example:80'})
        self.assertEqual(status, 403)
        self.assertIn('127.0.0.1 or localhost', answer['error'])
        self.assertEqual(self.console.request('GET', '/api/info', headers={'Host': f'localhost:{self.console.port}'})[0], 200)


class TokenTests(unittest.TestCase):
    def test_non_loopback_needs_token(self):
        data = tempfile.mkdtemp(prefix='markov-web-token-')
        console = Console(data, '--web-host', '0.0.0.0')
        try:
            self.assertIsNotNone(console.token, console.url)
            self.assertEqual(len(console.token), 32)
            self.assertEqual(console.request('GET', '/api/info')[0], 200)
            self.assertEqual(console.request('GET', '/api/info', headers={'X-Markov-Token': console.token}, token=False)[0], 200)
            status, _, answer = console.json('GET', '/api/info', token=False)
            self.assertEqual(status, 401)
            self.assertIn('token', answer['error'])
            self.assertEqual(console.request('GET', '/api/info?token=' + '0' * 32, token=False)[0], 401)
            self.assertEqual(console.request('GET', '/api/events', token=False)[0], 401)
            # The page itself is static and public; what it reads is not, however the path is spelt.
            self.assertEqual(console.request('GET', '/', token=False)[0], 200)
            for path in ['//api/info', '/api//info', '/./api/info', '//api/state?words=a']:
                self.assertEqual(console.request('GET', path, token=False)[0], 401, path)
            status, _, _ = console.json('POST', '//api/messages', json.dumps({'text': 'hi'}), {'X-Markov-Console': '1'}, token=False)
            self.assertEqual(status, 401)
        finally:
            self.assertEqual(console.stop(), 0)
            shutil.rmtree(data, ignore_errors=True)

    def test_no_web(self):
        data = tempfile.mkdtemp(prefix='markov-web-off-')
        env = {k: v for k, v in os.environ.items() if not k.startswith(('REDIS_', 'MARKOV_', 'DISCORD_'))}
        process = subprocess.run([BINARY, 'up', '--data', data, '--no-web'], input=b'hello there\n', capture_output=True, env=env, timeout=90)
        shutil.rmtree(data, ignore_errors=True)
        self.assertEqual(process.returncode, 0, process.stderr)
        self.assertNotIn(b'web console', process.stdout)
        self.assertIn(b'markov console', process.stdout)


def browser_available():
    try:
        import selenium  # noqa: F401
    except ImportError:
        return False
    return bool(shutil.which('chromedriver') and (shutil.which('chromium') or shutil.which('chromium-browser')))


@unittest.skipUnless(browser_available(), 'chromium, chromedriver or selenium is not installed: the browser tests are skipped')
class BrowserTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        cls.data = tempfile.mkdtemp(prefix='markov-web-browser-')
        cls.port = free_port()
        cls.console = Console(cls.data, port=cls.port)
        options = webdriver.ChromeOptions()
        for argument in ['--headless=new', '--no-sandbox', '--disable-dev-shm-usage', '--window-size=1400,1000']:
            options.add_argument(argument)
        cls.driver = webdriver.Chrome(options=options, service=Service(shutil.which('chromedriver')))
        cls.driver.get(cls.console.url)
        os.makedirs(SCREENSHOTS, exist_ok=True)

    @classmethod
    def tearDownClass(cls):
        cls.driver.quit()
        cls.console.stop()
        shutil.rmtree(cls.data, ignore_errors=True)

    def wait(self, condition, timeout=30, what='the page'):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                value = condition()
                if value:
                    return value
            except Exception:  # an element not there yet
                pass
            time.sleep(0.1)
        self.driver.save_screenshot(os.path.join(SCREENSHOTS, 'failed.png'))
        raise AssertionError(f'timed out waiting for {what}')

    def element(self, id):
        from selenium.webdriver.common.by import By
        return self.driver.find_element(By.ID, id)

    def elements(self, selector):
        from selenium.webdriver.common.by import By
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def type(self, text):
        box = self.element('chat-input')
        box.clear()
        box.send_keys(text)
        self.element('chat-send').click()
        self.wait(lambda: box.get_attribute('value') == '' or self.element('chat-error').text, what=f'"{text}" to be sent')

    def test_1_chat(self):
        self.wait(lambda: self.element('status').text == 'live', what='the live stream')
        for line in CORPUS:
            self.type(line)
        self.wait(lambda: self.element('stat-messages').text == str(len(CORPUS)), what='the stats to count the messages')
        self.type('!mark')
        reply = self.wait(lambda: self.elements('.msg.bot'), what='a reply')[-1]
        words = reply.text.replace('markov', '', 1).replace('steps', '').split()
        self.assertTrue(words)
        self.assertTrue(set(words) <= set(' '.join(CORPUS).split()), reply.text)
        # Its steps, on demand.
        table = self.elements('table.steps')[-1]
        self.assertFalse(table.is_displayed())
        reply.find_element('css selector', '.steps-toggle').click()
        self.assertTrue(table.is_displayed())
        self.assertIn('%', table.text)
        self.driver.save_screenshot(os.path.join(SCREENSHOTS, 'chat.png'))

    def test_2_import(self):
        path = os.path.join(self.data, 'history.txt')
        with open(path, 'w') as handle:
            for n in range(3000):
                handle.write(f'message {n} of the history, with the quick fox and word{n % 97}\n')
        before = int(self.element('stat-messages').text.replace(',', '') or 0)
        self.element('import-file').send_keys(path)
        self.element('import-button').click()
        self.wait(lambda: float(self.element('import-bar').get_attribute('value')) == 1.0, timeout=120, what='the bar to reach 100 %')
        self.assertIn('100 %', self.element('import-text').text)
        self.assertIn('messages/s', self.element('import-text').text)
        self.wait(lambda: int(self.element('stat-messages').text.replace(',', '')) >= before + 3000, what='the stats to grow')
        self.driver.save_screenshot(os.path.join(SCREENSHOTS, 'import.png'))

    def test_3_inspect(self):
        box = self.element('inspect-input')
        box.clear()
        box.send_keys('the quick')
        self.element('inspect-button').click()
        bars = self.wait(lambda: self.elements('#inspect-result .bar'), what='bars')
        tokens = [bar.find_element('css selector', '.bar-token').text for bar in bars]
        self.assertIn('brown', tokens)
        self.assertIn('state', self.element('inspect-kind').text)
        # Walk on: the state becomes "quick brown".
        bars[tokens.index('brown')].find_element('css selector', '.bar-token').click()
        self.wait(lambda: self.element('inspect-input').get_attribute('value') == 'quick brown', what='the walk')
        self.wait(lambda: 'fox' in [b.text for b in self.elements('#inspect-result .bar-token')], what='the next bars')
        box.clear()
        box.send_keys('nothing like this')
        self.element('inspect-button').click()
        self.wait(lambda: 'never seen' in self.element('inspect-kind').text, what='an unknown state')

    def test_4_charts_move(self):
        canvas = self.element('chart-events')
        first = int(canvas.get_attribute('data-points'))
        seen = set()
        deadline = time.time() + 20
        while time.time() < deadline and not seen:
            self.type(f'a message to move the charts at {time.time()}')
            time.sleep(0.5)
            for id in ['chart-events', 'chart-applied']:
                if float(self.element(id).get_attribute('data-last') or 0) > 0:
                    seen.add(id)
        self.assertTrue(seen, 'no chart showed events or applied messages')
        self.assertGreater(int(canvas.get_attribute('data-points')), first)
        # Fill the page for the screenshot: a reply with its steps open and a state's bars.
        self.type('!mark debug the quick')
        box = self.element('inspect-input')
        box.clear()
        box.send_keys('the quick')
        self.element('inspect-button').click()
        self.wait(lambda: self.elements('#inspect-result .bar'), what='bars')
        time.sleep(2)
        self.driver.save_screenshot(os.path.join(SCREENSHOTS, 'console.png'))
        if os.environ.get('UPDATE_SCREENSHOT') == '1':
            shutil.copy(os.path.join(SCREENSHOTS, 'console.png'), os.path.join(ROOT, 'docs', 'web-console.png'))

    def test_5_reconnects(self):
        type(self).console.stop()
        self.wait(lambda: self.element('status').text == 'reconnecting…', what='the page to see markov up gone')
        type(self).console = Console(self.data, port=self.port)
        self.wait(lambda: self.element('status').text == 'live', timeout=30, what='the page to reconnect')
        self.type('!mark')
        self.wait(lambda: len(self.elements('.msg.bot')) >= 3, what='a reply after the restart')


if __name__ == '__main__':
    unittest.main(verbosity=2)
