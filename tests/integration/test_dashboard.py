"""The dashboard in a real browser (Debian's headless chromium, driven by Playwright)."""

from __future__ import annotations

import shutil
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.integration.chaos import start_producer
from tests.integration.cluster import ROOT, running, unique_env

PARTITIONS = 4
SCREENSHOT = ROOT / "build" / "dashboard.png"


def test_the_dashboard_shows_every_partition_and_moves_with_the_stream(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make test` installs it (tools/install_chromium.sh)"
    env = unique_env(PARTITIONS, snapshot_every_events="500", challengers="logistic_regression")
    producer = start_producer(env, events=15000, rate=300)
    errors: list[str] = []
    try:
        with running(env, tmp_path / "w1") as worker, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            # The page's CSP forbids eval, which Playwright's wait_for_function uses.
            page = browser.new_page(viewport={"width": 1400, "height": 900}, bypass_csp=True)
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"http://127.0.0.1:{worker.port}/")
            page.wait_for_function(
                f"document.querySelectorAll('#partitions .card').length === {PARTITIONS}", timeout=60_000
            )
            # Every partition recovered and served (a slow machine can take a while over the
            # first assignment; the cards say "recovering" until then) before the cards must move.
            page.wait_for_function(
                f"document.getElementById('k-parts').textContent === '{PARTITIONS} / {PARTITIONS}'",
                timeout=90_000,
            )
            # A rate needs two polls; then the numbers must move as events flow.
            # (the page shows an en dash, \u2013, until it has a value)
            page.wait_for_function(
                "document.getElementById('k-rate').textContent !== '\\u2013'", timeout=30_000
            )
            before = page.inner_text("#partitions")
            page.wait_for_timeout(4_500)
            after = page.inner_text("#partitions")
            assert before != after, "the partition cards did not change while events flowed"
            assert float(page.inner_text("#k-rate").replace(",", "")) > 0
            assert page.inner_text("#k-parts") == f"{PARTITIONS} / {PARTITIONS}"
            for partition in range(PARTITIONS):
                card = page.inner_text(f"#p{partition}")
                assert "served" in card and "hoeffding_tree" in card, card
                # Champion and challenger side by side: one row each, with their own numbers.
                rows = page.locator(f"#p{partition} table.models tr").all_inner_texts()
                assert len(rows) == 3 and rows[1].startswith("hoeffding_tree\tchampion"), rows
                assert rows[2].startswith("logistic_regression\tchallenger"), rows
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            browser.close()
    finally:
        producer.kill()
        producer.wait()
    assert errors == [], f"the page logged errors: {errors}"
