r"""The model-zoo front doors: ``HIPNN(...)(z, pos, batch)`` returns energies, and
``HIPNNPotential`` adds a charge head; both are :class:`~hipnn_pyg.nn.Potential`\ s
built from the parts."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from hipnn_pyg.nn.heads import ChargeHead, EnergyHead
from hipnn_pyg.nn.potential import HIPNNOutput, Potential
from hipnn_pyg.nn.representation import HIPNNRepresentation
from hipnn_pyg.nn.sensitivity import InverseGaussianSensitivity

__all__ = ["HIPNN", "HIPNNOutput", "HIPNNPotential"]


class HIPNN(Potential):
    r"""The Hierarchical Interacting Particle Neural Network from `"Hierarchical modeling
    of molecular energies using a deep neural network"
    <https://arxiv.org/abs/1710.00017>`_ (Lubbers, Smith and Barros, 2018).

    Atoms start as one-hot species vectors; each interaction layer
    (:class:`~hipnn_pyg.nn.HIPNNInteraction`) mixes in neighbours through
    inverse-distance sensitivities, followed by ``num_atom_layers`` on-site layers.
    Every layer :math:`\ell` has its own linear energy readout, and the energy is
    :math:`\hat{E} = \sum_i \sum_\ell \hat{E}_i^\ell`. Geometry enters only through
    pair distances (and, with ``tensor_order > 0``, norms of rotating tensors), so
    energies are invariant to rotation, translation and permutation.

    This is the model-zoo front door with flat arguments: it builds a
    :class:`~hipnn_pyg.nn.HIPNNRepresentation` (with an
    :class:`~hipnn_pyg.nn.InverseGaussianSensitivity`) and one
    :class:`~hipnn_pyg.nn.EnergyHead`, the same :class:`~hipnn_pyg.nn.Potential` (and
    parameter names) that ``conf/model/hipnn.yaml`` composes from its parts.

    Args:
        species (Sequence[int]): Atomic numbers the model knows; any other element is an
            error. (default: :obj:`(1, 6, 7, 8)`)
        hidden_channels (int): Feature width of the hidden layers. (default: :obj:`64`)
        num_interactions (int): Number of interaction layers. (default: :obj:`2`)
        num_atom_layers (int): On-site layers after each interaction.
            (default: :obj:`3`)
        num_sensitivities (int): Sensitivity functions per interaction.
            (default: :obj:`20`)
        soft_min_distance (float): Smallest sensitivity centre in Å.
            (default: :obj:`0.75`)
        soft_max_distance (float): Largest sensitivity centre in Å.
            (default: :obj:`5.5`)
        cutoff (float): Hard cutoff of the pair list and of the cosine cutoff in Å.
            (default: :obj:`6.5`)
        min_distance (float): Pairs closer than this (Å) are a broken geometry and
            raise :obj:`ValueError`. (default: :obj:`0.3`)
        max_num_neighbors (int, optional): Cap on neighbours per atom; exceeding it
            raises rather than dropping pairs. (default: :obj:`None`, no cap)
        self_energies (Sequence[float], optional): Per-species energies (eV) of layer 0,
            usually fitted with :func:`hipnn_pyg.train.fit_self_energies`.
            (default: :obj:`None`, zeros)
        method (str): Environment-sum implementation of the interactions, see
            :class:`~hipnn_pyg.nn.HIPNNRepresentation`. (default: :obj:`"envsum"`)
        tensor_order (int): 0 for HIP-NN; 1 or 2 for HIP-NN-TS (`Chigaev et al. 2023
            <https://arxiv.org/abs/2212.03195>`_), whose sensitivities add vector (and
            quadrupole) channels whose norms enter every interaction.
            (default: :obj:`0`)
        tensor_products (bool): With ``tensor_order=2``, also the many-body products of
            those channels (:math:`v^\top Q v`, :math:`\operatorname{tr} Q^3`,
            :math:`|Qv|^2`, as hippynn's HIP-HOP-NN). (default: :obj:`False`)
    """

    def __init__(
        self,
        species: Sequence[int] = (1, 6, 7, 8),
        hidden_channels: int = 64,
        num_interactions: int = 2,
        num_atom_layers: int = 3,
        num_sensitivities: int = 20,
        soft_min_distance: float = 0.75,
        soft_max_distance: float = 5.5,
        cutoff: float = 6.5,
        min_distance: float = 0.3,
        max_num_neighbors: int | None = None,
        self_energies: Sequence[float] | None = None,
        method: str = "envsum",
        tensor_order: int = 0,
        tensor_products: bool = False,
    ) -> None:
        sensitivity = InverseGaussianSensitivity(
            num_sensitivities, soft_min_distance, soft_max_distance, cutoff=float(cutoff)
        )
        representation = HIPNNRepresentation(
            species, sensitivity, hidden_channels, num_interactions, num_atom_layers,
            min_distance, max_num_neighbors, method, tensor_order, tensor_products,
        )
        super().__init__(representation, {"energy": EnergyHead()})
        # Same initialisation sequence (and random draws) as before the split.
        self.reset_parameters()
        if self_energies is not None:
            self.set_self_energies(self_energies)

    def __repr__(self) -> str:
        representation = self.representation
        sensitivity = representation.interactions[0].sensitivity
        return (
            f"{self.__class__.__name__}(species={representation.species}, "
            f"hidden_channels={representation.hidden_channels}, "
            f"num_interactions={representation.num_interactions}, "
            f"num_atom_layers={representation.num_atom_layers}, "
            f"num_sensitivities={sensitivity.num_sensitivities}, cutoff={self.cutoff}, "
            f"tensor_order={representation.tensor_order}"
            + (", tensor_products=True)" if representation.tensor_products else ")")
        )


class HIPNNPotential(Potential):
    r"""A HIP-NN with a hierarchical charge head (Sifain et al. 2018), built from HIP-NN
    models: energies, forces and stress as the energy model, plus atomic charges that
    sum exactly to each structure's total charge, dipoles and traceless quadrupoles
    (see :class:`~hipnn_pyg.nn.ChargeHead`).

    It is the :class:`~hipnn_pyg.nn.Potential` with ``energy_model``'s representation
    and energy head and a :class:`~hipnn_pyg.nn.ChargeHead` (the same modules, no copy).
    The composed equivalent, ``Potential(representation, heads={"energy": EnergyHead(),
    "charges": ChargeHead(origin, representation=None)})``, is what
    ``conf/model/hipnn_charges.yaml`` builds. ``model(z, pos, batch)`` returns energies;
    every output comes from :func:`~hipnn_pyg.nn.predict` or :meth:`outputs`.

    Args:
        energy_model (HIPNN): The energy model.
        charge_model (HIPNN, optional): A separate network for the charges (only its
            representation is used), so the charge training leaves the energy
            untouched. (default: :obj:`None`, the energy model's features)
        origin (str): Reference point of the multipoles, ``"center_of_mass"`` or
            ``"center_of_geometry"``. (default: :obj:`"center_of_mass"`)
    """

    def __init__(
        self,
        energy_model: HIPNN,
        charge_model: HIPNN | None = None,
        origin: str = "center_of_mass",
    ) -> None:
        charge_representation = None if charge_model is None else charge_model.representation
        charge_head = ChargeHead(origin, representation=charge_representation)
        super().__init__(energy_model.representation,
                         {"energy": energy_model.energy_head, "charges": charge_head})

    @property
    def origin(self) -> str:
        r"""Reference point of the multipoles."""
        return self.heads["charges"].origin  # type: ignore[return-value]

    @property
    def share_features(self) -> bool:
        r"""Whether the charges read the energy model's features."""
        return self.heads["charges"].representation is None

    def electrostatics(
        self,
        z: Tensor,
        pos: Tensor,
        batch: Tensor | None = None,
        cell: Tensor | None = None,
        pbc: Tensor | None = None,
        total_charge: Tensor | None = None,
        num_graphs: int | None = None,
        validate: bool = True,
    ) -> dict[str, Tensor]:
        r"""The charge head's outputs alone (``charges``, ``layer_charges``, ``dipole``,
        ``dipole_magnitude``, ``quadrupole``); :meth:`outputs` gives them with the
        energy from one pass of the representation; ``validate`` as in
        :meth:`~hipnn_pyg.nn.Potential.forward`."""
        representation = self.representation(z, pos, batch, cell, pbc, num_graphs,
                                             validate=validate)
        return self.heads["charges"](representation, total_charge)
