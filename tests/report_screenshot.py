"""Look at a report page as a person would: render it in headless Chromium (Debian's ``chromium``).

    python tests/report_screenshot.py REPORT/index.html shot.png [--width 1400] [--height 2000]

writes the screenshot (the file tool shows PNGs) and prints the page's laid-out width and its widest table,
so "the tables fit a 1400 px window" is a measurement, not a guess. tests/test_report.py runs both when
chromium is installed.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")
# appended to a copy of the page: the laid-out widths, written where --dump-dom shows them
_MEASURE = """<script>document.title = JSON.stringify({
  page: document.documentElement.scrollWidth, window: window.innerWidth,
  tables: Array.prototype.map.call(document.querySelectorAll("table"), function (t) {
    return [t.id, Math.round(t.getBoundingClientRect().right)]; }),
  images: Array.prototype.map.call(document.querySelectorAll("img"), function (i) {
    return [i.alt, Math.round(i.getBoundingClientRect().right)]; })});</script>"""


def chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _run(args: list[str], width: int, height: int, timeout: float) -> subprocess.CompletedProcess:
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", *args],
                              capture_output=True, text=True, timeout=timeout, check=False)


def screenshot(page: str | Path, png: str | Path, width: int = 1400, height: int = 2000,
               timeout: float = 120) -> Path:
    """A ``width`` x ``height`` screenshot of ``page`` (an HTML file) at ``png``."""
    png = Path(png).resolve()
    png.unlink(missing_ok=True)
    proc = _run([f"--screenshot={png}", Path(page).resolve().as_uri()], width, height, timeout)
    if not png.is_file():
        raise RuntimeError(f"chromium wrote no screenshot of {page}: {proc.stderr[-2000:]}")
    return png


def measure(page: str | Path, width: int = 1400, timeout: float = 120) -> dict:
    """{page: the document's scroll width, window, tables: [[id, right edge]], images: [[alt, right edge]]}
    of ``page`` laid out in a window ``width`` px wide."""
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "page.html"
        copy.write_text(Path(page).read_text(encoding="utf-8").replace("</body>", _MEASURE + "</body>"),
                        encoding="utf-8")
        proc = _run(["--dump-dom", copy.as_uri()], width, 1000, timeout)
    found = re.search(r"<title>(.*?)</title>", proc.stdout, re.S)
    if not found:
        raise RuntimeError(f"chromium returned no DOM for {page}: {proc.stderr[-2000:]}")
    return json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("page")
    ap.add_argument("png")
    ap.add_argument("--width", type=int, default=1400)
    ap.add_argument("--height", type=int, default=2000)
    args = ap.parse_args()
    screenshot(args.page, args.png, args.width, args.height)
    m = measure(args.page, args.width)
    widest = max(m["tables"], key=lambda t: t[1], default=["none", 0])
    print(f"{args.png}: page {m['page']} px wide in a {m['window']} px window; widest table {widest[0]} "
          f"ends at {widest[1]} px")


if __name__ == "__main__":
    main()
