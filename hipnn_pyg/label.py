r"""Label structures with a reference calculator: ``hipnn-label in=... out=...``.

Reads structures from any file ASE reads (or an rMD17-style ``.npz``), runs an ASE
calculator on each (GFN2-xTB through tblite by default; PySCF DFT; ASE's EMT) and
appends extended-XYZ frames with ``energy`` (eV), ``forces`` (eV/Å), ``stress``
(eV/Å³, periodic cells), ``charges`` (e) and ``dipole`` (e·Å) where the calculator
gives them, readable by :class:`hipnn_pyg.data.ASEDataset`.

The run is resumable: every frame is written with one ``write`` + ``fsync``
(:func:`hipnn_pyg.extxyz.append_frame`), a torn last frame from a kill is truncated on
restart, and finished frames (``info["label_index"]``) are skipped, after checking
that they belong to the same input.

Units and conventions:

* ``dipole`` is taken relative to the centre of mass, :math:`\mu - Q\,R_\mathrm{cm}`
  for total charge :math:`Q` (calculators report it relative to the coordinate
  origin), matching :class:`hipnn_pyg.nn.HIPNNPotential`; for neutral structures the
  two agree.
* tblite's ASE calculator returns the dipole in e·Å (its docstring says Debye, but it
  multiplies atomic units by ``ase.units.Bohr``; checked: shifting a cation by 1 Å
  moves its dipole by exactly 1 e·Å). Divide by ``ase.units.Debye`` (0.2082) for D.
* ``charges`` are the calculator's (Mulliken for GFN2-xTB and PySCF); they are not
  the charges whose dipole is ``dipole`` (GFN2's dipole includes atomic dipoles).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import Bohr, Hartree

from hipnn_pyg.extxyz import PathLike, append_frame, read_frames, repair_extxyz
from hipnn_pyg.nn.checks import check_atoms

#: Calculator names accepted by :func:`make_calculator`.
CALCULATORS = ("gfn2", "gfn1", "tblite", "pyscf", "emt", "stored")


def make_calculator(name: str, **options: Any) -> Calculator:
    r"""An ASE calculator by name.

    Args:
        name (str): ``"gfn2"`` / ``"gfn1"`` (tblite GFN2-/GFN1-xTB), ``"tblite"``
            (``method`` in ``options``), ``"pyscf"`` (DFT, :class:`PySCFCalculator`),
            ``"emt"`` (ASE's effective-medium theory, metals) or ``"stored"`` (the
            labels of a data set, :class:`StoredLabels`: pool-based active learning
            at no QM cost).
        **options: Keyword arguments of the calculator, e.g. ``accuracy`` or
            ``electronic_temperature`` for tblite, ``xc`` and ``basis`` for PySCF.
    """
    key = name.lower().replace("-", "").replace("_", "")
    if key in ("gfn2", "gfn2xtb", "gfn1", "gfn1xtb", "tblite", "xtb"):
        # tblite's OpenMP threads spin-wait: for small molecules on a shared machine one
        # thread is 50-100x faster (6 ms vs 0.6 s per ethanol). Only effective before
        # the OpenMP runtime starts; set OMP_NUM_THREADS yourself to override.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        try:
            from tblite.ase import TBLite
        except ImportError as error:
            raise ImportError(
                f"calculator '{name}' needs tblite: pip install tblite ({error})"
            ) from error
        method = {"gfn2": "GFN2-xTB", "gfn1": "GFN1-xTB"}.get(key[:4], "GFN2-xTB")
        options = {"method": method, "verbosity": 0, **options}
        return TBLite(**options)
    if key == "pyscf":
        return PySCFCalculator(**options)
    if key == "emt":
        from ase.calculators.emt import EMT

        return EMT(**options)
    if key == "stored":
        return StoredLabels(**options)
    raise ValueError(f"unknown calculator '{name}'; choose one of {CALCULATORS}")


class PySCFCalculator(Calculator):
    r"""Molecular quantum chemistry with PySCF, as an ASE calculator. PySCF is imported
    only when a calculation runs.

    ``method="dft"`` (default) is Kohn-Sham DFT with energy, forces, Mulliken charges
    and dipole; its defaults reproduce the rMD17 level of theory, PBE/def2-SVP with
    density fitting (about 8 s per ethanol on two cores). ``method="ccsd(t)"`` is
    coupled cluster, RHF → CCSD → (T), for closed shells; ``"ccsd"``, ``"mp2"`` and
    ``"hf"`` likewise. They give energies only unless ``forces=True``, which adds PySCF's
    analytic gradients (for CCSD(T): the (T) Λ equations and ``pyscf.grad.ccsd_t``;
    about 290 s per ethanol in cc-pVDZ on one core, against 15 s for the energy). Use
    ``basis="cc-pVDZ"`` for them.

    Args:
        method (str): ``"dft"``, ``"hf"``, ``"mp2"``, ``"ccsd"`` or ``"ccsd(t)"``
            (also spelled ``"ccsd_t"``, which needs no quoting on a Hydra command
            line). (default: :obj:`"dft"`)
        xc (str): Exchange-correlation functional (DFT). (default: :obj:`"PBE"`)
        basis (str): Basis set. (default: :obj:`"def2-SVP"`)
        density_fit (bool): Density fitting (RI-J) of the DFT SCF. (default: :obj:`True`)
        frozen_core (bool): Freeze the core orbitals in MP2/CC (the usual choice for
            valence correlation energies with cc-pVXZ). (default: :obj:`True`)
        charge (int): Total charge in e. (default: :obj:`0`)
        spin (int): Number of unpaired electrons, 2S. (default: :obj:`0`)
        conv_tol (float): SCF convergence, Hartree. (default: :obj:`1e-9`)
        cc_conv_tol (float): CCSD (and Λ) convergence, Hartree. (default: :obj:`1e-8`)
        forces (bool): Analytic forces of the correlated methods (DFT always has
            them). (default: :obj:`False`)
    """

    implemented_properties = ["energy", "free_energy", "forces", "charges", "dipole"]
    default_parameters = {"method": "dft", "xc": "PBE", "basis": "def2-SVP",
                          "density_fit": True, "frozen_core": True, "charge": 0, "spin": 0,
                          "conv_tol": 1e-9, "cc_conv_tol": 1e-8, "forces": False}

    def __init__(self, **kwargs: Any) -> None:
        _import_pyscf()
        super().__init__(**kwargs)
        method = _method_name(self.parameters.method)
        if method not in PYSCF_METHODS:
            raise ValueError(f"unknown PySCF method '{self.parameters.method}'; choose one "
                             f"of {PYSCF_METHODS}")
        if method != "dft":
            # an instance attribute: label_one labels only what the method gives
            self.implemented_properties = ["energy", "free_energy"] + (
                ["forces"] if self.parameters.forces else [])

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        assert self.atoms is not None
        if self.atoms.pbc.any():
            raise ValueError("PySCFCalculator is molecular only: periodic cells are not "
                             "supported")
        gto, dft = _import_pyscf()
        p = self.parameters
        if _method_name(p.method) != "dft":
            energy, gradient = _correlated(self.atoms, p)
            self.results = {"energy": energy * Hartree, "free_energy": energy * Hartree}
            if gradient is not None:
                self.results["forces"] = -gradient * Hartree / Bohr
            return
        mol = gto.M(atom=[(s, tuple(r)) for s, r in zip(self.atoms.get_chemical_symbols(),
                                                       self.atoms.positions, strict=True)],
                    unit="Angstrom", basis=p.basis, charge=int(p.charge), spin=int(p.spin),
                    verbose=0)
        mf = dft.RKS(mol) if int(p.spin) == 0 else dft.UKS(mol)
        mf.xc = p.xc
        mf.conv_tol = p.conv_tol
        if p.density_fit:
            mf = mf.density_fit()
        energy = mf.kernel()
        if not mf.converged:
            raise RuntimeError("PySCF SCF did not converge")
        gradient = mf.nuc_grad_method().kernel()
        _, charges = mf.mulliken_pop(verbose=0)
        dipole = mf.dip_moment(unit="AU", verbose=0) * Bohr  # e·Bohr -> e·Å, about 0
        self.results = {
            "energy": energy * Hartree,
            "free_energy": energy * Hartree,
            "forces": -np.asarray(gradient) * Hartree / Bohr,
            "charges": np.asarray(charges),
            "dipole": np.asarray(dipole),
        }


class StoredLabels(Calculator):
    r"""The labels a data set already holds, as an oracle: a structure is looked up by
    its elements and positions (to ``decimals`` places, in Å) and gets that frame's
    energy and forces, so a pool-based active-learning run (QBC against random)
    costs no QM calls. A structure not in the data set is a per-frame failure.

    Args:
        path (str): An rMD17/MD17 ``.npz`` (kcal/mol, Å) or any file ASE reads with
            energies (eV) and optionally forces (eV/Å).
        decimals (int): Positions are matched after rounding to this many decimals.
            (default: :obj:`5`)
    """

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, path: str, decimals: int = 5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.path, self.decimals = str(path), int(decimals)
        self._labels = _stored_table(str(Path(path).resolve()), _modified(Path(path)),
                                     self.decimals)
        if not self._labels:
            raise ValueError(f"stored labels: {path} holds no labelled structure")

    def calculate(self, atoms: Atoms | None = None, properties: list[str] | None = None,
                  system_changes: list[str] = all_changes) -> None:
        super().calculate(atoms, properties or ["energy"], system_changes)
        assert self.atoms is not None
        found = self._labels.get(_label_key(self.atoms.numbers, self.atoms.positions,
                                            self.decimals))
        if found is None:
            raise ValueError(f"structure not among the stored labels of {self.path}")
        energy, forces = found
        self.results = {"energy": energy, "free_energy": energy}
        if forces is not None:
            self.results["forces"] = forces.copy()


def _label_key(numbers: np.ndarray, positions: np.ndarray, decimals: int) -> bytes:
    rounded = np.round(np.asarray(positions, dtype=np.float64), decimals) + 0.0
    return np.asarray(numbers, dtype=np.int64).tobytes() + rounded.tobytes()


def _modified(path: Path) -> float:
    return path.stat().st_mtime if path.is_file() else -1.0


@functools.lru_cache(maxsize=4)
def _stored_table(path: str, modified: float,
                  decimals: int) -> dict[bytes, tuple[float, Any]]:
    r"""Labels of ``path`` by structure key, read once per file version (the active
    loop makes a fresh calculator for every frame)."""
    return {_label_key(numbers, positions, decimals): (energy, forces)
            for numbers, positions, energy, forces in _stored_frames(Path(path))}


def _stored_frames(path: Path) -> list[tuple[np.ndarray, np.ndarray, float, Any]]:
    from ase.units import kcal, mol

    if not path.is_file():
        raise FileNotFoundError(f"stored labels: file not found: {path}")
    if path.suffix == ".npz":
        with np.load(path) as npz:
            rmd17 = "coords" in npz
            numbers = npz["nuclear_charges" if rmd17 else "z"]
            coords = npz["coords" if rmd17 else "R"]
            energies = npz["energies" if rmd17 else "E"].reshape(-1)
            forces = npz["forces" if rmd17 else "F"]
        scale = kcal / mol  # eV per kcal/mol
        return [(numbers, coords[k], float(energies[k]) * scale, forces[k] * scale)
                for k in range(len(coords))]
    frames = []
    for atoms in ase.io.read(str(path), index=":"):
        try:
            energy = atoms.get_potential_energy()
        except Exception:  # noqa: BLE001 - a frame without an energy is not a label
            continue
        try:
            forces = atoms.get_forces()
        except Exception:  # noqa: BLE001 - energies only
            forces = None
        frames.append((atoms.numbers, atoms.positions, float(energy), forces))
    return frames


#: Methods of :class:`PySCFCalculator`.
PYSCF_METHODS = ("dft", "hf", "mp2", "ccsd", "ccsd(t)")


def _method_name(method: str) -> str:
    name = str(method).lower().replace("-", "").replace(" ", "")
    return "ccsd(t)" if name in ("ccsd_t", "ccsdt") else name


def _correlated(atoms: Atoms, p: Any) -> tuple[float, np.ndarray | None]:
    r"""Total energy (Hartree) of ``atoms`` by RHF and, as ``p.method`` asks, frozen-core
    MP2, CCSD or CCSD(T), and its nuclear gradient (Hartree/Bohr, ``[num_atoms, 3]``)
    when ``p.forces``, else :obj:`None`; raises when the SCF, the CC or the Λ equations
    do not converge."""
    from pyscf import cc, gto, mp, scf

    if int(p.spin) != 0:
        raise ValueError(f"method '{p.method}' is implemented for closed shells (spin=0)")
    mol = gto.M(atom=[(s, tuple(r)) for s, r in zip(atoms.get_chemical_symbols(),
                                                   atoms.positions, strict=True)],
                unit="Angstrom", basis=p.basis, charge=int(p.charge), verbose=0)
    mf = scf.RHF(mol)
    mf.conv_tol = p.conv_tol
    energy = mf.kernel()
    if not mf.converged:
        raise RuntimeError("PySCF RHF did not converge")
    method = _method_name(p.method)
    want_gradient = bool(p.forces)
    if method == "hf":
        return float(energy), _gradient(mf) if want_gradient else None
    frozen = _frozen_core_orbitals(mol) if p.frozen_core else None
    if method == "mp2":
        perturbed = mp.MP2(mf, frozen=frozen).run()
        return float(perturbed.e_tot), _gradient(perturbed) if want_gradient else None
    coupled = cc.CCSD(mf, frozen=frozen)
    coupled.conv_tol = p.cc_conv_tol
    coupled.kernel()
    if not coupled.converged:
        raise RuntimeError("PySCF CCSD did not converge")
    if method == "ccsd":
        return float(coupled.e_tot), _gradient(coupled) if want_gradient else None
    from pyscf.cc import ccsd_t

    eris = coupled.ao2mo()
    energy = coupled.e_tot + ccsd_t.kernel(coupled, eris, coupled.t1, coupled.t2, verbose=0)
    if not want_gradient:
        return float(energy), None
    # (T) gradients need the Λ amplitudes of the CCSD(T) functional, not of CCSD
    from pyscf.cc import ccsd_t_lambda
    from pyscf.grad import ccsd_t as ccsd_t_grad

    converged, l1, l2 = ccsd_t_lambda.kernel(coupled, eris, coupled.t1, coupled.t2,
                                             tol=p.cc_conv_tol, verbose=0)
    if not converged:
        raise RuntimeError("PySCF CCSD(T) Λ equations did not converge")
    gradient = ccsd_t_grad.Gradients(coupled).kernel(coupled.t1, coupled.t2, l1, l2,
                                                     eris=eris)
    return float(energy), np.asarray(gradient)


def _gradient(method: Any) -> np.ndarray:
    r"""The analytic nuclear gradient (Hartree/Bohr) of a converged PySCF method."""
    return np.asarray(method.nuc_grad_method().kernel())


def _frozen_core_orbitals(mol: Any) -> int:
    r"""Number of doubly occupied core orbitals: 1s for Li-Ne, 1s2s2p for Na-Ar."""
    core = 0
    for z in mol.atom_charges():
        core += 0 if z <= 2 else 1 if z <= 10 else 5 if z <= 18 else 9
    return core


def _import_pyscf() -> tuple[Any, Any]:
    try:
        from pyscf import dft, gto
    except ImportError as error:
        raise ImportError(
            f"calculator 'pyscf' needs PySCF, which is not installed: pip install pyscf "
            f"({error})"
        ) from error
    return gto, dft


def read_structures(path: PathLike, index: str = ":") -> list[Atoms]:
    r"""Structures from ``path``: any format :func:`ase.io.read` knows (also
    compressed), or an ``.npz`` with rMD17's ``nuclear_charges`` and ``coords`` (Å)
    (or MD17's ``z`` and ``R``), whose frames get ``info["source_index"]``, their row
    in the file.

    Args:
        path: The file.
        index (str): Frames to take, an ASE/numpy slice string such as ``"::4"``.
            (default: :obj:`":"`)
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"structure file not found: {path}")
    try:
        images = _read(path, index)
    except Exception as error:  # numpy and ASE raise many types for broken files
        if isinstance(error, ValueError) and str(path) in str(error):
            raise
        raise ValueError(f"cannot read structures from {path}: {type(error).__name__}: "
                         f"{error}") from error
    if not images:
        raise ValueError(f"no structures in {path} (index '{index}')")
    return images


def _read(path: Path, index: str) -> list[Atoms]:
    if path.suffix == ".npz":
        with np.load(path) as npz:
            keys = ("nuclear_charges", "coords") if "coords" in npz else ("z", "R")
            if keys[0] not in npz or keys[1] not in npz:
                raise ValueError(f"{path}: expected arrays 'nuclear_charges' and 'coords' "
                                 f"(rMD17) or 'z' and 'R' (MD17), found {sorted(npz)}")
            numbers, coords = npz[keys[0]], npz[keys[1]]
        if coords.ndim != 3 or coords.shape[1:] != (len(numbers), 3):
            raise ValueError(f"{path}: '{keys[1]}' has shape {list(coords.shape)}, expected "
                             f"[num_frames, {len(numbers)}, 3] for {len(numbers)} atoms")
        rows = np.arange(len(coords))[_slice(index)]
        return [Atoms(numbers=numbers, positions=coords[row], info={"source_index": int(row)})
                for row in np.atleast_1d(rows)]
    images = ase.io.read(str(path), index=index)
    return images if isinstance(images, list) else [images]


def _slice(index: str) -> slice | int:
    from ase.io.formats import string2index

    return string2index(index)


def center_of_mass(atoms: Atoms) -> np.ndarray:
    masses = atoms.get_masses()
    return (masses[:, None] * atoms.positions).sum(0) / masses.sum()


def label_one(atoms: Atoms, calc: Calculator) -> Atoms:
    r"""A copy of ``atoms`` with the calculator's results attached (see module docs
    for units and the dipole origin); ``info["charge"]`` is the total charge used."""
    charge = float(atoms.info.get("charge", 0.0))
    _set_charge(calc, charge)
    work = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell,
                 pbc=atoms.pbc)
    work.calc = calc
    results: dict[str, Any] = {"energy": work.get_potential_energy()}
    supported = set(calc.implemented_properties)
    if "forces" in supported:  # energy-only methods (CCSD(T)) give no forces
        results["forces"] = work.get_forces()
    if work.pbc.any() and "stress" in supported:
        results["stress"] = work.get_stress()
    if "charges" in supported:
        results["charges"] = work.get_charges()
    if "dipole" in supported and not work.pbc.any():
        results["dipole"] = work.get_dipole_moment() - charge * center_of_mass(work)
    out = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell,
                pbc=atoms.pbc)
    out.info.update({k: v for k, v in atoms.info.items() if k not in _RESULT_KEYS})
    out.info["charge"] = charge
    out.calc = SinglePointCalculator(out, **results)
    return out


_RESULT_KEYS = {"energy", "free_energy", "forces", "stress", "charges", "dipole", "virial"}


def _set_charge(calc: Calculator, charge: float) -> None:
    parameters = getattr(calc, "default_parameters", {})
    if "charge" in parameters:
        if calc.parameters.get("charge") != charge:
            calc.set(charge=charge)
    elif charge != 0:
        raise ValueError(f"{type(calc).__name__} cannot label a structure of total charge "
                         f"{charge}")


@dataclass
class LabelSummary:
    r"""What a :func:`label` run did."""

    total: int
    already_done: int
    labelled: int
    output: Path


def label(
    structures: PathLike,
    output: PathLike,
    calculator: str | Calculator = "gfn2",
    calculator_options: Mapping[str, Any] | None = None,
    index: str = ":",
    progress: bool = True,
    callback: Callable[[int], None] | None = None,
) -> LabelSummary:
    r"""Labels the structures of a file, appending to ``output`` (extxyz); resumes a
    killed run.

    Args:
        structures: Input file (see :func:`read_structures`).
        output: The extxyz file to append to.
        calculator (str or Calculator): A name for :func:`make_calculator`, or a
            calculator. (default: :obj:`"gfn2"`)
        calculator_options (Mapping, optional): Options of the named calculator.
        index (str): Frames of the input to label, e.g. ``"::4"``. (default: :obj:`":"`)
        progress (bool): Show a tqdm progress bar. (default: :obj:`True`)
        callback (Callable[[int], None], optional): Called with each finished
            ``label_index`` (used by tests). (default: :obj:`None`)

    Raises:
        ValueError: A broken input structure (NaN positions, overlapping atoms, a
            singular cell; :func:`~hipnn_pyg.nn.checks.check_atoms`), found before
            any labelling starts, or ``output`` holds frames that are not the input's
            (different file or ``index``).
    """
    from tqdm.auto import tqdm

    images = read_structures(structures, index)
    for i, atoms in enumerate(images):  # every frame, before anything is written
        check_atoms(atoms, name=f"structure {i} of {structures}")
    if isinstance(calculator, str):  # (an unknown name fails before the output is touched)
        calculator = make_calculator(calculator, **dict(calculator_options or {}))
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    repair_extxyz(output)
    done = _finished(read_frames(output), images, output)
    todo = [i for i in range(len(images)) if i not in done]
    bar = tqdm(total=len(images), initial=len(done), disable=not progress,
               desc=f"labelling {Path(structures).name}", unit="frame")
    for i in todo:
        atoms = images[i].copy()
        atoms.info["label_index"] = i
        try:
            labelled = label_one(atoms, calculator)
        except Exception as error:
            bar.close()
            raise RuntimeError(f"labelling frame {i} of {structures} failed: "
                               f"{type(error).__name__}: {error}") from error
        append_frame(output, labelled)
        bar.update(1)
        if callback is not None:
            callback(i)
    bar.close()
    return LabelSummary(len(images), len(done), len(todo), output)


def _finished(frames: list[Atoms], images: list[Atoms], output: Path) -> set[int]:
    done: set[int] = set()
    for k, frame in enumerate(frames):
        i = frame.info.get("label_index")
        if i is None or not 0 <= int(i) < len(images):
            raise ValueError(f"{output}: frame {k} has no valid 'label_index' for this input "
                             f"({len(images)} structures); use a new output file")
        i = int(i)
        source = images[i]
        if (len(source) != len(frame) or np.any(source.numbers != frame.numbers)
                or not np.allclose(source.positions, frame.positions, atol=1e-6)):
            raise ValueError(f"{output}: frame {k} (label_index {i}) does not match the "
                             "input structure; it was labelled from another file or index")
        if i in done:
            raise ValueError(f"{output}: label_index {i} appears twice")
        done.add(i)
    return done

