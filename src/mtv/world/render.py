"""Vectorised NumPy ray casting of a scene: colour with shading, shadows and antialiasing, and exact labels.

Every pixel casts five rays: one through its centre, which alone gives depth, semantic label and instance
(so these are exact at the pixel centres that ``K`` projects to), and four at (±1/4, ±1/4) pixel, averaged
with the centre ray for colour. Ray directions are scaled to unit camera-space z, so a hit's ray parameter
``t`` is its z-depth. Vectors are stored as (3, n) float32 arrays (one contiguous row per coordinate), which
NumPy processes several times faster than (n, 3). Intersections run over all rays at once, one object at a
time, after a bounding-sphere cull.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mtv.world.scene import GROUND_RADIUS, SHAPES, Camera, Obj, Scene

EPS = 1e-4
SUBPIXELS = ((0.5, 0.5), (0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75))  # centre first
SKY, GROUND = -1, 0  # hit codes; object k is k + 1
SEMANTIC_LABELS = ["sky", "ground", *SHAPES]  # seg.png value = index here
f32 = np.float32


@dataclass(frozen=True)
class View:
    rgb: np.ndarray  # (H, W, 3) uint8
    depth: np.ndarray  # (H, W) float32 z-depth, NaN where no surface (sky)
    seg: np.ndarray  # (H, W) uint8 index into SEMANTIC_LABELS
    instance: np.ndarray  # (H, W) int16 object index, -1 for sky and ground


@lru_cache(maxsize=8)
def _pixel_offsets(size: int) -> np.ndarray:
    """(2, 5 * size²) sample positions minus the principal point, the pixel centres first."""
    v, u = np.mgrid[:size, :size].astype(f32)
    offsets = np.concatenate([np.stack([u + du, v + dv]).reshape(2, -1) for du, dv in SUBPIXELS], 1) - f32(size / 2)
    offsets.flags.writeable = False
    return offsets


def camera_rays(cam: Camera) -> tuple[np.ndarray, np.ndarray]:
    """The camera centre (3,) and world-space ray directions (3, 5 * size²) with unit camera z."""
    K, R = cam.K, cam.world_to_cam[:3, :3].astype(f32)
    off = _pixel_offsets(cam.size)
    x, y = off[0] / f32(K[0, 0]), off[1] / f32(K[1, 1])
    d = R[0][:, None] * x + R[1][:, None] * y + R[2][:, None]  # R.T @ (x, y, 1)
    return cam.position.astype(f32), d


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _cols(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Per-ray columns ``idx`` of ``a``; a vector shared by all rays (shape (3,)) is kept as is."""
    return a if a.ndim == 1 else np.take(a, idx, axis=1)


def _near_root(a, b, c):
    """Smaller root of a t² + 2 b t + c = 0 (NaN where none)."""
    return (-b - np.sqrt(b * b - a * c)) / a


def intersect(obj: Obj, o: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Ray parameter of the first hit of rays ``o + t d`` with ``obj`` (inf where none or t <= EPS).

    Cylinder and cone bases are skipped: every ray starts above the ground and outside the object."""
    ox, oy, oz = (o[i] - f32(obj.base[i]) for i in range(3))
    dx, dy, dz = d
    r, h = f32(obj.radius), f32(obj.height)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        if obj.shape == "sphere":
            oz = oz - r
            t = _near_root(dx * dx + dy * dy + dz * dz, ox * dx + oy * dy + oz * dz,
                           ox * ox + oy * oy + oz * oz - r * r)
        elif obj.shape == "cube":
            c, s, hs = f32(np.cos(obj.yaw)), f32(np.sin(obj.yaw)), f32(obj.half_side)
            local = ((c * ox + s * oy, c * dx + s * dy, -hs, hs), (c * oy - s * ox, c * dy - s * dx, -hs, hs),
                     (oz, dz, 0, 2 * hs))
            near, far = f32(-np.inf), f32(np.inf)
            for oo, dd, lo, hi in local:  # slab method
                t1, t2 = (lo - oo) / dd, (hi - oo) / dd
                near, far = np.maximum(near, np.minimum(t1, t2)), np.minimum(far, np.maximum(t1, t2))
            t = np.where(near <= far, near, np.nan)
        elif obj.shape == "cylinder":
            t = _near_root(dx * dx + dy * dy, ox * dx + oy * dy, ox * ox + oy * oy - r * r)
            z = oz + t * dz
            t = np.where((z >= 0) & (z <= h), t, np.nan)
            top = (h - oz) / dz
            x, y = ox + top * dx, oy + top * dy
            t = np.fmin(t, np.where((x * x + y * y <= r * r) & (top > EPS), top, np.nan))
        else:  # cone: x² + y² = k² (h - z)², 0 <= z <= h
            k2, w = (r / h) ** 2, h - oz
            a, b, c = dx * dx + dy * dy - k2 * dz * dz, ox * dx + oy * dy + k2 * w * dz, ox * ox + oy * oy - k2 * w * w
            root = np.sqrt(b * b - a * c)
            t = f32(np.nan)
            for cand in ((-b - root) / a, (-b + root) / a):
                z = oz + cand * dz
                t = np.fmin(t, np.where((z >= 0) & (z <= h) & (cand > EPS), cand, np.nan))
        return np.where(t > EPS, t, np.inf).astype(f32)


def normals(obj: Obj, p: np.ndarray) -> np.ndarray:
    """Outward unit normals (3, n) at surface points ``p`` (3, n) of ``obj``."""
    x, y, z = (p[i] - f32(obj.base[i]) for i in range(3))
    r, h = f32(obj.radius), f32(obj.height)
    if obj.shape == "sphere":
        return np.stack([x, y, z - r]) / r
    if obj.shape == "cube":
        c, s = f32(np.cos(obj.yaw)), f32(np.sin(obj.yaw))
        local = np.stack([c * x + s * y, c * y - s * x, z - f32(obj.half_side)])
        axis = np.abs(local).argmax(0)
        sign = np.sign(np.take_along_axis(local, axis[None], 0)[0])
        nx, ny, nz = ((axis == i) * sign for i in range(3))
        return np.stack([c * nx - s * ny, s * nx + c * ny, nz]).astype(f32)
    if obj.shape == "cylinder":
        top = z > h - f32(1e-3)
        return np.stack([np.where(top, 0, x / r), np.where(top, 0, y / r), top.astype(f32)]).astype(f32)
    rho, k = np.maximum(np.hypot(x, y), f32(1e-6)), r / h  # cone
    scale = 1 / np.sqrt(1 + k * k)
    return np.stack([x / rho * scale, y / rho * scale, np.full_like(rho, k * scale)])


def _bound_candidates(obj: Obj, o: np.ndarray, d: np.ndarray, d2, t_max: np.ndarray) -> np.ndarray:
    """Indices of rays that enter ``obj``'s bounding sphere before ``t_max``."""
    centre = obj.centre.astype(f32)
    oc = o - (centre if o.ndim == 1 else centre[:, None])
    b = _dot(oc, d)
    c = _dot(oc, oc) - f32(obj.bound_radius ** 2)
    disc = b * b - d2 * c
    with np.errstate(invalid="ignore"):
        root = np.sqrt(disc)
        return np.flatnonzero((disc > 0) & (-b - root < t_max * d2) & (-b + root > 0))


def cast(objects: list[Obj], o: np.ndarray, d: np.ndarray, ground: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of rays ``o + t d`` (either may be one shared (3,) vector): (t, code) with code SKY,
    GROUND or object index + 1."""
    n = d.shape[1] if d.ndim == 2 else o.shape[1]
    t_best = np.full(n, np.inf, f32)
    code = np.full(n, SKY, np.int16)
    if ground:
        with np.errstate(divide="ignore"):
            t = -o[2] / d[2]
        x, y = o[0] + t * d[0], o[1] + t * d[1]
        hit = (t > EPS) & (x * x + y * y < GROUND_RADIUS ** 2)
        t_best[hit], code[hit] = t[hit], GROUND
    d2 = _dot(d, d)
    for k, obj in enumerate(objects):
        idx = _bound_candidates(obj, o, d, d2, t_best)
        if idx.size:
            t = intersect(obj, _cols(o, idx), _cols(d, idx))
            nearer = t < t_best[idx]
            t_best[idx[nearer]], code[idx[nearer]] = t[nearer], k + 1
    return t_best, code


def _ground_albedo(scene: Scene, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ground colour (3, n) with a rotated checker anchored in the world, so both views see the same texture."""
    cell, angle, contrast = scene.checker
    c, s = f32(np.cos(angle) / cell), f32(np.sin(angle) / cell)
    parity = (np.floor(c * x + s * y) + np.floor(c * y - s * x)) % 2
    return scene.ground_rgb.astype(f32)[:, None] * (1 + f32(contrast) * (1 - 2 * parity))


def _sky(scene: Scene, d: np.ndarray) -> np.ndarray:
    up = np.clip(d[2] / np.sqrt(_dot(d, d)), 0, 1) ** f32(0.6)
    horizon, zenith = (c.astype(f32)[:, None] for c in scene.sky)
    return horizon + up * (zenith - horizon)


def shade(scene: Scene, o: np.ndarray, d: np.ndarray, t: np.ndarray, code: np.ndarray) -> np.ndarray:
    """Colour (3, n): ambient + Lambert + a Blinn–Phong highlight on objects, with shadow rays to the light.

    Rays are sorted by what they hit, so each surface's rays are one contiguous slice."""
    order = np.argsort(code, kind="stable")
    ends = np.cumsum(np.bincount(code + 1, minlength=len(scene.objects) + 2))
    n_sky = ends[0]
    d, t = np.take(d, order, axis=1), t[order]
    out = np.empty_like(d)
    out[:, :n_sky] = _sky(scene, d[:, :n_sky])
    d, ends = d[:, n_sky:], ends - n_sky  # hits only: ground is [0, ends[1]), object k is [ends[k+1], ends[k+2])
    p = o[:, None] + t[n_sky:] * d
    n, albedo = np.empty_like(p), np.empty_like(p)
    n[:, : ends[1]] = np.array([[0], [0], [1]], f32)
    albedo[:, : ends[1]] = _ground_albedo(scene, p[0, : ends[1]], p[1, : ends[1]])
    for k, obj in enumerate(scene.objects):
        part = slice(ends[k + 1], ends[k + 2])
        n[:, part], albedo[:, part] = normals(obj, p[:, part]), obj.rgb.astype(f32)[:, None]
    light, light_rgb = scene.light_dir.astype(f32), scene.light_rgb.astype(f32)[:, None]
    direct = light @ n
    facing = np.flatnonzero(direct > 0)
    start = np.take(p, facing, axis=1) + f32(1e-3) * np.take(n, facing, axis=1)  # off the surface: no self-hit
    t_shadow, _ = cast(scene.objects, start, light, ground=False)  # the light is above: the ground never occludes
    direct[facing[np.isfinite(t_shadow)]] = 0
    np.maximum(direct, 0, out=direct)
    rgb = albedo * (f32(scene.ambient) + direct * light_rgb)
    objs = slice(ends[1], None)  # the ground is matte
    half = light[:, None] - d[:, objs] / np.sqrt(_dot(d[:, objs], d[:, objs]))
    spec = np.maximum(_dot(n[:, objs], half) / np.sqrt(_dot(half, half)), 0) ** 40 * (direct[objs] > 0)
    rgb[:, objs] += f32(0.35) * spec * light_rgb
    out[:, n_sky:] = rgb
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    return np.take(out, inverse, axis=1)


def render(scene: Scene, cam: Camera, rng: np.random.Generator) -> View:
    """One view; ``rng`` draws only the sensor noise."""
    size = cam.size
    o, d = camera_rays(cam)
    t, code = cast(scene.objects, o, d)
    rgb = shade(scene, o, d, t, code).reshape(3, len(SUBPIXELS), size, size).mean(1).transpose(1, 2, 0)
    rgb += f32(scene.noise) * rng.standard_normal(rgb.shape, dtype=f32)
    t, code = t[: size * size].reshape(size, size), code[: size * size].reshape(size, size)
    shape_label = np.array([0] + [2 + SHAPES.index(ob.shape) for ob in scene.objects], np.uint8)
    seg = np.where(code == SKY, 0, np.where(code == GROUND, 1, shape_label[np.maximum(code, 0)]))
    return View(rgb=(np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8),
                depth=np.where(code == SKY, np.nan, t).astype(f32),
                seg=seg.astype(np.uint8),
                instance=np.where(code > GROUND, code - 1, -1).astype(np.int16))
