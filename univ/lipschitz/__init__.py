"""The certified-gap Lipschitz ladder for feed-forward ReLU networks (L2 and L-inf, global and over a box).

- :mod:`.network`: a net as the chain of dense affine maps every bound works on (CNNs unrolled).
- :mod:`.sdp`: LipSDP-Neuron / LipSDP-Layer (cvxpy, Clarabel with an SCS fallback; the optional extra
  ``lipschitz``), their local versions over a box, ECLipsE and ECLipsE-Fast.
- :mod:`.exact`: exact constants of small nets by enumerating the realisable activation regions.
- :mod:`.bab`: a branch-and-bound upper bound over activation regions (certified at any stopping point,
  exact when run to the end; LipBaB / LipMIP style), L2 and L-inf, global and over a box.
- :mod:`.lower`: certified lower bounds (Jacobian ascent, PGD difference quotients).
- :mod:`.directions`: the gain ``||J r|| / ||r||`` of random, adversarial and worst-case directions.
- :mod:`.ladder`: every bound of one net in one table, with the interval [lower, upper].

The product bound and univ's ReLU-splitting bound stay in :mod:`univ.repro.lipschitz`.
"""

from .bab import BaBResult, branch_and_bound
from .exact import ExactResult, exact_lipschitz
from .lower import LowerResult, jacobian_ascent, lower_bound, pgd_ratio
from .network import AffineNet, as_affine_net, forward, jacobians, operator_norm
from .sdp import Bound, SolverError, eclipse, eclipse_fast, lipsdp

__all__ = ["AffineNet", "BaBResult", "Bound", "ExactResult", "LowerResult", "SolverError", "as_affine_net",
           "branch_and_bound", "eclipse", "eclipse_fast", "exact_lipschitz", "forward", "jacobian_ascent", "jacobians",
           "lipsdp", "lower_bound", "operator_norm", "pgd_ratio"]
