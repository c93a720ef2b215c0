r"""The active-learning loop behind ``hipnn-active`` (``conf/active.yaml``).

Rounds of: train a committee (:mod:`~hipnn_pyg.active.training`), explore
(:mod:`~hipnn_pyg.active.explore`), select by query by committee or at random
(:mod:`~hipnn_pyg.active.selection`), label with the oracle
(:mod:`~hipnn_pyg.active.oracle`), grow the training set; until a round count, a
labelling budget, or a round that selects nothing. When the set grew in the last
round, a final committee is trained on it so the learning curve has its last point.

Everything lives in one run folder::

    config.yaml          the active config of the run (a resume must match it)
    state.json           round and stage reached (written atomically)
    initial.extxyz       the start data; initial_labelled.extxyz: those the oracle labelled
    validation.extxyz    the committee's fixed validation frames (``ensemble.validation``)
    dataset.extxyz       the growing training set
    summary.csv          one row per round; learning_curve.png
    round_000/           train.extxyz, models/member_<k>/ (model.pt, ...), candidates,
                         selected, labelled (.extxyz), label_failures.jsonl, metrics.json

Every stage writes its output atomically (or appends frame by frame, for labels) before
``state.json`` moves on, and every random choice derives from ``seed``, the round and
the member, so a killed run restarted with the same command reaches the same data set.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from ase import Atoms
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from hipnn_pyg.active.committee import Committee
from hipnn_pyg.active.explore import sub_seed
from hipnn_pyg.active.oracle import Oracle, label_frames, read_failures
from hipnn_pyg.active.report import (
    committee_errors,
    member_validation,
    one_line,
    plot_learning_curve,
    write_json_atomic,
    write_summary,
)
from hipnn_pyg.active.selection import DIVERSITY, METHODS, select_by_committee, select_random
from hipnn_pyg.active.structures import (
    ID_KEY,
    check_frames,
    common_labels,
    has_labels,
    plain_copy,
    read,
    write_frames,
)
from hipnn_pyg.active.training import StepBudget, member_config, train_member
from hipnn_pyg.atomic import atomic_write_text
from hipnn_pyg.data.splits import split_sizes
from hipnn_pyg.extxyz import read_frames

log = logging.getLogger(__name__)

#: Stages of a round, in order.
STAGES = ("train", "explore", "select", "label", "grow")
#: Settings that may change when a run is continued (e.g. more rounds).
MUTABLE = ("max_rounds", "max_labels", "progress")


class ActiveLearning:
    r"""One active-learning run (see module docs).

    Args:
        cfg (DictConfig): The composed ``conf/active.yaml``: ``run_dir``, ``seed``,
            ``selection`` (``qbc`` or ``random``), ``num_threads``, ``progress`` and the
            ``active`` node (see ``conf/active/copper_emt.yaml``).
        on_event (Callable, optional): Called as ``on_event(stage, round, detail)``
            after each stage and each labelled frame (tests use it to simulate kills).
            (default: :obj:`None`)
    """

    def __init__(self, cfg: DictConfig,
                 on_event: Callable[[str, int, Any], None] | None = None) -> None:
        self.cfg = cfg
        self.active = cfg.active
        self.run_dir = Path(cfg.run_dir)
        self.seed = int(cfg.seed)
        self.selection = str(cfg.selection)
        if self.selection not in METHODS:
            raise ValueError(f"selection={self.selection}: choose one of {METHODS}")
        self.on_event = on_event or (lambda stage, round_, detail: None)
        self.oracle: Oracle = instantiate(self.active.oracle)
        explorers = self.active.get("explorers") or {}
        self.explorers = {name: instantiate(node) for name, node in explorers.items()
                          if node is not None}
        if not self.explorers:
            raise ValueError("active.explorers: switch on at least one explorer "
                             "(md, normal_modes, udd or pool)")
        self.state_path = self.run_dir / "state.json"

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, Any]:
        if self.state_path.exists():
            return json.loads(self.state_path.read_text())
        return {"round": 0, "stage": "initial", "final": False, "stop_reason": None}

    def _advance(self, state: dict[str, Any], **changes: Any) -> dict[str, Any]:
        state = {**state, **changes}
        write_json_atomic(self.state_path, state)
        self.on_event(state["stage"], state["round"], None)
        return state

    def round_dir(self, round_: int) -> Path:
        return self.run_dir / f"round_{round_:03d}"

    def _metrics(self, round_: int) -> dict[str, Any]:
        path = self.round_dir(round_) / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else {"round": round_}

    def _update_metrics(self, round_: int, plot: bool = False, **values: Any) -> dict[str, Any]:
        metrics = {**self._metrics(round_), **values}
        write_json_atomic(self.round_dir(round_) / "metrics.json", metrics)
        rounds = [self._metrics(r) for r in range(round_ + 1)
                  if (self.round_dir(r) / "metrics.json").exists()]
        write_summary(self.run_dir / "summary.csv", rounds)
        if plot:  # the errors changed
            plot_learning_curve(self.run_dir / "learning_curve.png", rounds,
                                title=f"{self.active.get('name', '')} ({self.selection})")
        return metrics

    # ------------------------------------------------------------------ setup
    def _check_config(self) -> None:
        r"""Writes ``config.yaml`` on the first start; later starts must match it."""
        current = {"active": OmegaConf.to_container(self.active, resolve=True),
                   "seed": self.seed, "selection": self.selection}
        path = self.run_dir / "config.yaml"
        if not path.exists():
            atomic_write_text(path, OmegaConf.to_yaml(OmegaConf.create(current)))
            return
        saved = OmegaConf.to_container(OmegaConf.load(path))
        assert isinstance(saved, dict)
        for key in MUTABLE:
            saved["active"].pop(key, None)
            current["active"].pop(key, None)
        if saved != current:
            different = sorted(k for k in set(saved["active"]) | set(current["active"])
                               if saved["active"].get(k) != current["active"].get(k))
            different += [k for k in ("seed", "selection") if saved[k] != current[k]]
            raise ValueError(f"{self.run_dir} holds a run with other settings ({different}); "
                             f"continue it with the same config or choose a new run_dir")

    def _member_config(self, round_: int, member: int, data_path: Path,
                       num_frames: int | None = None) -> DictConfig:
        ensemble = self.active.ensemble
        warm = None
        if ensemble.get("warm_start", False) and round_ > 0:
            warm = self.round_dir(round_ - 1) / "models" / f"member_{member}" / "model.pt"
        steps = ensemble.get("steps")
        budget = None if steps is None else StepBudget(
            int(steps), int(ensemble.get("validations", 10)),
            float(ensemble.get("final_lr_fraction", 0.01)))
        validation = self.run_dir / "validation.extxyz"
        return member_config(
            list(ensemble.get("train_overrides") or []), data_path,
            self.round_dir(round_) / "models" / f"member_{member}",
            sub_seed(self.seed, round_, member) % 2**31,
            float(ensemble.get("val_fraction", 0.1)), warm, self.cfg.get("num_threads"),
            budget, validation if ensemble.get("validation") is not None else None,
            num_frames)

    def _training_frames(self, num_frames: int) -> int:
        r"""Frames a member trains on: all of ``num_frames`` with a fixed validation
        file, else those its ``val_fraction`` leaves."""
        ensemble = self.active.ensemble
        if ensemble.get("validation") is not None:
            return num_frames
        return split_sizes(num_frames, None, float(ensemble.get("val_fraction", 0.1)), 0)[0]

    def species(self) -> list[int]:
        r"""The atomic numbers the committee's model config knows."""
        cfg = self._member_config(0, 0, self.run_dir / "dataset.extxyz", num_frames=1)
        return [int(z) for z in cfg.model.representation.species]

    def _check_inputs(self) -> None:
        r"""Refuses unknown elements in the start data, seeds, pools and test sets
        before any labelling."""
        species = self.species()
        check_frames(self.initial_frames(), species, "active.initial")
        check_frames(self.seed_frames(), species, "active.seeds")
        check_frames(self.validation_frames(), species, "active.ensemble.validation")
        if self.active.get("diversity") not in DIVERSITY:  # before a round is spent
            raise ValueError(f"active.diversity={self.active.get('diversity')!r}: choose one "
                             f"of {DIVERSITY}")
        for explorer in self.explorers.values():
            if hasattr(explorer, "check_frames"):
                explorer.check_frames(species)
        for name, frames in self.test_sets().items():
            check_frames(frames, species, f"active.test_sets.{name}")

    def initial_frames(self) -> list[Atoms]:
        if not hasattr(self, "_initial"):
            frames = instantiate(self.active.initial)
            if not frames:
                raise ValueError("active.initial gives no structure")
            for i, atoms in enumerate(frames):
                atoms.info[ID_KEY] = f"initial:{i}"
            self._initial: list[Atoms] = list(frames)
        return self._initial

    def validation_frames(self) -> list[Atoms]:
        r"""The committee's fixed validation frames (``ensemble.validation``; none:
        each member holds out ``val_fraction`` of its data)."""
        node = self.active.ensemble.get("validation")
        if node is None:
            return []
        if not hasattr(self, "_validation"):
            # a file's path, or a node as `initial` (e.g. read with an index)
            frames = read(str(node)) if isinstance(node, str) else list(instantiate(node))
            forces = self._trains_forces()
            for index, atoms in enumerate(frames):
                results = atoms.calc.results if atoms.calc is not None else {}
                if not has_labels(atoms) or (forces and "forces" not in results):
                    raise ValueError(
                        f"active.ensemble.validation: frame {index} has no "
                        f"{'energy' if not has_labels(atoms) else 'forces'}; the members "
                        f"train on energies{' and forces' if forces else ''}, so every "
                        f"validation frame needs them")
            if not frames:
                raise ValueError("active.ensemble.validation gives no structure")
            self._validation = frames
        return self._validation

    def _trains_forces(self) -> bool:
        cfg = self._member_config(0, 0, self.run_dir / "dataset.extxyz", num_frames=1)
        return float(cfg.module.get("loss_weights", {}).get("forces", 0.0)) > 0

    def seed_frames(self) -> list[Atoms]:
        if self.active.get("seeds") is None:
            return self.initial_frames()
        return list(instantiate(self.active.seeds))

    def test_sets(self) -> dict[str, list[Atoms]]:
        if not hasattr(self, "_tests"):
            self._tests = {str(name): read(path)
                           for name, path in (self.active.get("test_sets") or {}).items()}
            for name, frames in self._tests.items():
                if not frames or not all(has_labels(a) for a in frames):
                    raise ValueError(f"active.test_sets.{name}: every frame needs an energy")
        return self._tests

    # ------------------------------------------------------------------ stages
    def _initial_data(self) -> None:
        r"""``initial.extxyz``: the start frames, those without labels labelled."""
        frames = self.initial_frames()
        unlabelled = [plain_copy(a) for a in frames if not has_labels(a)]
        result = label_frames(unlabelled, self.oracle, self.run_dir / "initial_labelled.extxyz",
                              self.run_dir / "initial_failures.jsonl",
                              progress=bool(self.cfg.progress))
        labelled = {str(a.info[ID_KEY]): a for a in result.labelled}
        data = [a if has_labels(a) else labelled[str(a.info[ID_KEY])]
                for a in frames if has_labels(a) or str(a.info[ID_KEY]) in labelled]
        if len(data) < 2:
            raise ValueError(f"only {len(data)} start frames could be labelled; see "
                             f"{self.run_dir / 'initial_failures.jsonl'}")
        write_frames(self.run_dir / "initial.extxyz", data)
        write_frames(self.run_dir / "dataset.extxyz", data)
        if self.validation_frames():
            write_frames(self.run_dir / "validation.extxyz", self.validation_frames())

    def _train(self, round_: int) -> Committee:
        folder = self.round_dir(round_)
        # the labels every frame has: start frames may carry more than the oracle gives
        data = common_labels(read_frames(self.run_dir / "dataset.extxyz"))
        train_path = folder / "train.extxyz"
        write_frames(train_path, data)
        ensemble = self.active.ensemble
        results = []
        for member in range(int(ensemble.get("size", 4))):
            path = train_path
            if ensemble.get("bootstrap", False):
                rng = np.random.default_rng(sub_seed(self.seed, round_, member, 1))
                path = folder / "models" / f"member_{member}" / "bootstrap.extxyz"
                write_frames(path, [data[i] for i in rng.integers(0, len(data), len(data))])
            results.append(train_member(self._member_config(
                round_, member, path, self._training_frames(len(data)))))
        committee = self.committee(round_)
        errors = {"val": member_validation(results)}
        for name, frames in self.test_sets().items():
            errors[f"test_{name}"] = committee_errors(committee, frames)
        self._update_metrics(round_, plot=True, train_size=len(data), errors=errors)
        return committee

    def committee(self, round_: int) -> Committee:
        models = sorted((self.round_dir(round_) / "models").glob("member_*/model.pt"),
                        key=lambda p: int(p.parent.name.split("_")[1]))
        device = str(self.active.ensemble.get("device", "cpu"))
        committee = Committee([str(p) for p in models], device=device)
        dataset = self.run_dir / "dataset.extxyz"
        if dataset.is_file():  # offsets on the training set, for the offset-free measure
            committee.fit_offsets(read_frames(dataset))
        return committee

    def _selected_before(self, round_: int) -> set[str]:
        ids: set[str] = set()
        for r in range(round_):
            ids |= {str(a.info[ID_KEY]) for a in read_frames(self.round_dir(r) / "selected.extxyz")}
        return ids

    def _explore(self, round_: int) -> None:
        committee = self.committee(round_)
        seeds = self.seed_frames()
        used = self._selected_before(round_)
        candidates: list[Atoms] = []
        for k, (name, explorer) in enumerate(self.explorers.items()):
            found = explorer.explore(committee, seeds, sub_seed(self.seed, round_, k, 2))
            if getattr(explorer, "persistent", False):  # a pool: the same frames each round
                found = [a for a in found if str(a.info[ID_KEY]) not in used]
            else:  # new structures every round
                for atoms in found:
                    atoms.info[ID_KEY] = f"round{round_}:{atoms.info[ID_KEY]}"
            candidates += found
            log.info("round %d: %s proposed %d candidates", round_, name, len(found))
        write_frames(self.round_dir(round_) / "candidates.extxyz", candidates)
        rho = [float(a.info["rho"]) for a in candidates] or [float("nan")]
        force = [float(a.info["force_dev"]) for a in candidates] or [float("nan")]
        self._update_metrics(round_, candidates=len(candidates), rho_mean=float(np.mean(rho)),
                             rho_max=float(np.max(rho)), force_dev_max=float(np.max(force)))

    def labels_spent(self, before_round: int) -> int:
        r"""Oracle calls (successes and failures) of the rounds before ``before_round``."""
        spent = 0
        for r in range(before_round):
            folder = self.round_dir(r)
            spent += len(read_frames(folder / "labelled.extxyz"))
            spent += len(read_failures(folder / "label_failures.jsonl"))
        return spent

    def _select(self, round_: int) -> int:
        active = self.active
        candidates = read_frames(self.round_dir(round_) / "candidates.extxyz")
        count = int(active.max_selected)
        if active.get("max_labels") is not None:
            count = min(count, int(active.max_labels) - self.labels_spent(round_))
        if self.selection == "random":
            picked = select_random(candidates, count, sub_seed(self.seed, round_, 3))
        else:
            picked = select_by_committee(
                candidates, str(active.measure), float(active.threshold), count,
                active.get("max_per_group"), int(active.get("min_separation", 0)),
                active.get("diversity"), int(active.get("shortlist_factor", 3)))
        selected = [plain_copy(candidates[i]) for i in picked]
        write_frames(self.round_dir(round_) / "selected.extxyz", selected)
        return len(selected)

    def _label(self, round_: int) -> None:
        folder = self.round_dir(round_)
        selected = read_frames(folder / "selected.extxyz")
        result = label_frames(selected, self.oracle, folder / "labelled.extxyz",
                              folder / "label_failures.jsonl", progress=bool(self.cfg.progress),
                              on_frame=lambda i: self.on_event("labelled", round_, i))
        self._update_metrics(round_, labelled=len(result.labelled), failed=len(result.failed),
                             oracle_seconds=result.seconds)

    def _grow(self, round_: int) -> int:
        data = read_frames(self.run_dir / "initial.extxyz")
        for r in range(round_ + 1):
            data += read_frames(self.round_dir(r) / "labelled.extxyz")
        write_frames(self.run_dir / "dataset.extxyz", data)
        return len(data)

    # ------------------------------------------------------------------ driver
    def run(self) -> dict[str, Any]:
        r"""Runs (or continues) the loop; returns the final ``state.json``."""
        from tqdm.auto import tqdm

        self._check_config()
        state = self.state()
        if state["stage"] == "done":
            if str(state["stop_reason"]).startswith("reached max_rounds") and \
                    state["round"] < int(self.active.max_rounds):
                state = self._advance(state, stage="train", final=False, stop_reason=None)
            else:
                log.info("%s: finished already (%s)", self.run_dir, state["stop_reason"])
                print(f"{self.run_dir}: finished already ({state['stop_reason']})")
                return state
        self._check_inputs()
        max_rounds = int(self.active.max_rounds)
        bar = tqdm(total=max_rounds, initial=min(state["round"], max_rounds),
                   disable=not self.cfg.progress, desc="active learning", unit="round")
        if state["stage"] == "initial":
            self._initial_data()
            state = self._advance(state, stage="train")
        while state["stage"] != "done":
            round_, stage = state["round"], state["stage"]
            if stage == "train":
                self._train(round_)
                if state["final"]:
                    state = self._advance(state, stage="done")
                    break
                state = self._advance(state, stage="explore")
            elif stage == "explore":
                self._explore(round_)
                state = self._advance(state, stage="select")
            elif stage == "select":
                if self._select(round_) == 0:
                    reason = (f"round {round_} selected nothing (no candidate above "
                              f"threshold {float(self.active.threshold):g})"
                              if self.selection == "qbc" else f"round {round_} had no candidate")
                    if self.active.get("max_labels") is not None and \
                            self.labels_spent(round_) >= int(self.active.max_labels):
                        reason = f"labelling budget of {self.active.max_labels} frames spent"
                    self._update_metrics(round_, labelled=0, failed=0, stop_reason=reason)
                    state = self._advance(state, stage="done", stop_reason=reason)
                    break
                state = self._advance(state, stage="label")
            elif stage == "label":
                self._label(round_)
                state = self._advance(state, stage="grow")
            elif stage == "grow":
                self._grow(round_)
                bar.update(1)
                reason = self._stop_reason(round_)
                final = reason is not None
                if not final or self.active.get("final_training", True):
                    print(one_line(self._metrics(round_)), flush=True)  # else: at the end
                if final and not self.active.get("final_training", True):
                    state = self._advance(state, round=round_ + 1, stage="done",
                                          stop_reason=reason)
                    break
                state = self._advance(state, round=round_ + 1, stage="train", final=final,
                                      stop_reason=reason)
            else:
                raise ValueError(f"{self.state_path}: unknown stage '{stage}'")
        bar.close()
        last_round = max(r for r in range(state["round"] + 1)
                         if (self.round_dir(r) / "metrics.json").exists())
        last = self._metrics(last_round)
        if state["stop_reason"] and not last.get("stop_reason"):
            last = self._update_metrics(last_round, stop_reason=state["stop_reason"])
        print(one_line(last), flush=True)
        print(f"stopped: {state['stop_reason']}; run folder {self.run_dir}", flush=True)
        return state

    def _stop_reason(self, round_: int) -> str | None:
        if round_ + 1 >= int(self.active.max_rounds):
            return f"reached max_rounds={self.active.max_rounds}"
        budget = self.active.get("max_labels")
        if budget is not None and self.labels_spent(round_ + 1) >= int(budget):
            return f"labelling budget of {budget} frames spent"
        return None


def run_active(cfg: DictConfig,
               on_event: Callable[[str, int, Any], None] | None = None) -> dict[str, Any]:
    r"""Runs (or continues) the active-learning run ``cfg`` describes; returns its final
    state (``round``, ``stage``, ``stop_reason``)."""
    if cfg.get("num_threads"):
        import torch

        torch.set_num_threads(int(cfg.num_threads))
    return ActiveLearning(cfg, on_event).run()
