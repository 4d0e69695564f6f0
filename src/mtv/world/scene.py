"""Sampling an MTV World scene (objects, two cameras, light, ground, sky) from a NumPy Generator.

World frame: z up, the ground is the plane z = 0 (a disc of radius ``GROUND_RADIUS``), objects stand on it.
Camera frame (OpenCV): x right, y down, z forward. Pixel coordinates are pixel-edge coordinates: pixel
``(row i, column j)`` covers ``[j, j+1) x [i, i+1)`` and its centre is ``(j + 0.5, i + 0.5)``, so ``K`` has
``cx = cy = size / 2`` and a box covering the whole image is ``0, 0, size, size``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.10, 0.08),
    "green": (0.12, 0.68, 0.15),
    "blue": (0.10, 0.22, 0.90),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.15, 0.75),
    "cyan": (0.10, 0.80, 0.85),
    "orange": (1.00, 0.50, 0.05),
    "white": (0.93, 0.93, 0.93),
}
SHAPES: tuple[str, ...] = ("sphere", "cube", "cylinder", "cone")
CLASSES: list[str] = [f"{c} {s}" for c in COLOURS for s in SHAPES]
SIZES = {"small": 0.35, "large": 0.6}  # footprint radius in scene units
GROUND_RADIUS = 20.0  # finite ground keeps every depth far below the uint16 range at 1 mm
AREA_RADIUS = 1.8  # objects' centres lie within this disc around the origin
ROLL_DEG = 20.0  # each camera turns up to this much about its optical axis
AZIMUTH_STEP_DEG = (30.0, 80.0)  # the second camera orbits this far from the first, either way


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    base: np.ndarray  # (3,) centre of the footprint on the ground
    yaw: float  # rotation about the vertical axis (only visible for cubes)
    rgb: np.ndarray  # (3,) jittered albedo

    @property
    def radius(self) -> float:
        return SIZES[self.size]

    @property
    def height(self) -> float:
        return {"sphere": 2.0, "cube": 1.6, "cylinder": 1.8, "cone": 2.2}[self.shape] * self.radius

    @property
    def half_side(self) -> float:
        """A cube's half side: 0.8 r, so a cube looks about as big as a sphere of the same size word."""
        return 0.8 * self.radius

    @property
    def footprint(self) -> float:
        """Radius of a circle around the base that contains the object: what placement keeps apart."""
        return self.half_side * np.sqrt(2.0) if self.shape == "cube" else self.radius

    @property
    def centre(self) -> np.ndarray:
        return self.base + np.array([0.0, 0.0, self.height / 2])

    @property
    def bound_radius(self) -> float:
        return float(np.hypot(self.footprint, self.height / 2))

    @property
    def phrase(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"

    @property
    def class_name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Camera:
    K: np.ndarray  # (3, 3)
    world_to_cam: np.ndarray  # (4, 4)
    size: int

    @property
    def position(self) -> np.ndarray:
        R, t = self.world_to_cam[:3, :3], self.world_to_cam[:3, 3]
        return -R.T @ t


@dataclass(frozen=True)
class Scene:
    objects: list[Obj]
    light_dir: np.ndarray  # (3,) unit vector towards the light
    light_rgb: np.ndarray  # (3,) directional intensity per channel
    ambient: float
    ground_rgb: np.ndarray
    checker: tuple[float, float, float]  # (cell size, rotation, contrast)
    sky: tuple[np.ndarray, np.ndarray]  # horizon and zenith colours
    noise: float  # std of per-pixel sensor noise, in [0, 1] colour units


def look_at(eye: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """World-to-camera 4x4 for a camera at ``eye`` looking at ``target``, turned ``roll`` radians about its
    optical axis (0: the world's z is up in the image)."""
    fwd = target - eye
    fwd = fwd / np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    c, s = np.cos(roll), np.sin(roll)
    right, down = c * right + s * down, -s * right + c * down
    R = np.stack([right, down, fwd])
    M = np.eye(4)
    M[:3, :3], M[:3, 3] = R, -R @ eye
    return M


def orbit_camera(azimuth: float, elevation: float, distance: float, target: np.ndarray, fov: float,
                 size: int, roll: float = 0.0) -> Camera:
    eye = target + distance * np.array([np.cos(elevation) * np.cos(azimuth),
                                        np.cos(elevation) * np.sin(azimuth), np.sin(elevation)])
    f = size / 2 / np.tan(fov / 2)
    K = np.array([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]])
    return Camera(K, look_at(eye, target, roll), size)


def sample_objects(rng: np.random.Generator) -> list[Obj]:
    """1–4 objects of distinct classes (so every phrase names one object) that do not interpenetrate.

    The first object is placed near the centre, where the camera looks; the others are rejection-sampled."""
    n = int(rng.integers(1, 5))
    classes = rng.choice(len(CLASSES), size=n, replace=False)
    objs: list[Obj] = []
    for k, cid in enumerate(classes):
        colour, shape = CLASSES[cid].split()
        size = "large" if rng.random() < 0.5 else "small"
        rgb = np.clip(np.array(COLOURS[colour]) + rng.normal(0, 0.04, 3), 0.02, 1.0)
        yaw = float(rng.uniform(0, np.pi / 2))
        for _ in range(50):
            reach = 0.6 if k == 0 else AREA_RADIUS
            r, a = reach * np.sqrt(rng.random()), rng.uniform(0, 2 * np.pi)
            obj = Obj(shape, colour, size, np.array([r * np.cos(a), r * np.sin(a), 0.0]), yaw, rgb)
            if all(np.linalg.norm(obj.base - o.base) > obj.footprint + o.footprint + 0.05 for o in objs):
                objs.append(obj)
                break
    return objs


def sample_cameras(rng: np.random.Generator, size: int) -> tuple[Camera, Camera]:
    """Two views of one scene: an orbit camera, and one moved 30–80° in azimuth (`AZIMUTH_STEP_DEG`) with small
    changes in elevation and distance. Dense correspondences exist between them, but few points stay near the
    same pixel: at 10–40° the image-free identity match beat every encoder on geometric recall, so the probe
    measured how little the camera moved (docs/DIAGNOSIS.md, round 3).

    Both cameras roll up to 20° about their optical axis, independently, and height, distance and field of view
    vary widely, so the image row alone says less about depth (docs/DIAGNOSIS.md: with level cameras a per-row
    mean depth beat every encoder on aligned AbsRel)."""
    target = np.array([*rng.normal(0, 0.25, 2), rng.uniform(0.2, 0.5)])
    az, el = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(10, 70))
    dist, fov = rng.uniform(4.5, 8.5), np.deg2rad(rng.uniform(34, 52))
    d_az = np.deg2rad(rng.uniform(*AZIMUTH_STEP_DEG)) * rng.choice([-1, 1])
    el2 = np.clip(el + np.deg2rad(rng.uniform(-8, 8)), np.deg2rad(8), np.deg2rad(75))
    target2 = target + np.array([*rng.normal(0, 0.1, 2), 0.0])
    roll1, roll2 = np.deg2rad(rng.uniform(-ROLL_DEG, ROLL_DEG, 2))
    return (orbit_camera(az, el, dist, target, fov, size, roll1),
            orbit_camera(az + d_az, el2, dist * rng.uniform(0.9, 1.1), target2, fov, size, roll2))


def sample_scene(rng: np.random.Generator) -> Scene:
    objects = sample_objects(rng)
    light_az, light_el = rng.uniform(0, 2 * np.pi), np.deg2rad(rng.uniform(30, 75))
    light_dir = np.array([np.cos(light_el) * np.cos(light_az), np.cos(light_el) * np.sin(light_az), np.sin(light_el)])
    light_rgb = rng.uniform(0.6, 1.0) * np.clip(1 + rng.normal(0, 0.05, 3), 0.8, 1.2)
    ground = rng.uniform(0.25, 0.55) * np.clip(1 + rng.normal(0, 0.12, 3), 0.7, 1.3)  # muted, so objects stand out
    checker = (float(rng.uniform(0.4, 1.2)), float(rng.uniform(0, np.pi / 2)), float(rng.uniform(0.0, 0.25)))
    horizon = np.clip(np.array([0.85, 0.88, 0.92]) + rng.normal(0, 0.05, 3), 0, 1)
    zenith = np.clip(np.array([0.35, 0.55, 0.85]) + rng.normal(0, 0.08, 3), 0, 1)
    return Scene(objects, light_dir, light_rgb, float(rng.uniform(0.25, 0.45)), ground, checker,
                 (horizon, zenith), float(rng.uniform(0.005, 0.02)))
