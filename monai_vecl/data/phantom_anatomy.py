"""Render a phantom frontal (PA/AP) chest radiograph from a sampled case, with numpy only.

Everything is drawn as an attenuation map in a patient frame (x to the image right = patient's
left, y down, both in [-1, 1]) that is rotated, shifted and zoomed per patient, then mapped to
film-like intensities with per-patient exposure, gamma, blur and noise. Findings change the
attenuation where a radiologist would see them: fluid fills the costophrenic angle with a
meniscus, a pneumothorax removes lung markings beyond a thin pleural line, and so on.
Sizes are fractions of the field of view, so any ``image_size`` gives the same picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy.ndimage import gaussian_filter

#: Finding codes (taxonomy) the renderer draws.
ATELECTASIS, EFFUSION, PNEUMOTHORAX, CARDIOMEGALY, OPACITY, PNEUMONIA = 1, 2, 3, 4, 5, 6
MASS, EDEMA, NODULE, CONSOLIDATION, FRACTURE, DEVICES = 7, 8, 9, 15, 16, 20

#: Side of a finding: patient's right is on the image left in a frontal view.
SIDE_SIGN = {"right": -1.0, "left": 1.0}
#: Vertical thirds of a lung, as fractions of its height from the apex.
ZONES = {"upper": (0.05, 0.38), "mid": (0.35, 0.65), "lower": (0.62, 0.92)}
#: A soft finding mask (fluid, heart, patch, disk) counts as region where it reaches half its peak.
REGION_LEVEL = 0.5
#: A drawn line (plate atelectasis, Kerley lines, devices) counts as region where it adds this much attenuation.
LINE_REGION_ATTENUATION = 0.05


@dataclass
class Case:
    """Everything needed to draw one image and write its report: anatomy and finding attributes."""

    anatomy: dict[str, float]
    findings: dict[int, dict] = field(default_factory=dict)


class _Frame:
    """Pixel grid expressed in the rotated, shifted, zoomed patient frame."""

    def __init__(self, size: int, anatomy: dict[str, float]):
        self.size = size
        theta = np.deg2rad(anatomy["rotation_deg"])
        self.cos, self.sin = np.cos(theta), np.sin(theta)
        self.zoom, self.tx, self.ty = anatomy["zoom"], anatomy["shift_x"], anatomy["shift_y"]
        axis = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
        gx, gy = np.meshgrid(axis, axis)
        self.x = ((self.cos * (gx - self.tx) + self.sin * (gy - self.ty)) / self.zoom).astype(np.float32)
        self.y = ((-self.sin * (gx - self.tx) + self.cos * (gy - self.ty)) / self.zoom).astype(np.float32)
        self.px = 2.0 / (size * self.zoom)  # one pixel in frame units

    def to_pixels(self, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Frame coordinates → (row, col) pixel coordinates."""
        gx = self.tx + self.zoom * (self.cos * u - self.sin * v)
        gy = self.ty + self.zoom * (self.sin * u + self.cos * v)
        return (gy + 1) / 2 * self.size - 0.5, (gx + 1) / 2 * self.size - 0.5


def _soft(inside: np.ndarray, width: float) -> np.ndarray:
    """Soft mask from a field that is positive inside: a linear edge ramp 4 x ``width`` wide (cheaper than a logistic)."""
    return np.clip(inside * (0.25 / width) + 0.5, 0, 1).astype(np.float32, copy=False)


def _smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Unit-variance Gaussian-filtered white noise; wide filters run on a coarser grid, then upsample."""
    factor = max(1, int(sigma_px / 1.5))
    small = -(-size // factor)
    n = gaussian_filter(rng.standard_normal((small, small), dtype=np.float32), sigma_px / factor)
    if factor > 1:
        n = np.asarray(Image.fromarray(n, mode="F").resize((size, size), Image.BILINEAR))
    return n / (n.std() + 1e-6)


class _Lines:
    """Polylines splatted onto a canvas and blurred once: tubes, wires, Kerley lines, plate atelectasis."""

    def __init__(self, frame: _Frame):
        self.frame = frame
        self.rows: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []
        self.findings: list[int | None] = []

    def add(self, u: np.ndarray, v: np.ndarray, amplitude: float, finding: int | None = None) -> None:
        """Add a polyline through frame points (u, v); ``amplitude`` is its peak attenuation after blur.

        ``finding`` tags the line with the finding code it belongs to, for :meth:`render` of that finding only.
        """
        u, v = np.asarray(u, np.float32), np.asarray(v, np.float32)
        seg = np.hypot(np.diff(u), np.diff(v)) / self.frame.px
        n = np.maximum(2, np.ceil(seg / 0.4).astype(int))
        t = np.concatenate([np.linspace(0, 1, k, endpoint=False) for k in n])
        idx = np.repeat(np.arange(len(seg)), n)
        uu, vv = u[idx] + t * (u[idx + 1] - u[idx]), v[idx] + t * (v[idx + 1] - v[idx])
        r, c = self.frame.to_pixels(uu, vv)
        step = np.repeat(seg / n, n)
        self.rows.append(r)
        self.cols.append(c)
        self.weights.append(amplitude * step)
        self.findings.append(finding)

    def render(self, sigma_px: float, finding: int | None = None) -> np.ndarray:
        """All lines, or only those tagged with ``finding``, blurred."""
        size = self.frame.size
        canvas = np.zeros((size, size), np.float32)
        keep = [i for i, tag in enumerate(self.findings) if finding is None or tag == finding]
        if not keep:
            return canvas
        r, c, w = (np.concatenate([a[i] for i in keep]) for a in (self.rows, self.cols, self.weights))
        r, c = np.rint(r).astype(int), np.rint(c).astype(int)
        ok = (r >= 0) & (r < size) & (c >= 0) & (c < size)
        np.add.at(canvas, (r[ok], c[ok]), w[ok])
        # a blurred line of unit weight per pixel length peaks at 1 / (sqrt(2 pi) sigma)
        return gaussian_filter(canvas, sigma_px) * (np.sqrt(2 * np.pi) * sigma_px)


def _bezier(points: list[tuple[float, float]], n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Bézier curve through control points (de Casteljau), as a polyline of ``n`` points."""
    t = np.linspace(0, 1, n, dtype=np.float32)[:, None, None]
    q = np.broadcast_to(np.asarray(points, np.float32), (n, len(points), 2))
    while q.shape[1] > 1:
        q = q[:, :-1] * (1 - t) + q[:, 1:] * t
    return q[:, 0, 0], q[:, 0, 1]


class _Lungs:
    """Lung geometry for one side: a superellipse narrowing to the apex, cut below by the diaphragm dome."""

    def __init__(self, a: dict[str, float], side: float, dome_lift: float):
        self.side = side
        med, width = a["mediastinum_hw"], a["chest_hw"] - a["mediastinum_hw"]
        self.ax = 0.5 * width * 0.97
        self.cx = side * (med + self.ax)
        self.top = a["lung_top"]
        self.dome = a["dome_y"] + (a["left_dome_drop"] if side > 0 else 0.0) - dome_lift
        self.bottom = self.dome + 0.2
        self.cy = 0.5 * (self.top + self.bottom)
        self.ay = 0.5 * (self.bottom - self.top)

    def field(self, x: np.ndarray, y: np.ndarray, shrink: float = 0.0, drop: float = 0.0) -> np.ndarray:
        """Positive inside the (optionally collapsed) lung; ``shrink`` pulls the border in, ``drop`` lowers the apex."""
        taper = 0.55 + 0.45 * np.sqrt(np.clip((y - self.top) / 0.55, 0, 1))
        ax = self.ax * taper - shrink
        dx = (x - self.cx - self.side * 0.6 * shrink) / np.maximum(ax, 1e-3)
        dy = (y - self.cy - 0.5 * (shrink + drop)) / (self.ay - 0.9 * shrink - 0.5 * drop)
        ellipse = 1 - (dx * dx * np.sqrt(np.abs(dx)) + dy * dy * np.sqrt(np.abs(dy)))  # superellipse, power 2.5
        dome = self.dome + 0.22 * ((x - self.cx) / self.ax) ** 2 - y
        return np.minimum(ellipse * 0.25, dome)


def render(
    case: Case, size: int, rng: np.random.Generator, regions: dict[int, np.ndarray] | None = None
) -> np.ndarray:
    """Draw ``case`` as an 8-bit grayscale image of shape [size, size].

    With ``regions`` (a dict) given, it is filled with a boolean [size, size] mask per drawn finding
    code: where that finding changes the picture (see :data:`REGION_LEVEL`). Computing the masks draws
    no random numbers, so the pixels are the same with or without them.
    """
    a, f = case.anatomy, case.findings

    def mark(code: int, mask: np.ndarray) -> None:
        if regions is not None:
            regions[code] = regions[code] | mask if code in regions else mask.copy()

    # separate streams: adding a finding must not change the patient's texture and noise
    rng, noise_rng = rng.spawn(2)
    fr = _Frame(size, a)
    x, y = fr.x, fr.y
    edge = 1.2 * fr.px
    lift = {s: 0.0 for s in SIDE_SIGN}
    if ATELECTASIS in f and f[ATELECTASIS]["kind"] == "lobar":
        for s in f[ATELECTASIS]["sides"]:
            lift[s] = f[ATELECTASIS]["lift"]
    lungs = {s: _Lungs(a, SIDE_SIGN[s], lift[s]) for s in SIDE_SIGN}

    ctr = f[CARDIOMEGALY]["ctr"] if CARDIOMEGALY in f else a["ctr"]
    heart_hw = ctr * a["chest_hw"]
    heart_hh = 0.55 * heart_hw + 0.06
    heart_cx, heart_cy = 0.35 * heart_hw - 0.03, a["dome_y"] + 0.12 - heart_hh
    # the cardiac silhouette is an ellipse tilted along the heart's long axis, resting on the diaphragm
    hx, hy = x - heart_cx, y - heart_cy
    tilt_c, tilt_s = np.cos(0.45), np.sin(0.45)
    heart = _soft(1 - ((tilt_c * hx + tilt_s * hy) / heart_hw) ** 2 - ((-tilt_s * hx + tilt_c * hy) / heart_hh) ** 2, 0.04)
    if CARDIOMEGALY in f:
        mark(CARDIOMEGALY, heart >= REGION_LEVEL)
    knob_y = heart_cy - heart_hh - 0.02
    aorta = _soft(1 - ((x - 0.1) ** 2 + (y - knob_y) ** 2) / 0.07**2, 0.03)
    mediastinum = np.maximum(
        _soft(a["mediastinum_hw"] + 0.05 * np.clip(y - knob_y, 0, None) - np.abs(x - 0.02), edge)
        * _soft(heart_cy - y, 0.05),
        aorta,
    )
    body_hw = a["chest_hw"] + 0.14
    body = _soft(1 - (np.abs(x / body_hw) ** 4 + np.abs((y - 0.45) / 1.55) ** 4), 0.02)
    # elliptical cross-section: the chest wall thins towards the flanks
    thickness = a["tissue"] * 0.62 * np.sqrt(np.clip(1 - (x / (body_hw + 0.02)) ** 2, 0, 1)) * body
    lung_side = {s: _soft(lungs[s].field(x, y), edge) for s in SIDE_SIGN}
    not_central = (1 - heart) * (1 - mediastinum)
    lung = (lung_side["right"] + lung_side["left"]) * not_central

    att = thickness * (1 - 0.72 * lung)
    att += 0.08 * body * _soft(y - a["dome_y"] - 0.1, 0.1)  # abdomen thicker than chest wall
    att += 0.07 * heart + 0.08 * mediastinum
    att += 0.06 * _soft(0.065 - np.abs(x), edge) * (0.85 + 0.15 * np.cos(y * 2 * np.pi / 0.115))  # spine
    att -= 0.08 * _soft(0.028 - np.abs(x - 0.01), edge) * _soft(a["lung_top"] + 0.5 - y, 0.02)  # tracheal air
    if a["breasts"] > 0:
        for s in SIDE_SIGN.values():
            att += a["breasts"] * _soft(
                1 - ((x - s * 0.5 * a["chest_hw"]) / 0.35) ** 2 - ((y - a["dome_y"]) / 0.22) ** 2, 0.05
            ) * _soft(a["dome_y"] + 0.15 - y, 0.03)
    if a["gastric_bubble"]:
        bubble = 1 - ((x - lungs["left"].cx) / 0.09) ** 2 - ((y - lungs["left"].dome - 0.13) / 0.055) ** 2
        att -= 0.18 * _soft(bubble, 0.05) * body
    # ribs stand out against aerated lung, much less against the heart and abdomen
    att += _ribs(a, f.get(FRACTURE), x, y, edge, mark) * (0.4 + 0.6 * lung)

    lines = _Lines(fr)
    thick = _Lines(fr)
    keep_markings = np.ones_like(x)
    hilum = np.exp(-(((np.abs(x) - 0.2) / 0.25) ** 2 + ((y - heart_cy + heart_hh) / 0.3) ** 2))

    if EFFUSION in f:
        e = f[EFFUSION]
        frac, density = {"small": (0.08, 0.28), "moderate": (0.28, 0.38), "large": (0.5, 0.42)}[e["size"]]
        for s in e["sides"]:
            lg = lungs[s]
            level = lg.dome + 0.12 - frac * (lg.dome + 0.12 - lg.top)
            lateral = np.clip((SIDE_SIGN[s] * (x - lg.cx) + lg.ax) / (2 * lg.ax), 0, 1)
            fluid = _soft(y - (level - 0.13 * lateral**2), 0.025) * lung_side[s]
            att += density * fluid * (0.85 + 0.15 * _soft(y - level - 0.1, 0.05))
            keep_markings *= 1 - fluid
            mark(EFFUSION, fluid >= REGION_LEVEL)
    if PNEUMOTHORAX in f:
        p = f[PNEUMOTHORAX]
        depth = {"small": 0.055, "moderate": 0.12, "large": 0.2}[p["size"]]
        lg = lungs[p["side"]]
        collapsed_field = lg.field(x, y, shrink=depth, drop=depth)
        upper = _soft(lg.top + (0.45 + depth) * (lg.dome - lg.top) - y, 0.05)
        gap = lung_side[p["side"]] * (1 - _soft(collapsed_field, edge)) * upper
        att -= 0.09 * gap
        keep_markings *= 1 - gap
        pleural_line = np.exp(-((collapsed_field / (0.7 * fr.px)) ** 2)) * upper * lung_side[p["side"]]
        att += 0.13 * pleural_line
        mark(PNEUMOTHORAX, (gap >= REGION_LEVEL) | (pleural_line >= REGION_LEVEL))
    if ATELECTASIS in f:
        t = f[ATELECTASIS]
        for s in t["sides"]:
            lg = lungs[s]
            if t["kind"] == "lobar":
                cx = lg.cx - SIDE_SIGN[s] * 0.45 * lg.ax
                lobar = _patch(rng, x, y, cx, lg.dome - 0.07, 0.06, 0.3, 3) * lung_side[s]
                att += lobar
                mark(ATELECTASIS, lobar >= REGION_LEVEL * 0.3)
            for _ in range(t["bands"]):
                v0 = lg.dome - rng.uniform(0.08, 0.22)
                u0 = lg.cx + rng.uniform(-0.45, 0.35) * lg.ax
                length, tilt = rng.uniform(0.14, 0.26), rng.uniform(-0.18, 0.18)
                uu = np.array([u0 - length / 2, u0 + length / 2])
                thick.add(uu, np.array([v0 - tilt * length / 2, v0 + tilt * length / 2]), 0.12, ATELECTASIS)
    region_code = next((c for c in (CONSOLIDATION, PNEUMONIA, OPACITY) if c in f), None)
    if region_code is not None:
        # one airspace region per image; a hazy opacity alone is fainter and broader than consolidation
        r = f[region_code]["region"]
        faint = region_code == OPACITY
        cx, cy = _zone_point(rng, lungs[r["side"]], r["zone"])
        mask = _patch(rng, x, y, cx, cy, 0.14 if faint else 0.1, 1.0, 9) * lung
        mottle = np.clip(1 + 0.35 * _smooth_noise(rng, size, 3 * size / 256), 0.5, 1.4)
        att += (0.18 if faint else 0.34) * mask * mottle
        keep_markings *= 1 - 0.6 * mask
        for code in (CONSOLIDATION, PNEUMONIA, OPACITY):
            if code in f:
                mark(code, mask >= REGION_LEVEL)
    for code, amplitude in ((NODULE, 0.36), (MASS, 0.4)):
        if code in f:
            n = f[code]
            cx, cy = _zone_point(rng, lungs[n["side"]], n["zone"])
            ang = np.arctan2(y - cy, x - cx)
            radius = n["radius"] * (1 + n["lobulation"] * np.sin(3 * ang + rng.uniform(0, 6)))
            disk = _soft(radius - np.hypot(x - cx, y - cy), 0.004 + 0.08 * n["radius"])
            att += amplitude * disk * lung
            mark(code, disk * lung >= REGION_LEVEL)
    if EDEMA in f:
        sev = f[EDEMA]["severity"]
        att += 0.05 * sev * hilum * lung
        mark(EDEMA, hilum * lung >= REGION_LEVEL)
        if sev >= 2:
            for s in SIDE_SIGN:
                lg = lungs[s]
                for v in lg.dome - rng.uniform(0.02, 0.28, size=3 + 2 * sev):
                    outer = lg.cx + SIDE_SIGN[s] * lg.ax * 0.93
                    lines.add(np.array([outer, outer - SIDE_SIGN[s] * rng.uniform(0.05, 0.09)]), np.array([v, v]), 0.1,
                              EDEMA)
    if DEVICES in f:
        _devices(f[DEVICES]["devices"], lines, thick, heart_cx, heart_cy, heart_hw, a)

    markings = _smooth_noise(noise_rng, size, 1.6 * size / 256) - 0.5 * _smooth_noise(noise_rng, size, 5 * size / 256)
    vessel_amp = a["markings"] * (1.0 + (0.3 * f[EDEMA]["severity"] if EDEMA in f else 0.0))
    att += vessel_amp * markings * lung * keep_markings * (0.35 + 0.65 * hilum)
    att += 0.02 * _smooth_noise(noise_rng, size, 8 * size / 256) * body
    att += lines.render(0.6 * size / 256) + thick.render(1.6 * size / 256)
    if regions is not None:
        for code in (ATELECTASIS, EDEMA, DEVICES):
            if code in f:
                drawn = lines.render(0.6 * size / 256, code) + thick.render(1.6 * size / 256, code)
                mark(code, drawn >= LINE_REGION_ATTENUATION)

    img = (np.clip(att / 0.85, 0, 1) - a["window_lo"]) / (a["window_hi"] - a["window_lo"])
    img = np.clip(img, 0, 1) ** a["gamma"]
    img = gaussian_filter(img, a["blur"] * size / 256)
    img += a["noise"] * np.sqrt(img + 0.05) * noise_rng.standard_normal(img.shape, dtype=np.float32)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def _zone_point(rng: np.random.Generator, lg: _Lungs, zone: str) -> tuple[float, float]:
    """A point well inside one lung's zone (upper/mid/lower third), away from the mediastinum."""
    lo, hi = ZONES[zone]
    frac = rng.uniform(lo, hi)
    y = lg.top + frac * (lg.dome + 0.15 - lg.top)
    taper = 0.55 + 0.45 * np.sqrt(np.clip((y - lg.top) / 0.55, 0, 1))
    x = lg.cx + lg.side * rng.uniform(-0.25, 0.5) * lg.ax * taper
    return float(x), float(min(y, lg.dome - 0.05))


def _patch(rng: np.random.Generator, x, y, cx: float, cy: float, spread: float, amplitude: float, blobs: int):
    """Patchy airspace density: scattered Gaussian blobs of mixed size, summed with a fuzzy margin."""
    acc = np.zeros_like(x)
    for bx, by, s in zip(
        cx + rng.normal(0, 1.2 * spread, blobs), cy + rng.normal(0, 0.9 * spread, blobs),
        rng.uniform(0.3, 0.8, blobs) * spread,
    ):
        acc += np.exp(-(((x - bx) ** 2 + (y - by) ** 2) / (2 * s * s)))
    return amplitude * np.clip((acc - 0.05) / 0.9, 0, 1)  # zero away from the patch, no sharp border


def _ribs(a: dict, fracture: dict | None, x, y, edge: float, mark) -> np.ndarray:
    """Posterior ribs (arcs rising from the spine, curving down laterally), clavicles; a rib fracture if drawn.

    ``mark(FRACTURE, mask)`` receives the fracture's region: a disk around the break, callus included.
    """
    u = np.abs(x)
    curve = -0.22 * u + 0.95 * u * u
    starts = a["lung_top"] - 0.1 + a["rib_spacing"] * np.arange(10, dtype=np.float32)
    out = np.zeros_like(x)
    half = a["rib_hw"]
    inside = _soft(a["chest_hw"] + 0.04 - u, 0.02) * _soft(u - 0.05, 0.02)
    for i, y0 in enumerate(starts):
        centre = y0 + curve
        band_weight = np.ones_like(x)
        if fracture is not None and fracture["rib"] == i:
            side = SIDE_SIGN[fracture["side"]]
            on_side = _soft(side * x, 0.01)
            centre = centre + on_side * fracture["step"] * _soft(u - fracture["u"], 0.004)
            band_weight = 1 - on_side * np.exp(-(((u - fracture["u"]) / fracture["gap"]) ** 2))
            site = y0 + (-0.22 * fracture["u"] + 0.95 * fracture["u"] ** 2) + 0.5 * fracture["step"]
            dist = np.hypot(x - side * fracture["u"], (y - site) * 1.4)
            if fracture["age"] == "healed":  # callus: a bony bulge around the old break
                out += 0.16 * _soft(2.6 * half - dist, edge)
            mark(FRACTURE, dist <= 2.6 * half + fracture["step"])
        d = np.abs(y - centre)
        band = _soft(half - d, edge) * (0.7 + 0.3 * _soft(d - 0.6 * half, edge))  # brighter cortex
        out += 0.13 * band * band_weight
    clavicle = a["lung_top"] - 0.06 + 0.12 * (u - 0.1) - 0.25 * (u - 0.35) ** 2
    out += 0.17 * _soft(0.028 - np.abs(y - clavicle), edge) * _soft(0.62 - u, 0.03) * _soft(u - 0.07, 0.02)
    return out * inside


def _devices(kinds: list[str], lines: _Lines, thick: _Lines, hx: float, hy: float, hw: float, a: dict) -> None:
    """Tubes, lines, pacemaker and sternotomy wires, radio-opaque (bright)."""
    carina = a["lung_top"] + 0.5
    if "et_tube" in kinds:
        for off in (-0.012, 0.012):
            thick.add(np.array([off, off + 0.005]), np.array([-1.05, carina - 0.12]), 0.55, DEVICES)
    if "ng_tube" in kinds:
        u, v = _bezier([(0.0, -1.05), (0.03, 0.2), (0.35, a["dome_y"] + 0.25)])
        lines.add(u, v, 0.7, DEVICES)
    if "central_line" in kinds:
        u, v = _bezier([(-0.62, -0.9), (-0.3, -0.62), (-0.06, -0.5), (-0.05, hy - 0.12)])
        lines.add(u, v, 0.75, DEVICES)
    if "pacemaker" in kinds:
        box_u = np.array([0.42, 0.6, 0.62, 0.44, 0.42])
        box_v = np.array([-0.72, -0.74, -0.6, -0.58, -0.72])
        for shrink in np.linspace(0, 0.06, 6):
            scale = 1 - shrink * 10
            thick.add(0.52 + (box_u - 0.52) * scale, -0.66 + (box_v + 0.66) * scale, 0.45, DEVICES)
        for end in ((hx + 0.2 * hw, hy + 0.3), (hx - 0.3 * hw, hy - 0.1)):
            u, v = _bezier([(0.5, -0.66), (0.2, -0.55), (0.0, hy - 0.3), end])
            lines.add(u, v, 0.8, DEVICES)
    if "sternotomy_wires" in kinds:
        theta = np.linspace(0, 2 * np.pi, 24)
        for v0 in np.linspace(-0.45, hy + 0.2, 6):
            lines.add(0.02 + 0.025 * np.cos(theta), v0 + 0.014 * np.sin(theta), 0.8, DEVICES)
