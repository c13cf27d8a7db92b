"""Regenerate the README's report screenshot, docs/img/quickstart-report.png.

Runs the quickstart suite (example_suites/quickstart) with pytest into a temporary folder,
opens its report.html in headless Chromium at 1280 px wide and saves the picture, with a
sidecar docs/img/quickstart-report.json recording the digest of the files the page was made
from: the templates and the code that feeds them and draws the charts (html.py, svg.py; see
:func:`pytest_ragbench.report.html.template_digest`). tests/test_report_html.py compares that
digest with the current files, so a change to the page without a new picture fails the tests.

Run from the repository root: ``python scripts/render_readme_screenshot.py``
(needs Chromium: Debian ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUITE = "example_suites/quickstart/suite.yaml"
IMAGE = ROOT / "docs" / "img" / "quickstart-report.png"
WIDTH, HEIGHT = 1280, 2400


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    sys.exit("render_readme_screenshot: no Chromium found (Debian: apt-get install chromium)")


def run_suite(out: Path) -> Path:
    """Run the quickstart suite; returns the run's report.html."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    cmd = [sys.executable, "-m", "pytest", f"--ragbench={SUITE}", f"--ragbench-out={out}",
           "--ragbench-no-history", "-p", "no:cacheprovider", "-q"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.exit(f"render_readme_screenshot: the quickstart run failed ({proc.returncode}):\n"
                 f"{proc.stdout[-3000:]}{proc.stderr[-2000:]}")
    return (out / "latest" / "report.html").resolve()


def screenshot(browser: str, page: Path, dest: Path, profile: Path) -> None:
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--hide-scrollbars", "--force-device-scale-factor=1",
           f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
           f"--screenshot={dest}", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if not dest.is_file():
        sys.exit(f"render_readme_screenshot: Chromium wrote no picture:\n{proc.stderr[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=IMAGE,
                        help=f"where to write the PNG (default {IMAGE.relative_to(ROOT)})")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from pytest_ragbench.report.html import PAGE_FILES, template_digest

    browser = chromium()
    with tempfile.TemporaryDirectory(prefix="ragbench-shot-") as tmp:
        report = run_suite(Path(tmp) / "runs")
        shot = Path(tmp) / "shot.png"
        screenshot(browser, report, shot, Path(tmp) / "profile")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, args.out)
    sidecar = args.out.with_suffix(".json")
    sidecar.write_text(json.dumps({
        "image": args.out.name, "suite": SUITE, "width": WIDTH, "height": HEIGHT,
        "image_sha256": hashlib.sha256(args.out.read_bytes()).hexdigest(),
        "templates": list(PAGE_FILES), "templates_sha256": template_digest(),
        "made_by": "scripts/render_readme_screenshot.py",
    }, indent=1) + "\n", encoding="utf-8")
    print(f"wrote {args.out} and {sidecar}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
