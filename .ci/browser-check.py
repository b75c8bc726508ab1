#!/usr/bin/python3
"""The technician's console in a real browser (Debian's chromium through
chromium-driver and WebDriver): log in with Basic auth, see a KO line in red,
press "Reactivate and replay" and see the buffer delivered, download the XLSX.

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

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if Receiver.gone:
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

        Receiver.gone = False
        buttons = [b for b in driver.find_elements(By.TAG_NAME, "button") if b.text.startswith("Reactivate and replay")]
        assert buttons, "a reactivate-and-replay button: " + driver.page_source[:2000]
        buttons[0].click()
        try:
            until("the page after the button", lambda: "Done:" in driver.page_source)
        except SystemExit:
            sys.stderr.write(driver.current_url + "\n" + driver.page_source[:3000] + "\n")
            raise
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
        print(f"browser check: OK (red KO line, replay delivered {Receiver.delivered}, downloaded {name})")
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
