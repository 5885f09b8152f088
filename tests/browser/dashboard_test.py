#!/usr/bin/env python3
"""Drives the dashboard (GET /) in Debian's headless chromium through chromedriver (selenium).

    dashboard_test.py URL SCREENSHOT.png [--key RIGHT_KEY] [--min-points N]

Checks that recent events appear, that the charts move between two samples (data-points and
the canvas pixels), that the daemon table shows BTC connected with a height and that the filter
box filters. With --key (a worker with WORKER_API_KEYS), first checks that the key prompt
appears, that a wrong key is refused (prompt stays, no event arrives) and that the right key
makes events appear. Saves a screenshot. Exits non-zero, saying what failed, otherwise.
Run by tests/dashboard_browser.rs; scripts/ensure-browser installs what it needs.
"""
import argparse
import shutil
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def wait(what, check, timeout=20.0):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = check()
            if last:
                return last
        except Exception as e:  # the page may be mid-render
            last = e
        time.sleep(0.1)
    fail(f"timed out waiting for {what} (last: {last!r})")


def state(d):
    return d.execute_script(
        "const D = window.__dashboard; return D && {auth: D.auth, received: D.received,"
        " kept: D.events.length, samples: D.samples, polls: D.polls};"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("screenshot")
    ap.add_argument("--key")
    ap.add_argument("--min-points", type=int, default=10, help="chart points before the screenshot")
    a = ap.parse_args()

    chromium = shutil.which("chromium") or fail("chromium not found (scripts/ensure-browser)")
    driver_bin = shutil.which("chromedriver") or fail("chromedriver not found (scripts/ensure-browser)")
    opts = Options()
    opts.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1100", "--hide-scrollbars", "--force-device-scale-factor=1"):
        opts.add_argument(arg)
    d = webdriver.Chrome(options=opts, service=Service(executable_path=driver_bin))
    try:
        run(d, a)
    finally:
        logs = []
        try:
            logs = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
        except Exception:
            pass
        for e in logs:
            print(f"browser console: {e.get('message')}", flush=True)
        d.quit()


def run(d, a):
    d.get(a.url)
    modal = d.find_element(By.ID, "modal")
    if a.key:
        wait("the key prompt", lambda: modal.is_displayed())
        print("key prompt shown", flush=True)
        key = d.find_element(By.ID, "key")
        key.send_keys("wrong-" + a.key)
        key.submit()
        wait("'key refused'", lambda: "refused" in d.find_element(By.ID, "keymsg").text)
        time.sleep(1.5)
        if not modal.is_displayed():
            fail("the prompt went away after a wrong key")
        if state(d)["received"]:
            fail(f"events arrived without the right key: {state(d)}")
        print("wrong key refused", flush=True)
        key.clear()
        key.send_keys(a.key)
        key.submit()
        wait("the prompt to close after the right key", lambda: not modal.is_displayed())
        if d.execute_script("return sessionStorage.getItem('cw_key')") != a.key:
            fail("the key was not kept in sessionStorage")
        print("right key accepted", flush=True)
    elif modal.is_displayed():
        fail("key prompt shown on a worker without keys")

    wait("events in the recent list", lambda: len(d.find_elements(By.CSS_SELECTOR, "#events li")) > 0)
    print(f"events listed: {state(d)}", flush=True)

    def btc_row():
        row = d.find_element(By.CSS_SELECTOR, "#daemons tr[data-coin='BTC']")
        cells = row.find_elements(By.TAG_NAME, "td")
        ok = cells[1].get_attribute("data-state") == "connected" and cells[3].text.isdigit()
        return ok and [c.text for c in cells]
    print(f"daemon row: {wait('BTC connected with a height', btc_row)}", flush=True)

    canvas = d.find_element(By.ID, "c-events")

    def sample():
        return (int(canvas.get_attribute("data-points") or 0), canvas.get_attribute("data-last"),
                d.execute_script("return arguments[0].toDataURL()", canvas))
    wait("two metric samples", lambda: state(d)["samples"] >= 2)
    p1, last1, img1 = sample()
    wait("more chart points", lambda: sample()[0] >= p1 + 2, timeout=10)
    p2, last2, img2 = sample()
    if img1 == img2:
        fail("the events chart's pixels did not change")
    def btc_rate():
        for part in (canvas.get_attribute("data-last") or "").split(","):
            coin, _, v = part.strip().rpartition(" ")
            if coin == "BTC" and float(v.rstrip("k")) > 0:
                return part
    wait("a non-zero BTC event rate", btc_rate)
    print(f"events chart moved: points {p1} -> {p2}, last {last1!r} -> {canvas.get_attribute('data-last')!r}", flush=True)
    for cid in ("deliveries", "clients", "closes", "db"):
        pts = int(d.find_element(By.ID, "c-" + cid).get_attribute("data-points") or 0)
        if pts < 2:
            fail(f"chart {cid} has {pts} points")
    if d.find_element(By.ID, "lag-card").is_displayed():
        fail("stream lag chart shown without a cluster")
    for hid in ("h-epoch", "h-seq", "h-up"):
        if d.find_element(By.ID, hid).text in ("", "–"):
            fail(f"header {hid} empty")

    # The filter box: one event name only, then nothing. Read the list in one script call (the
    # page re-renders it twice a second).
    listed = "return [...document.querySelectorAll('#events li')].map(li => li.dataset.event);"
    name = d.execute_script(listed)[0]
    box = d.find_element(By.ID, "filter")
    box.send_keys(f"coin:btc event:{name}")
    shown = d.execute_script(listed)
    if not shown or any(name not in e for e in shown):
        fail(f"filter event:{name} shows other events: {sorted(set(shown))}")
    box.clear()
    box.send_keys("no-such-thing-anywhere")
    if d.execute_script(listed):
        fail("a filter matching nothing still lists events")
    box.clear()
    d.execute_script("document.getElementById('filter').dispatchEvent(new Event('input'))")
    print(f"filter works (event:{name}, {len(shown)} shown)", flush=True)

    if len(d.execute_script("return window.__dashboard.events")) > 200:
        fail("more than 200 recent events kept")
    # A few more seconds of history for the screenshot.
    wait(f"{a.min_points} chart points", lambda: sample()[0] >= a.min_points, timeout=a.min_points + 15)
    d.save_screenshot(a.screenshot)
    print(f"screenshot saved to {a.screenshot}; {state(d)}", flush=True)
    print("OK", flush=True)


if __name__ == "__main__":
    main()
