"""The dashboard in a real browser (Debian's headless chromium, driven by Playwright)."""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from tests.integration.chaos import start_producer
from tests.integration.cluster import ROOT, running, unique_env

PARTITIONS = 4
SCREENSHOT = ROOT / "build" / "dashboard.png"
#: the promotion rule's window: small, so that a partition promotes within seconds (each gets
#: about 75 of the 300 events/s)
PROMOTE_AFTER = "200"


def test_the_dashboard_shows_every_partition_moves_with_the_stream_and_marks_promotions(
    tmp_path: Path,
) -> None:
    chromium = shutil.which("chromium")
    assert chromium, "Debian's chromium is missing: `make test` installs it (tools/install_chromium.sh)"
    env = unique_env(
        PARTITIONS,
        snapshot_every_events="500",
        challengers="logistic_regression",
        promote_after=PROMOTE_AFTER,
    )
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
            # A promotion is a marker on its partition's chart, naming the partition and the
            # new champion (logistic regression leads the tree within a few hundred labels).
            page.wait_for_function(
                "document.querySelector('#partitions svg.chart g.promotion') !== null", timeout=30_000
            )
            marker = page.locator("#partitions svg.chart g.promotion").first
            marked = int(marker.get_attribute("data-partition") or "-1")
            model = marker.get_attribute("data-model")
            assert page.locator(f"#p{marked} svg.chart g.promotion").count() >= 1
            assert marker.locator("text").text_content() == f"P{marked} \u2192 {model}"
            title = marker.locator("title").text_content() or ""
            assert title.startswith(f"partition {marked}: {model} promoted over "), title
            line, chart = (
                marker.locator("line").bounding_box(),
                page.locator(f"#p{marked} svg").bounding_box(),
            )
            assert line and chart and chart["x"] <= line["x"] <= chart["x"] + chart["width"], (line, chart)
            with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/models", timeout=10) as answer:
                audit = next(p for p in json.load(answer)["partitions"] if p["partition"] == marked)[
                    "changes"
                ]
            assert any(c["outcome"].startswith(f"promoted {model!r} over ") for c in audit), audit
            for partition in range(PARTITIONS):
                card = page.inner_text(f"#p{partition}")
                assert "served" in card, card
                # Champion and challenger side by side: one row each, with their own numbers, in
                # the configured order whichever is champion; the card names the champion (read
                # at once: a promotion may come between two reads).
                sub, rows = page.locator(f"#p{partition}").evaluate(
                    "card => [card.querySelector('.sub').textContent,"
                    " [...card.querySelectorAll('table.models tr')].map((row) => row.innerText)]"
                )
                assert len(rows) == 3 and rows[1].startswith("hoeffding_tree\t"), rows
                assert rows[2].startswith("logistic_regression\t"), rows
                roles = {row.split("\t")[1]: row.split("\t")[0] for row in rows[1:]}
                assert sorted(roles) == ["challenger", "champion"], rows
                assert sub.startswith(f"{roles['champion']} \u00b7 "), (sub, rows)
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            browser.close()
    finally:
        producer.kill()
        producer.wait()
    assert errors == [], f"the page logged errors: {errors}"
