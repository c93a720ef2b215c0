r"""Active learning: ``python scripts/active.py [active=copper_emt] [selection=random] ...``.

The same program as the ``hipnn-active`` console script (``conf/active.yaml``).
"""

from hipnn_pyg.cli import active

if __name__ == "__main__":
    active()
