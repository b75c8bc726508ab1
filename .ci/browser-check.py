#!/usr/bin/python3
"""The technician's console in a real browser (Debian's chromium through
chromium-driver and WebDriver): log in with Basic auth, see a KO line in red,
acknowledge it with a note and resolve a to-do action and see both rows leave
the worklist, press "Reactivate and replay" and see the buffer delivered,
download the XLSX.

    /usr/bin/python3 .ci/browser-check.py target/debug/herald
"""

import base64
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

ADMIN = "browser-admin-token-0123456789abcdef012345"
TECH = "browser-tech-token-0123456789abcdef0123456"


class Receiver(BaseHTTPRequestHandler):
    """Answers webhooks 410 until `gone` is cleared, then records them; the
    pull interface's GET fails with 500."""

    gone = True
    delivered = []
    calls = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.path.startswith("/crm"):
            # The action interface: accepted; the answer comes by callback.
            Receiver.calls.append(json.loads(body))
            self.send_response(202)
        elif Receiver.gone:
            self.send_response(410)
        else:
            Receiver.delivered.append(json.loads(body)["data"])
            self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_GET(self):
        self.send_response(500)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def api(base, method, path, body=None):
    req = urllib.request.Request(base + path, method=method)
    req.add_header("authorization", "Bearer " + ADMIN)
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, data, timeout=10) as r:
            return json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raise SystemExit(f"{method} {path}: {e.code} {e.read()!r}")


def until(what, check, within=15):
    deadline = time.time() + within
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"browser check: timed out waiting for {what}")


def main():
    binary = os.path.abspath(sys.argv[1])
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    recv = f"http://127.0.0.1:{receiver.server_address[1]}"
    work = tempfile.mkdtemp()
    accounts = ""
    for name, role, token in [("ops", "admin", ADMIN), ("tech", "technician", TECH)]:
        accounts += (
            f'[[accounts]]\nname = "{name}"\nemail = "{name}@example.com"\nrole = "{role}"\n'
            f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n\n'
        )
    config = os.path.join(work, "herald.toml")
    with open(config, "w") as f:
        f.write(
            f'[server]\nlisten = "127.0.0.1:0"\n\n[storage]\ndir = "{work}/data"\n\n'
            f'[[interfaces]]\nname = "shop"\nkind = "pull"\nurl = "{recv}/shop"\n\n'
            f'[[interfaces]]\nname = "crm"\nkind = "action"\nurl = "{recv}/crm"\n\n'
            f'[[schedules]]\nname = "shop-sales"\ninterface = "shop"\nevery = "1d"\n\n{accounts}'
        )
    log = open(os.path.join(work, "herald.log"), "w+")
    daemon = subprocess.Popen([binary, "serve", "--config", config], stderr=log)
    driver = None
    try:
        def listening():
            log.seek(0)
            for line in log:
                if "listening on " in line:
                    return line.split("listening on ")[1].split()[0]
            return None

        base = "http://" + until("herald to listen", listening)
        until("herald to be ready", lambda: b"ready" in urllib.request.urlopen(base + "/readyz").read())

        # A deactivated webhook with a buffer, and a KO run.
        wh = api(base, "POST", "/v1/webhooks", {"app": "erp", "event": "tick", "url": recv + "/hook"})["id"]
        api(base, "POST", "/v1/events", {"event": "tick", "data": 1})
        until("the deactivation", lambda: api(base, "GET", f"/v1/webhooks/{wh}")["state"] == "disabled")
        for n in (2, 3):
            api(base, "POST", "/v1/events", {"event": "tick", "data": n})
        exe = api(base, "POST", "/v1/schedules/shop-sales/run")["execution_id"]
        until("the KO run", lambda: api(base, "GET", f"/v1/executions/{exe}")["status"] == "ko")
        # An action rejected by its callback: to do.
        act = api(base, "POST", "/v1/actions", {"interface": "crm", "payload": {"order": 7}})["id"]
        until("the action's call", lambda: api(base, "GET", f"/v1/actions/{act}")["state"] == "waiting")
        token = [c for c in Receiver.calls if c["action_id"] == act][0]["callback_token"]
        req = urllib.request.Request(f"{base}/v1/actions/{act}/callback", method="POST")
        req.add_header("x-herald-callback-token", token)
        req.add_header("content-type", "application/json")
        urllib.request.urlopen(req, json.dumps({"success": False, "reason": "no such customer"}).encode()).read()
        assert api(base, "GET", f"/v1/actions/{act}")["state"] == "todo"

        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            options.add_argument(arg)
        driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        downloads = os.path.join(work, "downloads")
        os.makedirs(downloads)
        driver.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": downloads})
        # Basic auth, as the browser sends it once the technician logged in.
        basic = base64.b64encode(f"tech:{TECH}".encode()).decode()
        driver.execute_cdp_cmd("Network.enable", {})
        driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": "Basic " + basic}})

        driver.get(base + "/")
        red = [r for r in driver.find_elements(By.CSS_SELECTOR, "tr.ko-row") if "shop" in r.text]
        assert red, "a KO line for shop: " + driver.page_source[:2000]
        colour = red[0].find_element(By.TAG_NAME, "td").value_of_css_property("background-color")
        assert colour in ("rgba(253, 226, 226, 1)", "rgb(253, 226, 226)"), colour

        def row(item):
            rows = driver.find_elements(By.CSS_SELECTOR, f'#worklist tr[data-id="{item}"]')
            return rows[0] if rows else None

        def pressed(what):
            try:
                until(what, lambda: f"Done: {what}" in driver.page_source)
            except SystemExit:
                sys.stderr.write(driver.current_url + "\n" + driver.page_source[:3000] + "\n")
                raise

        # Acknowledge the KO run with a note: the row leaves the list.
        ko = row(exe)
        assert ko is not None, "the KO run on the worklist: " + driver.page_source[:2000]
        ko.find_element(By.NAME, "note").send_keys("receiver restarted by the provider")
        [b for b in ko.find_elements(By.TAG_NAME, "button") if b.text == "Acknowledge"][0].click()
        pressed(f"execution {exe}")
        assert row(exe) is None, "the acknowledged run left the list"
        acked = api(base, "GET", f"/v1/executions/{exe}")["acknowledged"]
        assert (acked["by"], acked["note"]) == ("tech", "receiver restarted by the provider"), acked

        # Resolve the to-do action as completed: the row leaves the list.
        todo = row(act)
        assert todo is not None, "the to-do action on the worklist: " + driver.page_source[:2000]
        [b for b in todo.find_elements(By.TAG_NAME, "button") if b.text == "Resolve: completed"][0].click()
        pressed(f"action {act} is completed")
        assert row(act) is None, "the resolved action left the list"
        done = api(base, "GET", f"/v1/actions/{act}")
        assert (done["state"], done["resolved_by"]) == ("completed", "tech"), done

        Receiver.gone = False
        buttons = [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.startswith("Reactivate and replay")]
        assert buttons, "a reactivate-and-replay button: " + driver.page_source[:2000]
        buttons[0].click()
        pressed(f"webhook {wh}")
        until("the buffer delivered", lambda: Receiver.delivered[-2:] == [2, 3])
        assert Receiver.delivered == [1, 2, 3], Receiver.delivered

        driver.get(f"{base}/ui/executions/{exe}")
        driver.find_element(By.LINK_TEXT, "XLSX").click()

        def downloaded():
            done = [f for f in os.listdir(downloads) if f.endswith(".xlsx")]
            return done[0] if done else None

        name = until("the XLSX download", downloaded)
        with open(os.path.join(downloads, name), "rb") as f:
            assert f.read(2) == b"PK", "an XLSX (zip) file"
        assert name == f"herald-shop-{exe}.xlsx", name
        print(
            f"browser check: OK (red KO line acknowledged, to-do action resolved, "
            f"replay delivered {Receiver.delivered}, downloaded {name})"
        )
    except BaseException:
        log.seek(0)
        sys.stderr.write("----- herald log -----\n" + log.read())
        raise
    finally:
        if driver is not None:
            driver.quit()
        daemon.terminate()
        daemon.wait(timeout=15)


if __name__ == "__main__":
    main()
