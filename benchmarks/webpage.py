"""Web page benchmark: the size of a model's page beside its float32 weights, and how
fast the page generates in headless Chromium, timed by the page itself in real time.

    python benchmarks/webpage.py                          # 2x256 size, 2x512 speed
    python benchmarks/webpage.py --json                   # one JSON object on stdout
    python benchmarks/webpage.py --checkpoint runs/x/best.pt --screenshot docs/webpage.png

1. size: the page of an untrained 2x256 LSTM (embedding 64, 65 characters) in bytes,
   over 4 bytes per parameter.
2. speed: the page of an untrained 2x512 LSTM generates ``--len`` characters greedily
   from ``?run=1``; ``data-ms`` on #output is its time from Generate to the last
   character, in the page's own real-time clock, so ``--len / data-ms`` is chars/s
   at batch 1. (``--virtual-time-budget``, which the tests use to wait, freezes that
   clock, so this drives Chromium over its DevTools pipe instead.)
3. ``--screenshot PNG``: the page of ``--checkpoint`` after a generation, 1000x800.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import machine  # noqa: E402
from charrnn.config import ModelConfig  # noqa: E402
from charrnn.data import Vocab  # noqa: E402
from charrnn.files import atomic_write  # noqa: E402
from charrnn.model import CharRNN  # noqa: E402
from charrnn.checkpoint import load_checkpoint, model_from_checkpoint  # noqa: E402
from charrnn.webpage import checkpoint_meta, page  # noqa: E402

SHAKESPEARE_CHARS = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")
# Resolves once #output says the generation ended (data-done) or was refused.
WAIT = """new Promise((resolve) => {
  const o = document.getElementById("output");
  const check = () => { if (o.dataset.done || o.dataset.error) resolve(
      { ms: Number(o.dataset.ms), chars: Number(o.dataset.chars), error: o.dataset.error }); };
  new MutationObserver(check).observe(o, { attributes: true });
  check();
})"""


# Resolves after the next two animation frames: the last DOM change is on screen.
PAINTED = "new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)))"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Chromium:
    """Headless Chromium driven over --remote-debugging-pipe: JSON messages ending in
    a NUL byte, written to the browser's fd 3 and read from its fd 4."""

    def __init__(self, binary: str, profile: str) -> None:
        to_browser, self._out = os.pipe()
        self._in, from_browser = os.pipe()

        def fds() -> None:            # in the child: its fd 3 reads, its fd 4 writes
            a, b = os.dup(to_browser), os.dup(from_browser)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--hide-scrollbars", f"--user-data-dir={profile}", "--remote-debugging-pipe"],
            pass_fds=(3, 4), preexec_fn=fds, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_browser)
        os.close(from_browser)
        self._next, self._buffer, self.events = 0, b"", []

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._next += 1
        message = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._out, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
            self.events.append(reply)

    def wait_event(self, method: str) -> dict:
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read())

    def _read(self) -> dict:
        while b"\0" not in self._buffer:
            chunk = os.read(self._in, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser closed its pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def open(self, url: str, width: int = 1000, height: int = 800) -> str:
        """A new tab at ``url`` (loaded); its session id."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Emulation.setDeviceMetricsOverride", session, width=width, height=height,
                  deviceScaleFactor=1, mobile=False)
        self.call("Page.enable", session)
        self.call("Page.navigate", session, url=url)
        self.wait_event("Page.loadEventFired")
        return session

    def finished(self, session: str) -> dict:
        """What #output says once the page has finished generating."""
        return self.call("Runtime.evaluate", session, expression=WAIT, awaitPromise=True,
                         returnByValue=True)["result"]["value"]

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except (RuntimeError, OSError):
            pass
        self.proc.wait(timeout=30)
        os.close(self._in)
        os.close(self._out)


def find_browser() -> str | None:
    return next((p for name in BROWSERS if (p := shutil.which(name))), None)


def page_speed(model: CharRNN, vocab: Vocab, length: int, repeats: int, folder: Path,
               binary: str) -> list[float]:
    """Milliseconds the page of ``model`` takes to generate ``length`` characters
    greedily from ``?run=1``, by the page's own clock, once per repeat (one browser)."""
    path = folder / "speed.html"
    path.write_text(page(model, vocab, title="speed", meta={}), encoding="utf-8")
    browser = Chromium(binary, str(folder / "profile"))
    try:
        runs = []
        for _ in range(repeats):
            shown = browser.finished(browser.open(f"{path.as_uri()}?len={length}&greedy=1"
                                                  "&run=1"))
            assert shown["chars"] == length, shown
            runs.append(shown["ms"])
        return runs
    finally:
        browser.close()


def screenshot(binary: str, checkpoint: Path, query: str, title: str | None, png: Path,
               folder: Path) -> None:
    """A PNG of the page of ``checkpoint`` after a generation with ``query``."""
    ckpt = load_checkpoint(checkpoint)
    model, vocab = model_from_checkpoint(ckpt, checkpoint)
    shot = folder / "shot.html"
    shot.write_text(page(model, vocab, title=title or f"charrnn: {checkpoint}",
                         meta=checkpoint_meta(ckpt)), encoding="utf-8")
    browser = Chromium(binary, str(folder / "profile-shot"))
    try:
        session = browser.open(f"{shot.as_uri()}?{query}&run=1")
        browser.finished(session)
        browser.call("Runtime.evaluate", session, expression=PAINTED, awaitPromise=True)
        data = browser.call("Page.captureScreenshot", session, format="png")["data"]
    finally:
        browser.close()
    with atomic_write(png, fix="write it elsewhere") as f:
        f.write(base64.b64decode(data))


def lstm(hidden_size: int) -> tuple[CharRNN, Vocab]:
    torch.manual_seed(0)
    vocab = Vocab(SHAKESPEARE_CHARS)
    config = ModelConfig(cell="lstm", num_layers=2, hidden_size=hidden_size, embedding_dim=64)
    return CharRNN(len(vocab), config).eval(), vocab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--len", type=int, default=2000, help="characters to time")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", type=Path, help="the model of --screenshot")
    parser.add_argument("--screenshot", type=Path, help="write a PNG of the page here")
    parser.add_argument("--query", default="prime=ROMEO:&len=1500&temperature=0.8&seed=7",
                        help="the screenshot's URL settings (run=1 is added)")
    parser.add_argument("--title", help="the screenshot page's title")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    binary = find_browser()
    if binary is None:
        sys.exit(f"no browser found ({', '.join(BROWSERS)})")
    info = machine.describe()
    log(machine.summary(info))
    result: dict = {"processor": info}

    model, vocab = lstm(256)
    size = len(page(model, vocab, title="size", meta={}).encode("utf-8"))
    weights = 4 * model.num_parameters()
    result["size"] = {"model": "2x256 lstm, embedding 64, 65 chars", "page_bytes": size,
                      "float32_bytes": weights, "ratio": round(size / weights, 4)}
    log(f"size: 2x256 LSTM page {size:,} bytes, float32 weights {weights:,} bytes, "
        f"ratio {size / weights:.3f}")

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        runs = page_speed(*lstm(512), args.len, args.repeats, folder, binary)
        for ms in runs:
            log(f"speed: 2x512 LSTM, {args.len} chars in {ms:.0f} ms: "
                f"{args.len / ms * 1000:,.0f} chars/s")
        result["speed"] = {"model": "2x512 lstm, embedding 64, 65 chars", "chars": args.len,
                           "ms": runs, "chars_per_s": round(args.len / min(runs) * 1000, 1)}
        if args.screenshot:
            if args.checkpoint is None:
                sys.exit("--screenshot needs --checkpoint, a trained model to show")
            screenshot(binary, args.checkpoint, args.query, args.title, args.screenshot, folder)
            log(f"wrote {args.screenshot}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
