"""Publish the asv dashboard as a page that works offline.

    python -m perf.publish [--config FILE] [asv publish options ...]      then: asv preview

asv 0.6's page loads jQuery, flot, Bootstrap and three small plugins from CDNs, so it stays blank on a
machine without internet access (a CI runner, an air-gapped lab). After ``asv publish`` this points the
page at local copies instead: ``perf/www/``, the same libraries as asv 0.5.1 shipped them (its sdist's
``asv/www/vendor/``; MIT-licensed, each file carries its notice). jQuery is byte-identical to the CDN
copy; the others differ in minification or by a patch version (Bootstrap 3.1.0 for 3.1.1), so their
integrity attributes go.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

from asv.config import Config

from .run import ROOT

__all__ = ["LOCAL", "localize", "main"]

WWW = Path(__file__).resolve().parent / "www"
LOCAL = {
    "https://code.jquery.com/jquery-3.3.1.min.js": "jquery-3.3.1.min.js",
    **{f"https://cdnjs.cloudflare.com/ajax/libs/flot/0.8.3/jquery.flot{part}.min.js": f"jquery.flot-0.8.3{part}.min.js"
       for part in ("", ".time", ".selection", ".categories")},
    "https://cdn.jsdelivr.net/npm/flot-orderbars@1.0.0/js/jquery.flot.orderBars.js": "jquery.flot.orderBars.js",
    "https://cdnjs.cloudflare.com/ajax/libs/stupidtable/1.0.1/stupidtable.min.js": "stupidtable.js",
    "https://cdnjs.cloudflare.com/ajax/libs/blueimp-md5/2.19.0/js/md5.min.js": "md5.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/js/bootstrap.min.js": "bootstrap-3.1.0.min.js",
    "https://cdn.jsdelivr.net/npm/bootstrap@3.1.1/dist/css/bootstrap.min.css": "bootstrap-3.1.0.min.css",
}


def localize(html_dir: Path) -> None:
    """Point the published ``index.html`` at local copies of its scripts and stylesheets."""
    index = html_dir / "index.html"

    def local(tag: re.Match) -> str:
        url = tag["url"]
        if url not in LOCAL:
            raise SystemExit(f"perf.publish: asv's page loads {url}, which perf/www has no copy of")
        shutil.copy(WWW / LOCAL[url], html_dir / "vendor" / LOCAL[url])
        unchecked = re.sub(r'\s(?:integrity|crossorigin|referrerpolicy)="[^"]*"', "", tag[0])
        return unchecked.replace(url, f"vendor/{LOCAL[url]}")

    (html_dir / "vendor").mkdir(exist_ok=True)
    tags = r'<(?:script|link)\b[^>]*?(?:src|href)="(?P<url>https?://[^"]+)"[^>]*>'
    index.write_text(re.sub(tags, local, index.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "asv.conf.json")
    args, asv_args = parser.parse_known_args(argv)
    subprocess.run([sys.executable, "-m", "asv", "publish", "--config", str(args.config), *asv_args], check=True)
    localize(args.config.parent / Config.load(str(args.config)).html_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
