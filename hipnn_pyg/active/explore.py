r"""Exploration: proposing candidate structures with the current committee.

Every explorer has ``explore(committee, seeds, seed) -> list[Atoms]``: candidates with
the committee's verdict in ``info`` (``rho``, ``force_dev``, ``committee_energy``), an
identity ``active_id``, the ``active_group`` they belong to (one MD trajectory, one
pool file) and their ``active_order`` in it, which selection uses to spread its picks.
All randomness comes from ``seed``, so a rerun proposes the same candidates.

* :class:`LangevinExplorer`: committee-driven Langevin MD from the seed geometries over
  a temperature ladder, stopping a trajectory at its first frame whose disagreement
  passes ``stop_threshold`` (as lanl/ALF and MACE's ``active_learning_md.py`` do);
  an exploding trajectory is cut, not fatal.
* :class:`NormalModeExplorer`: ANI-1x normal-mode sampling around geometries minimised
  on the committee mean, from its finite-difference Hessian.
* :class:`PoolExplorer`: a user-given file of unlabelled structures.
* :class:`~hipnn_pyg.active.udd.UncertaintyDrivenExplorer`: Langevin MD biased towards
  the committee's disagreement.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator
from ase.md.velocitydistribution import Stationary, ZeroRotation
from ase.neighborlist import neighbor_list

from hipnn_pyg.active.committee import Committee, Prediction
from hipnn_pyg.active.structures import ID_KEY, check_frames, plain_copy, read
from hipnn_pyg.compat.ase import thermalize
from hipnn_pyg.extxyz import PathLike
from hipnn_pyg.md.dynamics import make_dynamics
from hipnn_pyg.nn.checks import GeometryError

log = logging.getLogger(__name__)


class ExplorationFailed(ValueError):
    r"""An explorer's own numerical failure on one seed (a diverged minimisation, no
    stable normal mode): that seed is skipped."""


#: What cuts a trajectory or skips a seed. Anything else (out of memory, a bug, a
#: missing package) passes through: a broken round must not look like "nothing new".
EXPLORATION_FAILURES = (GeometryError, FloatingPointError, ExplorationFailed,
                        np.linalg.LinAlgError)


def candidate(atoms: Atoms, prediction: Prediction, explorer: str, group: str,
              order: int) -> Atoms:
    r"""A plain copy of ``atoms`` with the committee's verdict and its identity in
    ``info``."""
    frame = plain_copy(atoms)
    frame.info.update({
        ID_KEY: f"{group}:{order}", "active_group": group, "active_order": int(order),
        "explorer": explorer, "rho": prediction.rho, "force_dev": prediction.force_dev,
        "rho_centred": prediction.rho_centred,
        "committee_energy": prediction.energy,
    })
    return frame


def sub_seed(*keys: int) -> int:
    r"""A 32-bit seed derived from ``keys`` (run seed, round, member, ...)."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(1)[0])


def choose_seeds(count: int, max_seeds: int | None, seed: int) -> list[int]:
    r"""Indices of the seed geometries an explorer starts from this round: all of the
    ``count``, or ``max_seeds`` of them drawn with ``seed`` (the round's), so the rounds
    rotate through the seed frames."""
    if max_seeds is None or max_seeds >= count:
        return list(range(count))
    rng = np.random.default_rng(sub_seed(seed, 7))
    return sorted(rng.choice(count, size=max_seeds, replace=False).tolist())


def _too_close(atoms: Atoms, min_distance: float) -> bool:
    return len(neighbor_list("i", atoms, min_distance)) > 0


class LangevinExplorer:
    r"""Committee-driven Langevin MD from every seed geometry at every temperature.

    Every ``check_interval`` steps the current frame becomes a candidate; a trajectory
    ends at ``steps``, at its first frame whose disagreement (``measure``) passes
    ``stop_threshold``, or when it explodes (an error of the model, non-finite or
    overlapping positions, a temperature above ``max_temperature_factor`` times the
    target), in which case the bad frame is dropped and the trajectory cut.

    Args:
        temperatures_K (Sequence[float]): The temperature ladder. (default:
            :obj:`(300.0,)`)
        steps (int): Longest trajectory, in steps. (default: :obj:`500`)
        timestep_fs (float): Time step. (default: :obj:`0.5`)
        check_interval (int): Steps between candidate frames. (default: :obj:`10`)
        trajectories (int): Trajectories per seed geometry and temperature, with
            different velocities and noise. (default: :obj:`1`)
        friction_per_fs (float): Langevin friction. (default: :obj:`0.01`)
        stop_threshold (float, optional): Disagreement that ends a trajectory.
            (default: :obj:`None`, never)
        measure (str): ``"energy"`` (ρ, eV/√atom) or ``"forces"`` (eV/Å).
            (default: :obj:`"energy"`)
        min_distance (float): Two atoms closer than this (Å) mean an explosion.
            (default: :obj:`0.5`)
        max_temperature_factor (float): A temperature above this multiple of the
            target means an explosion. (default: :obj:`5.0`)
        max_seeds (int, optional): Seed geometries per round: ``max_seeds`` drawn from
            all of them with the round's seed, so the rounds rotate through the seed
            frames. (default: :obj:`None`, all)
        stop_relative (float, optional): A threshold relative to the committee's own
            disagreement on its training set: a trajectory stops at its first frame
            above ``stop_relative`` times the median of ``measure`` there
            (:meth:`~hipnn_pyg.active.committee.Committee.fit_offsets` records it);
            with ``stop_threshold`` too, the larger of the two. (default: :obj:`None`)
    """

    name = "md"

    def __init__(self, temperatures_K: Sequence[float] = (300.0,), steps: int = 500,
                 timestep_fs: float = 0.5, check_interval: int = 10, trajectories: int = 1,
                 friction_per_fs: float = 0.01, stop_threshold: float | None = None,
                 measure: str = "energy", min_distance: float = 0.5,
                 max_temperature_factor: float = 5.0, max_seeds: int | None = None,
                 stop_relative: float | None = None) -> None:
        if check_interval < 1 or steps < check_interval:
            raise ValueError(f"need 1 <= check_interval <= steps, got check_interval="
                             f"{check_interval}, steps={steps}")
        self.temperatures_K = [float(t) for t in temperatures_K]
        self.steps, self.timestep_fs = int(steps), float(timestep_fs)
        self.check_interval, self.trajectories = int(check_interval), int(trajectories)
        self.friction_per_fs = float(friction_per_fs)
        self.stop_threshold = stop_threshold
        self.measure = measure
        self.min_distance = float(min_distance)
        self.max_temperature_factor = float(max_temperature_factor)
        self.max_seeds = max_seeds
        self.stop_relative = stop_relative

    def threshold(self, committee: Committee) -> float | None:
        r"""The disagreement that ends a trajectory of this committee, or :obj:`None`."""
        found = [] if self.stop_threshold is None else [float(self.stop_threshold)]
        reference = getattr(committee, "training_disagreement", {}).get(self.measure)
        if self.stop_relative is not None and reference is not None:
            found.append(float(self.stop_relative) * float(reference))
        return max(found) if found else None

    def explore(self, committee: Committee, seeds: Sequence[Atoms], seed: int) -> list[Atoms]:
        r"""Runs every trajectory; returns their candidate frames."""
        frames: list[Atoms] = []
        for s in choose_seeds(len(seeds), self.max_seeds, seed):
            start = seeds[s]
            for t, temperature in enumerate(self.temperatures_K):
                for r in range(self.trajectories):
                    group = f"{self.name}:s{s}:T{temperature:g}:r{r}"
                    frames += self.trajectory(committee, start, temperature,
                                              sub_seed(seed, s, t, r), group)
        return frames

    def trajectory(self, committee: Committee, start: Atoms, temperature_K: float,
                   seed: int, group: str) -> list[Atoms]:
        r"""One trajectory's candidates (see class docs)."""
        atoms = plain_copy(start)
        atoms.info.clear()
        rng = np.random.default_rng(seed)
        thermalize(atoms, temperature_K, rng=rng)
        Stationary(atoms)
        if not atoms.pbc.any() and len(atoms) > 2:
            ZeroRotation(atoms)
        atoms.calc = self.dynamics_calculator(committee)
        dynamics = make_dynamics(atoms, "nvt_langevin", self.timestep_fs, temperature_K,
                                 friction_per_fs=self.friction_per_fs, seed=seed)
        frames: list[Atoms] = []
        for check in range(1, self.steps // self.check_interval + 1):
            try:
                dynamics.run(self.check_interval)
                problem = self._problem(atoms, temperature_K)
                prediction = committee.predict(atoms) if problem is None else None
            except EXPLORATION_FAILURES as error:
                problem, prediction = f"{type(error).__name__}: {error}", None
            if prediction is None or not math.isfinite(prediction.energy):
                log.warning("%s: trajectory cut at step %d (%s)", group,
                            check * self.check_interval, problem or "non-finite energy")
                break
            frame = candidate(atoms, prediction, self.name, group, check)
            frame.info["temperature_K"] = temperature_K
            frames.append(frame)
            threshold = self.threshold(committee)
            if threshold is not None and prediction.measure(self.measure) > threshold:
                break
        return frames

    def dynamics_calculator(self, committee: Committee) -> Calculator:
        r"""What drives the dynamics: the committee's mean (a biased explorer adds to it)."""
        return committee

    def _problem(self, atoms: Atoms, temperature_K: float) -> str | None:
        if not np.isfinite(atoms.positions).all():
            return "non-finite positions"
        if _too_close(atoms, self.min_distance):
            return f"atoms closer than {self.min_distance} Å"
        temperature = atoms.get_temperature()
        if temperature > self.max_temperature_factor * temperature_K:
            return f"temperature {temperature:.0f} K"
        return None


class NormalModeExplorer:
    r"""ANI-1x normal-mode sampling (Smith et al., Chem. Sci. 8, 3192, 2017) around
    geometries minimised on the committee mean.

    The Hessian is the central finite difference of the committee's mean forces. For
    each normal mode :math:`k` with Cartesian unit direction :math:`\hat q_k` and force
    constant :math:`K_k = \hat q_k^\top H \hat q_k`, a sample displaces the minimum by
    :math:`\sum_k \pm\sqrt{3 c_k N k_B T / K_k}\,\hat q_k`, with uniform :math:`c_k`
    scaled to sum to a uniform number in [0, 1] (so the harmonic energy is at most
    :math:`\tfrac32 N k_B T`). Translations, rotations and unstable modes (mass-weighted
    eigenvalue below ``min_eigenvalue``) are left out.

    Args:
        temperatures_K (Sequence[float]): Sampling temperatures. (default:
            :obj:`(300.0,)`)
        samples (int): Samples per seed geometry and temperature. (default: :obj:`10`)
        fmax (float): Force convergence of the minimisation, eV/Å. (default: :obj:`0.05`)
        max_steps (int): Most optimiser steps. (default: :obj:`200`)
        delta (float): Finite-difference step, Å. (default: :obj:`0.005`)
        min_eigenvalue (float): Smallest kept mass-weighted Hessian eigenvalue,
            eV/(Å² amu). (default: :obj:`1e-3`)
        max_seeds (int, optional): Seed geometries per round, drawn from all of them
            with the round's seed (minima around several of them over the rounds).
            (default: :obj:`None`, all)
    """

    name = "nms"

    def __init__(self, temperatures_K: Sequence[float] = (300.0,), samples: int = 10,
                 fmax: float = 0.05, max_steps: int = 200, delta: float = 0.005,
                 min_eigenvalue: float = 1e-3, max_seeds: int | None = None) -> None:
        self.temperatures_K = [float(t) for t in temperatures_K]
        self.samples, self.fmax, self.max_steps = int(samples), float(fmax), int(max_steps)
        self.delta, self.min_eigenvalue = float(delta), float(min_eigenvalue)
        self.max_seeds = max_seeds

    def explore(self, committee: Committee, seeds: Sequence[Atoms], seed: int) -> list[Atoms]:
        r"""Minimises every seed and samples around it; returns the candidates."""
        frames: list[Atoms] = []
        for s in choose_seeds(len(seeds), self.max_seeds, seed):
            start = seeds[s]
            try:
                minimum = self.minimise(committee, start)
                directions, constants = self.modes(committee, minimum)
            except EXPLORATION_FAILURES as error:
                log.warning("normal modes of seed %d failed, skipped: %s", s, error)
                continue
            for t, temperature in enumerate(self.temperatures_K):
                rng = np.random.default_rng(sub_seed(seed, s, t))
                for k in range(self.samples):
                    atoms = minimum.copy()
                    atoms.positions += self.displacement(directions, constants, len(atoms),
                                                         temperature, rng)
                    prediction = committee.predict(atoms)
                    group = f"nms:s{s}:T{temperature:g}:{k}"  # independent samples
                    frame = candidate(atoms, prediction, self.name, group, 0)
                    frame.info["temperature_K"] = temperature
                    frames.append(frame)
        return frames

    def minimise(self, committee: Committee, start: Atoms) -> Atoms:
        r"""``start`` relaxed on the committee mean with BFGS."""
        from ase.optimize import BFGS

        atoms = plain_copy(start)
        atoms.info.clear()
        atoms.calc = committee
        BFGS(atoms, logfile=None).run(fmax=self.fmax, steps=self.max_steps)
        if not np.isfinite(atoms.positions).all():
            raise ExplorationFailed("the minimisation diverged")
        minimum = plain_copy(atoms)
        return minimum

    def hessian(self, committee: Committee, atoms: Atoms) -> np.ndarray:
        r"""The committee mean's Hessian ``[3N, 3N]`` (eV/Å²), central differences."""
        n = 3 * len(atoms)
        hessian = np.zeros((n, n))
        work = plain_copy(atoms)
        for column in range(n):
            i, a = divmod(column, 3)
            forces = []
            for sign in (1.0, -1.0):
                work.positions = atoms.positions
                work.positions[i, a] += sign * self.delta
                forces.append(committee.predict(work).forces.reshape(-1))
            hessian[:, column] = -(forces[0] - forces[1]) / (2.0 * self.delta)
        return 0.5 * (hessian + hessian.T)

    def modes(self, committee: Committee, atoms: Atoms) -> tuple[np.ndarray, np.ndarray]:
        r"""Unit Cartesian directions ``[num_modes, N, 3]`` of the kept normal modes and
        their force constants ``[num_modes]`` (eV/Å²)."""
        hessian = self.hessian(committee, atoms)
        inv_sqrt_mass = np.repeat(1.0 / np.sqrt(atoms.get_masses()), 3)
        weighted = hessian * inv_sqrt_mass[:, None] * inv_sqrt_mass[None, :]
        eigenvalues, vectors = np.linalg.eigh(weighted)
        keep = eigenvalues > self.min_eigenvalue
        if not keep.any():
            raise ExplorationFailed("no stable normal mode (is the minimum converged?)")
        directions = (vectors[:, keep] * inv_sqrt_mass[:, None]).T
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        constants = np.einsum("ki,ij,kj->k", directions, hessian, directions)
        return directions.reshape(-1, len(atoms), 3), constants

    @staticmethod
    def displacement(directions: np.ndarray, constants: np.ndarray, num_atoms: int,
                     temperature_K: float, rng: np.random.Generator) -> np.ndarray:
        r"""One random ANI-1x displacement ``[N, 3]`` (see class docs)."""
        c = rng.uniform(size=len(constants))
        c *= rng.uniform() / c.sum()
        amplitude = np.sqrt(3.0 * c * num_atoms * units.kB * temperature_K / constants)
        amplitude *= rng.choice([-1.0, 1.0], size=len(constants))
        return np.einsum("k,kia->ia", amplitude, directions)


class PoolExplorer:
    r"""Pool-based active learning: the candidates are a user's unlabelled structures
    (their committee verdict attached). Frames selected in earlier rounds are left out
    by the loop. An element the ensemble does not know is refused before any
    labelling (:meth:`check_frames`).

    Args:
        path: Any file :func:`ase.io.read` reads, or an rMD17-style ``.npz``.
        index (str): Frames to take, an ASE slice string. (default: :obj:`":"`)
    """

    name = "pool"
    #: The same frames every round: the loop leaves out those already selected.
    persistent = True

    def __init__(self, path: PathLike, index: str = ":") -> None:
        self.path = str(path)
        self.frames = read(path, index)
        if not self.frames:
            raise ValueError(f"pool {self.path} holds no structure")

    def check_frames(self, species: Sequence[int]) -> None:
        r"""Raises :obj:`ValueError` naming a pool frame with an unknown element."""
        check_frames(self.frames, species, f"pool {self.path}")

    def explore(self, committee: Committee, seeds: Sequence[Atoms], seed: int) -> list[Atoms]:
        r"""The pool's frames with the committee's verdict, each a group of its own (a
        frame's ``info["active_group"]`` keeps its given group: ``max_per_group`` then
        limits the picks per group, e.g. per source trajectory)."""
        frames = []
        predictions = committee.predict_many(self.frames)
        for i, (atoms, prediction) in enumerate(zip(self.frames, predictions, strict=True)):
            frame = candidate(atoms, prediction, self.name,
                              str(atoms.info.get("active_group", f"pool:{i}")), i)
            frame.info[ID_KEY] = f"pool:{i}"  # the frame's identity across rounds
            frames.append(frame)
        return frames
