"""Procedural retinal vessel maps: a seeded, parameterised, learning-free generator.

Geometry is grown in field-of-view units (FOV radius 1, origin at the FOV centre, y pointing down)
and rasterised at any size. The anatomy it follows:
- main vessels leave the optic disc; the superior and inferior temporal arcades (an artery and a
  vein each by default) bow around the macula, which lies ~2.5 disc diameters temporal to the disc;
  smaller nasal vessels run the other way, and thin papillomacular ones head for the macula;
- every vessel branches recursively; radii follow Murray's law (r0^3 = r1^3 + r2^3) with asymmetric
  splits, and branch angles are the minimum-work optimum for those radii;
- branches on the macular side of an arcade head for the macula and stop short of its vessel-free
  centre, the others run to the periphery; branches are shorter and thinner with each generation;
- a coarse occupancy grid makes small vessels swerve from, or stop before, vessels already drawn,
  so the tree fills space instead of piling up (only trunks and arcade vessels cross others,
  as arteries and veins do);
- tortuosity is smooth random curvature (an Ornstein-Uhlenbeck process on the curvature).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np

REFERENCE_PX = 512  # widths are given at this image size and scale linearly with size
DISC_DIAMETER = 0.30  # optic disc diameter in FOV radii (~1.8 mm in a 45 degree photograph)
MACULA_OFFSET_DD = (2.5, 0.3)  # fovea position from the disc: temporal, inferior (disc diameters)
MACULA_FREE = 0.15  # vessel-free radius around the fovea in FOV radii (annotations skip capillaries)
STEP = 0.015  # growth step in FOV radii (~3.6 px at 512 px)
MIN_WIDTH_PX = 1.4  # thinnest drawn vessel at 512 px, about what annotations resolve
PRUNE_WIDTH_PX = 0.7  # branches whose Murray width falls below this are not grown
GRID_CELLS = 64  # occupancy grid cells across the FOV diameter
LOOKAHEAD = 0.04  # how far ahead a vessel looks for others (FOV units)
MAX_SWERVES = 4  # a vessel turns away from others this often, then stops
MAJOR_FORK = 0.03  # chance that a trunk's branch point is a near-symmetric fork
SUPERSAMPLE = 4  # rasterisation canvas / output size
AA_EXTRA_PX = 2.4  # cv2 anti-aliased lines are this much wider than their thickness (canvas px)
TAPER = 0.98  # width factor at every branch opportunity, on top of Murray's law


@dataclass(frozen=True)
class TreeParams:
    """Anatomical knobs of one procedural vessel tree.

    main_vessels: large trunks leaving the disc along the temporal arcades, alternately superior and
        inferior (4 = artery and vein of each arcade). nasal_vessels / macular_vessels: smaller trunks
        to the nasal side / thin ones straight towards the macula.
    depth: branching generations below the trunks. tortuosity: strength of the random curvature
        (0 = smooth curves, 1 = clearly wavy). width_px: width of the widest trunk at 512 px.
    disc_xy: optic disc position as fractions of image width and height; None puts it at 0.25
        (left eye) or 0.75 (right eye) of the width, at mid height. fov_margin: gap between the
        circular field of view and the image border, as a fraction of the image size.
    """

    main_vessels: int = 4
    nasal_vessels: int = 2
    macular_vessels: int = 2
    depth: int = 5
    tortuosity: float = 0.4
    width_px: float = 8.0
    disc_xy: tuple[float, float] | None = None
    eye: str = "left"
    fov_margin: float = 0.03

    def __post_init__(self) -> None:
        if self.eye not in ("left", "right"):
            raise ValueError(f"eye must be 'left' or 'right', got {self.eye!r}")
        if not 1 <= self.main_vessels <= 8:
            raise ValueError(f"main_vessels must be in 1..8, got {self.main_vessels}")
        if not 0 <= self.nasal_vessels <= 6:
            raise ValueError(f"nasal_vessels must be in 0..6, got {self.nasal_vessels}")
        if not 0 <= self.macular_vessels <= 4:
            raise ValueError(f"macular_vessels must be in 0..4, got {self.macular_vessels}")
        if not 0 <= self.depth <= 8:
            raise ValueError(f"depth (branching generations) must be in 0..8, got {self.depth}")
        if not 0.0 <= self.tortuosity <= 3.0:
            raise ValueError(f"tortuosity must be in [0, 3], got {self.tortuosity}")
        if not 1.0 <= self.width_px <= 40.0:
            raise ValueError(f"width_px must be in [1, 40] (px at 512), got {self.width_px}")
        if not 0.0 <= self.fov_margin < 0.25:
            raise ValueError(f"fov_margin must be in [0, 0.25), got {self.fov_margin}")
        if self.disc_xy is not None:
            if len(self.disc_xy) != 2:
                raise ValueError(f"disc_xy must be (x, y) fractions of the image, got {self.disc_xy!r}")
            if math.hypot(*self.disc_unit()) > 0.9:
                raise ValueError(f"disc_xy {self.disc_xy} is outside the central 90% of the field of view")

    @property
    def temporal(self) -> int:
        """+1 when the macula lies to the right of the disc (left eye), -1 otherwise."""
        return 1 if self.eye == "left" else -1

    def disc_unit(self) -> tuple[float, float]:
        """Disc centre in FOV units."""
        x, y = self.disc_xy if self.disc_xy is not None else (0.5 - 0.25 * self.temporal, 0.5)
        radius = 0.5 - self.fov_margin
        return (x - 0.5) / radius, (y - 0.5) / radius

    def macula_unit(self) -> tuple[float, float]:
        """Fovea centre in FOV units."""
        disc_x, disc_y = self.disc_unit()
        return (disc_x + self.temporal * MACULA_OFFSET_DD[0] * DISC_DIAMETER,
                disc_y + MACULA_OFFSET_DD[1] * DISC_DIAMETER)


@dataclass
class Segment:
    """A run of vessel of constant width between branch points (FOV units, width in px at 512)."""

    points: np.ndarray  # (n, 2) x, y
    width_px: float
    generation: int


@dataclass
class _Sprout:
    """A vessel waiting to be grown: where it starts and what pulls it."""

    x: float
    y: float
    heading: float  # radians, screen coordinates (y down)
    width_px: float
    generation: int
    length: float  # budget in FOV units
    mode: str  # "arcade": follow the arcade curve; "toward": the macula; "away": from `origin`
    origin: tuple[float, float] = (0.0, 0.0)
    vertical: float = -1.0  # arcade: -1 superior, +1 inferior (screen y points down)
    reach: float = 0.6  # arcade: height of the arch above / below the macula (FOV units)
    stem: tuple[float, float] | None = None  # drawn from here to (x, y) first: trunks meet at the disc


def fov_disc(size_px: int, margin: float = 0.03) -> np.ndarray:
    """Circular field of view, centred, leaving `margin` (fraction of size) at the borders."""
    centre = (size_px - 1) / 2
    radius = size_px * (0.5 - margin)
    y, x = np.ogrid[:size_px, :size_px]
    return (x - centre) ** 2 + (y - centre) ** 2 <= radius**2


def _wrap(angle: float) -> float:
    return (angle + math.pi) % (2 * math.pi) - math.pi


def _murray_split(r0: float, ratio: float) -> tuple[float, float, float, float]:
    """Radii and deflection angles of a bifurcation whose side branch is `ratio` x the continuation.

    Murray's law gives r1 (continuing) and r2 (side branch); the angles minimise pumping work plus
    volume (Zamir): cos(theta1) = (r0^4 + r1^4 - r2^4) / (2 r0^2 r1^2), and symmetrically theta2.
    """
    r1 = r0 / (1.0 + ratio**3) ** (1.0 / 3.0)
    r2 = ratio * r1

    def angle(a: float, b: float) -> float:
        cosine = (r0**4 + a**4 - b**4) / (2 * r0**2 * a**2)
        return math.acos(max(-1.0, min(1.0, cosine)))

    return r1, r2, angle(r1, r2), angle(r2, r1)


class _Grower:
    """Grows the whole tree breadth-first, so trunks claim space before their branches."""

    def __init__(self, params: TreeParams, rng: np.random.Generator):
        self.p = params
        self.rng = rng
        self.disc = params.disc_unit()
        self.macula = params.macula_unit()
        self.claimed = np.zeros((GRID_CELLS, GRID_CELLS), dtype=bool)  # cells near vessels already grown
        self.segments: list[Segment] = []

    def cell(self, x: float, y: float) -> tuple[int, int]:
        scale = GRID_CELLS / 2
        col = min(GRID_CELLS - 1, max(0, int((x + 1) * scale)))
        row = min(GRID_CELLS - 1, max(0, int((y + 1) * scale)))
        return row, col

    def pull(self, s: _Sprout, x: float, y: float) -> float:
        """Direction the vessel is steered towards at (x, y)."""
        mx, my = self.macula
        if s.mode == "toward":
            return math.atan2(my - y, mx - x)
        if s.mode == "away":
            return math.atan2(y - s.origin[1], x - s.origin[0])
        # arcade: rises from the disc at ~60 degrees and levels off above / below the macula,
        # v = v0 + (reach - v0) (1 - (1 - u / span)^2.5), then slowly closes towards the raphe
        t = self.p.temporal
        span = abs(mx - self.disc[0]) + 0.1
        u = max(t * (x - self.disc[0]), 1e-3)  # distance temporal of the disc
        v = s.vertical * (y - my)  # distance above (superior) / below (inferior) the macula
        v0 = s.vertical * (self.disc[1] - my)
        if u > span:  # past the macula: bend slowly towards the raphe, each vessel at its own height
            return math.atan2(-s.vertical * 0.3 * s.reach * (u - span) / span**2, t)
        rest = 1.0 - u / span
        curve = v0 + (s.reach - v0) * (1.0 - rest**2.5)
        slope = 2.5 * (s.reach - v0) * rest**1.5 / span
        return math.atan2(s.vertical * (slope + 3.0 * (curve - v)), t)

    def blocked(self, x: float, y: float, heading: float, own: set[tuple[int, int]]) -> bool:
        """Whether a step ahead meets another vessel (other than this one's own path so far)."""
        cell = self.cell(x + LOOKAHEAD * math.cos(heading), y + LOOKAHEAD * math.sin(heading))
        return cell not in own and bool(self.claimed[cell])

    def macula_side(self, x: float, y: float, heading: float) -> int:
        """+1 when the macula lies to the right of the heading (screen coordinates), else -1."""
        mx, my = self.macula
        return 1 if math.sin(math.atan2(my - y, mx - x) - heading) > 0 else -1

    def branch(self, s: _Sprout, x: float, y: float, heading: float, width: float, travelled: float,
               own: set[tuple[int, int]]) -> tuple[_Sprout, float, float] | None:
        """A side branch at (x, y): (sprout, continuing width, continuing heading), or None if no room."""
        rng = self.rng
        # trunks mostly give off thin side branches and now and then fork; smaller vessels split more evenly
        if s.generation == 0:
            ratio = rng.uniform(0.7, 1.0) if rng.random() < MAJOR_FORK else 0.15 + 0.5 * rng.random() ** 2
        else:
            ratio = rng.uniform(0.35, 0.95)
        r1, r2, theta1, theta2 = _murray_split(width, ratio)
        inner = self.macula_side(x, y, heading)
        if s.mode == "arcade":  # arcades give off somewhat more branches towards the macula
            side = inner if rng.random() < 0.6 else -inner
        else:
            side = 1 if rng.random() < 0.5 else -1
        child_heading = heading + side * (theta2 + rng.normal(0.0, 0.15))
        probe_x = x + 2 * LOOKAHEAD * math.cos(child_heading)
        probe_y = y + 2 * LOOKAHEAD * math.sin(child_heading)
        fork = s.mode == "arcade" and s.generation == 0 and ratio >= 0.7  # both halves bow round the macula
        if r2 < PRUNE_WIDTH_PX or (not fork and self.blocked(probe_x, probe_y, child_heading, own)):
            return None
        if fork:
            bow = s.reach * (rng.uniform(0.75, 0.9) if side == inner else rng.uniform(1.1, 1.25))
            child = _Sprout(x, y, child_heading, r2, s.generation + 1, length=s.length - travelled,
                            mode="arcade", vertical=s.vertical, reach=bow)
            return child, r1, heading - side * theta1
        toward = s.mode == "toward" or (s.mode != "away" and side == inner)
        child = _Sprout(x, y, child_heading, r2, s.generation + 1,
                        length=min(1.2, 0.35 * r2**0.8) * rng.uniform(0.7, 1.3),
                        mode="toward" if toward else "away",
                        origin=s.origin if s.mode == "away" else self.macula)
        return child, r1, heading - side * theta1

    def grow(self, s: _Sprout) -> list[_Sprout]:
        """Walk one vessel, record its segments, return the branches it sprouted."""
        p, rng = self.p, self.rng
        steps = max(2, int(s.length / STEP))
        noise = rng.standard_normal(steps)
        rho = math.exp(-STEP / 0.06)  # curvature correlation length 0.06 FOV radii
        kick = math.sqrt(1 - rho * rho) * p.tortuosity * (5.0 + 2.5 * s.generation)
        steer = {"arcade": 9.0, "toward": 1.5, "away": 2.0}[s.mode]
        spacing = 0.1 + 0.03 * s.generation  # mean distance between branch points
        next_branch = (0.22 if s.generation == 0 else 0.04) + rng.exponential(spacing)
        mx, my = self.macula

        x, y, heading, width = s.x, s.y, s.heading, s.width_px
        curvature, travelled, swerves = 0.0, 0.0, 0
        run = [(x, y)] if s.stem is None else [s.stem, (x, y)]
        sprouts: list[_Sprout] = []
        own: set[tuple[int, int]] = set()
        may_cross = s.mode == "arcade" or s.generation == 0  # as arteries and veins cross each other
        for i in range(steps):
            curvature = rho * curvature + kick * noise[i]
            heading += (curvature + steer * _wrap(self.pull(s, x, y) - heading)) * STEP
            if not may_cross and travelled > 0.06 and self.blocked(x, y, heading, own):
                swerve = 0.5 if noise[i] > 0 else -0.5
                swerves += 1
                if swerves <= MAX_SWERVES and not self.blocked(x, y, heading + swerve, own):
                    heading += swerve
                elif swerves <= MAX_SWERVES and not self.blocked(x, y, heading - swerve, own):
                    heading -= swerve
                else:
                    break  # another vessel already serves the area ahead
            x += STEP * math.cos(heading)
            y += STEP * math.sin(heading)
            travelled += STEP
            run.append((x, y))
            if x * x + y * y > 1.0 or math.hypot(x - mx, y - my) < MACULA_FREE:
                break
            own.add(self.cell(x, y))
            if s.generation < p.depth and travelled >= next_branch:
                split = self.branch(s, x, y, heading, width, travelled, own)
                self.segments.append(Segment(np.array(run), max(width, MIN_WIDTH_PX), s.generation))
                run = [(x, y)]
                if split is not None:
                    sprouts.append(split[0])
                    _, width, heading = split
                width *= TAPER  # vessels narrow between visible branch points too (unresolved twigs)
                next_branch = travelled + spacing * rng.uniform(0.5, 1.5)
        self.segments.append(Segment(np.array(run), max(width, MIN_WIDTH_PX), s.generation))
        for row, col in own:  # claim the path and a one-cell margin around it
            self.claimed[max(row - 1, 0):row + 2, max(col - 1, 0):col + 2] = True
        return sprouts

    def trunks(self) -> list[_Sprout]:
        """Vessels leaving the disc: arcade trunks, nasal trunks, thin papillomacular vessels."""
        p, rng = self.p, self.rng
        (disc_x, disc_y), t = self.disc, p.temporal
        sprouts = []

        def start() -> tuple[float, float]:
            dx, dy = rng.normal(0, 0.12 * DISC_DIAMETER, 2)
            return disc_x + dx, disc_y + dy

        stem = (disc_x, disc_y)
        reach: dict[float, float] = {}
        for i in range(p.main_vessels):
            vertical = -1.0 if i % 2 == 0 else 1.0
            pair = i // 2  # 0: first vessel of the arcade, 1: its companion (arteries are thinner), ...
            lean = math.radians(rng.uniform(5, 35))
            width = p.width_px * (1.0 if pair % 2 == 0 else 0.8) * 0.9 ** (pair // 2) * rng.uniform(0.9, 1.0)
            # companions bow less or more than the first vessel, so arteries and veins part and cross
            first = reach.setdefault(vertical, rng.uniform(0.55, 0.75))
            factor = rng.uniform(0.6, 0.8) if rng.random() < 0.5 else rng.uniform(1.2, 1.35)
            bow = first if pair == 0 else first * factor
            sprouts.append(_Sprout(*start(), math.atan2(vertical * math.cos(lean), t * math.sin(lean)),
                                   width, 0, length=2.4, mode="arcade", vertical=vertical, reach=bow,
                                   stem=stem))
        for i in range(p.nasal_vessels):
            angle = math.radians(-70 + 140 * (i + 0.5) / p.nasal_vessels + rng.normal(0, 10))
            sprouts.append(_Sprout(*start(), math.atan2(math.sin(angle), -t * math.cos(angle)),
                                   p.width_px * rng.uniform(0.5, 0.7), 0, length=1.5,
                                   mode="away", origin=self.disc, stem=stem))
        for i in range(p.macular_vessels):
            angle = math.radians((i - (p.macular_vessels - 1) / 2) * 30 + rng.normal(0, 8))
            sprouts.append(_Sprout(*start(), math.atan2(math.sin(angle), t * math.cos(angle)),
                                   p.width_px * rng.uniform(0.25, 0.35), 1, length=0.8, mode="toward",
                                   stem=stem))
        return sprouts


def grow_tree(params: TreeParams | None = None, seed: int = 0) -> list[Segment]:
    """Vessel geometry in FOV units: constant-width segments, trunks first, then by generation."""
    grower = _Grower(params or TreeParams(), np.random.default_rng(seed))
    queue = deque(grower.trunks())
    while queue:
        queue.extend(grower.grow(queue.popleft()))
    return grower.segments


def _to_pixels(points: np.ndarray, size_px: int, margin: float, shift_bits: int = 0) -> np.ndarray:
    """FOV units to integer pixel coordinates for cv2, with 2**shift_bits sub-pixel steps."""
    centre = (size_px - 1) / 2
    pixels = (centre + points * size_px * (0.5 - margin)) * (1 << shift_bits)
    return np.round(pixels).astype(np.int32)


def rasterise(segments: list[Segment], size_px: int, margin: float,
              return_width: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Draw anti-aliased at 4x supersampling, area-downsample, keep pixels at least half covered.

    Widths scale with size. cv2 thickness is an integer and its anti-aliased lines come out
    ~2.4 canvas px wider than it, so the thickness is chosen for the drawn width to match (in
    half-pixel steps). Vessels at least half a pixel wide are drawn as unbroken lines of at least
    ~1.3 px; thinner ones vanish, as they do when a real annotation is downsampled.
    """
    canvas_px = SUPERSAMPLE * size_px
    canvas = np.zeros((canvas_px, canvas_px), np.uint8)
    for seg in segments:
        width_out_px = seg.width_px * size_px / REFERENCE_PX
        if width_out_px < 0.5:
            continue
        thickness = max(3, round(SUPERSAMPLE * width_out_px - AA_EXTRA_PX))  # 3: thinnest unbroken line
        cv2.polylines(canvas, [_to_pixels(seg.points, canvas_px, margin, 4)], False, 255,
                      thickness=thickness, lineType=cv2.LINE_AA, shift=4)
    cover = cv2.resize(canvas, (size_px, size_px), interpolation=cv2.INTER_AREA)
    mask = (cover >= 128) & fov_disc(size_px, margin)
    if not return_width:
        return mask
    width_map = np.zeros((size_px, size_px), np.float32)
    out_scale = size_px / REFERENCE_PX
    for seg in sorted(segments, key=lambda s: s.width_px):  # wider vessels win where they overlap
        width = seg.width_px * out_scale
        cv2.polylines(width_map, [_to_pixels(seg.points, size_px, margin)], False, float(width),
                      thickness=max(1, math.ceil(width) + 1), lineType=cv2.LINE_8)
    return mask, np.where(mask, width_map, 0.0).astype(np.float32)


def procedural_tree(size_px: int, params: TreeParams | None = None, seed: int = 0,
                    return_width: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """A plausible retinal vessel mask (bool, size_px x size_px), deterministic for a seed.

    With return_width, also a float32 map of the local vessel width in pixels (0 off vessels).
    """
    if size_px < 8:
        raise ValueError(f"size_px must be at least 8, got {size_px}")
    params = params or TreeParams()
    return rasterise(grow_tree(params, seed), size_px, params.fov_margin, return_width)
