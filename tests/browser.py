"""A real headless Chromium for the console's tests: Debian's `chromium` driven through
`chromium-driver` by selenium (blocking calls, run off the event loop: the gateway under test
serves from the test's own loop). Without the browser the tests skip, and fail under CI=true
(.ci/run installs it)."""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from helpers import unavailable

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DESKTOP = (1280, 800)
PHONE = (390, 844)
SHOTS = os.environ.get("DRIFTLOOP_SCREENSHOTS")  # a folder: save each page's screenshot there


def missing() -> str | None:
    for path in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(path):
            return f"{path} is not installed (apt-get install chromium chromium-driver)"
    return None


class Page:
    """One browser window; each call runs the blocking selenium call in a thread."""

    def __init__(self, driver: Any) -> None:
        self.driver = driver

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def open(self, url: str) -> None:
        await self.run(self.driver.get, url)

    async def script(self, source: str, *args: Any) -> Any:
        return await self.run(self.driver.execute_script, source, *args)

    async def texts(self, css: str) -> list[str]:
        return list(
            await self.script(
                "return [...document.querySelectorAll(arguments[0])].map(e => e.textContent)", css
            )
        )

    async def count(self, css: str) -> int:
        return int(await self.script("return document.querySelectorAll(arguments[0]).length", css))

    async def size(self, width: int, height: int) -> None:
        """The page's viewport (CSS pixels; under 700 wide the console lays out for a phone)."""
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 700}
        await self.run(self.driver.execute_cdp_cmd, "Emulation.setDeviceMetricsOverride", metrics)

    async def shot(self, name: str) -> None:
        if SHOTS:
            await self.run(lambda: Path(SHOTS).mkdir(parents=True, exist_ok=True))
            await self.run(self.driver.save_screenshot, str(Path(SHOTS) / name))

    async def load_ms(self) -> float:
        """The last navigation's time to the load event, in milliseconds (measured, reported)."""
        return float(
            await self.script(
                "const n = performance.getEntriesByType('navigation')[0];"
                "return n.loadEventEnd - n.startTime;"
            )
        )


@pytest.fixture
async def page() -> AsyncIterator[Page]:
    why = missing()
    if why:
        unavailable(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="driftloop-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        f"--window-size={DESKTOP[0]},{DESKTOP[1]}",
    ):
        options.add_argument(flag)
    driver = await asyncio.to_thread(
        webdriver.Chrome, options=options, service=Service(executable_path=CHROMEDRIVER)
    )
    try:
        opened = Page(driver)
        await opened.size(*DESKTOP)
        yield opened
    finally:
        await asyncio.to_thread(driver.quit)
        shutil.rmtree(profile, ignore_errors=True)
