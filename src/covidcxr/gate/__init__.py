"""The input gate: refuse what is not a frontal chest radiograph, before any diagnosis.

- :class:`ChestXrayGate`: the default gate, fitted from the training radiographs alone
  (see :doc:`/trust` for what it refuses and how it was chosen).
- :func:`version_of`: the eight rotated and inverted versions its network tells apart.
- :data:`MIN_MIRROR_RECALL`: what its mirror check must achieve on held-out radiographs
  to be kept.

Any object with ``fit`` and ``assess`` (the :class:`~covidcxr.protocols.InputGate`
protocol) can stand in for it: ``Pipeline(gate=...)``.
"""

from covidcxr.gate._gate import MIN_MIRROR_RECALL, ChestXrayGate, n_versions, version_of

__all__ = ["MIN_MIRROR_RECALL", "ChestXrayGate", "n_versions", "version_of"]
