"""Built-in domain pairs: synthetic, deterministic, offline datasets with known ideal translations.

Each scene is drawn from its parameters twice, once in the style of domain A and once in the
style of domain B. Training sets draw A and B from different scenes (unpaired, as CycleGAN
needs); the test sets also store the other-domain rendering of every test scene under
``ideal/``, so a translation can be scored against the truth (``cyclegan eval``).

- ``zebra``   (horse<->zebra-like): a four-legged animal on grass, plain brown <-> striped.
              A texture change that must keep the shape.
- ``fruit``   (apple<->orange-like): fruit on a table, green apples <-> oranges. A colour change.
- ``seasons`` (summer<->winter-like): hills, trees and sky, green summer <-> snowy winter.
              A global change of appearance.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 4  # drawn large and reduced with a box filter: smooth edges at any size
SPLIT_SEEDS = {"trainA": 0, "trainB": 1, "testA": 2, "testB": 3}


def _c(rgb, jitter, rng):
    return tuple(int(np.clip(v + rng.integers(-jitter, jitter + 1), 0, 255)) for v in rgb)


def _vertical_gradient(draw, w, h, top, bottom, y0=0):
    for y in range(y0, h):
        t = (y - y0) / max(1, h - 1 - y0)
        draw.line([(0, y), (w, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom)))


# ---------------------------------------------------------------- zebra
def _zebra_scene(rng, s):
    return {"horizon": rng.uniform(0.3, 0.45) * s, "cx": rng.uniform(0.35, 0.65) * s,
            "cy": rng.uniform(0.5, 0.6) * s, "bw": rng.uniform(0.28, 0.36) * s, "bh": rng.uniform(0.14, 0.18) * s,
            "facing": int(rng.integers(0, 2)), "stripe": rng.uniform(0.045, 0.06) * s,
            "grass": _c((70, 140, 60), 15, rng), "sky": _c((150, 190, 235), 15, rng),
            "coat": _c((140, 90, 50), 12, rng)}


def _zebra_draw(p, s, style):
    img = Image.new("RGB", (s, s))
    d = ImageDraw.Draw(img)
    _vertical_gradient(d, s, s, p["sky"], (220, 230, 245))
    _vertical_gradient(d, s, s, p["grass"], tuple(int(v * 0.7) for v in p["grass"]), int(p["horizon"]))
    cx, cy, bw, bh = p["cx"], p["cy"], p["bw"], p["bh"]
    sign = 1 if p["facing"] else -1
    mask = Image.new("L", (s, s))
    m = ImageDraw.Draw(mask)
    m.ellipse([cx - bw, cy - bh, cx + bw, cy + bh], fill=255)  # body
    for dx in (-0.75, -0.45, 0.45, 0.75):  # legs
        x = cx + dx * bw
        m.rectangle([x - 0.07 * bw, cy, x + 0.07 * bw, cy + 2.6 * bh], fill=255)
    hx, hy = cx + sign * 1.05 * bw, cy - 1.2 * bh
    m.polygon([(cx + sign * 0.7 * bw, cy - 0.5 * bh), (hx, hy - 0.3 * bh), (hx + sign * 0.2 * bw, hy + 0.5 * bh),
               (cx + sign * 0.8 * bw, cy + 0.2 * bh)], fill=255)  # neck
    m.ellipse([hx - 0.22 * bw, hy - 0.35 * bh, hx + 0.35 * bw * sign if sign > 0 else hx + 0.22 * bw,
               hy + 0.55 * bh] if sign > 0 else [hx - 0.35 * bw, hy - 0.35 * bh, hx + 0.22 * bw, hy + 0.55 * bh],
              fill=255)  # head
    if style == "A":
        coat = Image.new("RGB", (s, s), p["coat"])
    else:
        coat = Image.new("RGB", (s, s), (235, 235, 230))
        c = ImageDraw.Draw(coat)
        period = p["stripe"] * 2
        for k in range(-2, int(s / period) + 3):
            x = k * period + (cx % period)
            c.polygon([(x, 0), (x + p["stripe"], 0), (x + p["stripe"] + 0.1 * s, s), (x + 0.1 * s, s)],
                      fill=(25, 25, 25))
    img.paste(coat, (0, 0), mask)
    return img


# ---------------------------------------------------------------- fruit
def _fruit_scene(rng, s):
    n = int(rng.integers(1, 4))
    fruits = []
    for _ in range(n):
        r = rng.uniform(0.16, 0.26) * s
        fruits.append((rng.uniform(r, s - r), rng.uniform(max(r, 0.35 * s), s - r), r))
    return {"fruits": sorted(fruits, key=lambda f: f[1]), "table": _c((200, 170, 130), 20, rng),
            "wall": _c((225, 220, 205), 10, rng), "edge": rng.uniform(0.25, 0.4) * s,
            "tone": rng.uniform(-12, 12)}


def _fruit_draw(p, s, style):
    img = Image.new("RGB", (s, s), p["wall"])
    d = ImageDraw.Draw(img)
    d.rectangle([0, p["edge"], s, s], fill=p["table"])
    t = p["tone"]
    body = (95 + t, 185 + t, 55) if style == "A" else (250, 140 + t, 15)
    shade = tuple(int(v * 0.65) for v in body)
    for x, y, r in p["fruits"]:
        d.ellipse([x - r * 0.9, y + r * 0.75, x + r * 0.9, y + r * 1.05], fill=tuple(int(v * 0.75) for v in p["table"]))
        d.ellipse([x - r, y - r, x + r, y + r], fill=shade)
        d.ellipse([x - r * 0.92, y - r * 0.95, x + r * 0.85, y + r * 0.8], fill=tuple(int(v) for v in body))
        d.ellipse([x - r * 0.5, y - r * 0.6, x - r * 0.15, y - r * 0.3], fill=(255, 250, 235))  # highlight
        if style == "A":
            d.line([(x, y - r * 0.9), (x + r * 0.15, y - r * 1.25)], fill=(90, 60, 30), width=max(1, int(r / 8)))
        else:
            d.ellipse([x - r * 0.08, y - r * 0.95, x + r * 0.08, y - r * 0.8], fill=(80, 110, 40))
    return img


# ---------------------------------------------------------------- seasons
def _seasons_scene(rng, s):
    hills = [(rng.uniform(-0.2, 1.2) * s, rng.uniform(0.45, 0.7) * s, rng.uniform(0.35, 0.7) * s)
             for _ in range(int(rng.integers(2, 4)))]
    trees = [(rng.uniform(0.05, 0.95) * s, rng.uniform(0.7, 0.95) * s, rng.uniform(0.08, 0.16) * s)
             for _ in range(int(rng.integers(1, 5)))]
    return {"hills": hills, "trees": sorted(trees, key=lambda t: t[1]), "sun": (rng.uniform(0.1, 0.9) * s,
            rng.uniform(0.08, 0.25) * s), "shade": rng.uniform(0.85, 1.0)}


def _seasons_draw(p, s, style):
    img = Image.new("RGB", (s, s))
    d = ImageDraw.Draw(img)
    k = p["shade"]
    if style == "A":
        sky, sky2, ground, hill, leaf, sun = (70, 140, 230), (170, 210, 245), (80, 160, 50), (60, 130, 40), \
            (30, 100, 35), (255, 235, 120)
    else:
        sky, sky2, ground, hill, leaf, sun = (150, 160, 180), (215, 220, 228), (240, 242, 248), (225, 230, 240), \
            (235, 240, 245), (235, 235, 225)
    shade = lambda c: tuple(int(v * k) for v in c)  # noqa: E731
    _vertical_gradient(d, s, s, shade(sky), shade(sky2))
    sx, sy = p["sun"]
    d.ellipse([sx - 0.06 * s, sy - 0.06 * s, sx + 0.06 * s, sy + 0.06 * s], fill=sun)
    for x, y, r in p["hills"]:
        d.ellipse([x - r, y, x + r, y + 1.6 * r], fill=shade(hill))
    d.rectangle([0, 0.78 * s, s, s], fill=shade(ground))
    for x, y, h in p["trees"]:
        d.rectangle([x - 0.08 * h, y - 0.3 * h, x + 0.08 * h, y + 0.2 * h], fill=(90, 60, 35))
        d.polygon([(x, y - 1.6 * h), (x - 0.55 * h, y - 0.2 * h), (x + 0.55 * h, y - 0.2 * h)], fill=shade(leaf))
    return img


PAIRS: dict[str, tuple[Callable, Callable, str]] = {
    "zebra": (_zebra_scene, _zebra_draw, "horse<->zebra-like: plain coat <-> stripes, shape kept"),
    "fruit": (_fruit_scene, _fruit_draw, "apple<->orange-like: green apples <-> oranges"),
    "seasons": (_seasons_scene, _seasons_draw, "summer<->winter-like: green landscape <-> snow"),
}


def render(pair: str, seed: int, split: str, index: int, size: int, style: str) -> Image.Image:
    """The image of scene ``index`` of ``split``, drawn in domain ``style`` ('A' or 'B')."""
    scene_fn, draw_fn, _ = PAIRS[pair]
    rng = np.random.default_rng([seed, SPLIT_SEEDS[split], index, sum(map(ord, pair))])
    big = size * SUPERSAMPLE
    return draw_fn(scene_fn(rng, big), big, style).resize((size, size), Image.BOX)


def write_pair(pair: str, out: str | Path, size: int = 64, n_train: int = 200, n_test: int = 20,
               seed: int = 0) -> Path:
    """Write ``out/{trainA,trainB,testA,testB}`` and ``out/ideal/{testA,testB}`` as PNG files."""
    if pair not in PAIRS:
        raise ValueError(f"unknown built-in pair {pair!r}; choose from {', '.join(PAIRS)}")
    out = Path(out)
    counts = {"trainA": n_train, "trainB": n_train, "testA": n_test, "testB": n_test}
    for split, n in counts.items():
        style, other = split[-1], "B" if split[-1] == "A" else "A"
        (out / split).mkdir(parents=True, exist_ok=True)
        if split.startswith("test"):
            (out / "ideal" / split).mkdir(parents=True, exist_ok=True)
        digits = max(4, int(math.log10(max(n, 1))) + 1)
        for i in range(n):
            name = f"{i:0{digits}d}.png"
            render(pair, seed, split, i, size, style).save(out / split / name)
            if split.startswith("test"):
                render(pair, seed, split, i, size, other).save(out / "ideal" / split / name)
    meta = {"pair": pair, "description": PAIRS[pair][2], "seed": seed, "size": size,
            "n_train": n_train, "n_test": n_test,
            "ideal": "ideal/testA/<name> is the B-domain rendering of testA/<name>; ideal/testB likewise"}
    (out / "pair.json").write_text(json.dumps(meta, indent=2))
    return out
