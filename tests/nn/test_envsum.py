"""The environment-sum kernel: values and derivatives of every order, layout, fallback."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from hipnn_pyg.nn import csrc
from hipnn_pyg.nn.envsum import available_backends, environment_sum, neighbour_layout
from hipnn_pyg.nn.interaction import padded_environment
from hipnn_pyg.nn.sensitivity import _CutGaussians

BACKENDS = available_backends()


def random_pairs(generator: torch.Generator) -> tuple[torch.Tensor, int]:
    """Pairs with very uneven degrees: one hub atom, ordinary atoms, isolated atoms."""
    num_atoms, num_edges = 12, 60
    neighbours = torch.randint(0, num_atoms - 2, (num_edges,), generator=generator)
    centres = torch.randint(0, num_atoms - 2, (num_edges,), generator=generator)
    centres[:25] = 4  # the hub
    return torch.stack([neighbours, centres]), num_atoms


def inputs(generator: torch.Generator, num_atoms: int, num_edges: int):
    features = torch.randn(num_atoms, 3, generator=generator, dtype=torch.float64)
    sensitivities = torch.rand(num_edges, 4, generator=generator, dtype=torch.float64)
    return features.requires_grad_(True), sensitivities.requires_grad_(True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_padded_path_to_second_order(backend: str) -> None:
    generator = torch.Generator().manual_seed(0)
    edge_index, num_atoms = random_pairs(generator)
    features, sensitivities = inputs(generator, num_atoms, edge_index.size(1))
    layout = neighbour_layout(edge_index, num_atoms)
    weight = torch.randn(4 * 3, 2, generator=generator, dtype=torch.float64)

    def derivatives(environment: torch.Tensor) -> list[torch.Tensor]:
        energy = (environment.reshape(num_atoms, -1) @ weight).tanh().sum()
        first = torch.autograd.grad(energy, (features, sensitivities), create_graph=True)
        loss = sum(g.square().sum() for g in first)
        return [environment, *first, *torch.autograd.grad(loss, (features, sensitivities))]

    new = derivatives(environment_sum(features, sensitivities, layout, backend))
    old = derivatives(padded_environment(features, edge_index, sensitivities))
    assert new[0].shape == (num_atoms, 4, 3)
    assert new[0][-2:].abs().max() == 0  # isolated atoms
    for a, b in zip(new, old, strict=True):
        torch.testing.assert_close(a.reshape(b.shape), b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck_and_gradgradcheck(backend: str) -> None:
    generator = torch.Generator().manual_seed(1)
    edge_index, num_atoms = random_pairs(generator)
    features, sensitivities = inputs(generator, num_atoms, edge_index.size(1))
    layout = neighbour_layout(edge_index, num_atoms)

    def function(s: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return environment_sum(x, s, layout, backend)

    assert torch.autograd.gradcheck(function, (sensitivities, features))
    assert torch.autograd.gradgradcheck(function, (sensitivities, features))


@pytest.mark.parametrize("sort", [True, False])
def test_groupings_list_every_edge_once_under_its_row(sort: bool) -> None:
    generator = torch.Generator().manual_seed(4)
    edge_index, num_atoms = random_pairs(generator)
    if sort:  # radius_graph's order: no sort needed, the identity edge order
        edge_index = edge_index[:, torch.argsort(edge_index[1], stable=True)]
    layout = neighbour_layout(edge_index, num_atoms)
    grouping = layout.atoms
    order, start, edges = grouping.scatter_csr
    assert torch.equal(edges.sort().values, torch.arange(edge_index.size(1)))
    for position, row in enumerate(order.tolist()):
        assert torch.all(edge_index[1, edges[start[position]:start[position + 1]]] == row)
    start, edges = grouping.gather_csr
    assert torch.equal(edges.sort().values, torch.arange(edge_index.size(1)))
    for row in range(num_atoms):
        assert torch.all(edge_index[0, edges[start[row]:start[row + 1]]] == row)
    for side in (0, 1):  # edges as rows of their own, summed into one endpoint
        own = layout.edges(side)
        assert own is layout.edges(side)  # kept for the forward
        assert torch.equal(own.gather, torch.arange(edge_index.size(1)))
        assert torch.equal(own.scatter, edge_index[side])


def test_layout_size_mismatch_is_refused() -> None:
    layout = neighbour_layout(torch.tensor([[0, 1], [1, 0]]), 2)
    with pytest.raises(ValueError, match="layout is for 2 atoms and 2 edges"):
        environment_sum(torch.ones(3, 2), torch.ones(2, 4), layout)


@pytest.fixture
def fresh_extension_cache():
    csrc._load.cache_clear()
    yield
    csrc._load.cache_clear()


def test_falls_back_to_torch_without_a_compiler(monkeypatch, fresh_extension_cache,
                                               tmp_path) -> None:
    def no_compiler(*args: object, **kwargs: object) -> None:
        raise OSError("c++: command not found")

    monkeypatch.delenv("HIPNN_NO_CPP_EXTENSION", raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # no Triton backend on the CPU
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # nothing built there yet
    monkeypatch.setattr("torch.utils.cpp_extension.load", no_compiler)
    with pytest.warns(RuntimeWarning, match="c\\+\\+: command not found"):
        assert available_backends() == ["torch"]
    with pytest.raises(RuntimeError, match="backend='torch'"):
        csrc.load_extension()
    generator = torch.Generator().manual_seed(2)
    edge_index, num_atoms = random_pairs(generator)
    features, sensitivities = inputs(generator, num_atoms, edge_index.size(1))
    layout = neighbour_layout(edge_index, num_atoms)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, then silent
        default = environment_sum(features, sensitivities, layout)
    torch.testing.assert_close(default, environment_sum(features, sensitivities, layout, "torch"))


def test_extension_can_be_switched_off(monkeypatch, fresh_extension_cache) -> None:
    monkeypatch.setenv("HIPNN_NO_CPP_EXTENSION", "1")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # no Triton backend on the CPU
    assert available_backends() == ["torch"]



def test_sensitivities_keep_exact_derivatives_to_second_order() -> None:
    # The sensitivities recompute their intermediates in the backward (memory): check it.
    generator = torch.Generator().manual_seed(3)
    distances = 0.8 + 2 * torch.rand(6, generator=generator, dtype=torch.float64)
    cutoff = torch.rand(6, generator=generator, dtype=torch.float64)
    inverse_mu = torch.rand(3, generator=generator, dtype=torch.float64)
    sigma = 1 + torch.rand(3, generator=generator, dtype=torch.float64)  # no underflow
    inputs = tuple(t.requires_grad_(True) for t in (distances, cutoff, inverse_mu, sigma))
    delta = distances.reciprocal().unsqueeze(-1) - inverse_mu
    plain = torch.exp(-0.5 * (delta * sigma).square()) * cutoff.unsqueeze(-1)
    torch.testing.assert_close(_CutGaussians.apply(*inputs), plain, rtol=0, atol=0)
    assert torch.autograd.gradcheck(_CutGaussians.apply, inputs)
    assert torch.autograd.gradgradcheck(_CutGaussians.apply, inputs)


@pytest.mark.skipif(not csrc.extension_available(), reason="no C++ compiler")
def test_cached_kernel_loads_without_waiting_on_a_killed_builds_lock(tmp_path: Path) -> None:
    # torch's extension cache takes a lock file for every load; a process killed while
    # holding it (the fault-injection test does that) left every later run asleep
    import os
    import shutil
    import subprocess
    import sys

    built = [csrc.library_path()]
    assert built
    cache = tmp_path / "extensions"
    folder = cache / csrc.cache_dir().name
    (folder / ".hipnn_kernels_x.build.killed").mkdir(parents=True)
    for library in built:
        shutil.copy(library, folder / library.name)
        checksum = csrc._checksum_file(library)
        shutil.copy(checksum, folder / checksum.name)
    for stale in (folder / "lock", folder / ".hipnn_kernels_x.build.killed" / "lock"):
        stale.touch()
    code = "from hipnn_pyg.nn import csrc; assert csrc.extension_available()"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                   env={**os.environ, "TORCH_EXTENSIONS_DIR": str(cache)})


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ kernels do not build here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_kernels_equal_torch_for_every_register_block_shape(dtype, two_threads,
                                                                    ) -> None:
    # Feature counts that take every path of the kernels: short unrolled tails (1-4),
    # run-time tails, one to four vectors per block, several blocks; sensitivity counts
    # with every remainder of the blocks of 2 and 4 (their sizes depend on the CPU's
    # vector instruction set: csrc/envsum.cpp).
    from hipnn_pyg.nn.contraction import KERNELS, OPS

    generator = torch.Generator().manual_seed(11)
    edge_index, num_atoms = random_pairs(generator)
    # Unsorted centres here: the kernels take a sorted CSR, not the identity one.
    layout = neighbour_layout(edge_index, num_atoms)
    tolerance = 1e-5 if dtype == torch.float32 else 1e-12
    for features_count in (1, 2, 3, 4, 6, 8, 13, 21, 26, 28, 40, 60, 64, 77):
        for sensitivity_count in (1, 3, 6, 20):
            x = torch.randn(num_atoms, features_count, generator=generator, dtype=dtype)
            s = torch.rand(edge_index.size(1), sensitivity_count, generator=generator,
                           dtype=dtype)
            env = torch.randn(num_atoms, sensitivity_count, features_count,
                              generator=generator, dtype=dtype)
            for op, arguments in zip(OPS, [(s, x), (env, x), (env, s)], strict=True):
                torch.testing.assert_close(KERNELS["cpp"][op](*arguments, layout.atoms),
                                           KERNELS["torch"][op](*arguments, layout.atoms),
                                           rtol=tolerance, atol=tolerance)


# --- the kernels' boundary: layouts, indices, devices, a broken build or cache ---------


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_transposed_pair_list_gives_the_same_environment(backend: str) -> None:
    generator = torch.Generator().manual_seed(5)
    edge_index, num_atoms = random_pairs(generator)
    features, sensitivities = inputs(generator, num_atoms, edge_index.size(1))
    transposed = edge_index.t().contiguous().t()  # rows are strided views
    assert not transposed[0].is_contiguous()
    expected = environment_sum(features, sensitivities, neighbour_layout(edge_index, num_atoms),
                               "torch")
    found = environment_sum(features, sensitivities, neighbour_layout(transposed, num_atoms),
                            backend)
    torch.testing.assert_close(found, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_out_of_range_pair_is_refused_by_every_backend(backend: str) -> None:
    edge_index = torch.tensor([[0, 1, 5], [1, 0, 0]])  # atom 5 of 3
    with pytest.raises(ValueError, match="atom index 5 outside"):
        neighbour_layout(edge_index, 3)


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ kernels do not build here")
def test_the_compiled_kernels_check_what_they_are_given() -> None:
    ops = csrc.load_extension()
    s, x = torch.rand(3, 2, dtype=torch.float64), torch.rand(3, 4, dtype=torch.float64)
    order, start, edges = torch.arange(3), torch.tensor([0, 1, 2, 3]), torch.arange(3)
    ops.envsum(s, x, order, start, edges, torch.tensor([0, 1, 2]), 3)  # fine
    with pytest.raises(RuntimeError, match="envsum neighbours holds an index outside"):
        ops.envsum(s, x, order, start, edges, torch.tensor([0, 1, 3]), 3)
    with pytest.raises(RuntimeError, match="must be contiguous"):
        ops.envsum(s, x.t().contiguous().t(), order, start, edges, torch.tensor([0, 1, 2]), 3)
    with pytest.raises(RuntimeError, match="int64"):
        ops.envsum(s, x, order, start, edges, torch.tensor([0, 1, 2], dtype=torch.int32), 3)
    with pytest.raises(RuntimeError, match="inputs of one dtype"):
        ops.envsum(s.float(), x, order, start, edges, torch.tensor([0, 1, 2]), 3)
    with pytest.raises(RuntimeError, match="lists row 1 twice"):
        ops.envsum(s, x, torch.tensor([0, 1, 1]), start, edges, torch.tensor([0, 1, 2]), 3)
    with pytest.raises(RuntimeError, match="non-decreasing"):
        ops.envsum(s, x, order, torch.tensor([0, 2, 1, 3]), edges, torch.tensor([0, 1, 2]), 3)
    env = torch.rand(3, 2, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="sensesum centres holds an index outside"):
        ops.sensesum(env, x, torch.tensor([0, 1, 2]), torch.tensor([0, 7, 1]))
    with pytest.raises(RuntimeError, match="featsum edges holds an index outside"):
        ops.featsum(env, s, start, torch.tensor([0, 1, 4]), torch.tensor([0, 1, 2]), 3)
    with pytest.raises(RuntimeError, match="gaussian_grad"):
        ops.gaussian_grad(torch.rand(3, 2, dtype=torch.float64), torch.rand(3, dtype=torch.float64),
                          torch.rand(2, dtype=torch.float64), torch.rand(2, dtype=torch.float64),
                          torch.rand(2, dtype=torch.float64), -50.0)


def test_the_cpp_backend_refuses_tensors_off_the_cpu() -> None:
    from hipnn_pyg.nn.envsum import resolve_backend

    features = torch.empty(3, 4, device="meta")
    with pytest.raises(ValueError, match="'cpp' runs on the CPU only.*meta"):
        resolve_backend(features, "cpp")
    assert resolve_backend(features, None) == "torch"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_the_cpp_backend_refuses_cuda_tensors() -> None:
    layout = neighbour_layout(torch.tensor([[0, 1], [1, 0]], device="cuda"), 2)
    with pytest.raises(ValueError, match="'cpp' runs on the CPU only.*cuda"):
        environment_sum(torch.ones(2, 3, device="cuda"), torch.ones(2, 4, device="cuda"),
                        layout, "cpp")


def test_a_failed_build_quotes_the_compiler_and_says_how_to_get_the_fast_path(
        monkeypatch, fresh_extension_cache, tmp_path) -> None:
    def failing_build(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error building extension 'hipnn_kernels':\n[1/3] c++ -c envsum.cpp\n"
                           "FAILED: envsum.o\nenvsum.cpp:12:3: error: 'at' has not been declared"
                           "\nninja: build stopped: subcommand failed.")

    monkeypatch.delenv("HIPNN_NO_CPP_EXTENSION", raising=False)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.setattr("torch.utils.cpp_extension.load", failing_build)
    with pytest.warns(RuntimeWarning) as record:
        assert not csrc.extension_available()
    message = str(record[0].message)
    assert "error: 'at' has not been declared" in message
    assert "pip install ninja" in message and "HIPNN_NO_CPP_EXTENSION=1" in message
    assert "has not been declared" in str(csrc.build_error())
    with pytest.raises(csrc.KernelBuildError, match="has not been declared"):
        environment_sum(torch.ones(2, 3), torch.ones(2, 4),
                        neighbour_layout(torch.tensor([[0, 1], [1, 0]]), 2), "cpp")


@pytest.mark.skipif("cpp" not in BACKENDS, reason="the C++ kernels do not build here")
def test_a_corrupt_cached_library_is_rebuilt(tmp_path: Path) -> None:
    # A truncated .so (a full disk, a killed copy) must not disable the kernels for good.
    # In a new process: a second copy of the library cannot load into this one.
    import os
    import subprocess
    import sys

    good = csrc.library_path()
    cache = tmp_path / "extensions"
    corrupt = cache / csrc.cache_dir().name / good.name
    corrupt.parent.mkdir(parents=True)
    corrupt.write_bytes(good.read_bytes()[:4096])
    code = f"""
import shutil, warnings
from pathlib import Path
from hipnn_pyg.nn import csrc
built = []
def build(library):  # stands in for the compiler: the known-good library
    built.append(library)
    shutil.copy({str(good)!r}, library)
    csrc._checksum_file(library).write_text(csrc._digest(library))
csrc._build = build
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    assert csrc.extension_available()
assert built == [Path({str(corrupt)!r})], built
assert any("rebuilding it" in str(w.message) for w in caught), [str(w.message) for w in caught]
"""
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120,
                   env={**os.environ, "TORCH_EXTENSIONS_DIR": str(cache)})
