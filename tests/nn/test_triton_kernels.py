"""The Triton backend of the contractions: the three operators, their derivatives to
second order and whole models equal the torch backend's, and a training step reads
nothing back to the host outside the pair search.

Without a GPU the kernels run in Triton's interpreter on CPU tensors. Two steps make
that work inside one pytest process without touching the other modules' tests:
``tests/conftest.py`` imports triton with ``TRITON_INTERPRET=1`` (its own helpers, such
as ``tl.sum``, follow the variable only as triton is first imported, and torch_geometric
imports triton while the test modules are collected) and then removes the variable; a
module-scoped fixture here sets it again for this module's tests only (the backend reads
it at every call). Where CUDA is present the same tests run the compiled kernels on the
GPU (``scripts/gpu_check.sh``)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Batch, Data

pytest.importorskip("triton")

from hipnn_pyg import energy_forces_stress  # noqa: E402
from hipnn_pyg.graph import radius_graph  # noqa: E402
from hipnn_pyg.nn import predict, triton_kernels  # noqa: E402
from hipnn_pyg.nn.checks import species_index  # noqa: E402
from hipnn_pyg.nn.contraction import (  # noqa: E402
    KERNELS,
    OPS,
    EdgeGrouping,
    available_backends,
    resolve_backend,
)
from hipnn_pyg.nn.envsum import environment_sum, neighbour_layout  # noqa: E402
from hipnn_pyg.nn.pairsum import factorised_environment_sum  # noqa: E402
from hipnn_pyg.nn.representation import RepresentationOutput  # noqa: E402
from hipnn_pyg.nn.sensitivity import (  # noqa: E402
    MIN_EXPONENT,
    InverseGaussianSensitivity,
    _cut_gaussians_grad,
    _CutGaussians,
)
from tests.nn.helpers import ethanol, random_crystal, small_model, trained_looking  # noqa: E402
from tests.nn.test_envsum import inputs, random_pairs  # noqa: E402
from tests.nn.test_sensitivity import third_derivatives  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
PACKAGE = Path(__file__).resolve().parents[2] / "hipnn_pyg"
TRITON = Path(__import__("triton").__file__).parent


@pytest.fixture(autouse=True, scope="module")
def _interpreter() -> Iterator[None]:
    # Off a GPU, Triton's interpreter: for this module only.
    before = os.environ.get("TRITON_INTERPRET")
    if not CUDA:
        os.environ["TRITON_INTERPRET"] = "1"
    yield
    if before is None:
        os.environ.pop("TRITON_INTERPRET", None)
    else:
        os.environ["TRITON_INTERPRET"] = before


@pytest.fixture(params=["wide", "narrow"])
def tiles(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    # "narrow": tiles of 1-2 edges, so every segment loop runs many masked steps.
    if request.param == "narrow":
        monkeypatch.setattr(triton_kernels, "_INTERPRETER_TILE_ELEMENTS", 64)
        monkeypatch.setattr(triton_kernels, "_TILE_ELEMENTS", 64)
    return request.param


# --- the three operators against the torch backend ---------------------------------------


def grouping(kind: str, generator: torch.Generator) -> EdgeGrouping:
    r"""Groupings the kernels must handle: edges unsorted by row with a hub of 150 edges
    and edgeless rows; edges sorted by row; no edges at all; edges as rows of their own
    (messages), summed into unsorted endpoints."""
    num_rows = 9
    if kind == "none":
        empty = torch.zeros(0, dtype=torch.long, device=DEVICE)
        return EdgeGrouping(empty, empty, num_rows, num_rows)
    gather = torch.randint(0, num_rows - 2, (200,), generator=generator)
    scatter = torch.randint(0, num_rows - 2, (200,), generator=generator)
    scatter[torch.randperm(200, generator=generator)[:150]] = 3  # the hub, scattered
    if kind == "sorted":
        scatter = scatter.sort().values
    if kind == "identity":
        identity = torch.arange(200)
        return EdgeGrouping(identity.to(DEVICE), scatter.to(DEVICE), num_rows, 200,
                            gather_is_identity=True)
    return EdgeGrouping(gather.to(DEVICE), scatter.to(DEVICE), num_rows, num_rows)


def operands(group: EdgeGrouping, sensitivities: int, features: int, dtype: torch.dtype,
             generator: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    def draw(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, dtype=dtype).to(DEVICE)

    s = draw(group.num_edges, sensitivities)
    x = draw(group.num_gather_rows, features)
    env = draw(group.num_scatter_rows, sensitivities, features)
    return [(s, x), (env, x), (env, s)]  # the operands of OPS, in order


# The exhaustive cases cost minutes in Triton's CPU interpreter (CI's 10-minute suite
# cannot carry them): they run on CUDA, or here with HIPNN_EXHAUSTIVE=1.
EXHAUSTIVE = [pytest.mark.slow, pytest.mark.skipif(
    DEVICE.type == "cpu" and not os.environ.get("HIPNN_EXHAUSTIVE"),
    reason="minutes in Triton's CPU interpreter; HIPNN_EXHAUSTIVE=1 runs it")]


@pytest.mark.parametrize("kind", ["unsorted", "sorted", "none", "identity"])
@pytest.mark.parametrize(("tiles", "sensitivities", "features"), [
    ("wide", 1, 1), ("wide", 5, 3), ("wide", 33, 70), ("narrow", 1, 1), ("narrow", 5, 3),
    pytest.param("narrow", 33, 70, marks=EXHAUSTIVE),  # 6 s each in the interpreter
], indirect=["tiles"])
def test_the_operators_equal_the_torch_backend(kind: str, sensitivities: int, features: int,
                                               tiles: str) -> None:
    # 33 sensitivities and 70 features: more than one block of each (32, 64); narrow
    # tiles (1-2 edges of 5 x 3) take the hub's 150 edges in up to 75 masked steps.
    generator = torch.Generator().manual_seed(sensitivities + features)
    group = grouping(kind, generator)
    for op, (a, b) in zip(OPS, operands(group, sensitivities, features, torch.float64,
                                        generator), strict=True):
        found = KERNELS["triton"][op](a, b, group)
        expected = KERNELS["torch"][op](a, b, group)
        assert found.shape == expected.shape and found.dtype == expected.dtype
        torch.testing.assert_close(found, expected, rtol=1e-12, atol=1e-12)
        if kind != "none" and op == "envsum":
            assert found[-2:].abs().max() == 0 and found.abs().max() > 0  # edgeless rows


def test_float32_is_within_float32_rounding_of_float64() -> None:
    generator = torch.Generator().manual_seed(7)
    group = grouping("unsorted", generator)
    for op, (a, b) in zip(OPS, operands(group, 20, 16, torch.float64, generator), strict=True):
        exact = KERNELS["torch"][op](a, b, group)
        found = KERNELS["triton"][op](a.float(), b.float(), group)
        assert found.dtype == torch.float32
        torch.testing.assert_close(found.double(), exact, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(found, KERNELS["torch"][op](a.float(), b.float(), group),
                                   rtol=1e-5, atol=1e-4)


# --- derivatives through the one autograd rule ------------------------------------------


def small_layout(generator: torch.Generator) -> tuple[torch.Tensor, int]:
    # Pairs unsorted by centre, a hub (centre 1) and an isolated atom (5); few elements
    # to perturb, for gradcheck in the interpreter.
    neighbours = torch.randint(0, 5, (14,), generator=generator)
    centres = torch.randint(0, 5, (14,), generator=generator)
    centres[::2] = 1
    return torch.stack([neighbours, centres]).to(DEVICE), 6


# Random projections of the Jacobians (fast_mode) by default; every entry marked slow
# (about 100 s in the interpreter).
FAST = pytest.mark.parametrize("fast", [True, pytest.param(False, marks=EXHAUSTIVE)],
                               ids=["projections", "every-entry"])


@FAST
def test_gradcheck_and_gradgradcheck(fast: bool) -> None:
    generator = torch.Generator().manual_seed(1)
    edge_index, num_atoms = small_layout(generator)
    layout = neighbour_layout(edge_index, num_atoms)
    features = torch.randn(num_atoms, 3, generator=generator, dtype=torch.float64)
    sensitivities = torch.rand(edge_index.size(1), 2, generator=generator, dtype=torch.float64)
    arguments = tuple(t.to(DEVICE).requires_grad_(True) for t in (sensitivities, features))

    def function(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return environment_sum(x, s, layout, "triton")

    assert torch.autograd.gradcheck(function, arguments, fast_mode=fast)
    assert torch.autograd.gradgradcheck(function, arguments, fast_mode=fast)


@FAST
def test_the_factorised_sum_has_exact_derivatives(fast: bool) -> None:
    # HIP-NN-TS: featsum and envsum over edges as rows of their own.
    generator = torch.Generator().manual_seed(2)
    edge_index, num_atoms = small_layout(generator)
    layout = neighbour_layout(edge_index, num_atoms)
    num_edges = edge_index.size(1)
    x, s, angular, weight = (torch.randn(*shape, generator=generator, dtype=torch.float64)
                             .to(DEVICE).requires_grad_(True)
                             for shape in ((num_atoms, 3), (num_edges, 2), (num_edges, 3),
                                           (2 * 3, 2)))

    def function(*args: torch.Tensor) -> torch.Tensor:
        return factorised_environment_sum(*args, layout, "triton")

    torch.testing.assert_close(function(x, s, angular, weight),
                               factorised_environment_sum(x, s, angular, weight, layout,
                                                          "torch"), rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(function, (x, s, angular, weight), fast_mode=fast)
    assert torch.autograd.gradgradcheck(function, (x, s, angular, weight), fast_mode=fast)


# --- the Gaussian sensitivities' derivatives ------------------------------------------


def gaussian_inputs(edges: int, sensitivities: int, dtype: torch.dtype,
                    generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    r"""``(g, r, c, m, sigma)`` of the derivative kernels, leaves that require grad:
    distances from close pairs to long range, widths that floor some exponents."""
    def draw(*shape: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        values = low + (high - low) * torch.rand(*shape, generator=generator,
                                                 dtype=torch.float64)
        return values.to(dtype).to(DEVICE).requires_grad_(True)

    return (draw(edges, sensitivities, low=-1.0), draw(edges, low=0.6, high=6.0), draw(edges),
            draw(sensitivities, low=0.15, high=1.3), draw(sensitivities, low=2.0, high=40.0))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(("tiles", "edges", "sensitivities"), [
    ("wide", 300, 20), ("wide", 0, 20), ("wide", 10, 0), ("wide", 50, 33), ("narrow", 37, 1),
    ("narrow", 37, 7), ("narrow", 20, 33)], indirect=["tiles"])
def test_the_gaussian_kernels_equal_autograd_to_second_order(
        tiles: str, edges: int, sensitivities: int, dtype: torch.dtype) -> None:
    # 33 sensitivities: two blocks of 32; narrow tiles: one edge per program, so the
    # centres' and widths' sums over edges add many per-program parts.
    generator = torch.Generator().manual_seed(edges + sensitivities)
    inputs = gaussian_inputs(edges, sensitivities, dtype, generator)
    expected = _cut_gaussians_grad(*inputs)
    found = torch.ops.hipnn_triton.gaussian_grad(*(t.detach() for t in inputs), MIN_EXPONENT)
    tolerance = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else \
        {"rtol": 2e-5, "atol": 2e-4}
    for a, b in zip(found, expected, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype
        torch.testing.assert_close(a, b, **tolerance)
    # The backward kernel against autograd's algebra of the same function.
    upstream = [torch.randn(t.shape, generator=generator, dtype=torch.float64).to(dtype)
                .to(DEVICE) for t in expected]
    reference = torch.autograd.grad(expected, inputs, upstream, allow_unused=True)
    found = torch.ops.hipnn_triton.gaussian_grad_backward(
        *(t.detach() for t in inputs), MIN_EXPONENT, *upstream)
    for a, b in zip(found, reference, strict=True):
        torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b, **tolerance)
    if edges and sensitivities:
        assert found[1].abs().max() > 0 and found[0].abs().max() > 0


@FAST
def test_the_sensitivities_have_exact_derivatives_on_the_triton_kernels(fast: bool) -> None:
    # Force training's path: the first derivative on gaussian_grad, the second on
    # gaussian_grad_backward (through the sensitivities' autograd functions).
    sensitivity = InverseGaussianSensitivity(5, 0.8, 3.5, 4.0, backend="triton")
    sensitivity = sensitivity.double().to(DEVICE)
    distances = torch.linspace(0.7, 4.2, 9, dtype=torch.float64, device=DEVICE)
    arguments = (distances.requires_grad_(True), sensitivity.inverse_mu, sensitivity.sigma)

    def function(r: torch.Tensor, inverse_mu: torch.Tensor, sigma: torch.Tensor):
        return _CutGaussians.apply(r, sensitivity.cutoff_fn(r), inverse_mu, sigma, "triton")

    assert torch.autograd.gradcheck(function, arguments, fast_mode=fast)
    assert torch.autograd.gradgradcheck(function, arguments, fast_mode=fast)


def test_third_derivatives_through_the_triton_kernels() -> None:
    third = third_derivatives(torch.device(DEVICE))
    torch.testing.assert_close(third("triton"), third("torch"), rtol=1e-10, atol=1e-10)


# --- whole models ------------------------------------------------------------------------


def structures(kind: str) -> dict[str, torch.Tensor | None]:
    z, pos = ethanol()
    zc, posc, cell = random_crystal(6, 3.2, torch.Generator().manual_seed(2))
    if kind == "molecule":
        found = {"z": z, "pos": pos, "batch": None, "cell": None, "pbc": None}
    elif kind == "cell":
        found = {"z": zc, "pos": posc, "batch": None, "cell": cell[None],
                 "pbc": torch.ones(1, 3, dtype=torch.bool)}
    else:  # a molecule and a crystal in one batch
        found = {"z": torch.cat([z, zc]), "pos": torch.cat([pos, posc]),
                 "batch": torch.repeat_interleave(torch.tensor([0, 1]), torch.tensor([9, 6])),
                 "cell": torch.stack([torch.zeros(3, 3, dtype=cell.dtype), cell]),
                 "pbc": torch.tensor([[False] * 3, [True] * 3])}
    return {k: None if v is None else v.to(DEVICE) for k, v in found.items()}


def with_backend(model: torch.nn.Module, backend: str) -> torch.nn.Module:
    for interaction in model.representation.interactions:
        interaction.envsum_backend = backend
        interaction.sensitivity.backend = backend  # the Gaussians' derivatives too
    return model


def force_training(model: torch.nn.Module, inputs: dict) -> list[torch.Tensor]:
    r"""Energy, forces (and stress for cells), and the parameters' gradients of a
    force-training loss: the second derivative."""
    model.zero_grad()
    stress = inputs["cell"] is not None
    out = energy_forces_stress(model, **inputs, compute_stress=stress, create_graph=True)
    loss = out["energy"].square().sum() + out["forces"].square().sum()
    if stress:
        loss = loss + out["stress"].square().sum()
    loss.backward()
    values = [out["energy"], out["forces"]] + ([out["stress"]] if stress else [])
    return [v.detach() for v in values] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("tensor_order", [0, 1])
@pytest.mark.parametrize("kind", ["molecule", "cell", "mixed"])
def test_a_model_gives_the_torch_backends_energies_forces_and_training_gradients(
        kind: str, tensor_order: int) -> None:
    # tensor_order=1 (HIP-NN-TS) runs the factorised sum's groupings too.
    torch.manual_seed(0)
    model = trained_looking(small_model(tensor_order=tensor_order), 0.1, seed=3)
    model = model.to(DEVICE).train()
    inputs = structures(kind)
    expected = force_training(with_backend(model, "torch"), inputs)
    found = force_training(with_backend(model, "triton"), inputs)
    assert expected[1].abs().max() > 0
    for a, b in zip(found, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


# --- choosing the backend ----------------------------------------------------------------


def test_the_backend_is_offered_and_refused_where_it_should_be(
        monkeypatch: pytest.MonkeyPatch) -> None:
    cpu = torch.ones(2, 3)
    assert "triton" in available_backends(DEVICE)
    assert resolve_backend(cpu, None) != "triton"  # the CPU default stays compiled C++
    assert resolve_backend(cpu.to(DEVICE), "triton") == "triton"
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert "triton" not in available_backends("cpu")
    with pytest.raises(ValueError, match="'triton' runs CUDA tensors.*TRITON_INTERPRET=1"):
        resolve_backend(cpu, "triton")
    with pytest.raises(ValueError, match="'triton' runs CUDA tensors.*meta"):
        resolve_backend(torch.ones(2, 3, device="meta"), "triton")
    monkeypatch.setattr(triton_kernels, "_available", False)  # as if not installed
    assert "triton" not in available_backends(DEVICE)
    with pytest.raises(ValueError, match=r"needs triton.*pip install 'hipnn_pyg\[gpu\]'"):
        resolve_backend(cpu, "triton")


@pytest.mark.skipif(not CUDA, reason="no CUDA device")
def test_cuda_tensors_take_triton_by_default() -> None:
    assert resolve_backend(torch.ones(2, 3, device="cuda"), None) == "triton"


def test_export_keeps_each_operator_whole() -> None:
    class Environment(torch.nn.Module):
        def forward(self, x: torch.Tensor, s: torch.Tensor, edge_index: torch.Tensor):
            layout = neighbour_layout(edge_index, x.size(0), validate=False)
            with torch.enable_grad():
                x, s = x.detach().requires_grad_(True), s.detach().requires_grad_(True)
                env = environment_sum(x, s, layout, "triton")
                grads = torch.autograd.grad(env.square().sum(), [x, s])
            return env.detach(), *grads

    generator = torch.Generator().manual_seed(3)
    edge_index, num_atoms = random_pairs(generator)
    features, sensitivities = (t.detach().to(DEVICE)
                               for t in inputs(generator, num_atoms, edge_index.size(1)))
    arguments = (features, sensitivities, edge_index.to(DEVICE))
    program = torch.export.export(Environment(), arguments)
    called = {str(node.target) for node in program.graph.nodes}
    assert {f"hipnn_triton.{op}.default" for op in OPS} <= called
    for a, b in zip(program.module()(*arguments), Environment()(*arguments), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


# --- host synchronisations ---------------------------------------------------------------

READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__",
         "__complex__")


@contextmanager
def host_reads(raising: bool) -> Iterator[list[str]]:
    r"""The CPU stand-in for ``torch.cuda.set_sync_debug_mode("error")``: every Python
    call that reads a tensor's values back to the host (``item``, ``tolist``, ``bool``,
    ``int``, ``float``...) is recorded as ``file:function`` of the innermost frame of the
    package, and raises when ``raising``. Reads inside triton are the interpreter
    emulating the device, not the model: they are let through. Reads inside compiled
    operators (C++) are not seen; on CUDA, ``set_sync_debug_mode`` sees those."""
    sites: list[str] = []
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def guard(name: str, original: Callable) -> Callable:
        def read(self: torch.Tensor, *args: object, **kwargs: object) -> object:
            frames, frame = [], sys._getframe(1)
            while frame is not None:  # innermost first
                frames.append((Path(frame.f_code.co_filename), frame.f_code.co_name))
                frame = frame.f_back
            if not any(path.is_relative_to(TRITON) for path, _ in frames):
                ours = [(p, f) for p, f in frames if p.is_relative_to(PACKAGE)]
                path, function = (ours or frames)[0]
                site = f"{path.relative_to(PACKAGE.parent) if ours else path}:{function}"
                sites.append(site)
                if raising:
                    raise AssertionError(f"host read Tensor.{name} at {site}")
            return original(self, *args, **kwargs)

        return read

    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, guard(name, original))
        yield sites
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)


@contextmanager
def no_host_sync() -> Iterator[None]:
    r"""Fails on any host synchronisation: CUDA's own detector on a GPU, else the CPU
    stand-in :func:`host_reads` (which also fails afterwards on a read that something
    caught)."""
    if not CUDA:
        with host_reads(raising=True) as sites:
            yield
        assert not sites, f"host reads at {sites}"
        return
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


def after_the_pair_search(model: torch.nn.Module, inputs: dict) -> Callable[[], None]:
    r"""One force-training step of ``model`` from the pair list on: species, features of
    every layer, energy, forces (create_graph) and the loss's backward."""
    representation = model.representation
    pos = inputs["pos"].detach().requires_grad_(True)
    batch = inputs["batch"] if inputs["batch"] is not None else torch.zeros_like(inputs["z"])
    graph = radius_graph(pos, model.cutoff, batch, inputs["cell"], inputs["pbc"])
    num_graphs = 1 if inputs["batch"] is None else 2

    def step() -> None:
        index = species_index(inputs["z"], representation.species_lookup,
                              representation.species, validate=False)
        features = representation.layer_features(index, graph)
        output = RepresentationOutput(features, graph, inputs["z"], pos, batch, num_graphs,
                                      inputs["cell"], inputs["pbc"])
        energy = model.energy_head(output)["energy"]
        (forces,) = torch.autograd.grad(energy.sum(), pos, create_graph=True)
        (energy.square().sum() + forces.square().sum()).backward()

    return step


@pytest.mark.parametrize("kind", ["molecule", "mixed"])
def test_after_the_pair_search_a_training_step_never_syncs(kind: str) -> None:
    model = with_backend(small_model().to(DEVICE).train(), "triton")
    step = after_the_pair_search(model, structures(kind))
    with no_host_sync():
        step()
    assert all(p.grad is not None for p in model.parameters())
    # The detector can fail: the torch backend reads its degree blocks' sizes.
    step = after_the_pair_search(with_backend(model, "torch"), structures(kind))
    with pytest.raises((AssertionError, RuntimeError)), no_host_sync():
        step()


@pytest.mark.parametrize("kind", ["molecule", "mixed"])
def test_a_training_step_reads_back_only_in_the_pair_search(kind: str) -> None:
    # The whole step as training runs it (predict, forces kept for the loss, backward),
    # with validate=False: every read is the neighbour search's (graph.py), and for a
    # batch with cells predict's "is any structure periodic".
    model = with_backend(small_model().to(DEVICE).train(), "triton")
    inputs = structures(kind)
    cells = {} if inputs["cell"] is None else {"cell": inputs["cell"], "pbc": inputs["pbc"]}
    sizes = [9] if kind == "molecule" else [9, 6]
    parts = [Data(z=z, pos=pos) for z, pos in zip(inputs["z"].split(sizes),
                                                   inputs["pos"].split(sizes), strict=True)]
    data = Batch.from_data_list(parts)
    if cells:
        data.cell, data.pbc = cells["cell"], cells["pbc"]

    def step(validate: bool) -> list[str]:
        model.zero_grad()
        with host_reads(raising=False) as sites:
            out = predict(model, data, create_graph=True, validate=validate)
            (out["energy"].square().sum() + out["forces"].square().sum()).backward()
        return sites

    sites = step(validate=False)
    search = [site for site in sites if site.startswith("hipnn_pyg/graph.py:")]
    if kind == "molecule":  # the cap check, the cutoff filter, torch-cluster's wrapper
        assert sorted(set(search)) == ["hipnn_pyg/graph.py:_capped_search",
                                       "hipnn_pyg/graph.py:radius_graph",
                                       "hipnn_pyg/graph.py:search"]
        assert search == sites
    else:
        assert sorted(set(sites) - set(search)) == ["hipnn_pyg/nn/predict.py:predict"]
        assert len(sites) == len(search) + 1
    # validate=True adds two reads: every input flag at once, then the closest pair.
    checked = step(validate=True)
    assert sorted(set(checked) - set(sites)) == ["hipnn_pyg/nn/checks.py:check_min_distance",
                                                 "hipnn_pyg/nn/checks.py:check_values"]
    assert len(checked) == len(sites) + 2
