r"""Every use of another package's private API, one module per package, each with a test
(``tests/compat/``) that fails loudly when that package changes what is used here:
:mod:`~hipnn_pyg.compat.lightning`, :mod:`~hipnn_pyg.compat.pyg`,
:mod:`~hipnn_pyg.compat.torch`. Nothing else in hipnn_pyg touches a private name of
Lightning, PyG or torch. :mod:`~hipnn_pyg.compat.ase` bridges a public ASE rename."""
