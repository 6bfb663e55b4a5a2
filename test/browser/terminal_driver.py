#!/usr/bin/python3
# Drives Debian's chromium (headless) through chromium-driver and Debian's
# python3-selenium for test/t/terminal_browser.pl: nothing from outside
# Debian. Reads one command per line on stdin and answers one JSON line on
# stdout:
#   goto <url>                      open the relay's page; {status}
#   open <token>                    type the token into the page and connect; {state}
#   wait_state <state> <ms>         until pgcloudState.state is <state>; {state, code, reason}
#   wait_text <regexp> <ms>         until the terminal shows text matching; {found, text}
#   type <json string>              keystrokes into the terminal; {ok}
#   resize <cols> <rows>            resize the terminal (sends a resize frame); {ok}
#   ws <url> <json protocols>       a raw WebSocket from the page; {opened, code, reason}
#   screenshot <path>               {ok}
#   quit
import json
import os
import re
import shutil
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

# A new empty profile: BROWSER_PROFILE_PARENT is a path prefix (e.g. <dir>/chromium-).
prefix = os.environ.get('BROWSER_PROFILE_PARENT', '/tmp/pgcloud-chromium-')
profile = tempfile.mkdtemp(prefix=os.path.basename(prefix), dir=os.path.dirname(prefix) or None)
opts = webdriver.ChromeOptions()
opts.binary_location = os.environ.get('CHROMIUM', '/usr/bin/chromium')
for a in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
          '--disable-background-networking', '--disable-component-update', '--disable-sync',
          '--ignore-certificate-errors', '--disable-dev-shm-usage', '--window-size=1100,700',
          '--user-data-dir=' + profile):
    opts.add_argument(a)
opts.set_capability('acceptInsecureCerts', True)
service = Service(os.environ.get('CHROMEDRIVER', '/usr/bin/chromedriver'), log_path=os.devnull)
driver = webdriver.Chrome(service=service, options=opts)
driver.set_script_timeout(30)

TEXT = '''
  const b = window.pgcloudTerm.buffer.active; const lines = [];
  for (let i = 0; i < b.length; i++) lines.push(b.getLine(i).translateToString(true));
  return lines.join('\\n');
'''


def out(o):
    sys.stdout.write(json.dumps(o) + '\n')
    sys.stdout.flush()


def state():
    return driver.execute_script('return window.pgcloudState')


for line in sys.stdin:
    line = line.rstrip('\n')
    cmd, _, arg = line.partition(' ')
    try:
        if cmd == 'goto':
            driver.get(arg)
            # WebDriver does not report the HTTP status: the page's own
            # navigation entry does (Navigation Timing Level 2).
            out({'status': driver.execute_script(
                "const e = performance.getEntriesByType('navigation')[0]; return e ? e.responseStatus : null")})
        elif cmd == 'open':
            field = driver.find_element(By.ID, 'token')
            field.clear()
            field.send_keys(arg)
            driver.find_element(By.ID, 'open').click()
            out({'state': state()['state']})
        elif cmd == 'wait_state':
            want, ms = arg.split(' ')
            deadline = time.time() + int(ms) / 1000.0
            while state()['state'] != want and time.time() < deadline:
                time.sleep(0.05)
            out(state())
        elif cmd == 'wait_text':
            pattern, _, ms = arg.rpartition(' ')
            rx = re.compile(pattern)
            deadline = time.time() + int(ms) / 1000.0
            t = driver.execute_script(TEXT)
            while not rx.search(t) and time.time() < deadline:
                time.sleep(0.1)
                t = driver.execute_script(TEXT)
            out({'found': bool(rx.search(t)), 'text': t})
        elif cmd == 'type':
            driver.find_element(By.ID, 'terminal').click()
            keys = ActionChains(driver)
            for ch in json.loads(arg):
                # WebDriver types a carriage return only as its Enter key.
                keys.send_keys(Keys.ENTER if ch in '\r\n' else ch).pause(0.005)
            keys.perform()
            out({'ok': True})
        elif cmd == 'resize':
            cols, rows = (int(x) for x in arg.split(' '))
            driver.execute_script('window.pgcloudTerm.resize(arguments[0], arguments[1])', cols, rows)
            out({'ok': True})
        elif cmd == 'ws':
            url, _, protocols = arg.partition(' ')
            out(driver.execute_async_script('''
              const [url, protocols, done] = arguments;
              let opened = false, answered = false;
              const finish = (o) => { if (!answered) { answered = true; done(o); } };
              const ws = new WebSocket(url, protocols);
              ws.onopen = () => { opened = true; };
              ws.onclose = (ev) => finish({opened, code: ev.code, reason: ev.reason});
              setTimeout(() => finish({opened, code: null, timeout: true}), 15000);
            ''', url, json.loads(protocols)))
        elif cmd == 'screenshot':
            out({'ok': driver.save_screenshot(arg)})
        elif cmd == 'quit':
            break
        else:
            out({'error': 'unknown command ' + cmd})
    except Exception as e:  # answer every line, whatever went wrong
        out({'error': '%s: %s' % (type(e).__name__, e)})

driver.quit()
shutil.rmtree(profile, ignore_errors=True)
