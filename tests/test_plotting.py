"""PNG plumbing shared by the parity, IR and density plots."""

from __future__ import annotations

from hipnn_pyg.plotting import pyplot, save_figure


def test_save_figure_creates_folders_and_closes(tmp_path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "a" / "b" / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)
